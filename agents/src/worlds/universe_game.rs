//! A universe on N nodes: the runner and the particle agent (see [`super::universe`]).
//!
//! Every node is a mesh member and re-executes F each round; the runner checks that every node
//! certified the same state hash for every round. Particle agents (one per particle, up to
//! `agents`) follow their particle: each announces its position in the mesh's spatial index and
//! finds its neighbours with a radius query, and the runner reports how many it found and how
//! long the queries took.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use suprnova_mesh::core::{Certified, MeshConfig};
use suprnova_mesh::net::Mesh;
use suprnova_mesh::world::{Genesis, Limits};

use super::cluster::View;
use super::universe::{Universe, UniverseState, animated_svg, frame_svg};
use super::{Cluster, follow, identity};
use crate::agent::{Agent, Ctx, Event, Profile, Ticket};
use crate::discovery::Criteria;
use crate::runtime::RuntimeConfig;

/// How to run a universe.
#[derive(Clone, Debug)]
pub struct UniverseConfig {
    /// Nodes (each a mesh member).
    pub nodes: usize,
    /// Seed of the keys and the initial conditions.
    pub seed: u64,
    /// Particles.
    pub particles: usize,
    /// Particle agents (the first `agents` particles have one).
    pub agents: usize,
    /// Rounds to run.
    pub rounds: u64,
    /// Where to write frames, the animation and the report.
    pub out: Option<PathBuf>,
    /// A frame every this many rounds.
    pub frame_every: u64,
    /// Time between an agent's neighbour queries.
    pub agent_tick: Duration,
    /// Neighbour radius of the queries.
    pub radius: f64,
    /// Mesh round interval, ms.
    pub round_interval_ms: u32,
}

