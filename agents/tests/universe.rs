//! The universe on real nodes: every node certifies the same state hash for 100 rounds (F is
//! IEEE-exact f64), energy stays close to conserved, and particle agents find neighbours
//! through the spatial index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use suprnova_agents::worlds::universe::UniverseState;
use suprnova_agents::worlds::universe_game::{UniverseConfig, run};

#[test]
fn f_is_deterministic_and_conserves_momentum_without_walls() {
    let s0 = UniverseState::disc(400, 3);
    let mut a = s0.clone();
    let mut b = s0.clone();
    for _ in 0..50 {
        a = a.step();
        b = b.step();
    }
    assert_eq!(postcard::to_allocvec(&a).unwrap(), postcard::to_allocvec(&b).unwrap());
    assert!(a.collisions > 0, "the disc is dense enough to collide");
    // Nothing reaches the walls in 50 steps, so momentum is conserved up to rounding (the
    // particle-cell forces are not exactly pairwise symmetric, so allow a little).
    let (px, py) = a.momentum();
    let (qx, qy) = s0.momentum();
    assert!(((px - qx).powi(2) + (py - qy).powi(2)).sqrt() < 1e-2);
    let e0 = s0.kinetic() + s0.potential();
    let e1 = a.kinetic() + a.potential();
    assert!(((e1 - e0) / e0).abs() < 1e-2, "energy drift {}", (e1 - e0) / e0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_certify_the_same_hash_for_100_rounds() {
    let cfg = UniverseConfig {
        nodes: 3,
        seed: 11,
        particles: 300,
        agents: 30,
        rounds: 100,
        agent_tick: Duration::from_millis(500),
        ..UniverseConfig::default()
    };
    let r = run(cfg, |_| {}).await.unwrap();
    eprintln!("{r:?}");
    assert!(r.rounds >= 100);
    assert_eq!(r.rounds_disagreed, 0);
    assert_eq!(r.rounds_agreed, 100, "every node certified rounds 1..=100 with one hash");
    assert!(r.energy_drift < 0.05, "{}", r.energy_drift);
    assert!(r.queries > 0, "agents queried their neighbourhoods");
}
