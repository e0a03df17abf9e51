//! `adversarial`: lookup success when a share of the nodes collude, with one lookup path and with
//! d disjoint paths (S/Kademlia, Baumgart & Mies 2007, §4.4 and §5).
//!
//! For each colluding share and each path count: a warm network of N nodes in which the chosen
//! share runs the real core with an `Adversary` set:
//! - every `FindNode` (and `FindValue` it cannot serve) is answered with the k colluders closest
//!   to the target, steering lookups into the colluders (S/Kademlia's worst case);
//! - every `FindValue` is answered with a forged record (which honest nodes refuse and count);
//! - records stored on them are never served (withheld).
//!
//! Honest nodes store `values` records, then look up `lookups` random honest node ids and fetch
//! every record. A FIND_NODE succeeds when the target node is among the nodes it returns (as in
//! S/Kademlia); a FIND_VALUE when it returns the genuine record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use suprnova_dht::identity::NodeId;
use suprnova_dht::proto::{DhtEvent, GetMode};
use suprnova_dht::testing::Adversary;
use suprnova_dht::wire::{Key, Record};

use super::lookup::run_while;
use super::{dht_config, millis, warm};
use crate::dht::{DhtSim, Reported, Role};
use crate::engine::{self, MS, NetModel, SEC};
use crate::report::{self, Csv, Plot, Series, Table, percentile};

/// Options of the adversarial scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// Shares of colluding nodes.
    pub shares: Vec<f64>,
    /// Disjoint lookup paths to compare (1 = plain Kademlia).
    pub paths: Vec<usize>,
    /// FIND_NODE lookups per run.
    pub lookups: usize,
    /// Records stored and fetched per run.
    pub values: usize,
    /// Datagram loss.
    pub loss: f64,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// 0, 10, 20, 30 % colluders; 1 and 4 paths.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Options {
            nodes,
            seed,
            out: None,
            shares: vec![0.0, 0.1, 0.2, 0.3],
            paths: vec![1, 4],
            lookups: 500,
            values: 100,
            loss: 0.0,
            progress: false,
        }
    }
}

/// One (share, paths) run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Colluding share.
    pub share: f64,
    /// Disjoint paths.
    pub paths: usize,
    /// FIND_NODE lookups started.
    pub started: usize,
    /// FIND_NODE lookups that finished.
    pub lookups: usize,
    /// ... that returned the target node.
    pub found_target: usize,
    /// Records stored on at least one replica.
    pub stored: usize,
    /// FIND_VALUE lookups.
    pub gets: usize,
    /// ... that returned the genuine record.
    pub got: usize,
    /// Forged records refused by honest nodes (drops counted as bad records, all nodes).
    pub forged_refused: u64,
    /// Requests per FIND_NODE (sorted).
    pub rpcs: Vec<usize>,
    /// FIND_NODE latency, ms (sorted).
    pub latency_ms: Vec<f64>,
    /// Wall time, s.
    pub wall_s: f64,
}

impl Run {
    /// FIND_NODE success rate (over lookups started: one that never finished failed).
    pub fn lookup_success(&self) -> f64 {
        self.found_target as f64 / self.started.max(1) as f64
    }

    /// FIND_VALUE success rate.
    pub fn get_success(&self) -> f64 {
        self.got as f64 / self.gets.max(1) as f64
    }
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for &share in &o.shares {
        for &paths in &o.paths {
            let r = run_one(o, share, paths);
            if o.progress {
                eprintln!(
                    "adversarial {:>3.0} % colluders, {} path(s): find_node {:.1} %, find_value {:.1} % (wall {:.1} s)",
                    share * 100.0,
                    paths,
                    r.lookup_success() * 100.0,
                    r.get_success() * 100.0,
                    r.wall_s
                );
            }
            runs.push(r);
        }
    }
    super::finish(o.out.as_deref(), runs, |dir, v| write(o, dir, v), |v| summary(v))
}

/// Runs one (share, paths) combination: warm network, stores, lookups, gets, tally.
fn run_one(o: &Options, share: f64, paths: usize) -> Run {
    let wall = Instant::now();
    let (mut sim, mut rng, honest) = setup(o, share, paths);
    let mut r = Run { share, paths, ..Run::default() };
    let keys = store_records(o, &mut sim, &mut rng, &honest, &mut r);
    let (finds, gets) = start_lookups(o, &mut sim, &mut rng, &honest, &keys);
    r.gets = gets.len();
    r.started = finds.len();
    let outstanding = finds.len() + gets.len();
    let mut reported = Vec::new();
    run_while(&mut sim, 90 * SEC, &mut reported, outstanding, |e| {
        matches!(e, DhtEvent::FoundNodes { .. } | DhtEvent::GetDone { .. })
    });
    tally(reported, &finds, &gets, &mut r);
    r.forged_refused = honest
        .iter()
        .filter_map(|&i| sim.node(i))
        .map(|d| d.stats().drops.get(suprnova_dht::stats::DropReason::InvalidValue))
        .sum();
    r.rpcs.sort_unstable();
    r.latency_ms.sort_by(f64::total_cmp);
    r.wall_s = wall.elapsed().as_secs_f64();
    r
}

