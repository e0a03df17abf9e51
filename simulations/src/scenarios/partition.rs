//! `partition`: how long routing and gossip take to reconverge after a partition heals (the
//! roadmap asks < 10 s), and whether gossip loses anything across it.
//!
//! The map is cut into two halves (west and east) for each of the `partitions` lengths in turn
//! (a fresh network each time), then healed.
//! - **Routing**: a warm DHT network; every second `probes` lookups start from random nodes for
//!   random nodes' ids in the *other* half. A lookup succeeds when it returns its target. The
//!   routing layer has reconverged at the first second after the heal from which every later
//!   second's cross lookups all succeed.
//! - **Gossip**: the real topic core on every node (HyParView + Plumtree, ordering, membership
//!   through the DHT member set); one broadcast per second from a random node. The gossip layer
//!   has reconverged at the first broadcast after the heal from which every later one reaches
//!   every node within 5 s. Also counted, by the end of the watch: how many of the messages
//!   published during the cut reached the nodes of the other side, and how many nodes delivered
//!   every message published from 10 s after the heal on.
//!
//! A cut shorter than QUIC's idle timeout (10 s) leaves gossip connections open: they carry on
//! when it heals. Longer cuts close them, and HyParView drops the unreachable peers; the topic
//! core's membership (member-set reads, mixing after the DHT sees former peers again) and
//! Plumtree's catch-up for new neighbours join the halves again.

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
    /// How long the cut lasts (one run per length).
    pub partitions: Vec<Nanos>,
    /// Run the routing layer.
    pub routing: bool,
    /// Run the gossip layer.
    pub gossip: bool,
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
        Options {
            nodes,
            seed,
            out: None,
            partitions: vec![60 * SEC],
            routing: true,
            gossip: true,
            after: 60 * SEC,
            probes: 20,
            loss: 0.0,
            progress: false,
        }
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

/// What gossip lost across one cut, counted at the end of the watch.
#[derive(Clone, Debug, Default)]
pub struct Heal {
    /// Messages published during the cut.
    pub cut_messages: usize,
    /// Share of (message published during the cut, live node on the other side) deliveries made.
    pub cut_crossed: f64,
    /// Seconds after the heal at which the last of those deliveries was made.
    pub cut_crossed_by_s: Option<f64>,
    /// Messages published from 10 s after the heal on.
    pub after_messages: usize,
    /// Share of live nodes that delivered every one of them.
    pub after_all: f64,
    /// The lowest share of live nodes one of them reached.
    pub after_worst: f64,
}

/// One cut's result.
#[derive(Clone, Debug, Default)]
pub struct Cut {
    /// How long it lasted, s.
    pub partition_s: f64,
    /// Routing: cross lookups per second.
    pub routing: Vec<Second>,
    /// Gossip: one broadcast per second, share of all nodes reached within 5 s.
    pub gossip: Vec<Second>,
    /// Seconds after the heal until routing reconverged (`None`: not within the watch).
    pub routing_reconverged_s: Option<f64>,
    /// Seconds after the heal until gossip reconverged.
    pub gossip_reconverged_s: Option<f64>,
    /// What gossip lost.
    pub heal: Heal,
}

