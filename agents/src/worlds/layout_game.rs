//! An SVG layout negotiated by its boxes on N nodes: the runner and the box agent (see
//! [`super::layout`]). For its first 100 rounds each box also takes a force-directed step of its
//! own (links attract, boxes repel, cooling), which spreads the crowd; then only negotiated
//! yields and pulls along links remain.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use suprnova_dht::NodeId;
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::net::Mesh;
use suprnova_mesh::world::{Genesis, Limits};

use super::cluster::View;
use super::layout::{Elem, Layout, LayoutMove, LayoutState, MAX_STEP, overlap, svg};
use super::{Cluster, follow, identity};
use crate::agent::{Agent, AgentAddr, Ctx, Event, Profile};
use crate::runtime::RuntimeConfig;
use crate::wire;

/// How to lay out.
#[derive(Clone, Debug)]
pub struct LayoutConfig {
    /// Nodes.
    pub nodes: usize,
    /// Seed of the keys, sizes, starting places and links.
    pub seed: u64,
    /// Boxes.
    pub boxes: usize,
    /// Rounds at most.
    pub max_rounds: u64,
    /// Where to write initial.svg, final.svg and report.json.
    pub out: Option<PathBuf>,
    /// Mesh round interval, ms.
    pub round_interval_ms: u32,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig { nodes: 5, seed: 1, boxes: 24, max_rounds: 400, out: None, round_interval_ms: 100 }
    }
}

/// How it went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LayoutReport {
    /// Boxes.
    pub boxes: usize,
    /// Links.
    pub links: usize,
    /// Overlapping pairs at the start.
    pub overlaps_start: usize,
    /// Overlapping pairs at the end.
    pub overlaps_end: usize,
    /// Stretched links at the end.
    pub stretched_end: usize,
    /// The round from which nothing overlapped and no link was stretched (`None`: not reached).
    pub converged_round: Option<u64>,
    /// Moves applied.
    pub moves: u64,
    /// Negotiations (yield requests answered).
    pub negotiations: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
}

/// Rounds of the force-directed phase.
const COOLING: u64 = 100;

/// A yield request: "your box overlaps mine; step by (dx, dy)".
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ask {
    round: u64,
    stayer: u16,
    dx: i32,
    dy: i32,
}

/// The answer: the step the yielder will make (0, 0 if it sees no overlap any more), or
/// `stuck` if every way out runs into a box that outranks it: then the asker moves instead.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Agreed {
    dx: i32,
    dy: i32,
    stuck: bool,
}

/// A box, as an agent.
pub struct BoxAgent {
    index: usize,
    view: View<LayoutState>,
    seen_round: u64,
    owed: (i32, i32),
    /// Last round this box asked (as stayer) or yielded to (as yielder) each other box.
    last: HashMap<usize, u64>,
    /// Open requests: ticket → the box asked.
    asked: HashMap<crate::agent::Ticket, usize>,
    /// Since when this box has overlapped another (negotiation has not resolved it).
    overlapping_since: Option<u64>,
    /// Since when one of this box's links has been stretched.
    stretched_since: Option<u64>,
    /// From this round on, links pull only onto free space (no forceful pushes), so the last
    /// rounds settle instead of trading a stretched link for a transient overlap.
    settle_from: u64,
    negotiations: Arc<AtomicU64>,
}

impl BoxAgent {
    /// Answers yield requests and takes in the answers to this box's own.
    fn handle_events(&mut self, ctx: &mut Ctx, st: &LayoutState) {
        let me = self.index;
        for e in ctx.take_events() {
            match e {
                Event::Request { id, from, body } => {
                    let Ok(ask) = wire::decode::<Ask>(&body) else { continue };
                    let stayer = usize::from(ask.stayer);
                    let legit = st.elems.get(stayer).is_some_and(|s| s.agent == from) && st.outranks(stayer, me);
                    let recent = self.last.get(&stayer).is_some_and(|r| st.round < r + 3);
                    // Agree to the step the current state calls for (the asker's may be stale).
                    let step = if legit && !recent { st.separation(stayer, me) } else { None };
                    let (dx, dy) = step.unwrap_or((0, 0));
                    let stuck = step.is_some() && st.greater_overlaps_at(me, dx, dy, stayer) > 0;
                    if step.is_some() && !stuck {
                        self.last.insert(stayer, st.round);
                        self.owed.0 += dx;
                        self.owed.1 += dy;
                    }
                    ctx.respond(id, wire::encode(&Agreed { dx, dy, stuck }));
                }
                Event::Response { ticket, result: Ok(body) } => {
                    self.negotiations.fetch_add(1, Ordering::Relaxed);
                    // The other box cannot get out of the way: this one moves off it instead.
                    if let (Ok(a), Some(j)) = (wire::decode::<Agreed>(&body), self.asked.remove(&ticket))
                        && a.stuck
                        && let Some((dx, dy)) = st.separation(j, me)
                    {
                        self.owed.0 += dx;
                        self.owed.1 += dy;
                    }
                }
                _ => {}
            }
        }
    }