/// FIND_NODE lookups started: (node, query) to (start time, target).
type Finds = BTreeMap<(u32, u64), (u64, NodeId)>;
/// FIND_VALUE gets started: (node, query) to the key fetched.
type Gets = BTreeMap<(u32, u64), Key>;

/// A warm network with the colluders set and a second of virtual time run; returns the simulator,
/// the run's RNG and the honest nodes.
fn setup(o: &Options, share: f64, paths: usize) -> (DhtSim, ChaCha8Rng, Vec<usize>) {
    let mut cfg = dht_config();
    cfg.lookup.paths = paths;
    // The same seed for every path count: same ids, same map, same colluders.
    let mut net = NetModel::new();
    net.loss = o.loss;
    let mut sim = DhtSim::new(o.seed, net, cfg);
    let mut rng = engine::rng(o.seed, &format!("adversarial {share} {paths}"));
    // The same colluders for every path count at one share (their own rng stream).
    let mut pick = engine::rng(o.seed, &format!("colluders {share}"));
    let bad: Vec<bool> = (0..o.nodes).map(|_| engine::unit(&mut pick) < share).collect();
    let role = |i: usize| if bad.get(i).copied().unwrap_or(false) { Role::Liar } else { Role::Honest };
    let nodes = warm(&mut sim, o.nodes, &mut rng, false, role);
    let colluders: Vec<usize> = nodes.iter().copied().filter(|&i| sim.role(i) == Role::Liar).collect();
    let honest: Vec<usize> = nodes.iter().copied().filter(|&i| sim.role(i) == Role::Honest).collect();
    let list = Arc::new(colluders.iter().filter_map(|&i| sim.record(i).cloned()).collect::<Vec<_>>());
    // A forged record: its value does not hash to any key it is offered for.
    let forged = Record::Immutable { value: b"forged by a colluder".as_slice().try_into().unwrap_or_default() };
    for &i in &colluders {
        let a = Adversary { colluders: Some(list.clone()), values: Some(vec![forged.clone()]), ..Adversary::default() };
        sim.set_adversary(i, a);
    }
    sim.run_for(SEC);
    (sim, rng, honest)
}

/// A random honest node (one draw from `rng`).
fn pick_honest(rng: &mut ChaCha8Rng, honest: &[usize]) -> Option<usize> {
    honest.get(engine::below(rng, honest.len())).copied()
}

