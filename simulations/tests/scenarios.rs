//! Bootstrap, partition and mesh scenarios on small seeded networks.

use suprnova_sim::engine::SEC;
use suprnova_sim::mesh::Behaviour;
use suprnova_sim::scenarios::{bootstrap, mesh, partition};

#[test]
fn joiners_find_their_neighbourhood_and_are_found() {
    let mut o = bootstrap::Options::new(300, 6);
    o.joins_per_s = 50.0;
    o.sample_every = 5;
    let out = bootstrap::run(&o).expect("run");
    assert_eq!(out.bootstrapped, 299, "every joiner but the first bootstraps");
    let at = |ms| out.offsets.iter().find(|a| a.offset_ms == ms).expect("offset");
    // Shares only grow with time, and 30 s after joining nearly every neighbourhood is complete.
    assert!(at(250).found <= at(3000).found && at(3000).found <= at(30_000).found + 1e-9);
    assert!(at(30_000).found > 0.95, "found {}", at(30_000).found);
    assert!(at(30_000).known_by > 0.9, "known by {}", at(30_000).known_by);
    assert!(at(30_000).checked >= 55);
}

#[test]
fn a_short_partition_heals_in_both_layers() {
    let mut o = partition::Options::new(300, 3);
    o.partitions = vec![20 * SEC];
    o.after = 30 * SEC;
    o.probes = 10;
    let out = partition::run(&o).expect("run");
    let cut = &out.cuts[0];
    // During the cut no lookup reaches the other half and no broadcast reaches everyone.
    assert!(cut.routing.iter().filter(|s| s.t_s < -3.0).all(|s| s.success < 0.5), "{:?}", cut.routing);
    // (Broadcasts sent within 5 s of the heal still count as prompt when held messages go out.)
    assert!(cut.gossip.iter().filter(|s| s.t_s < -5.0).all(|s| s.success < 0.9), "{:?}", cut.gossip);
    let r = cut.routing_reconverged_s.expect("routing reconverged");
    let g = cut.gossip_reconverged_s.expect("gossip reconverged");
    assert!(r <= 10.0 && g <= 10.0, "routing {r} s, gossip {g} s");
    // Nothing published during the cut is lost to the other side, nothing after the heal to anyone.
    assert!(cut.heal.cut_messages >= 15);
    assert_eq!(cut.heal.cut_crossed, 1.0, "{:?}", cut.heal);
    assert!(cut.heal.after_messages >= 15);
    assert_eq!(cut.heal.after_all, 1.0, "{:?}", cut.heal);
}

#[test]
fn gossip_heals_after_a_cut_longer_than_the_idle_timeout() {
    // 60 s: every connection across the cut closed and HyParView dropped the other side; the
    // topic core's membership and Plumtree's catch-up join the halves again.
    let mut o = partition::Options::new(300, 5);
    o.partitions = vec![60 * SEC];
    o.after = 40 * SEC;
    o.routing = false;
    let out = partition::run(&o).expect("run");
    let cut = &out.cuts[0];
    assert!(cut.gossip.iter().filter(|s| s.t_s < -5.0).all(|s| s.success < 0.9), "{:?}", cut.gossip);
    assert_eq!(cut.heal.cut_crossed, 1.0, "{:?}", cut.heal);
    assert_eq!(cut.heal.after_all, 1.0, "{:?}", cut.heal);
    let g = cut.gossip_reconverged_s.expect("gossip reconverged");
    assert!(g <= 10.0, "gossip {g} s");
}

#[test]
fn mesh_stays_safe_and_live_up_to_f_and_only_safe_beyond() {
    let o = mesh::Options::new(vec![10], 12);
    // f = 3 of 10: with 3 equivocators blocks are final; with 4 silent nothing is.
    let ok = mesh::run_one(&o, 10, 3, Behaviour::Equivocating);
    assert_eq!(ok.violations, 0);
    assert!(ok.finalized >= 5, "finalized {}", ok.finalized);
    assert!(ok.evidence > 0, "equivocation is caught");
    let honest = mesh::run_one(&o, 10, 0, Behaviour::Silent);
    assert!(honest.finalized > ok.finalized);
    let stuck = mesh::run_one(&o, 10, 4, Behaviour::Silent);
    assert_eq!(stuck.violations, 0);
    assert_eq!(stuck.finalized, 0, "four silent of ten leave no quorum of seven");
}

#[test]
fn mesh_applies_gossiped_inputs_once_and_a_cut_off_member_catches_up() {
    use suprnova_sim::engine::SEC;
    use suprnova_sim::mesh::MeshSim;
    let o = mesh::Options::new(vec![7], 3);
    let honest = mesh::run_one(&o, 7, 0, Behaviour::Silent);
    // One input every 50 ms for 20 s; the last few may still be in flight when the run ends.
    assert_eq!(honest.inputs_submitted, 400);
    assert!(honest.inputs_applied >= honest.inputs_submitted - 10, "{} applied", honest.inputs_applied);
    assert!(honest.inputs_applied <= honest.inputs_submitted, "an input applied twice");
    // An equivocating leader shows each half of the members a different block: members must
    // execute the notarised one they never voted for before they can vote on its children.
    let split = mesh::run_one(&o, 4, 1, Behaviour::Equivocating);
    assert_eq!(split.refused, Default::default(), "children of a notarised block refused");
    assert!(split.finalized >= 20, "{} blocks final", split.finalized);

    let cfg = suprnova_mesh::simplex::Config { timeout: o.timeout, forward_notarizations: false };
    let mut sim = MeshSim::new(3, vec![Behaviour::Honest; 7], cfg).expect("mesh");
    sim.deafen(6, 4 * SEC);
    sim.run_until(4 * SEC);
    let (others, cut) = (sim.final_round(0), sim.final_round(6));
    assert!(others >= 10 && cut <= 1, "rounds while cut off: {others} vs {cut}");
    sim.run_until(6 * SEC);
    assert!(sim.caught_up(6), "the cut-off member read a certified round");
    assert!(sim.final_round(6) + 3 >= sim.final_round(0), "{} vs {}", sim.final_round(6), sim.final_round(0));
    assert_eq!(sim.violations, 0);
    assert!(sim.fetches > 7, "catch-up reads beyond the first each member makes");
}

#[test]
fn mesh_and_adversarial_runs_repeat_exactly() {
    let o = mesh::Options::new(vec![10], 5);
    let key = |r: &mesh::Run| (r.finalized, format!("{:?}", r.median_ms), r.messages, r.evidence, r.gaps);
    let a = mesh::run_one(&o, 10, 2, Behaviour::Equivocating);
    let b = mesh::run_one(&o, 10, 2, Behaviour::Equivocating);
    assert_eq!(key(&a), key(&b));
    let c = mesh::run_one(&mesh::Options::new(vec![10], 6), 10, 2, Behaviour::Equivocating);
    assert_ne!(key(&a), key(&c));

    use suprnova_sim::scenarios::adversarial;
    let mut o = adversarial::Options::new(200, 3);
    o.shares = vec![0.2];
    o.paths = vec![2];
    o.lookups = 40;
    o.values = 10;
    let run = || {
        let r = adversarial::run(&o).expect("run");
        r.iter().map(|r| (r.found_target, r.got, r.forged_refused, r.rpcs.clone())).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
