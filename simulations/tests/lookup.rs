//! The lookup scenario on small seeded networks: real `Dht` cores, real assertions.

use suprnova_sim::scenarios::Start;
use suprnova_sim::scenarios::lookup::{Options, run};

fn options(nodes: usize, seed: u64, start: Start) -> Options {
    let mut o = Options::new(vec![nodes], seed);
    o.lookups = 150;
    o.values = 30;
    o.start = start;
    o
}

#[test]
fn lookups_reach_the_true_closest_nodes() {
    let r = run(&options(400, 11, Start::Warm)).expect("run");
    let r = &r[0];
    assert_eq!(r.find_node_done, 150, "every lookup finishes");
    // The closest node returned is the true closest live node (global view), for every lookup.
    assert_eq!(r.find_node_exact, 150);
    assert!(r.overlap > 0.98, "top-20 overlap {}", r.overlap);
    assert_eq!(r.stored, 30);
    assert_eq!((r.gets, r.found), (30, 30), "every stored record is found");
    // Kademlia: a handful of hops, far below log2(400) ≈ 8.6.
    assert!(r.hops.iter().all(|&h| (1..=5).contains(&h)), "hops {:?}", r.hops);
}

#[test]
fn live_joins_bootstrap_and_serve_lookups() {
    let mut o = options(250, 5, Start::Live);
    o.joins_per_s = 200.0;
    let r = run(&o).expect("run");
    let r = &r[0];
    assert_eq!(r.bootstrapped, 249, "every node but the first bootstraps");
    assert_eq!(r.find_node_done, 150);
    assert!(r.find_node_exact >= 147, "exact {} of 150", r.find_node_exact);
    assert_eq!(r.found, 30);
}

#[test]
fn same_seed_same_results() {
    let a = run(&options(200, 3, Start::Warm)).expect("run");
    let b = run(&options(200, 3, Start::Warm)).expect("run");
    let key = |r: &suprnova_sim::scenarios::lookup::SizeResult| {
        (r.hops.clone(), format!("{:?}", r.latency_ms), r.rpcs.clone(), r.events, r.datagrams, r.value_hops.clone())
    };
    assert_eq!(key(&a[0]), key(&b[0]));
    let c = run(&options(200, 4, Start::Warm)).expect("run");
    assert_ne!(key(&a[0]), key(&c[0]), "another seed gives another run");
}
