//! The [`Agent`] trait and the context its step runs in.
//!
//! An agent is a sans-IO state machine: the runtime calls [`Agent::step`] with a [`Ctx`] that
//! holds what arrived since the last step ([`Event`]s) and collects what the agent wants done
//! ([`Action`]s). The step never waits; the runtime carries out the actions on the network and
//! feeds their results back as events in later steps. A step runs when events arrive, and
//! otherwise every `tick` of the agent's [`Profile`] (or sooner if it asked with
//! [`Ctx::wake_in`]).
//!
//! The roadmap's agent loop, *discover peers, check conflicts, negotiate, apply, announce*, maps
//! onto this: [`Ctx::discover`], reading [`Event::Message`]s and [`Event::Proposal`]s,
//! [`Ctx::request`] / [`Ctx::propose`] / [`Ctx::vote`], [`Ctx::submit`] to a mesh, and
//! [`Ctx::announce`].

use std::sync::Arc;
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::BoundedString;
use suprnova_mesh::world::SignedInput;

use crate::discovery::{Criteria, Found};
use crate::vote::Decision;
use crate::wire::{Ack, AgentId, Digest, Evidence, Item, Proposal, Resources, Vote, WireError};

/// An autonomous agent.
pub trait Agent: Send + 'static {
    /// One step: read `ctx`'s events, decide, and act through `ctx`.
    fn step(&mut self, ctx: &mut Ctx);
}

/// What an agent is: announced in the DHT so others discover it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Its kind.
    pub kind: String,
    /// Its capabilities (sorted and de-duplicated by the runtime).
    pub capabilities: Vec<String>,
    /// What it offers.
    pub resources: Resources,
    /// Where it is, if anywhere.
    pub position: Option<[f64; 3]>,
    /// Swarms whose broadcasts it receives.
    pub swarms: Vec<String>,
    /// Time between steps when nothing arrives (`None`: only on events).
    pub tick: Option<Duration>,
    /// Whether to announce it in the DHT (off for agents nobody needs to find).
    pub announce: bool,
}

/// Where an agent lives: its id and its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AgentAddr {
    /// The agent.
    pub agent: AgentId,
    /// The node that hosts it.
    pub node: NodeId,
}

impl From<&Found> for AgentAddr {
    fn from(f: &Found) -> Self {
        AgentAddr { agent: f.agent, node: NodeId(f.announcement.node) }
    }
}

/// Names a request or discovery the agent started, in the event that answers it.
pub type Ticket = u64;

/// Names a request the agent received, for [`Ctx::respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub(crate) u64);

/// Why sending or a request failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SendError {
    /// The body is over the limit.
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The node could not be reached or the stream failed.
    #[error("network: {0}")]
    Network(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The recipient's node hosts no such agent.
    #[error("no such agent there")]
    NoSuchAgent,
    /// The recipient's mailbox is full.
    #[error("mailbox full")]
    MailboxFull,
    /// The recipient refused or dropped the request.
    #[error("refused")]
    Refused,
    /// The recipient's node rejected the envelope (stale, replayed, badly signed).
    #[error("rejected by the recipient's node")]
    Rejected,
    /// The answer did not decode or its signature was not the recipient's.
    #[error("bad answer")]
    BadAnswer,
}

