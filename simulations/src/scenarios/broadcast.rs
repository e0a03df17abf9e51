//! `broadcast`: reliability, relative message redundancy (RMR) and last delivery hop (LDH) of
//! Plumtree over HyParView when a share of the nodes fails at once, with plain flooding over the
//! same overlay as the baseline: the experiment of Leitão et al., "Epidemic Broadcast Trees"
//! (SRDS 2007) §4.4, on Suprnova's own cores.
//!
//! For each mode and failure share: N nodes join one by one (1 ms apart, each through a random
//! earlier node), shuffle for `stabilize`, and send `warmup` broadcasts 1 s apart so that
//! Plumtree's tree forms. Then the given share of nodes crashes at the same instant, and
//! `messages` broadcasts follow from random live nodes, 1 s apart. Message 1 is the paper's "first
//! message after the failure"; later ones show the overlay healing, which with QUIC's failure
//! detection (idle timeout, see `gossip`) takes 25–30 s; `fast_detect` gives the papers' model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::engine::{self, MS, NetModel, SEC};
use crate::gossip::{GossipSim, Mode, Track};
use crate::report::{self, Csv, Plot, Series, Table};

/// Options of the broadcast scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// Shares of nodes that fail (0..1).
    pub failures: Vec<f64>,
    /// Modes to run.
    pub modes: Vec<Mode>,
    /// Broadcasts before the failure.
    pub warmup: usize,
    /// Broadcasts after the failure, 1 s apart.
    pub messages: usize,
    /// Virtual time of shuffling before the warm-up.
    pub stabilize: crate::engine::Nanos,
    /// The papers' failure detection (a message to a dead peer is reported lost after this)
    /// instead of QUIC's idle timeout.
    pub fast_detect: Option<crate::engine::Nanos>,
    /// Plumtree's graft timeout (`None`: the production default).
    pub graft_timeout: Option<crate::engine::Nanos>,
    /// Progress on stderr.
    pub progress: bool,
}

impl Options {
    /// The paper's experiment: 0–95 % failures, both modes.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Options {
            nodes,
            seed,
            out: None,
            failures: vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
            modes: vec![Mode::Plumtree, Mode::Flood],
            warmup: 10,
            messages: 40,
            stabilize: 300 * SEC,
            fast_detect: None,
            graft_timeout: None,
            progress: false,
        }
    }
}

/// One broadcast after the failure.
#[derive(Clone, Debug)]
pub struct Sent {
    /// Share of live nodes that delivered it.
    pub reliability: f64,
    /// Relative message redundancy.
    pub rmr: f64,
    /// Last delivery hop.
    pub ldh: u16,
    /// Time to the last delivery, ms.
    pub last_ms: f64,
}

/// One (mode, failure share) run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Mode.
    pub mode: Mode,
    /// Share of nodes failed.
    pub failed: f64,
    /// Live nodes after the failure.
    pub live: usize,
    /// The warm-up broadcasts (before the failure).
    pub before: Vec<Sent>,
    /// The broadcasts after the failure, in order.
    pub after: Vec<Sent>,
    /// Mean (active, passive) view sizes before the failure.
    pub views: (f64, f64),
    /// Wall time, s.
    pub wall_s: f64,
    /// Events processed.
    pub events: u64,
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for &mode in &o.modes {
        for &f in &o.failures {
            let r = run_one(o, mode, f);
            if o.progress {
                eprintln!(
                    "broadcast {:?} {:>3.0} % failed: message 1 {:.2} %, last {:.2} %, RMR {:.2}, LDH {} (views {:.1}/{:.1}, wall {:.1} s)",
                    mode,
                    f * 100.0,
                    r.after.first().map_or(0.0, |s| s.reliability * 100.0),
                    r.after.last().map_or(0.0, |s| s.reliability * 100.0),
                    r.after.first().map_or(0.0, |s| s.rmr),
                    r.after.first().map_or(0, |s| s.ldh),
                    r.views.0,
                    r.views.1,
                    r.wall_s
                );
            }
            runs.push(r);
        }
    }
    super::finish(o.out.as_deref(), runs, |dir, v| write(o, dir, v), |v| summary(v))
}

