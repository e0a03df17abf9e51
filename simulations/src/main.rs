//! `suprnova-sim`: run one scenario of the deterministic simulator.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use suprnova_sim::scenarios;

// The cores allocate and free small buffers for every datagram; mimalloc runs the simulator
// noticeably faster than the system allocator and returns freed memory more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "suprnova-sim", about = "Deterministic simulator of Suprnova's protocol cores", version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone, Debug)]
struct Common {
    /// Network size; several sizes separated by commas where the scenario compares sizes.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    nodes: Vec<usize>,
    /// Seed: the same seed and options give bit-identical results.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the CSV and SVG files.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Datagram loss probability (0..1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hops, latency and success of FIND_NODE / FIND_VALUE vs network size.
    Lookup {
        #[command(flatten)]
        common: Common,
        /// FIND_NODE lookups per size.
        #[arg(long, default_value_t = 1000)]
        lookups: usize,
        /// Records stored, then fetched with FIND_VALUE, per size.
        #[arg(long, default_value_t = 200)]
        values: usize,
        /// How the network starts: `warm` (converged routing tables, restored) or `live` (nodes
        /// join one by one and bootstrap).
        #[arg(long, default_value = "warm")]
        start: scenarios::Start,
        /// Joins per second of virtual time while the network grows (live start).
        #[arg(long, default_value_t = 1000.0)]
        joins_per_s: f64,
    },
    /// Lookup success with 10/20/30 % colluding nodes, with 1 path vs d disjoint paths.
    Adversarial {
        #[command(flatten)]
        common: Common,
        /// Percentages of colluding nodes.
        #[arg(long, value_delimiter = ',', default_value = "0,10,20,30")]
        colluders: Vec<f64>,
        /// Disjoint lookup paths to compare.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        paths: Vec<usize>,
        /// FIND_NODE lookups per run.
        #[arg(long, default_value_t = 500)]
        lookups: usize,
        /// Records stored and fetched per run.
        #[arg(long, default_value_t = 100)]
        values: usize,
    },
    /// Lookup success and record availability over time under churn, r = 3 and r = 20.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Replication factors to compare.
        #[arg(long, value_delimiter = ',', default_value = "3,20")]
        replication: Vec<usize>,
        /// Mean session time in seconds (exponentially distributed).
        #[arg(long, default_value_t = 600)]
        session_s: u64,
        /// Seconds of churn.
        #[arg(long, default_value_t = 600)]
        duration_s: u64,
        /// Records stored at the start.
        #[arg(long, default_value_t = 100)]
        values: usize,
    },
    /// Share of its neighbourhood a joining node finds (and is found by) over time as N join.
    Bootstrap {
        #[command(flatten)]
        common: Common,
        /// Joins per second of virtual time.
        #[arg(long, default_value_t = 100.0)]
        joins_per_s: f64,
        /// Follow every n-th joiner.
        #[arg(long, default_value_t = 10)]
        sample_every: usize,
    },
    /// Time for routing and gossip to reconverge after a partition into two halves heals.
    Partition {
        #[command(flatten)]
        common: Common,
        /// Seconds the partition lasts (comma-separated: one run per length).
        #[arg(long, value_delimiter = ',', default_values_t = vec![60u64])]
        partition_s: Vec<u64>,
        /// Layers to run (comma-separated: routing, gossip).
        #[arg(long, value_delimiter = ',', default_values_t = vec!["routing".to_string(), "gossip".to_string()])]
        layers: Vec<String>,
        /// Seconds watched after the heal.
        #[arg(long, default_value_t = 60)]
        after_s: u64,
    },
    /// The mesh core (Life world, inputs, Simplex agreement, catch-up) with 4-100 members and 0-40 %
    /// byzantine ones: finality, safety and inputs applied.
    Mesh {
        #[command(flatten)]
        common: Common,
        /// Percentages of byzantine members.
        #[arg(long, value_delimiter = ',', default_value = "0,10,20,33,40")]
        byzantine: Vec<f64>,
        /// Byzantine behaviours: silent, equivocating.
        #[arg(long, value_delimiter = ',', default_value = "silent,equivocating")]
        behaviours: Vec<String>,
        /// Virtual seconds per run.
        #[arg(long, default_value_t = 20)]
        duration_s: u64,
        /// Simplex timeout (3 delta) in ms (default: the production 500 ms).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// One input (a cell set) signed and gossiped every this many ms.
        #[arg(long, default_value_t = 50)]
        input_every_ms: u64,
    },
    /// Plumtree + HyParView reliability, RMR and LDH vs share of failed nodes, and flooding.
    Broadcast {
        #[command(flatten)]
        common: Common,
        /// Percentages of nodes that fail at once.
        #[arg(long, value_delimiter = ',', default_value = "0,10,20,30,40,50,60,70,80,90,95")]
        failures: Vec<f64>,
        /// Modes: plumtree, flood.
        #[arg(long, value_delimiter = ',', default_value = "plumtree,flood")]
        modes: Vec<String>,
        /// Broadcasts after the failure, 1 s apart.
        #[arg(long, default_value_t = 40)]
        messages: usize,
        /// The papers' failure detection: a message to a dead peer is reported lost after this
        /// many ms (default: QUIC's idle timeout of 10 s, keep-alive 2 s, as the daemon).
        #[arg(long)]
        fast_detect_ms: Option<u64>,
        /// Plumtree graft timeout in ms (default: the production 40 ms).
        #[arg(long)]
        graft_ms: Option<u64>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let wall = std::time::Instant::now();
    match cli.scenario {
        Scenario::Lookup { common, lookups, values, start, joins_per_s } => {
            run_lookup(&common, lookups, values, start, joins_per_s)?;
            done(&common, wall);
        }
        Scenario::Adversarial { common, colluders, paths, lookups, values } => {
            run_adversarial(&common, &colluders, paths, lookups, values)?;
            done(&common, wall);
        }
        Scenario::Churn { common, replication, session_s, duration_s, values } => {
            run_churn(&common, replication, session_s, duration_s, values)?;
            done(&common, wall);
        }
        Scenario::Bootstrap { common, joins_per_s, sample_every } => {
            run_bootstrap(&common, joins_per_s, sample_every)?;
            done(&common, wall);
        }
        Scenario::Partition { common, partition_s, layers, after_s } => {
            run_partition(&common, &partition_s, &layers, after_s)?;
            done(&common, wall);
        }
        Scenario::Mesh { common, byzantine, behaviours, duration_s, timeout_ms, input_every_ms } => {
            run_mesh(&common, &byzantine, &behaviours, duration_s, timeout_ms, input_every_ms)?;
            done(&common, wall);
        }
        Scenario::Broadcast { common, failures, modes, messages, fast_detect_ms, graft_ms } => {
            run_broadcast(&common, &failures, &modes, messages, fast_detect_ms, graft_ms)?;
            done(&common, wall);
        }
    }
    Ok(())
}

