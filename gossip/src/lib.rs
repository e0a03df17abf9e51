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
//! The QUIC driver and the topic layer that joins them through the DHT build on these.

#![forbid(unsafe_code)]

pub mod proto;

#[doc(hidden)]
pub mod fuzzing;
