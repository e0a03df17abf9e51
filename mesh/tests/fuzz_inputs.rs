//! The fuzz entry points on seeded random inputs, so `cargo test` runs them too (the fuzz
//! smoke run in CI explores further).
#![allow(clippy::unwrap_used)]

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

#[test]
fn simplex_ops_on_random_inputs_keep_their_invariants() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut finalized = 0;
    for _ in 0..60 {
        let mut data = vec![0u8; 1500];
        rng.fill_bytes(&mut data);
        finalized += suprnova_mesh::fuzzing::simplex_ops(&data);
        suprnova_mesh::fuzzing::simplex_decode(&data);
    }
    assert!(finalized > 0, "random inputs reach finalisation");
}
