//! Suprnova mesh: replicated state that evolves as S(n+1) = F(S(n)) ⊕ inputs, agreed by its
//! members and stored, verifiably, in the DHT.
//!
//! This crate is being built in steps. Present so far:
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

#[doc(hidden)]
pub mod fuzzing;