impl Default for UniverseConfig {
    fn default() -> Self {
        UniverseConfig {
            nodes: 5,
            seed: 1,
            particles: 1000,
            agents: 200,
            rounds: 200,
            out: None,
            frame_every: 10,
            agent_tick: Duration::from_secs(2),
            radius: 0.25,
            round_interval_ms: 20,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UniverseReport {
    /// Particles.
    pub particles: usize,
    /// Particle agents.
    pub agents: usize,
    /// Nodes.
    pub nodes: usize,
    /// Rounds certified.
    pub rounds: u64,
    /// Rounds per second (certified at node 0, first to last).
    pub rounds_per_s: f64,
    /// Rounds every node certified with the same state hash (all of them, if it agrees).
    pub rounds_agreed: u64,
    /// Rounds where some node's hash differed.
    pub rounds_disagreed: u64,
    /// Total energy at the start.
    pub energy_start: f64,
    /// Total energy at the end.
    pub energy_end: f64,
    /// |ΔE / E₀|.
    pub energy_drift: f64,
    /// |Δp| (total momentum change; walls reflect, so it is not conserved).
    pub momentum_change: f64,
    /// Collisions resolved.
    pub collisions: u64,
    /// Neighbour queries answered.
    pub queries: u64,
    /// Neighbours found per query, mean.
    pub neighbours_mean: f64,
    /// Query latency p50, ms.
    pub query_p50_ms: u64,
    /// Query latency p99, ms.
    pub query_p99_ms: u64,
    /// F's time per step on one core at this size, ms.
    pub step_ms: f64,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Energy per frame: (step, kinetic, potential).
    pub energy: Vec<(u64, f64, f64)>,
}

#[derive(Default)]
struct Stats {
    queries: AtomicU64,
    found: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

/// A particle, as an agent: announces where its particle is and asks who is near.
pub struct ParticleAgent {
    index: usize,
    view: View<UniverseState>,
    radius: f64,
    stats: Arc<Stats>,
    asked: Option<(Ticket, u64)>,
    tick_ms: u64,
    next_at: u64,
}

impl Agent for ParticleAgent {
    fn step(&mut self, ctx: &mut Ctx) {
        for e in ctx.take_events() {
            if let Event::Discovered { ticket, result: Ok(d) } = e
                && let Some((t, at)) = self.asked
                && t == ticket
            {
                self.stats.queries.fetch_add(1, Ordering::Relaxed);
                let me = ctx.me();
                let n = d.agents.iter().filter(|f| f.agent != me).count() as u64;
                self.stats.found.fetch_add(n, Ordering::Relaxed);
                if let Ok(mut l) = self.stats.latencies.lock() {
                    l.push(ctx.now_ms().saturating_sub(at));
                }
                self.asked = None;
            }
        }
        let Some((_, st)) = self.view.borrow().clone() else { return };
        let Some(p) = st.particles.get(self.index) else { return };
        let now = ctx.now_ms();
        if self.asked.is_none() && now >= self.next_at {
            self.next_at = now + self.tick_ms;
            let pos = [p.x, p.y, 0.0];
            ctx.move_to(pos, (self.index as u32).to_le_bytes().to_vec());
            let c = Criteria { near: Some((pos, self.radius)), ..Criteria::default() };
            let t = ctx.discover(c);
            self.asked = Some((t, ctx.now_ms()));
        }
    }
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

/// Each node's feed of certified rounds.
type Rounds = tokio::sync::broadcast::Receiver<Arc<Certified<UniverseState>>>;

/// What the runner collected while the universe ran.
struct Collected {
    /// Every node's state hash per round.
    hashes: Vec<BTreeMap<u64, [u8; 32]>>,
    /// Frames from node 0.
    frames: Vec<UniverseState>,
    /// When node 0 certified its first round.
    first_round_at: Option<Instant>,
    /// When node 0 certified its last round.
    last_round_at: Instant,
    /// Node 0's last state within `cfg.rounds`.
    last_state: Arc<UniverseState>,
}

/// Starts the universe mesh on every node of `cluster` (and attaches it), with a view and a
/// round feed of each.
async fn start_meshes(
    cfg: &UniverseConfig,
    n: usize,
    cluster: &Cluster,
    world: Universe,
    s0: &UniverseState,
) -> Result<(Vec<Mesh<UniverseState>>, Vec<View<UniverseState>>, Vec<Rounds>), String> {
    let members: Vec<_> = (0..n).map(|i| identity("universe member", cfg.seed, i as u64).public_key()).collect();
    let genesis = Genesis::for_world(&world, s0, members, cfg.round_interval_ms, Limits::default()).ok_or("genesis")?;
    let mut meshes = Vec::new();
    let mut views = Vec::new();
    let mut rounds_rx = Vec::new();
    for (i, (node, rt)) in cluster.nodes.iter().zip(&cluster.runtimes).enumerate() {
        let id = identity("universe member", cfg.seed, i as u64);
        let mesh = Mesh::start(node.clone(), world, genesis.clone(), s0.clone(), Some(id), MeshConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        rt.attach_mesh(&mesh);
        views.push(follow(&mesh));
        rounds_rx.push(mesh.rounds());
        meshes.push(mesh);
    }
    Ok((meshes, views, rounds_rx))
}

/// Spawns the particle agents round-robin on the nodes.
async fn spawn_particles(
    cfg: &UniverseConfig,
    n: usize,
    cluster: &Cluster,
    views: &[View<UniverseState>],
    stats: &Arc<Stats>,
) -> Result<(), String> {
    for i in 0..cfg.agents.min(cfg.particles) {
        let view = views.get(i % n).cloned().ok_or("no view")?;
        let tick_ms = cfg.agent_tick.as_millis() as u64;
        // Spread the agents' first queries over one tick.
        let first = (i as u64 * 7919) % tick_ms.max(1);
        let agent = ParticleAgent {
            index: i,
            view,
            radius: cfg.radius,
            stats: stats.clone(),
            asked: None,
            tick_ms,
            next_at: crate::runtime::unix_ms() + first,
        };
        let profile =
            Profile { kind: "particle".into(), tick: Some(cfg.agent_tick), announce: false, ..Profile::default() };
        let rt = cluster.runtimes.get(i % n).ok_or("no runtime")?;
        rt.spawn_with(identity("particle", cfg.seed, i as u64), profile, agent).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Collects every node's hash per round and frames from node 0, until every node has
/// certified `cfg.rounds` or the deadline passes.
async fn collect_rounds(
    cfg: &UniverseConfig,
    n: usize,
    s0: &UniverseState,
    rounds_rx: &mut [Rounds],
    mut progress: impl FnMut(u64),
) -> Collected {
    let mut hashes: Vec<BTreeMap<u64, [u8; 32]>> = vec![BTreeMap::new(); n];
    let mut frames: Vec<UniverseState> = vec![s0.clone()];
    let mut first_round_at = None;
    let mut last_round_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120 + cfg.rounds / 2);
    let mut last_state = Arc::new(s0.clone());
    loop {
        let done = hashes.iter().all(|h| h.range(cfg.rounds..).next().is_some());
        if done {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        let mut got = false;
        for (i, rx) in rounds_rx.iter_mut().enumerate() {
            while let Ok(c) = rx.try_recv() {
                got = true;
                if let Some(h) = hashes.get_mut(i) {
                    h.insert(c.round, c.state_hash);
                }
                if i == 0 {
                    first_round_at.get_or_insert_with(Instant::now);
                    last_round_at = Instant::now();
                    progress(c.round);
                    if c.round.is_multiple_of(cfg.frame_every.max(1)) && c.round <= cfg.rounds {
                        frames.push((*c.state).clone());
                    }
                    if c.round <= cfg.rounds {
                        last_state = c.state.clone();
                    }
                }
            }
        }
        if !got {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Collected { hashes, frames, first_round_at, last_round_at, last_state }
}

/// Counts the rounds 1..=`rounds` of node 0 every node agreed on, and those some node disagreed on.
fn agreement(hashes: &[BTreeMap<u64, [u8; 32]>], rounds: u64) -> (u64, u64) {
    let first = hashes.first().cloned().unwrap_or_default();
    let mut agreed = 0;
    let mut disagreed = 0;
    for (round, h) in first.range(1..=rounds) {
        let all = hashes.iter().all(|m| m.get(round).is_none_or(|x| x == h));
        let everyone = hashes.iter().all(|m| m.contains_key(round));
        if !all {
            disagreed += 1;
        } else if everyone {
            agreed += 1;
        }
    }
    (agreed, disagreed)
}

/// Writes the frames, the animation, the final frame, the energy CSV and the report into `dir`.
fn write_outputs(dir: &std::path::Path, frames: &[UniverseState], report: &UniverseReport) -> Result<(), String> {
    let fdir = dir.join("frames");
    std::fs::create_dir_all(&fdir).map_err(|e| e.to_string())?;
    for f in frames {
        std::fs::write(fdir.join(format!("frame-{:05}.svg", f.step)), frame_svg(f, 480)).map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join("universe.svg"), animated_svg(frames, 480, 600, 8.0)).map_err(|e| e.to_string())?;
    if let Some(last) = frames.last() {
        std::fs::write(dir.join("final.svg"), frame_svg(last, 480)).map_err(|e| e.to_string())?;
    }
    let mut csv = String::from("step,kinetic,potential,total\n");
    for (s, k, p) in &report.energy {
        csv.push_str(&format!("{s},{k},{p},{}\n", k + p));
    }
    std::fs::write(dir.join("energy.csv"), csv).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), json + "\n").map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs a universe; `progress` gets each certified round at node 0.
pub async fn run(cfg: UniverseConfig, progress: impl FnMut(u64)) -> Result<UniverseReport, String> {
    let started = Instant::now();
    let n = cfg.nodes.max(1);
    let s0 = UniverseState::disc(cfg.particles, cfg.seed);
    // F's own cost at this size (one step, one core).
    let t = Instant::now();
    let _ = s0.step();
    let step_ms = t.elapsed().as_secs_f64() * 1000.0;
    let world = Universe { half: s0.params.half };
    let cluster =
        Cluster::start(n, cfg.seed, RuntimeConfig { announce_topic: false, votes: false, ..RuntimeConfig::default() })
            .await?;
    let (meshes, views, mut rounds_rx) = start_meshes(&cfg, n, &cluster, world, &s0).await?;
    let stats = Arc::new(Stats::default());
    spawn_particles(&cfg, n, &cluster, &views, &stats).await?;
    // Collect every node's hash per round, frames from node 0.
    let Collected { hashes, frames, first_round_at, last_round_at, last_state } =
        collect_rounds(&cfg, n, &s0, &mut rounds_rx, progress).await;
    for m in &meshes {
        m.stop();
    }
    cluster.stop().await;
    let (agreed, disagreed) = agreement(&hashes, cfg.rounds);
    let rounds = last_state.step;
    let secs = first_round_at.map_or(0.0, |f| last_round_at.duration_since(f).as_secs_f64());
    let e0 = s0.kinetic() + s0.potential();
    let e1 = last_state.kinetic() + last_state.potential();
    let (p0x, p0y) = s0.momentum();
    let (p1x, p1y) = last_state.momentum();
    let mut lat = stats.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let queries = stats.queries.load(Ordering::Relaxed);
    let energy = if cfg.particles <= 3000 {
        frames.iter().map(|f| (f.step, f.kinetic(), f.potential())).collect()
    } else {
        vec![(s0.step, s0.kinetic(), s0.potential()), (last_state.step, last_state.kinetic(), last_state.potential())]
    };
    let report = UniverseReport {
        particles: cfg.particles,
        agents: cfg.agents.min(cfg.particles),
        nodes: n,
        rounds,
        rounds_per_s: if secs > 0.0 { rounds.saturating_sub(1) as f64 / secs } else { 0.0 },
        rounds_agreed: agreed,
        rounds_disagreed: disagreed,
        energy_start: e0,
        energy_end: e1,
        energy_drift: if e0 != 0.0 { ((e1 - e0) / e0).abs() } else { 0.0 },
        momentum_change: ((p1x - p0x) * (p1x - p0x) + (p1y - p0y) * (p1y - p0y)).sqrt(),
        collisions: last_state.collisions,
        queries,
        neighbours_mean: if queries > 0 { stats.found.load(Ordering::Relaxed) as f64 / queries as f64 } else { 0.0 },
        query_p50_ms: pct(&lat, 0.5),
        query_p99_ms: pct(&lat, 0.99),
        step_ms,
        wall_ms: started.elapsed().as_millis() as u64,
        energy,
    };
    if let Some(dir) = &cfg.out {
        write_outputs(dir, &frames, &report)?;
    }
    Ok(report)
}