/// Honest nodes store `o.values` records; counts the stored ones in `r` and returns the keys.
fn store_records(o: &Options, sim: &mut DhtSim, rng: &mut ChaCha8Rng, honest: &[usize], r: &mut Run) -> Vec<Key> {
    let mut reported = Vec::new();
    let mut puts = BTreeMap::new();
    let mut keys = Vec::new();
    for j in 0..o.values {
        let value = engine::derive(o.seed, "adversarial value", j as u64);
        let Ok(bytes) = value.as_slice().try_into() else { continue };
        let record = Record::Immutable { value: bytes };
        let key = Key::for_immutable(&value);
        let Some(from) = pick_honest(rng, honest) else { break };
        if let Some(Ok(q)) = sim.call(from, |d, now| d.put(now, key, record, Duration::from_secs(3600), None)) {
            puts.insert((from as u32, q), key);
        }
        keys.push(key);
        sim.run_for(5 * MS);
    }
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

/// Starts lookups for honest nodes' ids, then a get per key, one every 10 ms from honest nodes.
fn start_lookups(o: &Options, sim: &mut DhtSim, rng: &mut ChaCha8Rng, honest: &[usize], keys: &[Key]) -> (Finds, Gets) {
    let mut finds: Finds = BTreeMap::new();
    for _ in 0..o.lookups {
        let (Some(from), Some(t)) = (pick_honest(rng, honest), pick_honest(rng, honest)) else { break };
        if from == t {
            // A node never returns itself: such a lookup would count as failed.
            continue;
        }
        let target = sim.id(t);
        if let Some(Ok(q)) = sim.call(from, |d, now| d.find_node(now, target)) {
            finds.insert((from as u32, q), (sim.now(), target));
        }
        sim.run_for(10 * MS);
    }
    let mut gets: Gets = BTreeMap::new();
    for key in keys {
        let Some(from) = pick_honest(rng, honest) else { break };
        if let Some(Ok(q)) = sim.call(from, |d, now| d.get(now, *key, GetMode::First)) {
            gets.insert((from as u32, q), *key);
        }
        sim.run_for(10 * MS);
    }
    (finds, gets)
}

/// Scores the lookups' and gets' answers in `reported` into `r`.
fn tally(reported: Vec<Reported>, finds: &Finds, gets: &Gets, r: &mut Run) {
    let mut got: BTreeMap<(u32, u64), ()> = BTreeMap::new();
    for rep in reported {
        let k = |q| (rep.node, q);
        match rep.event {
            DhtEvent::FoundNodes { query, nodes, queries, .. } => {
                let Some(&(start, target)) = finds.get(&k(query)) else { continue };
                r.lookups += 1;
                if nodes.iter().any(|f| f.record.id == target) {
                    r.found_target += 1;
                }
                r.rpcs.push(queries);
                r.latency_ms.push(millis(rep.at.saturating_sub(start)));
            }
            DhtEvent::GotRecord { query, record, .. } => {
                let Some(key) = gets.get(&k(query)) else { continue };
                let genuine = matches!(&record, Record::Immutable { value } if Key::for_immutable(value) == *key);
                if genuine && got.insert(k(query), ()).is_none() {
                    r.got += 1;
                }
            }
            _ => {}
        }
    }
}

/// The summary table.
pub fn summary(runs: &[Run]) -> Table {
    let mut t = Table::new(&[
        "colluders",
        "paths",
        "find_node success",
        "find_value success",
        "stored",
        "rpcs p50",
        "latency p50 / p99 ms",
        "forged records refused",
    ]);
    for r in runs {
        t.row(vec![
            format!("{:.0} %", r.share * 100.0),
            r.paths.to_string(),
            format!("{:.1} % ({}/{})", r.lookup_success() * 100.0, r.found_target, r.started),
            format!("{:.1} % ({}/{})", r.get_success() * 100.0, r.got, r.gets),
            r.stored.to_string(),
            percentile(&r.rpcs, 50.0).to_string(),
            format!("{:.0} / {:.0}", percentile(&r.latency_ms, 50.0), percentile(&r.latency_ms, 99.0)),
            r.forged_refused.to_string(),
        ]);
    }
    t
}

/// S/Kademlia, Fig. 4 (k = 16, N = 10,000): lookup success at 10/20/30 % adversarial nodes, for
/// d = 1 and d = 4 disjoint paths (read off the figure).
const SKAD: [(usize, [(f64, f64); 4]); 2] =
    [(1, [(0.0, 1.0), (0.1, 0.87), (0.2, 0.76), (0.3, 0.62)]), (4, [(0.0, 1.0), (0.1, 1.0), (0.2, 1.0), (0.3, 0.98)])];

fn write(o: &Options, dir: &std::path::Path, runs: &[Run]) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&[
        "colluders",
        "paths",
        "lookups_started",
        "lookups_finished",
        "found_target",
        "gets",
        "got",
        "stored",
        "rpcs_p50",
        "latency_p50_ms",
        "forged_refused",
        "seed",
        "nodes",
    ]);
    for r in runs {
        csv.row(vec![
            format!("{:.2}", r.share),
            r.paths.to_string(),
            r.started.to_string(),
            r.lookups.to_string(),
            r.found_target.to_string(),
            r.gets.to_string(),
            r.got.to_string(),
            r.stored.to_string(),
            percentile(&r.rpcs, 50.0).to_string(),
            format!("{:.1}", percentile(&r.latency_ms, 50.0)),
            r.forged_refused.to_string(),
            o.seed.to_string(),
            o.nodes.to_string(),
        ]);
    }
    csv.write(&path("adversarial.csv"))?;
    let mut series = Vec::new();
    for &p in &o.paths {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.paths == p).collect();
        series.push(Series::new(
            format!("find_node, {p} path(s)"),
            mine.iter().map(|r| (r.share * 100.0, r.lookup_success() * 100.0)).collect(),
        ));
        series.push(Series::new(
            format!("find_value, {p} path(s)"),
            mine.iter().map(|r| (r.share * 100.0, r.get_success() * 100.0)).collect(),
        ));
    }
    for (d, pts) in SKAD {
        series.push(Series::reference(
            format!("S/Kademlia paper, d = {d} (k = 16)"),
            pts.iter().map(|&(f, s)| (f * 100.0, s * 100.0)).collect(),
        ));
    }
    let mut plot = Plot::new(
        &format!("Lookups among colluding nodes ({} nodes, seed {})", o.nodes, o.seed),
        "colluding nodes (%)",
        "successful lookups (%)",
    );
    plot.y_range = Some((0.0, 105.0));
    report::line_plot(&path("adversarial.svg"), &plot, &series)?;
    Ok(())
}