    /// Checks conflicts; asks the boxes that overlap this one and must yield to it to step aside.
    fn negotiate(&mut self, ctx: &mut Ctx, st: &LayoutState, mine: &Elem) {
        let me = self.index;
        for (j, other) in st.elems.iter().enumerate() {
            if j == me {
                continue;
            }
            let (ox, oy) = overlap(mine, other);
            if ox <= 0 || oy <= 0 || !st.outranks(me, j) {
                continue;
            }
            if self.last.get(&j).is_some_and(|r| st.round < r + 3) {
                continue;
            }
            if let Some((dx, dy)) = st.separation(me, j) {
                self.last.insert(j, st.round);
                let ask = Ask { round: st.round, stayer: me as u16, dx, dy };
                let t = ctx.request(AgentAddr { agent: other.agent, node: NodeId(other.node) }, wire::encode(&ask));
                if self.asked.len() < 64 {
                    self.asked.insert(t, j);
                }
            }
        }
    }

    /// Steps off by itself an overlap negotiation has not cleared for 20 rounds.
    fn unstick(&mut self, st: &LayoutState, mine: &Elem) {
        let me = self.index;
        // If negotiation has not cleared an overlap for 20 rounds (the boxes keep stepping into
        // each other, or a corner traps them), this box steps off by itself.
        let first_overlap =
            st.elems.iter().enumerate().position(|(j, o)| j != me && overlap(mine, o).0 > 0 && overlap(mine, o).1 > 0);
        match (first_overlap, self.overlapping_since) {
            (None, _) => self.overlapping_since = None,
            (Some(_), None) => self.overlapping_since = Some(st.round),
            (Some(j), Some(since)) if st.round >= since + 20 && self.owed == (0, 0) => {
                if let Some(step) = free_step(st, me).or_else(|| st.separation(j, me)) {
                    self.owed = step;
                }
                self.overlapping_since = Some(st.round);
            }
            _ => {}
        }
    }

    /// The step to make: what this box agreed to yield, else forces (cooling), else its links.
    fn next_step(&mut self, st: &LayoutState) -> (i32, i32) {
        let me = self.index;
        // A box that agreed to yield makes that step; otherwise it follows its links.
        let owed = st.clamp_step(me, self.owed.0, self.owed.1);
        self.owed = (0, 0);
        if owed != (0, 0) {
            owed
        } else if st.round < COOLING {
            // First spread out by forces (every box at once, cooling), then settle.
            let (fx, fy) = st.force(me, st.round, COOLING);
            st.clamp_step(me, fx, fy)
        } else {
            self.link_step(st)
        }
    }

    /// A step towards linked boxes, onto free space (or, for a long-stretched link, through boxes it outranks).
    fn link_step(&mut self, st: &LayoutState) -> (i32, i32) {
        let me = self.index;
        // Towards linked boxes, only onto free space; if the straight way is not free, slide
        // along one axis instead. A link stretched for 30 rounds despite that may push
        // through boxes this one outranks (they are then asked to yield).
        let stretched = st.has_stretched_link(me);
        let forceful = match (stretched, self.stretched_since) {
            (false, _) => {
                self.stretched_since = None;
                false
            }
            (true, None) => {
                self.stretched_since = Some(st.round);
                false
            }
            (true, Some(since)) => st.round >= since + 30 && st.round < self.settle_from,
        };
        let (px, py) = st.pull(me);
        let free = [(px, py), (px, 0), (0, py)]
            .into_iter()
            .map(|(x, y)| st.clamp_step(me, x, y))
            .find(|&(x, y)| (x, y) != (0, 0) && st.overlaps_at(me, x, y) == 0);
        match free {
            Some(step) => step,
            None if forceful => {
                self.stretched_since = Some(st.round);
                let step = st.clamp_step(me, px, py);
                if st.greater_overlaps_at(me, step.0, step.1, me) == 0 { step } else { (0, 0) }
            }
            None => (0, 0),
        }
    }
}

/// The shortest step (of eight directions, three lengths up to [`MAX_STEP`]) that leaves box `i`
/// overlapping nothing.
fn free_step(st: &LayoutState, i: usize) -> Option<(i32, i32)> {
    const DIRS: [(i32, i32); 8] = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)];
    [MAX_STEP / 3, 2 * MAX_STEP / 3, MAX_STEP]
        .into_iter()
        .flat_map(|len| DIRS.into_iter().map(move |(x, y)| (x * len, y * len)))
        .map(|(x, y)| st.clamp_step(i, x, y))
        .find(|&(x, y)| (x, y) != (0, 0) && st.overlaps_at(i, x, y) == 0)
}

