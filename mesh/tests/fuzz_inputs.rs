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

#[test]
fn presence_ops_finds_agents_and_keeps_its_invariants() {
    // The seed corpus' shape: levels 2, 4, 6; centre 0; radius 30; six entries at (1, 2).
    let mut data = vec![0u8, 2, 4, 6];
    for v in [0.0f64, 0.0, 0.0, 30.0] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.push(8);
    let mut here = vec![0u8];
    for v in [1.0f64, 2.0, 0.0] {
        here.extend_from_slice(&v.to_le_bytes());
    }
    here.extend_from_slice(&[0; 32]);
    here.extend_from_slice(&[1, b'x']);
    here.resize(61, 0);
    for i in 0..6u8 {
        data.extend_from_slice(&[i, i, 1]);
        data.extend_from_slice(&here);
    }
    // Writers are i % 8, so six distinct agents at one position; how many are in the cell each
    // entry is filed under depends on the cells, but at least one is.
    assert!(suprnova_mesh::fuzzing::presence_ops(&data) >= 1);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..300 {
        let mut d = vec![0u8; 600];
        rng.fill_bytes(&mut d);
        suprnova_mesh::fuzzing::presence_ops(&d);
    }
}