/// Builds the overlay: joins 1 ms apart through random earlier nodes, then `stabilize` of shuffles.
pub fn build(o: &Options, mode: Mode) -> GossipSim {
    let mut sim = GossipSim::new(o.seed, NetModel::new(), mode);
    sim.fast_detect = o.fast_detect;
    if let Some(t) = o.graft_timeout {
        let d = std::time::Duration::from_nanos(t);
        sim.config.plumtree.graft_timeout_1 = d;
        sim.config.plumtree.graft_timeout_2 = d;
    }
    let mut rng = engine::rng(o.seed, "broadcast joins");
    for i in 0..o.nodes {
        let contact = (i > 0).then(|| engine::below(&mut rng, i));
        sim.add_node(contact);
        sim.run_for(MS);
    }
    sim.run_for(o.stabilize);
    sim
}

/// Measures one broadcast over the deliveries within `SETTLE` of its sending (every message gets
/// the same window, whatever was sent after it).
fn measure(sim: &GossipSim, t: &Track) -> Sent {
    let live = sim.up().len().max(1);
    let mut t = t.clone();
    let end = t.sent_at + SETTLE;
    t.delivered.retain(|_, (at, _)| *at <= end);
    let delivered = t.delivered.keys().filter(|&&n| sim.is_up(n as usize)).count();
    Sent {
        reliability: delivered as f64 / live as f64,
        rmr: t.rmr(),
        ldh: t.ldh(),
        last_ms: t.last_delivery() as f64 / MS as f64,
    }
}

/// Sends `n` broadcasts from random live nodes, 1 s apart, then waits `SETTLE` and measures
/// each (deliveries that repair paths take several seconds are counted too).
fn broadcasts(sim: &mut GossipSim, n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Sent> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let up = sim.up();
        let Some(&origin) = up.get(engine::below(rng, up.len())) else { break };
        ids.extend(sim.broadcast(origin));
        sim.run_for(SEC);
    }
    sim.run_for(SETTLE);
    let tracks: Vec<Track> = ids.iter().filter_map(|id| sim.tracks.remove(id)).collect();
    tracks.iter().map(|t| measure(sim, t)).collect()
}

/// Time left after the last broadcast for its deliveries.
const SETTLE: crate::engine::Nanos = 10 * SEC;