impl Agent for BoxAgent {
    fn step(&mut self, ctx: &mut Ctx) {
        let Some((_, st)) = self.view.borrow().clone() else { return };
        let me = self.index;
        self.handle_events(ctx, &st);
        if st.round <= self.seen_round {
            return;
        }
        self.seen_round = st.round;
        let Some(mine) = st.elems.get(me) else { return };
        // Check conflicts; negotiate with the boxes that must yield to this one.
        self.negotiate(ctx, &st, mine);
        // Apply: what this box agreed to yield, plus its pull towards linked boxes.
        self.unstick(&st, mine);
        let (dx, dy) = self.next_step(&st);
        if dx != 0 || dy != 0 {
            ctx.submit(st.round + 1, &LayoutMove { elem: me as u16, dx, dy });
        }
    }
}

/// Lays out `cfg.boxes` boxes on `cfg.nodes` nodes; `progress` gets each round's state at node 0.
pub async fn run(cfg: LayoutConfig, mut progress: impl FnMut(&LayoutState)) -> Result<LayoutReport, String> {
    let started = Instant::now();
    let n = cfg.nodes.max(1);
    let cluster =
        Cluster::start(n, cfg.seed, RuntimeConfig { announce_topic: false, votes: false, ..RuntimeConfig::default() })
            .await?;
    let agents: Vec<_> = (0..cfg.boxes)
        .map(|i| {
            let node = cluster.nodes.get(i % n).map(|x| x.id().0).unwrap_or_default();
            (identity("layout box", cfg.seed, i as u64).public_key(), node)
        })
        .collect();
    let s0 = LayoutState::crowded(cfg.boxes, cfg.seed, &agents, 960, 640);
    let members: Vec<_> = (0..n).map(|i| identity("layout member", cfg.seed, i as u64).public_key()).collect();
    let limits = Limits { max_inputs_per_author: 8, ..Limits::default() };
    let genesis = Genesis::for_world(&Layout, &s0, members, cfg.round_interval_ms, limits).ok_or("genesis")?;
    let mut meshes = Vec::new();
    let mut views = Vec::new();
    for (i, (node, rt)) in cluster.nodes.iter().zip(&cluster.runtimes).enumerate() {
        let id = identity("layout member", cfg.seed, i as u64);
        let mesh = Mesh::start(node.clone(), Layout, genesis.clone(), s0.clone(), Some(id), MeshConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        rt.attach_mesh(&mesh);
        views.push(follow(&mesh));
        meshes.push(mesh);
    }
    let negotiations = Arc::new(AtomicU64::new(0));
    for i in 0..cfg.boxes {
        let view = views.get(i % n).cloned().ok_or("no view")?;
        let agent = BoxAgent {
            index: i,
            view,
            seen_round: 0,
            owed: (0, 0),
            last: HashMap::new(),
            asked: HashMap::new(),
            overlapping_since: None,
            stretched_since: None,
            settle_from: cfg.max_rounds.saturating_mul(3) / 4,
            negotiations: negotiations.clone(),
        };
        let profile = Profile { kind: "box".into(), tick: Some(Duration::from_millis(20)), ..Profile::default() };
        let rt = cluster.runtimes.get(i % n).ok_or("no runtime")?;
        rt.spawn_with(identity("layout box", cfg.seed, i as u64), profile, agent).await.map_err(|e| e.to_string())?;
    }
    let mut view = views.first().cloned().ok_or("no view")?;
    let mut calm_since: Option<u64> = None;
    let mut last = Arc::new(s0.clone());
    let deadline =
        Instant::now() + Duration::from_millis(cfg.max_rounds * u64::from(cfg.round_interval_ms) * 3 + 30_000);
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(500), view.changed()).await;
        let current = view.borrow().clone();
        if let Some((_, st)) = current
            && st.round > last.round
        {
            progress(&st);
            let calm = st.overlaps() == 0 && st.stretched() == 0;
            calm_since = if calm { calm_since.or(Some(st.round)) } else { None };
            last = st;
            // Converged: calm for 5 rounds.
            if calm_since.is_some_and(|r| last.round >= r + 5) || last.round >= cfg.max_rounds {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    for m in &meshes {
        m.stop();
    }
    cluster.stop().await;
    let report = LayoutReport {
        boxes: cfg.boxes,
        links: s0.links.len(),
        overlaps_start: s0.overlaps(),
        overlaps_end: last.overlaps(),
        stretched_end: last.stretched(),
        converged_round: calm_since,
        moves: last.moves,
        negotiations: negotiations.load(Ordering::Relaxed),
        wall_ms: started.elapsed().as_millis() as u64,
    };
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("initial.svg"), svg(&s0, "round 0")).map_err(|e| e.to_string())?;
        let title = match calm_since {
            Some(r) => format!("converged at round {r}"),
            None => format!("round {} (not converged)", last.round),
        };
        std::fs::write(dir.join("final.svg"), svg(&last, &title)).map_err(|e| e.to_string())?;
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("report.json"), json + "\n").map_err(|e| e.to_string())?;
    }
    Ok(report)
}