/// The scenario's result.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// One per cut length.
    pub cuts: Vec<Cut>,
    /// Wall time, s.
    pub wall_s: f64,
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Outcome> {
    let wall = Instant::now();
    let mut cuts = Vec::new();
    for &partition in &o.partitions {
        let routing = if o.routing { routing(o, partition) } else { Vec::new() };
        let (gossip, heal) = if o.gossip { gossip(o, partition) } else { (Vec::new(), Heal::default()) };
        cuts.push(Cut {
            partition_s: secs(partition),
            routing_reconverged_s: reconverged(&routing, 1.0),
            gossip_reconverged_s: reconverged(&gossip, 1.0),
            routing,
            gossip,
            heal,
        });
    }
    let out = Outcome { cuts, wall_s: wall.elapsed().as_secs_f64() };
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

fn routing(o: &Options, partition: Nanos) -> Vec<Second> {
    let mut net = NetModel::new();
    net.loss = o.loss;
    let mut sim = DhtSim::new(o.seed, net, dht_config());
    let mut rng = engine::rng(o.seed, "partition routing");
    let nodes = warm(&mut sim, o.nodes, &mut rng, o.progress, |_| Role::Honest);
    sim.run_for(5 * SEC);
    sim.net.partition(2);
    let cut = sim.now();
    let heal = cut + partition;
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

fn gossip(o: &Options, partition: Nanos) -> (Vec<Second>, Heal) {
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
    let sides: Vec<u8> = (0..sim.len()).map(|i| sim.net.group_of(i)).collect();
    let heal = sim.now() + partition;
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
            eprintln!("  gossip {:.0} s cut, t = {second:>4} s", secs(partition));
        }
    }
    sim.run_for(10 * SEC);
    let live = sim.up();
    let total = live.len().max(1) as f64;
    let seconds = sent
        .iter()
        .filter_map(|(s, id)| {
            let t = sim.tracks.get(id)?;
            // Reached within REACH of sending: messages held across a cut arrive at the heal,
            // which is late, not prompt.
            let prompt = t.delivered.values().filter(|(at, _)| *at <= t.sent_at + REACH).count();
            Some(Second { t_s: *s as f64, success: prompt as f64 / total, probes: 1 })
        })
        .collect();
    (seconds, heal_figures(&sim, &sent, &live, &sides, heal))
}

/// What crossed the cut, and who delivered everything after the heal.
fn heal_figures(
    sim: &crate::gossip::GossipSim,
    sent: &[(i64, [u8; 32])],
    live: &[usize],
    sides: &[u8],
    heal: Nanos,
) -> Heal {
    let side_of = |i: usize| sides.get(i).copied().unwrap_or(0);
    let mut h = Heal { after_worst: 1.0, ..Heal::default() };
    let (mut owed, mut made, mut last) = (0usize, 0usize, None::<Nanos>);
    let mut missed: BTreeMap<u32, usize> = BTreeMap::new();
    for (second, id) in sent {
        let Some(t) = sim.tracks.get(id) else { continue };
        if *second < 0 {
            h.cut_messages += 1;
            let side = side_of(t.origin as usize);
            for &i in live.iter().filter(|&&i| side_of(i) != side) {
                owed += 1;
                if let Some((at, _)) = t.delivered.get(&(i as u32)) {
                    made += 1;
                    last = last.max(Some(*at));
                }
            }
        } else if *second >= 10 {
            h.after_messages += 1;
            let got = live.iter().filter(|&&i| t.delivered.contains_key(&(i as u32))).count();
            h.after_worst = h.after_worst.min(got as f64 / live.len().max(1) as f64);
            for &i in live.iter().filter(|&&i| !t.delivered.contains_key(&(i as u32))) {
                *missed.entry(i as u32).or_default() += 1;
            }
        }
    }
    h.cut_crossed = if owed == 0 { 1.0 } else { made as f64 / owed as f64 };
    h.cut_crossed_by_s = last.map(|at| (at as f64 - heal as f64) / SEC as f64);
    h.after_all = (live.len() - missed.len()) as f64 / live.len().max(1) as f64;
    h
}

/// A broadcast counts as reaching a node if it arrives within this of sending.
pub const REACH: Nanos = 5 * SEC;

