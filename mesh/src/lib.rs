//! Suprnova mesh: replicated state that evolves as S(n+1) = F(S(n)) ⊕ inputs, agreed by its
//! members and stored, verifiably, in the DHT.
//!
//! This crate is being built in steps. Present so far:
//!
//! - [`simplex`]: the agreement core, Simplex consensus (Chan and Pass, TCC 2023) as a sans-IO
//!   state machine: proposals, votes, ⊥ votes on timeout, notarisations, finalize votes,
//!   certificates that anyone with the member keys can check offline, and self-proving evidence
//!   of equivocation.

pub mod simplex;

#[doc(hidden)]
pub mod fuzzing;
