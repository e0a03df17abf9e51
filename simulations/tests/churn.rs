//! The churn scenario on a small seeded network.

use suprnova_sim::engine::SEC;
use suprnova_sim::scenarios::churn::{Options, run};

#[test]
fn records_and_lookups_survive_a_network_replaced_under_churn() {
    let mut o = Options::new(200, 8);
    o.replication = vec![3];
    o.session = 60 * SEC;
    o.duration = 120 * SEC;
    o.interval = 30 * SEC;
    o.values = 40;
    o.probes = 20;
    let runs = run(&o).expect("run");
    let r = &runs[0];
    assert_eq!(r.stored, 40);
    assert_eq!(r.samples.len(), 4);
    let last = r.samples.last().expect("samples");
    // Mean session 60 s over 120 s: most of the original nodes are gone (each replaced).
    assert!(last.departed > 250, "departed {}", last.departed);
    // Replicas repair: nearly every record is still held by a live node, and found.
    assert!(last.available >= 0.9, "available {}", last.available);
    assert!(r.samples.iter().all(|s| s.lookup >= 0.85 && s.fetch >= 0.8), "{:?}", r.samples);
}
