//! The experiments. Each takes its options, runs on virtual time, writes a CSV and an SVG into its
//! output directory, prints a summary table, and returns its figures (the tests assert on them).

pub mod adversarial;
pub mod bootstrap;
pub mod broadcast;
pub mod churn;
pub mod lookup;
pub mod mesh;
pub mod partition;

use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use suprnova_dht::proto::{DhtConfig, DhtEvent, Target};

use crate::dht::{DhtSim, Role};
use crate::engine::{self, Nanos, SEC};

/// How a DHT network is grown before a scenario measures it.
#[derive(Clone, Debug)]
pub struct Growth {
    /// Nodes to join.
    pub nodes: usize,
    /// Joins per second of virtual time.
    pub joins_per_s: f64,
    /// Already-joined nodes (picked at random) each newcomer bootstraps from.
    pub seeds_per_join: usize,
    /// Virtual time to let the network settle after the last join.
    pub settle: Nanos,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Growth {
    /// `nodes` joining at 1,000 per second, 3 seeds each, 5 s to settle.
    pub fn new(nodes: usize) -> Self {
        Growth { nodes, joins_per_s: 1000.0, seeds_per_join: 3, settle: 5 * SEC, progress: false }
    }
}

/// When each node joined and when its bootstrap finished (if it did).
#[derive(Clone, Debug, Default)]
pub struct Joined {
    /// Join start per node.
    pub started: Vec<Nanos>,
    /// Bootstrap end per node (`None`: not finished or failed).
    pub bootstrapped: Vec<Option<Nanos>>,
}

/// Grows a network on `sim`: node 0 starts alone, every later node bootstraps from
/// `seeds_per_join` random earlier nodes that are up. Roles are assigned by `role(i)`.
pub fn grow(sim: &mut DhtSim, g: &Growth, rng: &mut ChaCha8Rng, role: impl Fn(usize) -> Role) -> Joined {
    let wall = Instant::now();
    let first = sim.len();
    let gap = (SEC as f64 / g.joins_per_s.max(1e-3)) as Nanos;
    let mut joined = Joined::default();
    let mut queries: std::collections::BTreeMap<(u32, u64), usize> = Default::default();
    let mut next_report = 0.1;
    for n in 0..g.nodes {
        let i = sim.add_node(role(first + n));
        joined.started.push(sim.now());
        joined.bootstrapped.push(None);
        // Seeds: earlier nodes that are up, picked at random (adversaries may be picked too).
        let want = g.seeds_per_join.min(i);
        let mut seeds = Vec::new();
        for _ in 0..want * 4 {
            if seeds.len() >= want {
                break;
            }
            let s = engine::below(rng, i);
            if sim.is_up(s) && !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let targets: Vec<Target> = seeds.iter().filter_map(|&s| sim.record(s).cloned().map(Target::Record)).collect();
        if !targets.is_empty()
            && let Some(Ok(q)) = sim.call(i, |d, now| d.bootstrap(now, targets))
        {
            queries.insert((i as u32, q), n);
        }
        sim.run_for(gap);
        collect_bootstraps(sim, &mut queries, &mut joined);
        if g.progress && (n + 1) as f64 / g.nodes as f64 >= next_report {
            let (mut lookups, mut rpcs, mut hs, mut served, mut pend) = (0, 0, 0, 0, 0);
            for d in (0..sim.len()).filter_map(|i| sim.node(i)) {
                lookups += d.dht_stats().lookups;
                rpcs += d.dht_stats().rpcs_sent;
                hs += d.stats().handshakes_initiated;
                served += d.stats().records_served;
                pend += d.pending_requests();
            }
            eprintln!(
                "  joined {:>7} / {} nodes  (virtual {:.1} s, wall {:.1} s, {} events; lookups {lookups} rpcs {rpcs} handshakes {hs} records served {served} pending {pend} datagrams {})",
                n + 1,
                g.nodes,
                sim.now() as f64 / SEC as f64,
                wall.elapsed().as_secs_f64(),
                sim.events_processed(),
                sim.stats.sent
            );
            next_report += 0.1;
        }
    }
    sim.run_for(g.settle);
    collect_bootstraps(sim, &mut queries, &mut joined);
    joined
}

fn collect_bootstraps(
    sim: &mut DhtSim,
    queries: &mut std::collections::BTreeMap<(u32, u64), usize>,
    joined: &mut Joined,
) {
    for r in sim.take_reported() {
        if let DhtEvent::Bootstrapped { query, .. } = r.event
            && let Some(n) = queries.remove(&(r.node, query))
            && let Some(slot) = joined.bootstrapped.get_mut(n)
        {
            *slot = Some(r.at);
        }
    }
}

/// How a network comes to be before it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nodes join one by one and bootstrap over the network (the real join path).
    Live,
    /// All nodes start with the routing tables a converged network would give them (restored
    /// through `Dht::restore`); no traffic until the scenario begins. Far cheaper at 100,000.
    Warm,
}

impl std::str::FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(Start::Live),
            "warm" => Ok(Start::Warm),
            other => Err(format!("unknown start {other:?} (live or warm)")),
        }
    }
}

/// Starts `n` nodes warm (see [`Start::Warm`]); returns their indices.
pub fn warm(
    sim: &mut DhtSim,
    n: usize,
    rng: &mut ChaCha8Rng,
    progress: bool,
    role: impl Fn(usize) -> Role,
) -> Vec<usize> {
    let wall = Instant::now();
    let first = sim.len();
    let nodes: Vec<usize> = (0..n).map(|j| sim.add_node(role(first + j))).collect();
    let entries = sim.warm_start(&nodes, rng);
    if progress {
        eprintln!(
            "  {n} nodes started warm: {:.1} routing entries each (wall {:.1} s)",
            entries as f64 / n.max(1) as f64,
            wall.elapsed().as_secs_f64()
        );
    }
    nodes
}

/// What every scenario does at the end: write its files (when it has a directory) and print its
/// summary table, then hand back its figures.
pub fn finish<T>(
    out: Option<&std::path::Path>,
    figures: T,
    write: impl FnOnce(&std::path::Path, &T) -> anyhow::Result<()>,
    summary: impl FnOnce(&T) -> crate::report::Table,
) -> anyhow::Result<T> {
    if let Some(dir) = out {
        write(dir, &figures)?;
    }
    println!("{}", summary(&figures).render());
    Ok(figures)
}

/// The DHT configuration the scenarios use: the production defaults.
pub fn dht_config() -> DhtConfig {
    DhtConfig::default()
}

/// Seconds as a float.
pub fn secs(t: Nanos) -> f64 {
    t as f64 / SEC as f64
}

/// Milliseconds as a float.
pub fn millis(t: Nanos) -> f64 {
    t as f64 / engine::MS as f64
}
