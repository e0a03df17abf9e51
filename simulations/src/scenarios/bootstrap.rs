//! `bootstrap`: how fast joining nodes discover their peers while N nodes join one after another
//! (the roadmap asks for 95 % within 3 s).
//!
//! Nodes join live at `joins_per_s`, each bootstrapping from three random earlier nodes. For every
//! `sample_every`-th joiner the scenario checks, at fixed offsets after its join, two shares of
//! its neighbourhood (the k = 20 live nodes closest to it, from the global view):
//! - **found**: how many of them are in the joiner's routing table;
//! - **known by**: how many of them have the joiner in theirs.
//!
//! A node is "discovered" at an offset when both shares reach 95 %.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use suprnova_dht::proto::Target;

use super::{dht_config, secs};
use crate::dht::{DhtSim, Role};
use crate::engine::{self, MS, Nanos, NetModel, SEC};
use crate::report::{self, Csv, Plot, Series, Table};

/// Offsets after a join at which it is checked, in ms.
pub const OFFSETS_MS: [u64; 9] = [250, 500, 1000, 2000, 3000, 5000, 10_000, 20_000, 30_000];

/// Options of the bootstrap scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes that join.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// Joins per second.
    pub joins_per_s: f64,
    /// Every how many joiners one is followed.
    pub sample_every: usize,
    /// Neighbourhood size checked.
    pub k: usize,
    /// Datagram loss.
    pub loss: f64,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// 100 joins per second, every 10th joiner followed, neighbourhoods of 20.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Options { nodes, seed, out: None, joins_per_s: 100.0, sample_every: 10, k: 20, loss: 0.0, progress: false }
    }
}

/// Shares at one offset, over the followed joiners.
#[derive(Clone, Debug, Default)]
pub struct AtOffset {
    /// Offset after the join, ms.
    pub offset_ms: u64,
    /// Joiners checked.
    pub checked: usize,
    /// Mean share of its neighbourhood in the joiner's table.
    pub found: f64,
    /// Mean share of its neighbourhood that has the joiner in its table.
    pub known_by: f64,
    /// Joiners with both shares at 95 % or more.
    pub discovered: usize,
}