fn run_one(o: &Options, mode: Mode, failed: f64) -> Run {
    let wall = Instant::now();
    let mut sim = build(o, mode);
    let mut rng = engine::rng(o.seed, &format!("broadcast {failed}"));
    let up = sim.up();
    let views = up.iter().filter_map(|&i| sim.views(i)).fold((0.0, 0.0), |a, v| (a.0 + v.0 as f64, a.1 + v.1 as f64));
    let views = (views.0 / up.len().max(1) as f64, views.1 / up.len().max(1) as f64);
    let before = broadcasts(&mut sim, o.warmup, &mut rng);
    // Crash a random share of the nodes at once.
    let kill = ((o.nodes as f64) * failed).round() as usize;
    let mut order: Vec<usize> = sim.up();
    for i in (1..order.len()).rev() {
        let j = engine::below(&mut rng, i + 1);
        order.swap(i, j);
    }
    for &i in order.iter().take(kill) {
        sim.kill(i);
    }
    let live = sim.up().len();
    let after = broadcasts(&mut sim, o.messages, &mut rng);
    Run {
        mode,
        failed,
        live,
        before,
        after,
        views,
        wall_s: wall.elapsed().as_secs_f64(),
        events: sim.events_processed(),
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// The summary table.
pub fn summary(runs: &[Run]) -> Table {
    let mut t = Table::new(&[
        "mode",
        "failed",
        "live",
        "reliability: msg 1",
        "msgs 2-10",
        "last 10",
        "all",
        "RMR: before",
        "msg 1",
        "last",
        "LDH: before",
        "msg 1",
        "last",
        "msg 1 last delivery ms",
    ]);
    for r in runs {
        let first = r.after.first();
        let early = r.after.get(1..10.min(r.after.len())).unwrap_or(&[]);
        let late = r.after.get(r.after.len().saturating_sub(10)..).unwrap_or(&[]);
        let pct = |v: &[Sent]| format!("{:.2} %", mean(v.iter().map(|s| s.reliability * 100.0)));
        t.row(vec![
            format!("{:?}", r.mode),
            format!("{:.0} %", r.failed * 100.0),
            r.live.to_string(),
            format!("{:.2} %", first.map_or(0.0, |s| s.reliability * 100.0)),
            pct(early),
            pct(late),
            pct(&r.after),
            format!("{:.2}", r.before.last().map_or(0.0, |s| s.rmr)),
            format!("{:.2}", first.map_or(0.0, |s| s.rmr)),
            format!("{:.2}", r.after.last().map_or(0.0, |s| s.rmr)),
            r.before.last().map_or(0, |s| s.ldh).to_string(),
            first.map_or(0, |s| s.ldh).to_string(),
            r.after.last().map_or(0, |s| s.ldh).to_string(),
            format!("{:.0}", first.map_or(0.0, |s| s.last_ms)),
        ]);
    }
    t
}

/// Plumtree paper, Fig. 6a: first-message reliability after massive failures (read off the
/// figure; all protocols alike), as (failed share, reliability).
const PAPER_FIRST: [(f64, f64); 9] =
    [(0.1, 1.0), (0.2, 1.0), (0.3, 0.998), (0.4, 0.99), (0.5, 0.95), (0.6, 0.56), (0.7, 0.15), (0.8, 0.0), (0.9, 0.0)];

/// HyParView paper, Fig. 2: reliability averaged over 1,000 messages after the failure.
const PAPER_HYPARVIEW_AVG: [(f64, f64); 10] = [
    (0.1, 1.0),
    (0.2, 1.0),
    (0.3, 1.0),
    (0.4, 1.0),
    (0.5, 1.0),
    (0.6, 1.0),
    (0.7, 1.0),
    (0.8, 1.0),
    (0.9, 0.995),
    (0.95, 0.91),
];

/// Writes the CSV of every broadcast and the three plots.
fn write(o: &Options, dir: &std::path::Path, runs: &[Run]) -> Result<()> {
    let path = report::out_dir(dir)?;
    write_csv(o, runs, &path("broadcast.csv"))?;
    plot_reliability(o, runs, &path("broadcast.svg"))?;
    plot_rmr_ldh(o, runs, &path("broadcast-rmr-ldh.svg"))?;
    plot_healing(o, runs, &path("broadcast-healing.svg"))
}

/// A share (0..1) as a percentage.
fn pct(f: f64) -> f64 {
    f * 100.0
}

/// `broadcast.csv`: one row per broadcast, before and after the failure.
fn write_csv(o: &Options, runs: &[Run], file: &Path) -> Result<()> {
    let mut csv = Csv::new(&[
        "mode",
        "failed",
        "phase",
        "message",
        "reliability",
        "rmr",
        "ldh",
        "last_delivery_ms",
        "seed",
        "nodes",
    ]);
    for r in runs {
        for (phase, list) in [("before", &r.before), ("after", &r.after)] {
            for (i, s) in list.iter().enumerate() {
                csv.row(vec![
                    format!("{:?}", r.mode),
                    format!("{:.2}", r.failed),
                    phase.into(),
                    (i + 1).to_string(),
                    format!("{:.5}", s.reliability),
                    format!("{:.4}", s.rmr),
                    s.ldh.to_string(),
                    format!("{:.1}", s.last_ms),
                    o.seed.to_string(),
                    o.nodes.to_string(),
                ]);
            }
        }
    }
    csv.write(file)
}

/// `broadcast.svg`: reliability of the first and the last 10 messages against the papers'.
fn plot_reliability(o: &Options, runs: &[Run], file: &Path) -> Result<()> {
    let mut series = Vec::new();
    for mode in &o.modes {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.mode == *mode).collect();
        series.push(Series::new(
            format!("{mode:?}: first message"),
            mine.iter().map(|r| (pct(r.failed), pct(r.after.first().map_or(0.0, |s| s.reliability)))).collect(),
        ));
        series.push(Series::new(
            format!("{mode:?}: last 10 messages (healed)"),
            mine.iter()
                .map(|r| {
                    let late = r.after.get(r.after.len().saturating_sub(10)..).unwrap_or(&[]);
                    (pct(r.failed), pct(mean(late.iter().map(|s| s.reliability))))
                })
                .collect(),
        ));
    }
    series.push(Series::reference(
        "Plumtree paper, first message (Fig. 6a)",
        PAPER_FIRST.iter().map(|&(f, r)| (pct(f), pct(r))).collect(),
    ));
    series.push(Series::reference(
        "HyParView paper, mean of 1,000 (Fig. 2)",
        PAPER_HYPARVIEW_AVG.iter().map(|&(f, r)| (pct(f), pct(r))).collect(),
    ));
    let mut plot = Plot::new(
        &format!("Broadcast reliability after failures ({} nodes, seed {})", o.nodes, o.seed),
        "nodes failed (%)",
        "live nodes that delivered (%)",
    );
    plot.y_range = Some((0.0, 105.0));
    report::line_plot(file, &plot, &series)
}

/// `broadcast-rmr-ldh.svg`: RMR of the first and last message and LDH of the first, per mode.
fn plot_rmr_ldh(o: &Options, runs: &[Run], file: &Path) -> Result<()> {
    let mut series = Vec::new();
    for mode in &o.modes {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.mode == *mode).collect();
        series.push(Series::new(
            format!("{mode:?}: RMR, first message"),
            mine.iter().map(|r| (pct(r.failed), r.after.first().map_or(0.0, |s| s.rmr))).collect(),
        ));
        series.push(Series::new(
            format!("{mode:?}: RMR, last message"),
            mine.iter().map(|r| (pct(r.failed), r.after.last().map_or(0.0, |s| s.rmr))).collect(),
        ));
        series.push(Series::new(
            format!("{mode:?}: LDH, first message"),
            mine.iter().map(|r| (pct(r.failed), f64::from(r.after.first().map_or(0, |s| s.ldh)))).collect(),
        ));
    }
    let plot = Plot::new(
        &format!("Redundancy (RMR) and last delivery hop (LDH) after failures ({} nodes)", o.nodes),
        "nodes failed (%)",
        "RMR / hops",
    );
    report::line_plot(file, &plot, &series)
}

/// `broadcast-healing.svg` (only with Plumtree runs with failures): reliability of each message
/// after the failure, per failure share.
fn plot_healing(o: &Options, runs: &[Run], file: &Path) -> Result<()> {
    let mut series = Vec::new();
    for r in runs.iter().filter(|r| r.mode == Mode::Plumtree && r.failed > 0.0) {
        series.push(Series::new(
            format!("{:.0} % failed", pct(r.failed)),
            r.after.iter().enumerate().map(|(i, s)| (i as f64, pct(s.reliability))).collect(),
        ));
    }
    if !series.is_empty() {
        let mut plot = Plot::new(
            &format!("Plumtree healing after failures ({} nodes)", o.nodes),
            "seconds after the failure (one broadcast per second)",
            "live nodes that delivered (%)",
        );
        plot.y_range = Some((0.0, 105.0));
        report::line_plot(file, &plot, &series)?;
    }
    Ok(())
}
