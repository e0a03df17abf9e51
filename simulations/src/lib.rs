//! # suprnova-sim
//!
//! A deterministic discrete-event simulator that runs Suprnova's real sans-IO protocol cores
//! (the Kademlia `Dht` with its Noise channel, HyParView, Plumtree, the mesh's Simplex agreement)
//! on virtual time with one seeded RNG and a modelled network. No tokio, no sockets, no copies of
//! the protocol logic: the simulator only moves bytes and fires timers.
//!
//! Layout:
//! - [`engine`]: virtual clock, event queue, seeded randomness, the latency/loss/partition model.
//! - [`dht`]: many `Dht` cores exchanging real encrypted datagrams.
//! - [`gossip`]: HyParView + Plumtree (and a flooding baseline) over modelled QUIC connections.
//! - [`mesh`]: the Simplex agreement core with silent and equivocating members.
//! - [`scenarios`]: the experiments behind `suprnova-sim SCENARIO`, each writing CSV, SVG and a
//!   summary table.
//! - [`report`]: CSV, plots (plotters) and tables.
//!
//! Same seed, same results: every source of randomness derives from the scenario's seed, events
//! at equal times run in the order they were scheduled, and every map that reaches output is
//! ordered.

pub mod dht;
pub mod engine;
pub mod gossip;
pub mod mesh;
pub mod report;
pub mod scenarios;
