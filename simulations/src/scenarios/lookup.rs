//! `lookup`: hops, latency and success of FIND_NODE and FIND_VALUE as the network grows.
//!
//! For each size N: grow the network (joins at `joins_per_s`, each from 3 random earlier nodes),
//! store `values` immutable records from random nodes, then start `lookups` FIND_NODE lookups for
//! random ids from random nodes, one every 10 ms, and a FIND_VALUE for every stored record. A
//! FIND_NODE succeeds when the closest node it returns is the true closest live node (computed
//! from the simulator's global view); its overlap is the share of the true 20 closest among the 20
//! it returns. Hops are the core's own count (1 for a node from the routing table, n + 1 for a node
//! learnt from a hop-n answer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use suprnova_dht::identity::NodeId;
use suprnova_dht::proto::{DhtEvent, GetMode};
use suprnova_dht::wire::{Key, Record};

use super::{Growth, Start, dht_config, grow, millis, secs, warm};
use crate::dht::{DhtSim, Reported, Role};
use crate::engine::{self, MS, Nanos, NetModel, SEC};
use crate::report::{self, Csv, Plot, Series, Table, percentile};

/// Options of the lookup scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Network sizes to run, one after the other.
    pub sizes: Vec<usize>,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// FIND_NODE lookups per size.
    pub lookups: usize,
    /// Records stored and then fetched per size.
    pub values: usize,
    /// How the network starts.
    pub start: Start,
    /// Joins per second while growing (live start).
    pub joins_per_s: f64,
    /// Datagram loss.
    pub loss: f64,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// Defaults for `sizes`.
    pub fn new(sizes: Vec<usize>, seed: u64) -> Self {
        Options {
            sizes,
            seed,
            out: None,
            lookups: 1000,
            values: 200,
            start: Start::Warm,
            joins_per_s: 1000.0,
            loss: 0.0,
            progress: false,
        }
    }
}

/// Figures for one network size.
#[derive(Clone, Debug, Default)]
pub struct SizeResult {
    /// Nodes.
    pub nodes: usize,
    /// FIND_NODE lookups started.
    pub find_node_started: usize,
    /// FIND_NODE lookups that finished.
    pub find_node_done: usize,
    /// ... whose closest result was the true closest live node.
    pub find_node_exact: usize,
    /// Mean share of the true 20 closest among the 20 returned.
    pub overlap: f64,
    /// Hops to the closest node, per finished lookup (sorted).
    pub hops: Vec<u32>,
    /// Lookup latency in ms (sorted).
    pub latency_ms: Vec<f64>,
    /// Requests per lookup (sorted).
    pub rpcs: Vec<usize>,
    /// Records stored on at least one replica.
    pub stored: usize,
    /// FIND_VALUE lookups started.
    pub gets: usize,
    /// ... that found the record.
    pub found: usize,
    /// Hop of the node that served each found record (sorted).
    pub value_hops: Vec<u32>,
    /// FIND_VALUE latency to the first record in ms (sorted).
    pub value_latency_ms: Vec<f64>,
    /// Nodes whose bootstrap finished.
    pub bootstrapped: usize,
    /// Wall time of the whole size, seconds.
    pub wall_s: f64,
    /// Events processed.
    pub events: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Resident memory growth while the network was built, per node, bytes.
    pub bytes_per_node: u64,
    /// Peak resident memory of the process so far, bytes.
    pub peak_rss: u64,
    /// Virtual time simulated, seconds.
    pub virtual_s: f64,
    /// Per node on average after growth: routing-table entries, known records outside the table,
    /// channel peers, live sessions.
    pub state: [f64; 4],
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Vec<SizeResult>> {
    let mut results = Vec::new();
    for &n in &o.sizes {
        if o.progress {
            eprintln!("lookup: {n} nodes");
        }
        results.push(run_size(o, n));
    }
    super::finish(o.out.as_deref(), results, |dir, v| write(o, dir, v), |v| summary(v))
}

/// Runs one network size: grow it, store records, look up ids and records, tally the answers.
fn run_size(o: &Options, n: usize) -> SizeResult {
    let wall = Instant::now();
    let rss0 = engine::rss().unwrap_or(0);
    let mut net = NetModel::new();
    net.loss = o.loss;
    // A static network: the neighbour check (pings to the 8 closest every 10 s) only finds dead
    // neighbours and none die here. Off, the lookups and their results are the same and a
    // 100,000-node run needs 40 % fewer events and fits in memory.
    let mut cfg = dht_config();
    cfg.neighbour_check = std::time::Duration::ZERO;
    let mut sim = DhtSim::new(o.seed ^ n as u64, net, cfg);
    let mut rng = engine::rng(o.seed, &format!("lookup {n}"));
    let bootstrapped = build(o, n, &mut sim, &mut rng);
    let rss1 = engine::rss().unwrap_or(0);
    let up: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_up(i)).collect();
    let state = node_state(&sim, &up);
    if o.progress {
        eprintln!(
            "  per node: {:.0} table entries, {:.0} known records, {:.0} channel peers, {:.0} sessions; {:.0} KB",
            state[0],
            state[1],
            state[2],
            state[3],
            rss1.saturating_sub(rss0) as f64 / 1024.0 / n.max(1) as f64
        );
    }
    let mut r = SizeResult {
        nodes: n,
        bootstrapped,
        bytes_per_node: rss1.saturating_sub(rss0) / n.max(1) as u64,
        state,
        ..SizeResult::default()
    };

