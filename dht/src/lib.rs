//! # suprnova-dht
//!
//! The bottom layer of Suprnova: node identity, the encrypted UDP channel (Noise IK over raw UDP,
//! wire-spec v1) and, later, Kademlia. The protocol is a set of sans-IO state machines fed
//! `(now, input)` and polled for output; [`net`] is the thin tokio driver that runs them on a socket.
//!
//! Layout:
//! - [`identity`]: ed25519 identity, `NodeId`, signed node records.
//! - [`wire`]: packet framing and postcard messages, with every limit named.
//! - [`handshake`]: Noise IK, cookies, replay window, transport sessions.
//! - [`channel`]: the sans-IO secure channel: sessions per peer, handshakes, DoS rules, drop counters.
//! - [`proto`]: the sans-IO `Dht` on top of the channel: Kademlia, records, relaying.
//! - [`path`]: the data plane under both protocols (relay circuits, virtual addresses) and a
//!   relay's admission rules.
//! - [`net`]: tokio driver (feature `net`).

pub mod channel;
pub mod codec;
pub mod crypto;
pub mod ct;
pub mod handshake;
pub mod identity;
pub mod keyfile;
pub mod lan;
pub mod lookup;
pub mod path;
pub mod proto;
pub mod ratelimit;
pub mod routing;
#[cfg(feature = "sim-crypto")]
pub mod simcrypto;
pub mod stats;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod pathio;
#[cfg(feature = "net")]
pub mod persist;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use identity::{Identity, NodeId, NodeRecord};
