//! Suprnova agents: autonomous agents that announce themselves, discover each other, exchange
//! messages, vote on proposals and share knowledge, with no central coordinator.
//!
//! This crate sees only the [`suprnova_node::Node`] handle and [`suprnova_mesh`] (and the DHT's
//! wire types, for the records it signs with agents' keys).
//!
//! - [`agent`]: the [`agent::Agent`] trait, a sans-IO step fed [`agent::Event`]s through a
//!   [`agent::Ctx`] that collects [`agent::Action`]s.
//! - [`runtime`]: [`runtime::Runtime`] hosts thousands of agents on one node, each with its own
//!   ed25519 key, a bounded mailbox and its own task; it announces, discovers, routes messages,
//!   runs the votes and shares knowledge: a thin driver over the sans-IO cores below.
//! - [`router`]: admission of incoming envelopes (transport, signature, time window, replay)
//!   and the bounded table of requests awaiting an answer, sans-IO ([`router::Router`]).
//! - [`discovery`]: criteria, the DHT sets a query reads, and how entries are sifted.
//! - [`vote`]: proposals, votes, quorum certificates and equivocation evidence as a sans-IO
//!   state machine ([`vote::Ballots`]).
//! - [`knowledge`]: knowledge sharing with blobs and per-agent, per-domain indexes.
//! - [`wire`]: every byte the agents put on the wire (wire-spec §14).
//!
//! The roadmap's agent API maps as follows: `announceAgent` is [`runtime::Runtime::spawn`] (and
//! [`agent::Ctx::announce`]); `discoverAgents(criteria)` is [`runtime::Runtime::discover`] /
//! [`agent::Ctx::discover`]; `sendDirectMessage` is [`agent::Ctx::send`] and
//! [`agent::Ctx::request`]; `broadcastToSwarm` is [`agent::Ctx::broadcast`];
//! `shareKnowledge`/`requestKnowledgeSync` are [`agent::Ctx::share_knowledge`] and
//! [`agent::Ctx::sync_knowledge`]; `proposeCoordination`/`voteOnProposal` are
//! [`agent::Ctx::propose`] and [`agent::Ctx::vote`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod batch;
pub mod discovery;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "net")]
pub use runtime::knowledge;
pub mod router;
#[cfg(feature = "net")]
pub mod runtime;
pub mod vote;
pub mod wire;
pub mod worlds;

pub use agent::{Agent, AgentAddr, Ctx, DiscoveryFailed, Event, KnowledgeError, Profile, SubmitError};
pub use discovery::{Criteria, Found};
#[cfg(feature = "net")]
pub use runtime::{Runtime, RuntimeConfig};
pub use wire::AgentId;
