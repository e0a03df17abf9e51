//! Suprnova mesh: replicated state that evolves as S(n+1) = F(S(n)) ⊕ inputs, agreed by its
//! members and stored, verifiably, in the DHT.
//!
//! The handle is `net::Mesh` (feature `net`): `Mesh::start` from a world, its genesis and S(0),
//! or `Mesh::join` by mesh id; `submit(input)`; `rounds()`, a stream of certified rounds (round,
//! state hash, state, certificate); `get_state()`; `announce_position` and `query_local` when the
//! world has a space; `status()` for counters. Errors are typed: `net::StartError`,
//! [`world::InputError`], `net::GetStateError`, `presence::PresenceError`.
//!
//! **The stack design's `UniversalMesh(S_0, F, E_p, dht)`** maps onto this crate as follows:
//! `S_0` and `F` are a [`world::World`] and its genesis; `E_p` is the ordered batch of signed
//! inputs each round applies with ⊕; `step()` is one certified round (members re-execute and sign,
//! Simplex certifies); `store_state` is the members' store worker (each certified round's record
//! with its certificate and state, and a head per member); `retrieve_state`/`get_state()` is
//! `net::get_state`, which works from any node and verifies against the genesis;
//! `hash_position` is [`spatial::Space::cell`] plus [`spatial::Space::cell_key`];
//! `query_local_agents(position, radius)` is `presence::Spatial::query_local`.
//!
//! **Snapshots, not deltas.** Each certified round is stored whole (state inline in the round
//! record when it fits a DHT value, else a blob), so a reader needs one record and no chain of
//! deltas, and a late or restarted member catches up from one certified state. Records are not
//! republished; older rounds lapse after their lifetime (600 s), the newest is rewritten.
//!
//! Modules:
//!
//! - [`simplex`]: the agreement core, Simplex consensus (Chan and Pass, TCC 2023) as a sans-IO
//!   state machine: proposals, votes, ⊥ votes on timeout, notarisations, finalize votes,
//!   certificates that anyone with the member keys can check offline, and self-proving evidence
//!   of equivocation.
//! - [`world`]: the [`world::World`] trait (F and ⊕), the [`world::Genesis`] whose hash is the
//!   mesh id, signed inputs and the batch a block carries.
//! - [`core`]: [`core::MeshCore`], a world, its input pool and the agreement together, sans-IO:
//!   it builds batches when it leads, re-executes every proposal before voting, and reports
//!   certified rounds.
//! - [`life`]: Conway's Game of Life as an example world.
//! - `net` (feature `net`, on by default): `net::Mesh`, the tokio driver that runs a
//!   `MeshCore` on a running `suprnova_node::Node`, over the mesh's topic.
//! - [`store`]: what members write to the DHT (genesis, round records with certificate and
//!   state, heads) and how anyone verifies it; `net::get_state` reads it from any node.
//! - [`spatial`]: positions in a world's box, Z-order cells at several levels, the DHT key of a
//!   cell, the bounded set of cells a radius query reads, and the presence value agents write.
//! - `presence` (feature `net`): `presence::Spatial`, agents' signed presence in the cells of a
//!   mesh's space on the DHT, and `query_local(position, radius)`, bounded in cells read and
//!   exact against brute force.
//! - `testing` (feature `testing`): byzantine members as send filters, for tests, the simulator
//!   and the devnet. `fuzzing` (feature `fuzzing`): the cargo-fuzz entry points.

pub mod core;
pub mod life;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod presence;
pub mod simplex;
pub mod spatial;
pub mod store;
pub mod world;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "testing")]
pub mod testing;