/// The scenario's result.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Nodes that joined.
    pub nodes: usize,
    /// Nodes whose bootstrap query finished.
    pub bootstrapped: usize,
    /// Bootstrap durations, ms (sorted).
    pub bootstrap_ms: Vec<f64>,
    /// Shares at each offset.
    pub offsets: Vec<AtOffset>,
    /// Wall time, s.
    pub wall_s: f64,
    /// Events processed.
    pub events: u64,
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Outcome> {
    let wall = Instant::now();
    let mut net = NetModel::new();
    net.loss = o.loss;
    let mut sim = DhtSim::new(o.seed, net, dht_config());
    let mut rng = engine::rng(o.seed, "bootstrap");
    let gap = (SEC as f64 / o.joins_per_s.max(1e-3)) as Nanos;
    let mut checks: BTreeMap<(Nanos, usize), usize> = BTreeMap::new();
    let mut offsets: Vec<AtOffset> =
        OFFSETS_MS.iter().map(|&ms| AtOffset { offset_ms: ms, ..AtOffset::default() }).collect();
    let mut started: BTreeMap<(u32, u64), Nanos> = BTreeMap::new();
    let mut out = Outcome { nodes: o.nodes, ..Outcome::default() };
    let mut next_report = 0.1;
    for n in 0..o.nodes {
        let i = sim.add_node(Role::Honest);
        let want = 3.min(i);
        let mut seeds = Vec::new();
        for _ in 0..want * 4 {
            if seeds.len() >= want {
                break;
            }
            let s = engine::below(&mut rng, i);
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let targets: Vec<Target> = seeds.iter().filter_map(|&s| sim.record(s).cloned().map(Target::Record)).collect();
        if !targets.is_empty()
            && let Some(Ok(q)) = sim.call(i, |d, now| d.bootstrap(now, targets))
        {
            started.insert((i as u32, q), sim.now());
        }
        if i > 0 && n % o.sample_every.max(1) == 0 {
            for (j, &ms) in OFFSETS_MS.iter().enumerate() {
                checks.insert((sim.now() + ms * MS, i), j);
            }
        }
        // Run to the next join, stopping at every check on the way (so a check happens when due).
        let next_join = sim.now() + gap;
        loop {
            let t = checks.keys().next().map_or(next_join, |k| k.0).min(next_join);
            sim.run_until(t);
            due(&mut sim, &mut checks, &mut offsets, o.k);
            if t >= next_join {
                break;
            }
        }
        collect(&mut sim, &mut started, &mut out);
        if o.progress && (n + 1) as f64 / o.nodes as f64 >= next_report {
            eprintln!(
                "  joined {:>7} / {} (virtual {:.1} s, wall {:.1} s, {} events)",
                n + 1,
                o.nodes,
                secs(sim.now()),
                wall.elapsed().as_secs_f64(),
                sim.events_processed()
            );
            next_report += 0.1;
        }
    }
    while let Some(&(t, _)) = checks.keys().next() {
        sim.run_until(t);
        due(&mut sim, &mut checks, &mut offsets, o.k);
        collect(&mut sim, &mut started, &mut out);
    }
    for a in &mut offsets {
        a.found /= a.checked.max(1) as f64;
        a.known_by /= a.checked.max(1) as f64;
    }
    out.offsets = offsets;
    out.bootstrap_ms.sort_by(f64::total_cmp);
    out.wall_s = wall.elapsed().as_secs_f64();
    out.events = sim.events_processed();
    super::finish(o.out.as_deref(), out, |dir, v| write(o, dir, v), summary)
}

fn collect(sim: &mut DhtSim, started: &mut BTreeMap<(u32, u64), Nanos>, out: &mut Outcome) {
    for r in sim.take_reported() {
        if let suprnova_dht::proto::DhtEvent::Bootstrapped { query, .. } = r.event
            && let Some(t) = started.remove(&(r.node, query))
        {
            out.bootstrapped += 1;
            out.bootstrap_ms.push(r.at.saturating_sub(t) as f64 / MS as f64);
        }
    }
}

/// Runs the checks that are due.
fn due(sim: &mut DhtSim, checks: &mut BTreeMap<(Nanos, usize), usize>, offsets: &mut [AtOffset], k: usize) {
    let now = sim.now();
    let ready: Vec<((Nanos, usize), usize)> = checks.range(..(now + 1, 0)).map(|(a, b)| (*a, *b)).collect();
    for (key, j) in ready {
        checks.remove(&key);
        let x = key.1;
        let up: Vec<usize> = (0..sim.len()).filter(|&i| i != x && sim.is_up(i)).collect();
        let hood = sim.true_closest(&sim.id(x), &up, k);
        let me = sim.id(x);
        let Some(d) = sim.node(x) else { continue };
        let found = hood.iter().filter(|&&p| d.table().get(&sim.id(p)).is_some()).count();
        let known_by = hood.iter().filter(|&&p| sim.node(p).is_some_and(|pd| pd.table().get(&me).is_some())).count();
        let n = hood.len().max(1) as f64;
        if let Some(a) = offsets.get_mut(j) {
            a.checked += 1;
            a.found += found as f64 / n;
            a.known_by += known_by as f64 / n;
            if found as f64 / n >= 0.95 && known_by as f64 / n >= 0.95 {
                a.discovered += 1;
            }
        }
    }
}

/// The summary table.
pub fn summary(out: &Outcome) -> Table {
    let mut t =
        Table::new(&["after join", "joiners checked", "neighbourhood found", "known by neighbourhood", "≥ 95 % both"]);
    for a in &out.offsets {
        t.row(vec![
            format!("{:.2} s", a.offset_ms as f64 / 1000.0),
            a.checked.to_string(),
            format!("{:.1} %", a.found * 100.0),
            format!("{:.1} %", a.known_by * 100.0),
            format!("{:.1} %", 100.0 * a.discovered as f64 / a.checked.max(1) as f64),
        ]);
    }
    t
}

fn write(o: &Options, dir: &std::path::Path, out: &Outcome) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv =
        Csv::new(&["offset_ms", "checked", "found", "known_by", "discovered", "seed", "nodes", "joins_per_s"]);
    for a in &out.offsets {
        csv.row(vec![
            a.offset_ms.to_string(),
            a.checked.to_string(),
            format!("{:.4}", a.found),
            format!("{:.4}", a.known_by),
            a.discovered.to_string(),
            o.seed.to_string(),
            o.nodes.to_string(),
            format!("{}", o.joins_per_s),
        ]);
    }
    csv.write(&path("bootstrap.csv"))?;
    let pts = |f: &dyn Fn(&AtOffset) -> f64| {
        out.offsets.iter().map(|a| (a.offset_ms as f64 / 1000.0, f(a) * 100.0)).collect::<Vec<_>>()
    };
    let series = vec![
        Series::new("neighbourhood in the joiner's table", pts(&|a| a.found)),
        Series::new("neighbourhood that knows the joiner", pts(&|a| a.known_by)),
        Series::new("joiners with both ≥ 95 %", pts(&|a| a.discovered as f64 / a.checked.max(1) as f64)),
        Series::reference("roadmap: 95 % within 3 s", vec![(0.0, 95.0), (3.0, 95.0)]),
    ];
    let mut plot = Plot::new(
        &format!("Peer discovery after joining ({} nodes joining at {}/s, seed {})", o.nodes, o.joins_per_s, o.seed),
        "seconds after the join",
        "share (%)",
    );
    plot.y_range = Some((0.0, 105.0));
    report::line_plot(&path("bootstrap.svg"), &plot, &series)?;
    Ok(())
}