/// Checks the `lookup` flags and runs the scenario.
fn run_lookup(common: &Common, lookups: usize, values: usize, start: scenarios::Start, joins_per_s: f64) -> Result<()> {
    check_loss(common.loss)?;
    anyhow::ensure!(common.nodes.iter().all(|&n| n >= 2), "--nodes must be at least 2");
    let mut o = scenarios::lookup::Options::new(common.nodes.clone(), common.seed);
    o.out = Some(common.out.clone());
    o.lookups = lookups;
    o.values = values;
    o.joins_per_s = joins_per_s;
    o.start = start;
    o.loss = common.loss;
    o.progress = !common.quiet;
    scenarios::lookup::run(&o)?;
    Ok(())
}

/// Checks the `adversarial` flags and runs the scenario.
fn run_adversarial(common: &Common, colluders: &[f64], paths: Vec<usize>, lookups: usize, values: usize) -> Result<()> {
    check_loss(common.loss)?;
    let mut o = scenarios::adversarial::Options::new(first_size(common)?, common.seed);
    o.out = Some(common.out.clone());
    o.loss = common.loss;
    o.shares = colluders.iter().map(|p| p / 100.0).collect();
    anyhow::ensure!(o.shares.iter().all(|f| (0.0..1.0).contains(f)), "--colluders are percentages in [0, 100)");
    anyhow::ensure!(paths.iter().all(|&p| (1..=16).contains(&p)), "--paths must be 1..=16");
    o.paths = paths;
    o.lookups = lookups;
    o.values = values;
    o.progress = !common.quiet;
    scenarios::adversarial::run(&o)?;
    Ok(())
}