    let keys = store_records(o, &mut sim, &mut rng, &up, &mut r);
    if o.progress {
        eprintln!(
            "  stored {}/{} records (virtual {:.1} s, wall {:.1} s, {} events)",
            r.stored,
            o.values,
            secs(sim.now()),
            wall.elapsed().as_secs_f64(),
            sim.events_processed()
        );
    }

    let (finds, gets) = start_lookups(o, &mut sim, &mut rng, &up, &keys, &mut r);
    r.find_node_started = finds.len();
    let outstanding = finds.len() + gets.len();
    let mut reported = Vec::new();
    run_while(&mut sim, 60 * SEC, &mut reported, outstanding, |e| {
        matches!(e, DhtEvent::FoundNodes { .. } | DhtEvent::GetDone { .. })
    });
    if o.progress {
        eprintln!(
            "  lookups done (virtual {:.1} s, wall {:.1} s, {} events)",
            secs(sim.now()),
            wall.elapsed().as_secs_f64(),
            sim.events_processed()
        );
    }
    tally(&sim, &up, reported, &finds, &gets, &mut r);
    r.wall_s = wall.elapsed().as_secs_f64();
    r.events = sim.events_processed();
    r.datagrams = sim.stats.sent;
    r.peak_rss = engine::peak_rss().unwrap_or(0);
    r.virtual_s = secs(sim.now());
    r
}

/// FIND_NODE lookups started: (node, query) to (start time, target).
type Finds = BTreeMap<(u32, u64), (Nanos, NodeId)>;
/// FIND_VALUE gets started: (node, query) to start time.
type Gets = BTreeMap<(u32, u64), Nanos>;

/// Builds the network of `n` nodes as `o.start` says; returns how many finished bootstrapping.
fn build(o: &Options, n: usize, sim: &mut DhtSim, rng: &mut ChaCha8Rng) -> usize {
    match o.start {
        Start::Live => {
            let g = Growth { joins_per_s: o.joins_per_s, progress: o.progress, ..Growth::new(n) };
            let joined = grow(sim, &g, rng, |_| Role::Honest);
            joined.bootstrapped.iter().filter(|b| b.is_some()).count()
        }
        Start::Warm => {
            warm(sim, n, rng, o.progress, |_| Role::Honest);
            sim.run_for(SEC);
            n
        }
    }
}

