//! `churn`: lookup success and record availability over time while nodes leave and join, with
//! replication r = 3 and r = 20.
//!
//! A warm network of N nodes stores `values` records (one publisher each, TTL 1 h). Then every
//! node's session ends after an exponentially distributed time (mean `session`); it leaves
//! without a word (its state is dropped) and a fresh node with a new identity joins in its place,
//! bootstrapping live from three random live nodes, so N stays constant. Every `interval` the
//! scenario measures:
//! - lookup success: FIND_NODE for random live nodes' ids, success when the target is returned;
//! - fetch success: FIND_VALUE for random stored keys from random live nodes;
//! - availability: the share of records that at least one live node holds (global view).
//!
//! Departed publishers no longer republish; what keeps their records alive is the replicas'
//! own repair (a node that sees its replica set change stores the record on the new closest).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use suprnova_dht::identity::NodeId;
use suprnova_dht::proto::{DhtEvent, GetMode, Target};
use suprnova_dht::wire::{Key, Record};

use super::lookup::run_while;
use super::{dht_config, secs, warm};
use crate::dht::{DhtSim, Reported, Role};
use crate::engine::{self, MS, Nanos, NetModel, SEC};
use crate::report::{self, Csv, Plot, Series, Table};

/// Options of the churn scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes (kept constant).
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// Replication factors to compare.
    pub replication: Vec<usize>,
    /// Mean session time.
    pub session: Nanos,
    /// How long churn runs.
    pub duration: Nanos,
    /// Measurement interval.
    pub interval: Nanos,
    /// Records stored at the start.
    pub values: usize,
    /// Lookups and fetches per measurement.
    pub probes: usize,
    /// Datagram loss.
    pub loss: f64,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// r = 3 and 20, sessions of 10 minutes on average, 10 minutes of churn.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Options {
            nodes,
            seed,
            out: None,
            replication: vec![3, 20],
            session: 600 * SEC,
            duration: 600 * SEC,
            interval: 20 * SEC,
            values: 100,
            probes: 20,
            loss: 0.0,
            progress: false,
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since churn began.
    pub t_s: f64,
    /// Nodes that left so far.
    pub departed: usize,
    /// FIND_NODE success share.
    pub lookup: f64,
    /// FIND_VALUE success share.
    pub fetch: f64,
    /// Share of records held by at least one live node.
    pub available: f64,
}

/// One replication factor's run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// r.
    pub replication: usize,
    /// Records stored at the start (on at least one replica).
    pub stored: usize,
    /// The measurements.
    pub samples: Vec<Sample>,
    /// Wall time, s.
    pub wall_s: f64,
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for &r in &o.replication {
        let run = run_one(o, r);
        if o.progress {
            let last = run.samples.last().cloned().unwrap_or_default();
            eprintln!(
                "churn r = {r}: after {:.0} s ({} left), lookups {:.1} %, fetches {:.1} %, available {:.1} % (wall {:.1} s)",
                last.t_s,
                last.departed,
                last.lookup * 100.0,
                last.fetch * 100.0,
                last.available * 100.0,
                run.wall_s
            );
        }
        runs.push(run);
    }
    super::finish(o.out.as_deref(), runs, |dir, v| write(o, dir, v), |v| summary(v))
}