/// Checks the `churn` flags and runs the scenario.
fn run_churn(common: &Common, replication: Vec<usize>, session_s: u64, duration_s: u64, values: usize) -> Result<()> {
    check_loss(common.loss)?;
    let mut o = scenarios::churn::Options::new(first_size(common)?, common.seed);
    o.out = Some(common.out.clone());
    o.loss = common.loss;
    anyhow::ensure!(replication.iter().all(|&r| (1..=20).contains(&r)), "--replication must be 1..=20");
    anyhow::ensure!(session_s > 0 && duration_s > 0, "--session-s and --duration-s must be positive");
    o.replication = replication;
    o.session = nanos(session_s, suprnova_sim::engine::SEC, "--session-s")?;
    o.duration = nanos(duration_s, suprnova_sim::engine::SEC, "--duration-s")?;
    o.values = values;
    o.progress = !common.quiet;
    scenarios::churn::run(&o)?;
    Ok(())
}

/// Checks the `bootstrap` flags and runs the scenario.
fn run_bootstrap(common: &Common, joins_per_s: f64, sample_every: usize) -> Result<()> {
    anyhow::ensure!(joins_per_s > 0.0, "--joins-per-s must be positive");
    check_loss(common.loss)?;
    let mut o = scenarios::bootstrap::Options::new(first_size(common)?, common.seed);
    o.out = Some(common.out.clone());
    o.loss = common.loss;
    o.joins_per_s = joins_per_s;
    o.sample_every = sample_every.max(1);
    o.progress = !common.quiet;
    scenarios::bootstrap::run(&o)?;
    Ok(())
}

/// Checks the `partition` flags and runs the scenario.
fn run_partition(common: &Common, partition_s: &[u64], layers: &[String], after_s: u64) -> Result<()> {
    anyhow::ensure!(after_s > 0, "--after-s must be positive");
    check_loss(common.loss)?;
    let mut o = scenarios::partition::Options::new(first_size(common)?, common.seed);
    o.out = Some(common.out.clone());
    o.loss = common.loss;
    anyhow::ensure!(!partition_s.is_empty(), "--partition-s needs at least one length");
    o.partitions =
        partition_s.iter().map(|&p| nanos(p, suprnova_sim::engine::SEC, "--partition-s")).collect::<Result<_>>()?;
    for l in layers {
        anyhow::ensure!(l == "routing" || l == "gossip", "--layers takes routing and gossip, not {l:?}");
    }
    o.routing = layers.iter().any(|l| l == "routing");
    o.gossip = layers.iter().any(|l| l == "gossip");
    o.after = nanos(after_s, suprnova_sim::engine::SEC, "--after-s")?;
    o.progress = !common.quiet;
    scenarios::partition::run(&o)?;
    Ok(())
}