/// Why sharing, syncing or reading knowledge failed. A refused offer carries this text back to
/// the sharer. Node errors are kept as shared sources (the enum is `Clone`, as events are);
/// with the `net` feature, `KnowledgeError::node_error` gives them back typed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// The domain name is over its length limit.
    #[error("domain name too long")]
    DomainTooLong,
    /// An item's name is over its length limit.
    #[error("item name too long")]
    ItemNameTooLong,
    /// More items than an index may name.
    #[error("too many items")]
    TooManyItems,
    /// The encoded index is over the size an index reference can name.
    #[error("index too large")]
    IndexTooLarge,
    /// The sharing agent is not hosted by this runtime.
    #[error("agent not hosted here")]
    NotHosted,
    /// The receiving agent is not hosted by the runtime the offer reached.
    #[error("no such agent")]
    NoSuchAgent,
    /// The offer could not be delivered, or its answer was not the recipient's.
    #[error("{0}")]
    Offer(#[source] SendError),
    /// The peer's answer to an offer did not decode.
    #[error("bad answer")]
    BadAnswer(#[source] WireError),
    /// The peer's runtime refused the offer, with its reason.
    #[error("{}", .0.as_str())]
    Refused(BoundedString<128>),
    /// The agent's index record could not be read.
    #[error("{0}")]
    IndexRecord(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The index record's value is not an index reference.
    #[error("{0}")]
    BadIndexRef(#[source] WireError),
    /// The nodes serving the index could not be found.
    #[error("{0}")]
    Providers(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The domain's set could not be read.
    #[error("{0}")]
    DomainSet(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The index reference announces more than this runtime accepts.
    #[error("bundle of {bundle} bytes (index {index} bytes) over the limit")]
    TooLarge {
        /// The bundle's size the reference announces, bytes.
        bundle: u64,
        /// The index's size the reference announces, bytes.
        index: u32,
    },
    /// The index blob could not be fetched (or announced more than the index limit).
    #[error("index: {0}")]
    IndexFetch(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The index blob was fetched but is no longer held.
    #[error("index vanished")]
    IndexVanished,
    /// The index blob does not decode.
    #[error("index does not decode")]
    IndexDecode(#[source] WireError),
    /// The index is not the one its reference (or record) names.
    #[error("index does not match its reference")]
    IndexMismatch,
    /// The index names more bytes than this runtime accepts.
    #[error("bundle over the limit")]
    BundleTooLarge {
        /// The items' total size, bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The newest items of a domain add up to more than this runtime accepts.
    #[error("domain holds {size} bytes, over the {max} allowed")]
    DomainTooLarge {
        /// The items' total size, bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An item's blob could not be fetched.
    #[error("{0}")]
    Fetch(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An item of an offer could not be fetched.
    #[error("item {name}: {source}")]
    Item {
        /// The item's name.
        name: String,
        /// Why.
        #[source]
        source: Box<KnowledgeError>,
    },
}

/// What a discovery found.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// The matching agents, by id.
    pub agents: Vec<Found>,
    /// Sets read.
    pub lookups: usize,
    /// Entries read in all.
    pub entries: usize,
    /// False if a set could not be read or held so many entries that some may be missing.
    pub complete: bool,
    /// Entries dropped, by reason.
    pub drops: crate::discovery::DiscoveryDrops,
}

/// What a knowledge sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Agents whose index was read.
    pub indexes: usize,
    /// Distinct items named.
    pub items: usize,
    /// Items fetched.
    pub fetched: usize,
    /// Items already held.
    pub skipped: usize,
    /// Bytes fetched.
    pub bytes: u64,
    /// Items that could not be fetched (by name), with the reason.
    pub failed: Vec<(String, KnowledgeError)>,
    /// The items now held, by name (newest version per name).
    pub held: Vec<Item>,
}

/// Why a discovery asked for with [`Ctx::discover`] failed: the runtime's `DiscoverError`,
/// kept as the source (the agents core builds without the runtime).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct DiscoveryFailed(#[source] pub Arc<dyn std::error::Error + Send + Sync>);

/// Why a mesh input an agent submitted with [`Ctx::submit`] was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The runtime has no mesh attached.
    #[error("no mesh attached")]
    NoMesh,
    /// The local mesh refused the input.
    #[error("{0}")]
    Refused(#[source] suprnova_mesh::world::InputError),
}

/// Something that happened, for an agent.
#[derive(Clone, Debug)]
pub enum Event {
    /// The agent was just spawned (its first step).
    Started,
    /// Its tick (nothing else arrived).
    Tick,
    /// A one-way message.
    Message {
        /// The sending agent (its signature checked).
        from: AgentId,
        /// The body.
        body: Vec<u8>,
    },
    /// A request: answer with [`Ctx::respond`] (or ignore it, and the sender times out).
    Request {
        /// Names it.
        id: RequestId,
        /// The sending agent.
        from: AgentId,
        /// The body.
        body: Vec<u8>,
    },
    /// The answer to one of our requests.
    Response {
        /// From [`Ctx::request`].
        ticket: Ticket,
        /// The body, or why there is none.
        result: Result<Vec<u8>, SendError>,
    },
    /// A one-way message of ours was not delivered.
    SendFailed {
        /// To whom.
        to: AgentId,
        /// Why.
        error: SendError,
    },
    /// A broadcast on a swarm the agent is in.
    Broadcast {
        /// The swarm.
        swarm: String,
        /// The sending agent.
        from: AgentId,
        /// The body.
        body: Vec<u8>,
    },
    /// A discovery finished.
    Discovered {
        /// From [`Ctx::discover`].
        ticket: Ticket,
        /// What it found.
        result: Result<Arc<Discovery>, DiscoveryFailed>,
    },
    /// A proposal the agent is an eligible voter of (or that it made).
    Proposal {
        /// The proposal.
        proposal: Arc<Proposal>,
    },
    /// A proposal the agent made or may vote on was decided.
    Decided {
        /// Its id.
        id: Digest,
        /// How.
        decision: Arc<Decision>,
    },
    /// A voter of a proposal the agent made or votes on equivocated.
    Equivocation {
        /// The proof.
        evidence: Arc<Evidence>,
    },
    /// Another agent shared knowledge with this one; the runtime fetched and verified it.
    Knowledge {
        /// The sharing agent.
        from: AgentId,
        /// The domain.
        domain: String,
        /// The items now held.
        items: Vec<Item>,
        /// What was fetched and skipped.
        ack: Ack,
    },
    /// A [`Ctx::share_knowledge`] finished.
    Shared {
        /// From the call.
        ticket: Ticket,
        /// Per peer: its acknowledgement or the error.
        results: Vec<(AgentId, Result<Ack, KnowledgeError>)>,
    },
    /// A [`Ctx::sync_knowledge`] finished.
    Synced {
        /// From the call.
        ticket: Ticket,
        /// What it did.
        result: Result<SyncReport, KnowledgeError>,
    },
    /// A mesh input of ours was refused by the local mesh.
    SubmitFailed {
        /// Why.
        error: SubmitError,
    },
}

/// What an agent asks the runtime to do.
#[derive(Debug)]
pub enum Action {
    /// A one-way message.
    Send {
        /// To.
        to: AgentAddr,
        /// Body.
        body: Vec<u8>,
    },
    /// A request.
    Request {
        /// Its ticket.
        ticket: Ticket,
        /// To.
        to: AgentAddr,
        /// Body.
        body: Vec<u8>,
    },
    /// An answer.
    Respond {
        /// The request.
        id: RequestId,
        /// Body.
        body: Vec<u8>,
    },
    /// A broadcast to a swarm.
    Broadcast {
        /// The swarm.
        swarm: String,
        /// Body.
        body: Vec<u8>,
    },
    /// A discovery.
    Discover {
        /// Its ticket.
        ticket: Ticket,
        /// What to look for.
        criteria: Criteria,
    },
    /// Publish a (signed) proposal.
    Propose(Proposal),
    /// Publish a (signed) vote.
    Vote(Vote),
    /// Re-announce with a new profile.
    Announce(Profile),
    /// Announce a new position in the mesh's spatial index only (with `info`, ≤ 96 bytes).
    MoveTo {
        /// Where.
        position: [f64; 3],
        /// Application data stored with it.
        info: Vec<u8>,
    },
    /// Share knowledge.
    Share {
        /// Its ticket.
        ticket: Ticket,
        /// With whom.
        peers: Vec<AgentAddr>,
        /// The domain.
        domain: String,
        /// Named items.
        items: Vec<(String, Arc<Vec<u8>>)>,
    },
    /// Sync a domain.
    Sync {
        /// Its ticket.
        ticket: Ticket,
        /// The domain.
        domain: String,
    },
    /// Submit an input to the runtime's mesh.
    Submit(SignedInput),
}

/// The context of one step.
pub struct Ctx {
    pub(crate) me: Arc<Identity>,
    pub(crate) now_ms: u64,
    pub(crate) events: Vec<Event>,
    pub(crate) actions: Vec<Action>,
    pub(crate) next_ticket: Ticket,
    pub(crate) nonce: u64,
    pub(crate) wake: Option<Duration>,
    pub(crate) stop: bool,
    pub(crate) mesh: Option<Digest>,
}

impl Ctx {
    /// A context for `me` at `now_ms` with `events` (the runtime makes these; tests may too).
    pub fn new(me: Arc<Identity>, now_ms: u64, events: Vec<Event>, next_ticket: Ticket) -> Ctx {
        Ctx { me, now_ms, events, actions: Vec::new(), next_ticket, nonce: now_ms, wake: None, stop: false, mesh: None }
    }

    /// This agent's id.
    pub fn me(&self) -> AgentId {
        self.me.public_key()
    }

    /// Now, Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Takes the events that arrived since the last step.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The actions collected so far (for tests).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Takes the actions collected (for tests and the runtime).
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// Sends `body` to `to` (no answer; a failure comes back as [`Event::SendFailed`]).
    pub fn send(&mut self, to: AgentAddr, body: Vec<u8>) {
        self.actions.push(Action::Send { to, body });
    }

    /// Sends a request; the answer comes back as [`Event::Response`] with this ticket.
    pub fn request(&mut self, to: AgentAddr, body: Vec<u8>) -> Ticket {
        let ticket = self.ticket();
        self.actions.push(Action::Request { ticket, to, body });
        ticket
    }

    /// Answers request `id`.
    pub fn respond(&mut self, id: RequestId, body: Vec<u8>) {
        self.actions.push(Action::Respond { id, body });
    }

    /// Broadcasts `body` to swarm `swarm` (every agent in it, on every node).
    pub fn broadcast(&mut self, swarm: &str, body: Vec<u8>) {
        self.actions.push(Action::Broadcast { swarm: swarm.to_string(), body });
    }

    /// Looks for agents; the answer comes back as [`Event::Discovered`] with this ticket.
    pub fn discover(&mut self, criteria: Criteria) -> Ticket {
        let ticket = self.ticket();
        self.actions.push(Action::Discover { ticket, criteria });
        ticket
    }

    /// Proposes `body` to `voters` (frozen in the signed proposal), open until `deadline` from
    /// now; returns the proposal. Its outcome comes back as [`Event::Decided`].
    pub fn propose(&mut self, body: &[u8], voters: Vec<AgentId>, deadline: Duration) -> Result<Proposal, WireError> {
        self.nonce += 1;
        let deadline_ms = self.now_ms.saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        let p = Proposal::sign(&self.me, self.nonce, deadline_ms, voters, body)?;
        self.actions.push(Action::Propose(p.clone()));
        Ok(p)
    }

    /// Votes `choice` on `proposal`; false if this agent is not one of its voters.
    pub fn vote(&mut self, proposal: &Proposal, choice: &[u8]) -> bool {
        match Vote::sign(&self.me, proposal, choice) {
            Some(v) => {
                self.actions.push(Action::Vote(v));
                true
            }
            None => false,
        }
    }

    /// Re-announces the agent with `profile` (new position, capabilities, resources).
    pub fn announce(&mut self, profile: Profile) {
        self.actions.push(Action::Announce(profile));
    }

    /// Announces that the agent is now at `position` in the mesh's spatial index (only there:
    /// the capability sets keep the profile's position until the next refresh), with `info`.
    pub fn move_to(&mut self, position: [f64; 3], info: Vec<u8>) {
        self.actions.push(Action::MoveTo { position, info });
    }

    /// Shares `items` of `domain` with `peers`: they fetch what they do not hold and verify it;
    /// the result comes back as [`Event::Shared`].
    pub fn share_knowledge(
        &mut self,
        peers: Vec<AgentAddr>,
        domain: &str,
        items: Vec<(String, Arc<Vec<u8>>)>,
    ) -> Ticket {
        let ticket = self.ticket();
        self.actions.push(Action::Share { ticket, peers, domain: domain.to_string(), items });
        ticket
    }

    /// Fetches what this node lacks of everything agents published in `domain`; the result
    /// comes back as [`Event::Synced`].
    pub fn sync_knowledge(&mut self, domain: &str) -> Ticket {
        let ticket = self.ticket();
        self.actions.push(Action::Sync { ticket, domain: domain.to_string() });
        ticket
    }

    /// The mesh this runtime submits to, if it has one.
    pub fn mesh(&self) -> Option<Digest> {
        self.mesh
    }

    /// Signs `input` as this agent's input to the runtime's mesh, first valid in `round`, and
    /// submits it. False if the runtime has no mesh or the input is too large.
    pub fn submit<I: serde::Serialize>(&mut self, round: u64, input: &I) -> bool {
        let Some(mesh) = self.mesh else { return false };
        self.nonce += 1;
        match SignedInput::sign(&self.me, &mesh, round, self.nonce, input) {
            Ok(input) => {
                self.actions.push(Action::Submit(input));
                true
            }
            Err(_) => false,
        }
    }

    /// Signs `msg` with the agent's key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.me.sign(msg)
    }

    /// Steps again after `d` even if nothing arrives.
    pub fn wake_in(&mut self, d: Duration) {
        self.wake = Some(self.wake.map_or(d, |w| w.min(d)));
    }

    /// Stops the agent after this step.
    pub fn stop(&mut self) {
        self.stop = true;
    }
}
