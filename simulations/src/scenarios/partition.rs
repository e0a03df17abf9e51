//! `partition`: how long routing and gossip take to reconverge after a partition heals (the
//! roadmap asks < 10 s).
//!
//! The map is cut into two halves (west and east) for `partition` seconds, then healed.
//! - **Routing**: a warm DHT network; every second `probes` lookups start from random nodes for
//!   random nodes' ids in the *other* half. A lookup succeeds when it returns its target. The
//!   routing layer has reconverged at the first second after the heal from which every later
//!   second's cross lookups all succeed.
//! - **Gossip**: a HyParView + Plumtree overlay; one broadcast per second from a random node. The
//!   gossip layer has reconverged at the first broadcast after the heal from which every later one
//!   reaches every node within 5 s.
//!
//! A cut shorter than QUIC's idle timeout (30 s) leaves gossip connections open: they carry on
//! when it heals. Longer cuts close them, and HyParView drops the unreachable peers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use suprnova_dht::identity::NodeId;
use suprnova_dht::proto::DhtEvent;

use super::{dht_config, secs, warm};
use crate::dht::{DhtSim, Role};
use crate::engine::{self, Nanos, NetModel, SEC};
use crate::gossip::Mode;
use crate::report::{self, Csv, Plot, Series, Table};

/// Options of the partition scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes (in each layer's network).
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// How long the cut lasts.
    pub partition: Nanos,
    /// How long to watch after the heal.
    pub after: Nanos,
    /// Cross lookups started per second.
    pub probes: usize,
    /// Datagram loss (routing layer).
    pub loss: f64,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// A 60 s cut, watched for 60 s after.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Options { nodes, seed, out: None, partition: 60 * SEC, after: 60 * SEC, probes: 20, loss: 0.0, progress: false }
    }
}

/// One second of a layer's record.
#[derive(Clone, Debug, Default)]
pub struct Second {
    /// Seconds relative to the heal (negative: during the cut).
    pub t_s: f64,
    /// Share of probes that succeeded (cross lookups, or nodes reached by the broadcast).
    pub success: f64,
    /// Probes counted.
    pub probes: usize,
}

