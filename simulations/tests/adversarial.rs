//! The adversarial scenario on a small seeded network: colluders run the real core with lies set.

use suprnova_sim::scenarios::adversarial::{Options, run};

#[test]
fn disjoint_paths_hold_up_against_a_third_colluding() {
    let mut o = Options::new(400, 21);
    o.shares = vec![0.0, 0.3];
    o.paths = vec![1, 4];
    o.lookups = 120;
    o.values = 20;
    let runs = run(&o).expect("run");
    assert_eq!(runs.len(), 4);
    let honest = &runs[0];
    assert_eq!((honest.share, honest.paths), (0.0, 1));
    assert_eq!(honest.found_target, honest.started, "no colluders: every lookup finds its target");
    assert_eq!(honest.got, honest.gets);
    assert_eq!(honest.forged_refused, 0);
    let (one, four) = (&runs[2], &runs[3]);
    assert_eq!((one.share, one.paths, four.paths), (0.3, 1, 4));
    // Colluders answer with forged records, which honest nodes refuse and count.
    assert!(one.forged_refused > 0 && four.forged_refused > 0);
    assert!(four.lookup_success() >= 0.95, "4 paths: {}", four.lookup_success());
    assert!(four.lookup_success() >= one.lookup_success());
    // Disjoint paths cost about d times the requests.
    let p50 = |r: &suprnova_sim::scenarios::adversarial::Run| r.rpcs[r.rpcs.len() / 2];
    assert!(p50(four) >= 3 * p50(one), "rpcs {} vs {}", p50(four), p50(one));
}