fn run_one(o: &Options, replication: usize) -> Run {
    let wall = Instant::now();
    let mut cfg = dht_config();
    cfg.replication = replication;
    let mut net = NetModel::new();
    net.loss = o.loss;
    let mut sim = DhtSim::new(o.seed, net, cfg);
    let mut rng = engine::rng(o.seed, &format!("churn {replication}"));
    let live: BTreeSet<usize> = warm(&mut sim, o.nodes, &mut rng, false, |_| Role::Honest).into_iter().collect();
    sim.run_for(SEC);
    let mut run = Run { replication, ..Run::default() };
    let mut reported: Vec<Reported> = Vec::new();

    // Records, each from a random node; only those stored somewhere are tracked.
    let mut puts: BTreeMap<(u32, u64), Key> = BTreeMap::new();
    for j in 0..o.values {
        let value = engine::derive(o.seed, "churn value", j as u64);
        let Ok(bytes) = value.as_slice().try_into() else { continue };
        let key = Key::for_immutable(&value);
        let from = pick(&live, &mut rng);
        let record = Record::Immutable { value: bytes };
        if let Some(Ok(q)) = sim.call(from, |d, now| d.put(now, key, record, Duration::from_secs(3600), None)) {
            puts.insert((from as u32, q), key);
        }
        sim.run_for(5 * MS);
    }
    run_while(&mut sim, 30 * SEC, &mut reported, puts.len(), |e| matches!(e, DhtEvent::PutDone { .. }));
    let keys: Vec<Key> = reported
        .drain(..)
        .filter_map(|r| match &r.event {
            DhtEvent::PutDone { query, result: Ok(out) } if out.stored > 0 => puts.get(&(r.node, *query)).copied(),
            _ => None,
        })
        .collect();
    run.stored = keys.len();

    // Session ends, in time order.
    let start = sim.now();
    let end = start + o.duration;
    let mut churn = Churn { ends: BTreeMap::new(), live, departed: 0 };
    let firsts: Vec<usize> = churn.live.iter().copied().collect();
    for i in firsts {
        churn.ends.insert((start + session(o, &mut rng), i), ());
    }
    let mut next_sample = start + o.interval;
    while next_sample <= end {
        churn.advance(o, &mut sim, &mut rng, next_sample);
        sim.take_reported();
        next_sample += o.interval;
        let s = measure(o, &mut sim, &mut churn, &keys, &mut rng, start);
        if o.progress {
            eprintln!(
                "  r = {replication}, t = {:>4.0} s: {} left, lookups {:.0} %, fetches {:.0} %, available {:.1} %",
                s.t_s,
                s.departed,
                s.lookup * 100.0,
                s.fetch * 100.0,
                s.available * 100.0
            );
        }
        run.samples.push(s);
    }
    run.wall_s = wall.elapsed().as_secs_f64();
    run
}

/// The churn process: session ends in time order, and who is up.
struct Churn {
    ends: BTreeMap<(Nanos, usize), ()>,
    live: BTreeSet<usize>,
    departed: usize,
}

impl Churn {
    /// Runs the network to `until`, ending sessions when due: each leaver vanishes and a fresh
    /// node joins live in its place, bootstrapping from three random live nodes.
    fn advance(&mut self, o: &Options, sim: &mut DhtSim, rng: &mut rand_chacha::ChaCha8Rng, until: Nanos) {
        loop {
            let next = self.ends.keys().next().map_or(u64::MAX, |k| k.0);
            sim.run_until(next.min(until));
            if next > until {
                return;
            }
            while let Some((&(at, i), _)) = self.ends.iter().next() {
                if at > sim.now() {
                    break;
                }
                self.ends.remove(&(at, i));
                sim.kill(i);
                self.live.remove(&i);
                self.departed += 1;
                let n = sim.add_node(Role::Honest);
                let seeds: Vec<Target> =
                    (0..3).filter_map(|_| sim.record(pick(&self.live, rng)).cloned().map(Target::Record)).collect();
                let _ = sim.call(n, |d, now| d.bootstrap(now, seeds));
                self.live.insert(n);
                self.ends.insert((sim.now() + session(o, rng), n), ());
            }
        }
    }
}

fn session(o: &Options, rng: &mut rand_chacha::ChaCha8Rng) -> Nanos {
    engine::exponential(rng, o.session as f64) as Nanos
}

fn pick(live: &BTreeSet<usize>, rng: &mut rand_chacha::ChaCha8Rng) -> usize {
    live.iter().nth(engine::below(rng, live.len())).copied().unwrap_or(0)
}