/// Per live node on average: routing-table entries, known records, channel peers, sessions.
fn node_state(sim: &DhtSim, up: &[usize]) -> [f64; 4] {
    let mut state = [0.0; 4];
    for d in up.iter().filter_map(|&i| sim.node(i)) {
        state[0] += d.table().len() as f64;
        state[1] += d.known_records() as f64;
        state[2] += d.channel().peer_count() as f64;
        state[3] += d.channel().session_count() as f64;
    }
    state.map(|x| x / up.len().max(1) as f64)
}

/// Stores `o.values` records from random live nodes, counts the stored ones in `r`; returns the keys.
fn store_records(o: &Options, sim: &mut DhtSim, rng: &mut ChaCha8Rng, up: &[usize], r: &mut SizeResult) -> Vec<Key> {
    let mut puts = BTreeMap::new();
    let mut keys = Vec::new();
    for j in 0..o.values {
        let value = engine::derive(o.seed, "lookup value", j as u64);
        let Ok(bytes) = value.as_slice().try_into() else { continue };
        let record = Record::Immutable { value: bytes };
        let Record::Immutable { value } = &record else { continue };
        let key = Key::for_immutable(value);
        let from = up.get(engine::below(rng, up.len())).copied().unwrap_or(0);
        if let Some(Ok(q)) =
            sim.call(from, |d, now| d.put(now, key, record, std::time::Duration::from_secs(3600), None))
        {
            puts.insert((from as u32, q), j);
        }
        keys.push(key);
        sim.run_for(5 * MS);
    }
    let mut reported = Vec::new();
    run_while(sim, 30 * SEC, &mut reported, puts.len(), |e| matches!(e, DhtEvent::PutDone { .. }));
    for rep in reported.drain(..) {
        if let DhtEvent::PutDone { query, result: Ok(out), .. } = rep.event
            && puts.contains_key(&(rep.node, query))
            && out.stored > 0
        {
            r.stored += 1;
        }
    }
    keys
}

/// Starts `o.lookups` FIND_NODE lookups, then a FIND_VALUE per key, one every 10 ms from random nodes.
fn start_lookups(
    o: &Options,
    sim: &mut DhtSim,
    rng: &mut ChaCha8Rng,
    up: &[usize],
    keys: &[Key],
    r: &mut SizeResult,
) -> (Finds, Gets) {
    let mut finds: Finds = BTreeMap::new();
    let mut gets: Gets = BTreeMap::new();
    for _ in 0..o.lookups {
        let target = NodeId(rng_bytes(rng));
        let from = up.get(engine::below(rng, up.len())).copied().unwrap_or(0);
        if let Some(Ok(q)) = sim.call(from, |d, now| d.find_node(now, target)) {
            finds.insert((from as u32, q), (sim.now(), target));
        }
        sim.run_for(10 * MS);
    }
    for key in keys {
        let from = up.get(engine::below(rng, up.len())).copied().unwrap_or(0);
        if let Some(Ok(q)) = sim.call(from, |d, now| d.get(now, *key, GetMode::First)) {
            gets.insert((from as u32, q), sim.now());
            r.gets += 1;
        }
        sim.run_for(10 * MS);
    }
    (finds, gets)
}

