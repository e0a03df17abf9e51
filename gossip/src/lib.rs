//! # suprnova-gossip
//!
//! Topic broadcast for Suprnova, as sans-IO state machines generic over the peer identity:
//! - [`proto::hyparview`]: HyParView membership (Leitão, Pereira, Rodrigues, DSN 2007): a small
//!   active view of connected neighbours and a larger passive view of backups, kept fresh by
//!   random walks and shuffles.
//! - [`proto::plumtree`]: Plumtree broadcast (Leitão, Pereira, Rodrigues, SRDS 2007): eager push
//!   along a spanning tree, lazy `IHave` announcements to the other neighbours, `Graft` to repair
//!   and `Prune` to trim.
//!
//! Both are fed `(now, input)` and polled for outputs; timers are values the driver schedules.
//! - [`blob`]: blob manifests and requests (wire-spec §12.5).
//! - [`wire`]: gossip frames and the signed broadcast envelope (wire-spec §12).
//! - `net` (feature `net`, on by default): the QUIC driver on the node's shared UDP port, TLS
//!   bound to node identities, and the topic driver that runs the cores.

#![forbid(unsafe_code)]

pub mod blob;
pub mod proto;
pub mod wire;

#[cfg(feature = "net")]
pub mod net;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
