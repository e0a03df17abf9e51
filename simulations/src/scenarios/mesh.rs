//! `mesh`: the mesh core (Life world, input pool, Simplex agreement, catch-up) with 4–100 members and 0–40 % byzantine ones (silent or
//! equivocating), under the latency model: finality latency and throughput, safety checked after
//! every event. Past a third byzantine (f = ⌊(n−1)/3⌋), blocks stop being finalised (liveness needs
//! n − f honest votes) while honest members still never finalise two blocks at one height.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use suprnova_mesh::simplex::Config;

use crate::engine::{self, MS, Nanos, SEC};
use crate::mesh::{Behaviour, MeshSim};
use crate::report::{self, Csv, Plot, Series, Table, percentile};

/// Options of the mesh scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// Member counts.
    pub sizes: Vec<usize>,
    /// Byzantine shares.
    pub shares: Vec<f64>,
    /// Byzantine behaviours to run.
    pub behaviours: Vec<Behaviour>,
    /// Seed.
    pub seed: u64,
    /// Output directory (nothing written when `None`).
    pub out: Option<PathBuf>,
    /// Virtual time per run.
    pub duration: Nanos,
    /// Simplex timeout (3Δ).
    pub timeout: Duration,
    /// Progress on stderr.
    pub progress: bool,
    /// An input (one cell set) signed and gossiped this often.
    pub input_every: Nanos,
}