/// Scores the lookups' and gets' answers in `reported` against the global view into `r` (sorted).
fn tally(sim: &DhtSim, up: &[usize], reported: Vec<Reported>, finds: &Finds, gets: &Gets, r: &mut SizeResult) {
    let mut overlap_sum = 0.0;
    let mut got_first: BTreeMap<(u32, u64), ()> = BTreeMap::new();
    for rep in reported {
        let k = |q| (rep.node, q);
        match rep.event {
            DhtEvent::FoundNodes { query, nodes, hops, queries } => {
                let Some(&(start, target)) = finds.get(&k(query)) else { continue };
                r.find_node_done += 1;
                // The truth excludes the asker: a node never returns itself.
                let mut truth = sim.true_closest(&target, up, 21);
                truth.retain(|&i| i != rep.node as usize);
                truth.truncate(20);
                let truth_ids: Vec<NodeId> = truth.iter().map(|&i| sim.id(i)).collect();
                if nodes.first().map(|f| f.record.id) == truth_ids.first().copied() {
                    r.find_node_exact += 1;
                }
                let hit = nodes.iter().take(20).filter(|f| truth_ids.contains(&f.record.id)).count();
                overlap_sum += hit as f64 / truth_ids.len().max(1) as f64;
                r.hops.push(hops);
                r.rpcs.push(queries);
                r.latency_ms.push(millis(rep.at.saturating_sub(start)));
            }
            DhtEvent::GotRecord { query, hop, .. } => {
                let Some(&start) = gets.get(&k(query)) else { continue };
                if got_first.insert(k(query), ()).is_none() {
                    r.found += 1;
                    r.value_hops.push(hop);
                    r.value_latency_ms.push(millis(rep.at.saturating_sub(start)));
                }
            }
            _ => {}
        }
    }
    r.overlap = overlap_sum / r.find_node_done.max(1) as f64;
    r.hops.sort_unstable();
    r.rpcs.sort_unstable();
    r.value_hops.sort_unstable();
    r.latency_ms.sort_by(f64::total_cmp);
    r.value_latency_ms.sort_by(f64::total_cmp);
}

/// Runs `sim` in 100 ms steps for at most `limit`, moving reported events into `into`, until
/// `outstanding` events matching `done` have arrived (each query reports its end once; callers
/// match only events that their own queries produce).
pub fn run_while(
    sim: &mut DhtSim,
    limit: crate::engine::Nanos,
    into: &mut Vec<crate::dht::Reported>,
    mut outstanding: usize,
    done: impl Fn(&DhtEvent) -> bool,
) {
    let end = sim.now() + limit;
    while outstanding > 0 && sim.now() < end {
        sim.run_for(100 * MS);
        for ev in sim.take_reported() {
            if done(&ev.event) {
                outstanding = outstanding.saturating_sub(1);
            }
            into.push(ev);
        }
    }
}

fn rng_bytes(rng: &mut impl rand_core::Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

fn mean_u(v: &[u32]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 }
}

/// The summary table.
pub fn summary(results: &[SizeResult]) -> Table {
    let mut t = Table::new(&[
        "nodes",
        "log2 N",
        "find_node ok",
        "exact closest",
        "top-20 overlap",
        "hops mean / p99",
        "latency p50 / p99 ms",
        "rpcs p50",
        "find_value found",
        "value hops mean",
        "value p50 / p99 ms",
        "wall s",
        "KB/node",
    ]);
    for r in results {
        t.row(vec![
            r.nodes.to_string(),
            format!("{:.1}", (r.nodes as f64).log2()),
            format!("{}/{}", r.find_node_done, r.find_node_started),
            format!("{:.1} %", 100.0 * r.find_node_exact as f64 / r.find_node_done.max(1) as f64),
            format!("{:.1} %", 100.0 * r.overlap),
            format!("{:.2} / {}", mean_u(&r.hops), percentile(&r.hops, 99.0)),
            format!("{:.0} / {:.0}", percentile(&r.latency_ms, 50.0), percentile(&r.latency_ms, 99.0)),
            percentile(&r.rpcs, 50.0).to_string(),
            format!("{}/{}", r.found, r.gets),
            format!("{:.2}", mean_u(&r.value_hops)),
            format!("{:.0} / {:.0}", percentile(&r.value_latency_ms, 50.0), percentile(&r.value_latency_ms, 99.0)),
            format!("{:.1}", r.wall_s),
            format!("{:.1}", r.bytes_per_node as f64 / 1024.0),
        ]);
    }
    t
}