/// The scenario's result.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Routing: cross lookups per second.
    pub routing: Vec<Second>,
    /// Gossip: one broadcast per second, share of all nodes reached.
    pub gossip: Vec<Second>,
    /// Seconds after the heal until routing reconverged (`None`: not within the watch).
    pub routing_reconverged_s: Option<f64>,
    /// Seconds after the heal until gossip reconverged.
    pub gossip_reconverged_s: Option<f64>,
    /// Wall time, s.
    pub wall_s: f64,
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Outcome> {
    let wall = Instant::now();
    let routing = routing(o);
    let gossip = gossip(o);
    let out = Outcome {
        routing_reconverged_s: reconverged(&routing, 1.0),
        gossip_reconverged_s: reconverged(&gossip, 1.0),
        routing,
        gossip,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    super::finish(o.out.as_deref(), out, |dir, v| write(o, dir, v), |v| summary(o, v))
}

/// The first second at or after the heal from which every later second reaches `level`.
pub fn reconverged(seconds: &[Second], level: f64) -> Option<f64> {
    let after: Vec<&Second> = seconds.iter().filter(|s| s.t_s >= 0.0 && s.probes > 0).collect();
    let last_bad = after.iter().rposition(|s| s.success < level);
    match last_bad {
        None => after.first().map(|s| s.t_s),
        Some(i) => after.get(i + 1).map(|s| s.t_s),
    }
}

fn routing(o: &Options) -> Vec<Second> {
    let mut net = NetModel::new();
    net.loss = o.loss;
    let mut sim = DhtSim::new(o.seed, net, dht_config());
    let mut rng = engine::rng(o.seed, "partition routing");
    let nodes = warm(&mut sim, o.nodes, &mut rng, o.progress, |_| Role::Honest);
    sim.run_for(5 * SEC);
    sim.net.partition(2);
    let cut = sim.now();
    let heal = cut + o.partition;
    let end = heal + o.after;
    let (west, east): (Vec<usize>, Vec<usize>) = nodes.iter().partition(|&&i| sim.net.group_of(i) == 0);
    let mut started: BTreeMap<(u32, u64), (i64, NodeId)> = BTreeMap::new();
    let mut tally: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    let mut healed = false;
    while sim.now() < end {
        if !healed && sim.now() >= heal {
            sim.net.heal();
            healed = true;
        }
        let second = (sim.now() as i64 - heal as i64).div_euclid(SEC as i64);
        for _ in 0..o.probes {
            let (a, b) = if engine::unit(&mut rng) < 0.5 { (&west, &east) } else { (&east, &west) };
            let (Some(&from), Some(&to)) =
                (a.get(engine::below(&mut rng, a.len())), b.get(engine::below(&mut rng, b.len())))
            else {
                continue;
            };
            let target = sim.id(to);
            if let Some(Ok(q)) = sim.call(from, |d, now| d.find_node(now, target)) {
                started.insert((from as u32, q), (second, target));
                // Counted when started: a lookup that never finishes failed.
                tally.entry(second).or_default().0 += 1;
            }
        }
        sim.run_for(SEC);
        tally_lookups(&mut sim, &mut started, &mut tally);
        if o.progress && second % 10 == 0 {
            let (n, ok) = tally.get(&(second - 5)).copied().unwrap_or_default();
            eprintln!("  routing t = {:>4} s: cross lookups {ok}/{n}", second - 5);
        }
    }
    // Let the last lookups finish.
    sim.run_for(40 * SEC);
    tally_lookups(&mut sim, &mut started, &mut tally);
    tally
        .into_iter()
        .map(|(s, (n, ok))| Second { t_s: s as f64, success: ok as f64 / n.max(1) as f64, probes: n })
        .collect()
}

/// Counts cross lookups that found their target, by the second they started in.
fn tally_lookups(
    sim: &mut DhtSim,
    started: &mut BTreeMap<(u32, u64), (i64, NodeId)>,
    tally: &mut BTreeMap<i64, (usize, usize)>,
) {
    for r in sim.take_reported() {
        if let DhtEvent::FoundNodes { query, nodes, .. } = r.event
            && let Some((second, target)) = started.remove(&(r.node, query))
            && nodes.iter().any(|f| f.record.id == target)
        {
            tally.entry(second).or_default().1 += 1;
        }
    }
}

fn gossip(o: &Options) -> Vec<Second> {
    let mut b = super::broadcast::Options::new(o.nodes, o.seed);
    b.stabilize = 120 * SEC;
    let mut sim = super::broadcast::build(&b, Mode::Plumtree);
    let mut rng = engine::rng(o.seed, "partition gossip");
    for _ in 0..5 {
        let up = sim.up();
        if let Some(&i) = up.get(engine::below(&mut rng, up.len())) {
            sim.broadcast(i);
        }
        sim.run_for(SEC);
    }
    sim.partition(2);
    let heal = sim.now() + o.partition;
    let end = heal + o.after;
    let mut sent: Vec<(i64, [u8; 32])> = Vec::new();
    let mut healed = false;
    while sim.now() < end {
        if !healed && sim.now() >= heal {
            sim.heal();
            healed = true;
        }
        let second = (sim.now() as i64 - heal as i64).div_euclid(SEC as i64);
        let up = sim.up();
        if let Some(&i) = up.get(engine::below(&mut rng, up.len()))
            && let Some(id) = sim.broadcast(i)
        {
            sent.push((second, id));
        }
        sim.run_for(SEC);
        if o.progress && second % 10 == 0 {
            eprintln!("  gossip t = {second:>4} s");
        }
    }
    sim.run_for(10 * SEC);
    let total = sim.up().len().max(1) as f64;
    sent.iter()
        .filter_map(|(s, id)| {
            let t = sim.tracks.remove(id)?;
            // Reached within REACH of sending: messages held across a cut arrive at the heal,
            // which is late, not prompt.
            let prompt = t.delivered.values().filter(|(at, _)| *at <= t.sent_at + REACH).count();
            Some(Second { t_s: *s as f64, success: prompt as f64 / total, probes: 1 })
        })
        .collect()
}

/// A broadcast counts as reaching a node if it arrives within this of being sent.
pub const REACH: Nanos = 5 * SEC;

/// The summary table.
pub fn summary(o: &Options, out: &Outcome) -> Table {
    let mut t = Table::new(&["layer", "cut", "during the cut", "first second after heal", "reconverged after"]);
    let during = |v: &[Second]| {
        let d: Vec<&Second> = v.iter().filter(|s| s.t_s < 0.0).collect();
        d.iter().map(|s| s.success).sum::<f64>() / d.len().max(1) as f64
    };
    let first = |v: &[Second]| v.iter().find(|s| s.t_s >= 0.0).map_or(0.0, |s| s.success);
    let conv = |c: Option<f64>| c.map_or_else(|| "not within the watch".to_string(), |s| format!("{s:.0} s"));
    t.row(vec![
        "routing (cross lookups)".into(),
        format!("{:.0} s", secs(o.partition)),
        format!("{:.1} %", during(&out.routing) * 100.0),
        format!("{:.1} %", first(&out.routing) * 100.0),
        conv(out.routing_reconverged_s),
    ]);
    t.row(vec![
        "gossip (nodes reached within 5 s)".into(),
        format!("{:.0} s", secs(o.partition)),
        format!("{:.1} %", during(&out.gossip) * 100.0),
        format!("{:.1} %", first(&out.gossip) * 100.0),
        conv(out.gossip_reconverged_s),
    ]);
    t
}

fn write(o: &Options, dir: &std::path::Path, out: &Outcome) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&["layer", "t_s", "success", "probes", "seed", "nodes", "partition_s"]);
    for (layer, v) in [("routing", &out.routing), ("gossip", &out.gossip)] {
        for s in v {
            csv.row(vec![
                layer.into(),
                format!("{:.0}", s.t_s),
                format!("{:.4}", s.success),
                s.probes.to_string(),
                o.seed.to_string(),
                o.nodes.to_string(),
                format!("{:.0}", secs(o.partition)),
            ]);
        }
    }
    csv.write(&path("partition.csv"))?;
    let series = vec![
        Series::new("routing: cross-half lookups that find their target", pts(&out.routing)),
        Series::new("gossip: nodes a broadcast reaches", pts(&out.gossip)),
        Series::reference("heal", vec![(0.0, 0.0), (0.0, 100.0)]),
        Series::reference("roadmap: reconverged within 10 s", vec![(10.0, 0.0), (10.0, 100.0)]),
    ];
    let mut plot = Plot::new(
        &format!("A {:.0} s partition into two halves, then healed ({} nodes)", secs(o.partition), o.nodes),
        "seconds relative to the heal",
        "share (%)",
    );
    plot.y_range = Some((0.0, 105.0));
    report::line_plot(&path("partition.svg"), &plot, &series)?;
    Ok(())
}

fn pts(v: &[Second]) -> Vec<(f64, f64)> {
    v.iter().map(|s| (s.t_s, s.success * 100.0)).collect()
}