impl Options {
    /// 4–100 members, 0–40 % byzantine, both behaviours, 20 s each, the production timeout.
    pub fn new(sizes: Vec<usize>, seed: u64) -> Self {
        Options {
            sizes,
            shares: vec![0.0, 0.1, 0.2, 0.33, 0.4],
            behaviours: vec![Behaviour::Silent, Behaviour::Equivocating],
            seed,
            out: None,
            duration: 20 * SEC,
            timeout: Config::default().timeout,
            progress: false,
            input_every: 50 * MS,
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Members.
    pub n: usize,
    /// Byzantine members.
    pub byzantine: usize,
    /// Their behaviour.
    pub behaviour: Behaviour,
    /// Faults tolerated, ⌊(n − 1)/3⌋.
    pub f: usize,
    /// Heights every honest member finalised.
    pub finalized: usize,
    /// Finality latency to the median honest member, ms (sorted).
    pub median_ms: Vec<f64>,
    /// Finality latency to the last honest member, ms (sorted).
    pub last_ms: Vec<f64>,
    /// Safety violations (must be 0).
    pub violations: u64,
    /// Equivocation evidence produced by honest members.
    pub evidence: u64,
    /// Heights honest members skipped (final blocks they never saw).
    pub gaps: u64,
    /// Messages sent.
    pub messages: u64,
    /// Inputs signed and gossiped (one every `Options::input_every`).
    pub inputs_submitted: u64,
    /// Inputs applied in certified rounds (the fewest over honest members).
    pub inputs_applied: u64,
    /// Catch-up reads honest members asked for (one each at the start).
    pub fetches: u64,
    /// Proposals honest members refused after re-executing them, by reason.
    pub refused: std::collections::BTreeMap<&'static str, u64>,
    /// Virtual seconds run.
    pub virtual_s: f64,
    /// Wall time, s.
    pub wall_s: f64,
}

impl Run {
    /// Blocks finalised per second.
    pub fn blocks_per_s(&self) -> f64 {
        self.finalized as f64 / self.virtual_s.max(1e-9)
    }
}

/// Runs the scenario.
pub fn run(o: &Options) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for &n in &o.sizes {
        for &share in &o.shares {
            let byzantine = ((n as f64) * share).floor() as usize;
            let kinds: Vec<Behaviour> = if byzantine == 0 { vec![Behaviour::Silent] } else { o.behaviours.clone() };
            for behaviour in kinds {
                // Small meshes round several shares to the same count: run each once.
                if !done.insert((n, byzantine, format!("{behaviour:?}"))) {
                    continue;
                }
                let r = run_one(o, n, byzantine, behaviour);
                if o.progress {
                    eprintln!(
                        "mesh n = {n:>3}, {byzantine:>2} {:?} (f = {}): {} blocks, {:.1}/s, p50 {:.0} ms, {} violations, {} evidence (wall {:.1} s)",
                        behaviour,
                        r.f,
                        r.finalized,
                        r.blocks_per_s(),
                        percentile(&r.median_ms, 50.0),
                        r.violations,
                        r.evidence,
                        r.wall_s
                    );
                }
                runs.push(r);
            }
        }
    }
    super::finish(o.out.as_deref(), runs, |dir, v| write(o, dir, v), |v| summary(v))
}

/// One run: `byzantine` members chosen at random behave as `behaviour`.
pub fn run_one(o: &Options, n: usize, byzantine: usize, behaviour: Behaviour) -> Run {
    let wall = Instant::now();
    let mut rng = engine::rng(o.seed, &format!("mesh roles {n} {byzantine}"));
    let mut roles = vec![Behaviour::Honest; n];
    let mut placed = 0;
    for _ in 0..n * 8 {
        if placed >= byzantine {
            break;
        }
        let i = engine::below(&mut rng, n);
        if let Some(r) = roles.get_mut(i)
            && *r == Behaviour::Honest
        {
            *r = behaviour;
            placed += 1;
        }
    }
    let cfg = Config { timeout: o.timeout, forward_notarizations: false };
    let f = n.saturating_sub(1) / 3;
    let Some(mut sim) = MeshSim::new(o.seed ^ n as u64, roles, cfg) else {
        return Run {
            n,
            byzantine,
            behaviour,
            f,
            finalized: 0,
            median_ms: Vec::new(),
            last_ms: Vec::new(),
            violations: 0,
            evidence: 0,
            gaps: 0,
            messages: 0,
            inputs_submitted: 0,
            inputs_applied: 0,
            fetches: 0,
            refused: Default::default(),
            virtual_s: 0.0,
            wall_s: 0.0,
        };
    };
    sim.submit_every(o.input_every);
    sim.run_until(o.duration);
    let fin = sim.finality();
    let mut median_ms: Vec<f64> = fin.iter().map(|&(_, m, _)| m as f64 / MS as f64).collect();
    let mut last_ms: Vec<f64> = fin.iter().map(|&(_, _, l)| l as f64 / MS as f64).collect();
    median_ms.sort_by(f64::total_cmp);
    last_ms.sort_by(f64::total_cmp);
    Run {
        n,
        byzantine,
        behaviour,
        f,
        finalized: fin.len(),
        median_ms,
        last_ms,
        violations: sim.violations,
        evidence: sim.evidence(),
        gaps: sim.gaps,
        messages: sim.messages,
        inputs_submitted: sim.inputs_submitted,
        inputs_applied: sim.inputs_applied(),
        fetches: sim.fetches,
        refused: sim.refused(),
        virtual_s: o.duration as f64 / SEC as f64,
        wall_s: wall.elapsed().as_secs_f64(),
    }
}

/// The summary table.
pub fn summary(runs: &[Run]) -> Table {
    let mut t = Table::new(&[
        "members",
        "byzantine",
        "f",
        "blocks final",
        "blocks/s",
        "finality p50 / p99 ms (median member)",
        "p99 ms (last member)",
        "safety violations",
        "evidence",
        "gaps",
        "inputs applied",
    ]);
    for r in runs {
        t.row(vec![
            r.n.to_string(),
            if r.byzantine == 0 { "0".into() } else { format!("{} {:?}", r.byzantine, r.behaviour).to_lowercase() },
            r.f.to_string(),
            r.finalized.to_string(),
            format!("{:.2}", r.blocks_per_s()),
            format!("{:.0} / {:.0}", percentile(&r.median_ms, 50.0), percentile(&r.median_ms, 99.0)),
            format!("{:.0}", percentile(&r.last_ms, 99.0)),
            r.violations.to_string(),
            r.evidence.to_string(),
            r.gaps.to_string(),
            format!("{} / {}", r.inputs_applied, r.inputs_submitted),
        ]);
    }
    t
}

fn write(o: &Options, dir: &std::path::Path, runs: &[Run]) -> Result<()> {
    let path = report::out_dir(dir)?;
    let mut csv = Csv::new(&[
        "members",
        "byzantine",
        "behaviour",
        "f",
        "finalized",
        "blocks_per_s",
        "p50_ms",
        "p99_ms",
        "last_p99_ms",
        "violations",
        "evidence",
        "messages",
        "inputs_submitted",
        "inputs_applied",
        "fetches",
        "batches_refused",
        "seed",
        "timeout_ms",
    ]);
    for r in runs {
        csv.row(vec![
            r.n.to_string(),
            r.byzantine.to_string(),
            format!("{:?}", r.behaviour).to_lowercase(),
            r.f.to_string(),
            r.finalized.to_string(),
            format!("{:.3}", r.blocks_per_s()),
            format!("{:.1}", percentile(&r.median_ms, 50.0)),
            format!("{:.1}", percentile(&r.median_ms, 99.0)),
            format!("{:.1}", percentile(&r.last_ms, 99.0)),
            r.violations.to_string(),
            r.evidence.to_string(),
            r.messages.to_string(),
            r.inputs_submitted.to_string(),
            r.inputs_applied.to_string(),
            r.fetches.to_string(),
            r.refused.values().sum::<u64>().to_string(),
            o.seed.to_string(),
            o.timeout.as_millis().to_string(),
        ]);
    }
    csv.write(&path("mesh.csv"))?;
    let mut series = Vec::new();
    for &share in &o.shares {
        for b in &o.behaviours {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| {
                    ((r.n as f64) * share).floor() as usize == r.byzantine && (r.byzantine == 0 || r.behaviour == *b)
                })
                .collect();
            if share == 0.0 && *b != Behaviour::Silent {
                continue;
            }
            let label = if share == 0.0 {
                "all honest".to_string()
            } else {
                format!("{:.0} % {}", share * 100.0, format!("{b:?}").to_lowercase())
            };
            series
                .push(Series::new(label, mine.iter().map(|r| (r.n as f64, percentile(&r.median_ms, 50.0))).collect()));
        }
    }
    let plot = Plot::new(
        &format!("Mesh finality latency (median member, p50) vs members (timeout {} ms)", o.timeout.as_millis()),
        "members",
        "ms from proposal to finality",
    );
    report::line_plot(&path("mesh.svg"), &plot, &series)?;
    let mut series = Vec::new();
    for &n in &o.sizes {
        for b in &o.behaviours {
            let mine: Vec<&Run> = runs.iter().filter(|r| r.n == n && (r.byzantine == 0 || r.behaviour == *b)).collect();
            series.push(Series::new(
                format!("{n} members, {}", format!("{b:?}").to_lowercase()),
                mine.iter().map(|r| (100.0 * r.byzantine as f64 / n as f64, r.blocks_per_s())).collect(),
            ));
        }
    }
    let plot = Plot::new(
        "Mesh throughput vs byzantine share (liveness stops past a third)",
        "byzantine members (%)",
        "blocks finalised per second",
    );
    report::line_plot(&path("mesh-liveness.svg"), &plot, &series)?;
    Ok(())
}