fn write(o: &Options, dir: &std::path::Path, results: &[SizeResult]) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&["nodes", "seed", "kind", "hops", "latency_ms", "rpcs"]);
    for r in results {
        for (i, h) in r.hops.iter().enumerate() {
            // Sorted columns are independent distributions; rows pair ranks, not lookups.
            csv.row(vec![
                r.nodes.to_string(),
                o.seed.to_string(),
                "find_node".into(),
                h.to_string(),
                format!("{:.2}", r.latency_ms.get(i).copied().unwrap_or(0.0)),
                r.rpcs.get(i).copied().unwrap_or(0).to_string(),
            ]);
        }
        for (i, h) in r.value_hops.iter().enumerate() {
            csv.row(vec![
                r.nodes.to_string(),
                o.seed.to_string(),
                "find_value".into(),
                h.to_string(),
                format!("{:.2}", r.value_latency_ms.get(i).copied().unwrap_or(0.0)),
                String::new(),
            ]);
        }
    }
    csv.write(&path("lookup.csv"))?;
    let mut sum = Csv::new(&[
        "nodes",
        "seed",
        "find_node_done",
        "exact_closest",
        "overlap",
        "hops_mean",
        "hops_p50",
        "hops_p99",
        "latency_p50_ms",
        "latency_p99_ms",
        "gets",
        "found",
        "value_hops_mean",
        "wall_s",
        "bytes_per_node",
        "peak_rss",
        "events",
        "datagrams",
    ]);
    for r in results {
        sum.row(vec![
            r.nodes.to_string(),
            o.seed.to_string(),
            r.find_node_done.to_string(),
            r.find_node_exact.to_string(),
            format!("{:.4}", r.overlap),
            format!("{:.3}", mean_u(&r.hops)),
            percentile(&r.hops, 50.0).to_string(),
            percentile(&r.hops, 99.0).to_string(),
            format!("{:.1}", percentile(&r.latency_ms, 50.0)),
            format!("{:.1}", percentile(&r.latency_ms, 99.0)),
            r.gets.to_string(),
            r.found.to_string(),
            format!("{:.3}", mean_u(&r.value_hops)),
            format!("{:.2}", r.wall_s),
            r.bytes_per_node.to_string(),
            r.peak_rss.to_string(),
            r.events.to_string(),
            r.datagrams.to_string(),
        ]);
    }
    sum.write(&path("lookup-summary.csv"))?;

    let xs: Vec<f64> = results.iter().map(|r| r.nodes as f64).collect();
    let mut plot = Plot::new("Lookup hops vs network size", "nodes (log scale)", "hops");
    plot.log_x = xs.len() > 1;
    let series = vec![
        Series::new("find_node mean hops", results.iter().map(|r| (r.nodes as f64, mean_u(&r.hops))).collect()),
        Series::new(
            "find_node p99 hops",
            results.iter().map(|r| (r.nodes as f64, f64::from(percentile(&r.hops, 99.0)))).collect(),
        ),
        Series::new("find_value mean hops", results.iter().map(|r| (r.nodes as f64, mean_u(&r.value_hops))).collect()),
        Series::reference("log2 N", xs.iter().map(|&x| (x, x.log2())).collect()),
    ];
    report::line_plot(&path("lookup.svg"), &plot, &series)?;

    let mut lat = Plot::new("Lookup latency (CDF)", "latency (ms)", "share of lookups");
    lat.y_range = Some((0.0, 1.0));
    let cdf = |v: &[f64]| -> Vec<(f64, f64)> {
        let n = v.len().max(1) as f64;
        let step = (v.len() / 200).max(1);
        v.iter().enumerate().step_by(step).map(|(i, &x)| (x, (i + 1) as f64 / n)).collect()
    };
    let mut series = Vec::new();
    for r in results {
        series.push(Series::new(format!("find_node, {} nodes", r.nodes), cdf(&r.latency_ms)));
        series.push(Series::new(format!("find_value, {} nodes", r.nodes), cdf(&r.value_latency_ms)));
    }
    report::line_plot(&path("lookup-latency.svg"), &lat, &series)?;
    Ok(())
}