/// Starts the probes (lookups for live nodes' ids, fetches of stored keys), keeps churning while
/// they run (at most 60 s), and counts live replicas from the global view.
fn measure(
    o: &Options,
    sim: &mut DhtSim,
    churn: &mut Churn,
    keys: &[Key],
    rng: &mut rand_chacha::ChaCha8Rng,
    start: Nanos,
) -> Sample {
    let now = sim.now();
    let mut finds: BTreeMap<(u32, u64), NodeId> = BTreeMap::new();
    let mut gets: BTreeMap<(u32, u64), ()> = BTreeMap::new();
    for _ in 0..o.probes {
        let (from, to) = (pick(&churn.live, rng), pick(&churn.live, rng));
        let target = sim.id(to);
        if from != to
            && let Some(Ok(q)) = sim.call(from, |d, now| d.find_node(now, target))
        {
            finds.insert((from as u32, q), target);
        }
        if let Some(&key) = keys.get(engine::below(rng, keys.len())) {
            let from = pick(&churn.live, rng);
            if let Some(Ok(q)) = sim.call(from, |d, now| d.get(now, key, GetMode::First)) {
                gets.insert((from as u32, q), ());
            }
        }
    }
    let mut outstanding = finds.len() + gets.len();
    let (mut found, mut fetched) = (0usize, 0usize);
    let deadline = now + 60 * SEC;
    while outstanding > 0 && sim.now() < deadline {
        churn.advance(o, sim, rng, sim.now() + 100 * MS);
        for r in sim.take_reported() {
            match r.event {
                DhtEvent::FoundNodes { query, nodes, .. } => {
                    if let Some(t) = finds.get(&(r.node, query)) {
                        outstanding = outstanding.saturating_sub(1);
                        if nodes.iter().any(|f| f.record.id == *t) {
                            found += 1;
                        }
                    }
                }
                DhtEvent::GetDone { query, result, .. } if gets.contains_key(&(r.node, query)) => {
                    outstanding = outstanding.saturating_sub(1);
                    if result.is_ok() {
                        fetched += 1;
                    }
                }
                _ => {}
            }
        }
    }
    let t = sim.instant_at(sim.now());
    let held: BTreeSet<Key> = churn
        .live
        .iter()
        .filter_map(|&i| sim.node(i))
        .flat_map(|d| d.store().items().filter(|(_, it)| it.expires > t).map(|(k, _)| *k).collect::<Vec<_>>())
        .collect();
    let available = keys.iter().filter(|k| held.contains(k)).count();
    Sample {
        t_s: secs(now.saturating_sub(start)),
        departed: churn.departed,
        lookup: found as f64 / finds.len().max(1) as f64,
        fetch: fetched as f64 / gets.len().max(1) as f64,
        available: available as f64 / keys.len().max(1) as f64,
    }
}

/// The summary table.
pub fn summary(runs: &[Run]) -> Table {
    let mut t =
        Table::new(&["r", "stored", "departed", "lookups (mean / min)", "fetches (mean / min)", "available at end"]);
    for r in runs {
        let mean = |f: fn(&Sample) -> f64| r.samples.iter().map(f).sum::<f64>() / r.samples.len().max(1) as f64;
        let min = |f: fn(&Sample) -> f64| r.samples.iter().map(f).fold(1.0f64, f64::min);
        t.row(vec![
            r.replication.to_string(),
            r.stored.to_string(),
            r.samples.last().map_or(0, |s| s.departed).to_string(),
            format!("{:.1} % / {:.1} %", mean(|s| s.lookup) * 100.0, min(|s| s.lookup) * 100.0),
            format!("{:.1} % / {:.1} %", mean(|s| s.fetch) * 100.0, min(|s| s.fetch) * 100.0),
            format!("{:.1} %", r.samples.last().map_or(0.0, |s| s.available) * 100.0),
        ]);
    }
    t
}

fn write(o: &Options, dir: &std::path::Path, runs: &[Run]) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&["r", "t_s", "departed", "lookup", "fetch", "available", "seed", "nodes", "session_s"]);
    for r in runs {
        for s in &r.samples {
            csv.row(vec![
                r.replication.to_string(),
                format!("{:.1}", s.t_s),
                s.departed.to_string(),
                format!("{:.4}", s.lookup),
                format!("{:.4}", s.fetch),
                format!("{:.4}", s.available),
                o.seed.to_string(),
                o.nodes.to_string(),
                format!("{:.0}", secs(o.session)),
            ]);
        }
    }
    csv.write(&path("churn.csv"))?;
    let mut series = Vec::new();
    for r in runs {
        let pts = |f: fn(&Sample) -> f64| r.samples.iter().map(|s| (s.t_s, f(s) * 100.0)).collect::<Vec<_>>();
        series.push(Series::new(format!("r = {}: lookups", r.replication), pts(|s| s.lookup)));
        series.push(Series::new(format!("r = {}: fetches", r.replication), pts(|s| s.fetch)));
        series.push(Series::new(format!("r = {}: records held", r.replication), pts(|s| s.available)));
    }
    let mut plot = Plot::new(
        &format!("Under churn ({} nodes, mean session {:.0} s, seed {})", o.nodes, secs(o.session), o.seed),
        "seconds of churn",
        "success / availability (%)",
    );
    plot.y_range = Some((0.0, 105.0));
    report::line_plot(&path("churn.svg"), &plot, &series)?;
    Ok(())
}