/// Checks the `mesh` flags and runs the scenario.
fn run_mesh(
    common: &Common,
    byzantine: &[f64],
    behaviours: &[String],
    duration_s: u64,
    timeout_ms: Option<u64>,
    input_every_ms: u64,
) -> Result<()> {
    anyhow::ensure!(common.nodes.iter().all(|&n| (1..=256).contains(&n)), "mesh members must be 1..=256");
    anyhow::ensure!(byzantine.iter().all(|p| (0.0..100.0).contains(p)), "--byzantine are percentages in [0, 100)");
    no_loss(common, "mesh")?;
    let mut o = scenarios::mesh::Options::new(common.nodes.clone(), common.seed);
    o.out = Some(common.out.clone());
    o.shares = byzantine.iter().map(|p| p / 100.0).collect();
    o.behaviours = behaviours
        .iter()
        .map(|b| match b.as_str() {
            "silent" => Ok(suprnova_sim::mesh::Behaviour::Silent),
            "equivocating" => Ok(suprnova_sim::mesh::Behaviour::Equivocating),
            other => Err(anyhow::anyhow!("unknown behaviour {other:?} (silent or equivocating)")),
        })
        .collect::<Result<_>>()?;
    o.duration = nanos(duration_s, suprnova_sim::engine::SEC, "--duration-s")?;
    if let Some(ms) = timeout_ms {
        o.timeout = std::time::Duration::from_millis(ms);
    }
    anyhow::ensure!(input_every_ms >= 1, "--input-every-ms must be at least 1");
    o.input_every = input_every_ms * suprnova_sim::engine::MS;
    o.progress = !common.quiet;
    scenarios::mesh::run(&o)?;
    Ok(())
}

/// Checks the `broadcast` flags and runs the scenario.
fn run_broadcast(
    common: &Common,
    failures: &[f64],
    modes: &[String],
    messages: usize,
    fast_detect_ms: Option<u64>,
    graft_ms: Option<u64>,
) -> Result<()> {
    no_loss(common, "broadcast")?;
    let mut o = scenarios::broadcast::Options::new(first_size(common)?, common.seed);
    o.out = Some(common.out.clone());
    o.failures = failures.iter().map(|p| p / 100.0).collect();
    anyhow::ensure!(o.failures.iter().all(|f| (0.0..1.0).contains(f)), "--failures are percentages in [0, 100)");
    o.modes = modes
        .iter()
        .map(|m| match m.as_str() {
            "plumtree" => Ok(suprnova_sim::gossip::Mode::Plumtree),
            "flood" => Ok(suprnova_sim::gossip::Mode::Flood),
            other => Err(anyhow::anyhow!("unknown mode {other:?} (plumtree or flood)")),
        })
        .collect::<Result<_>>()?;
    o.messages = messages;
    o.fast_detect = fast_detect_ms.map(|ms| nanos(ms, suprnova_sim::engine::MS, "--fast-detect-ms")).transpose()?;
    o.graft_timeout = graft_ms.map(|ms| nanos(ms, suprnova_sim::engine::MS, "--graft-ms")).transpose()?;
    o.progress = !common.quiet;
    scenarios::broadcast::run(&o)?;
    Ok(())
}

fn first_size(common: &Common) -> Result<usize> {
    let n = common.nodes.first().copied().unwrap_or(0);
    anyhow::ensure!(n >= 2, "--nodes must be at least 2");
    Ok(n)
}

/// `n` units of `unit` nanoseconds, or an error instead of an overflow.
fn nanos(n: u64, unit: u64, flag: &str) -> Result<u64> {
    n.checked_mul(unit).ok_or_else(|| anyhow::anyhow!("{flag} {n} is too large"))
}

/// Scenarios whose network has no datagram loss to apply refuse `--loss` rather than ignore it.
fn no_loss(common: &Common, scenario: &str) -> Result<()> {
    anyhow::ensure!(
        common.loss == 0.0,
        "--loss applies to the DHT scenarios; {scenario} runs on reliable streams (QUIC) and has none"
    );
    Ok(())
}

fn check_loss(loss: f64) -> Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&loss), "--loss must be in [0, 1), got {loss}");
    Ok(())
}

fn done(common: &Common, wall: std::time::Instant) {
    let peak = suprnova_sim::engine::peak_rss().map_or("?".into(), suprnova_sim::report::mb);
    println!("wall {:.1} s, peak RSS {peak} MB; files in {}", wall.elapsed().as_secs_f64(), common.out.display());
}