/// The summary table.
pub fn summary(o: &Options, out: &Outcome) -> Table {
    let mut t = Table::new(&[
        "nodes",
        "cut",
        "routing: first s after heal",
        "reconverged",
        "gossip: during the cut",
        "first s after heal",
        "reconverged",
        "cut's messages that crossed",
        "by",
        "nodes with every message from heal + 10 s",
        "worst such message",
    ]);
    let during = |v: &[Second]| {
        let d: Vec<&Second> = v.iter().filter(|s| s.t_s < 0.0).collect();
        d.iter().map(|s| s.success).sum::<f64>() / d.len().max(1) as f64
    };
    let first = |v: &[Second]| v.iter().find(|s| s.t_s >= 0.0).map(|s| pct(s.success)).unwrap_or_else(|| "-".into());
    let conv = |c: Option<f64>| c.map_or_else(|| "not within the watch".to_string(), |s| format!("{s:.0} s"));
    for c in &out.cuts {
        let h = &c.heal;
        t.row(vec![
            o.nodes.to_string(),
            format!("{:.0} s", c.partition_s),
            first(&c.routing),
            if o.routing { conv(c.routing_reconverged_s) } else { "-".into() },
            pct(during(&c.gossip)),
            first(&c.gossip),
            conv(c.gossip_reconverged_s),
            format!("{} ({} msgs)", pct(h.cut_crossed), h.cut_messages),
            h.cut_crossed_by_s.map_or_else(|| "-".into(), |s| format!("heal + {s:.1} s")),
            format!("{} ({} msgs)", pct_fine(h.after_all), h.after_messages),
            pct_fine(h.after_worst),
        ]);
    }
    t
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn pct_fine(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn write(o: &Options, dir: &std::path::Path, out: &Outcome) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&["layer", "t_s", "success", "probes", "seed", "nodes", "partition_s"]);
    for c in &out.cuts {
        for (layer, v) in [("routing", &c.routing), ("gossip", &c.gossip)] {
            for s in v {
                csv.row(vec![
                    layer.into(),
                    format!("{:.0}", s.t_s),
                    format!("{:.4}", s.success),
                    s.probes.to_string(),
                    o.seed.to_string(),
                    o.nodes.to_string(),
                    format!("{:.0}", c.partition_s),
                ]);
            }
        }
    }
    csv.write(&path("partition.csv"))?;
    let mut heal = Csv::new(&[
        "nodes",
        "partition_s",
        "cut_messages",
        "cut_crossed",
        "cut_crossed_by_s",
        "after_messages",
        "after_all",
        "after_worst",
        "routing_reconverged_s",
        "gossip_reconverged_s",
    ]);
    let opt = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v:.1}"));
    for c in &out.cuts {
        let h = &c.heal;
        heal.row(vec![
            o.nodes.to_string(),
            format!("{:.0}", c.partition_s),
            h.cut_messages.to_string(),
            format!("{:.5}", h.cut_crossed),
            opt(h.cut_crossed_by_s),
            h.after_messages.to_string(),
            format!("{:.5}", h.after_all),
            format!("{:.5}", h.after_worst),
            opt(c.routing_reconverged_s),
            opt(c.gossip_reconverged_s),
        ]);
    }
    heal.write(&path("partition-heal.csv"))?;
    let mut series = Vec::new();
    for c in &out.cuts {
        if o.routing {
            series.push(Series::new(
                format!("routing, {:.0} s cut: cross-half lookups that find their target", c.partition_s),
                pts(&c.routing),
            ));
        }
        if o.gossip {
            series.push(Series::new(
                format!("gossip, {:.0} s cut: nodes a broadcast reaches within 5 s", c.partition_s),
                pts(&c.gossip),
            ));
        }
    }
    series.push(Series::reference("heal", vec![(0.0, 0.0), (0.0, 100.0)]));
    series.push(Series::reference("roadmap: reconverged within 10 s", vec![(10.0, 0.0), (10.0, 100.0)]));
    let cuts: Vec<String> = out.cuts.iter().map(|c| format!("{:.0} s", c.partition_s)).collect();
    let mut plot = Plot::new(
        &format!("Partitions into two halves ({}), then healed ({} nodes)", cuts.join(", "), o.nodes),
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
