//! A chess game between agents on N nodes: the runner and the piece agent (see [`super::chess`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cozy_chess::Board;
use serde::{Deserialize, Serialize};
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::net::Mesh;
use suprnova_mesh::world::{Genesis, Limits};

use super::chess::{
    Candidates, Chess, ChessInput, ChessState, MoveBody, NO, Status, YES, best_move, board_svg, legal, winner,
};
use super::cluster::View;
use super::{Cluster, follow, identity};
use crate::agent::{Agent, Ctx, Event, Profile};
use crate::runtime::RuntimeConfig;
use crate::vote::Decision;
use crate::wire::{self, AgentId, Digest, Proposal};

/// How to play.
#[derive(Clone, Debug)]
pub struct GameConfig {
    /// Nodes (each a mesh member hosting some pieces).
    pub nodes: usize,
    /// Seed of every key and of the pieces' evaluation noise.
    pub seed: u64,
    /// Plies at most.
    pub move_limit: u32,
    /// Pieces that cheat (propose illegal moves, vote twice), taken from white's pawns.
    pub cheaters: usize,
    /// Where to write the move list, final FEN, SVG and report.
    pub out: Option<PathBuf>,
    /// Mesh round interval, ms.
    pub round_interval_ms: u32,
    /// Gives up if no ply is played for this long.
    pub stall: Duration,
}

impl Default for GameConfig {
    fn default() -> Self {
        GameConfig {
            nodes: 5,
            seed: 1,
            move_limit: 200,
            cheaters: 0,
            out: None,
            round_interval_ms: 50,
            stall: Duration::from_secs(60),
        }
    }
}

/// How the game went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GameReport {
    /// The moves, UCI.
    pub moves: Vec<String>,
    /// The final position.
    pub fen: String,
    /// How it ended.
    pub status: Status,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Time per ply, ms (median).
    pub ply_p50_ms: u64,
    /// Proposals made, certified, expired.
    pub proposals: u64,
    /// Proposals certified.
    pub certified: u64,
    /// Proposals expired.
    pub expired: u64,
    /// Equivocations found (summed over nodes).
    pub equivocations: u64,
    /// Inputs the mesh refused (e.g. a certificate for an illegal or stale move).
    pub refused_inputs: u64,
    /// Nodes.
    pub nodes: usize,
    /// Cheating pieces.
    pub cheaters: usize,
}

#[derive(Default)]
struct Counters {
    proposals: AtomicU64,
    certified: AtomicU64,
    expired: AtomicU64,
}

/// A ply that has not moved for this long starts over, ms.
const PLY_RESTART_MS: u64 = 5000;

/// A candidate a piece tells its side.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Candidate {
    ply: u32,
    mv: Option<(String, i64)>,
}

/// A piece of the board, as an agent.
pub struct PieceAgent {
    view: View<ChessState>,
    seed: u64,
    swarm: String,
    cheat: bool,
    counters: Arc<Counters>,
    ply: Option<u32>,
    candidates: Candidates,
    sent: bool,
    collect_until: u64,
    ready_since: Option<u64>,
    skip: Vec<AgentId>,
    pending: Vec<Arc<Proposal>>,
    /// Candidates for plies this node has not reached yet.
    early: Vec<(AgentId, Candidate)>,
    voted: HashSet<Digest>,
    /// Pieces whose proposal for the current ply this piece has seen.
    proposed_this_ply: Vec<AgentId>,
    /// When this piece started (or restarted) the current ply.
    ply_started: u64,
    /// Proposers of this ply's proposals, by proposal id.
    proposers: std::collections::HashMap<Digest, AgentId>,
    mine: Option<(Digest, u64)>,
    cert: Option<(Box<crate::wire::Certificate>, u64)>,
}

/// The swarm of a side's pieces.
pub fn side_swarm(seed: u64, white: bool) -> String {
    format!("chess-{seed}-{}", if white { "white" } else { "black" })
}

impl PieceAgent {
    fn new(view: View<ChessState>, seed: u64, white: bool, cheat: bool, counters: Arc<Counters>) -> PieceAgent {
        PieceAgent {
            view,
            seed,
            swarm: side_swarm(seed, white),
            cheat,
            counters,
            ply: None,
            candidates: Candidates::new(),
            sent: false,
            collect_until: 0,
            ready_since: None,
            skip: vec![],
            pending: vec![],
            early: vec![],
            voted: HashSet::new(),
            proposed_this_ply: vec![],
            ply_started: 0,
            proposers: std::collections::HashMap::new(),
            mine: None,
            cert: None,
        }
    }

    fn vote(&mut self, ctx: &mut Ctx, p: &Proposal, choice: &[u8]) {
        if self.voted.insert(p.id()) {
            ctx.vote(p, choice);
        }
    }
}

/// What one step knows about the current ply.
struct Turn<'a> {
    round: u64,
    st: &'a ChessState,
    board: &'a Board,
    ply: u32,
    side: bool,
    now: u64,
    me: AgentId,
}

impl PieceAgent {
    /// Starts (or restarts) `ply`: clears its state, replaying the candidates kept for it.
    fn begin_ply(&mut self, ply: u32, now: u64, events: &mut Vec<Event>) {
        self.ply = Some(ply);
        self.ply_started = now;
        self.candidates.clear();
        self.sent = false;
        self.ready_since = None;
        self.skip.clear();
        self.proposed_this_ply.clear();
        self.mine = None;
        self.cert = None;
        // Proposals and candidates that came before this node saw the ply are kept.
        self.pending.retain(|p| wire::decode::<MoveBody>(&p.body).is_ok_and(|b| b.ply >= ply));
        let early = std::mem::take(&mut self.early);
        for (from, c) in early {
            if c.ply == ply {
                events.push(Event::Broadcast { swarm: String::new(), from, body: wire::encode(&c) });
            } else if c.ply > ply {
                self.early.push((from, c));
            }
        }
    }

    /// Takes in one event: a candidate, a proposal or a decision.
    fn on_event(&mut self, ctx: &mut Ctx, e: Event, t: &Turn<'_>) {
        match e {
            Event::Broadcast { from, body, .. } => self.on_candidate(from, &body, t),
            Event::Proposal { proposal } => {
                if self.proposers.len() >= 256 {
                    self.proposers.clear();
                }
                self.proposers.insert(proposal.id(), proposal.proposer);
                self.pending.push(proposal);
            }
            Event::Decided { id, decision } => self.on_decided(ctx, id, &decision, t),
            _ => {}
        }
    }

    /// Records a side piece's candidate for this ply (or keeps one for a coming ply).
    fn on_candidate(&mut self, from: AgentId, body: &[u8], t: &Turn<'_>) {
        let Ok(c) = wire::decode::<Candidate>(body) else { return };
        if c.ply > t.ply && c.ply <= t.ply + 2 && self.early.len() < 64 {
            self.early.push((from, c));
            return;
        }
        let Some(sender) = t.st.piece(&from) else { return };
        // Only this ply's candidates from the side's live pieces, each a legal move
        // of the sender's own piece.
        let ok_move =
            c.mv.as_ref().is_none_or(|(u, _)| legal(t.board, u).is_some_and(|m| Some(m.from as u8) == sender.square));
        if c.ply == t.ply && sender.white == t.side && sender.square.is_some() && ok_move {
            self.candidates.insert(from, c.mv);
        }
    }

    /// Handles a decided proposal: submits our certified move, or skips a failed proposer.
    fn on_decided(&mut self, ctx: &mut Ctx, id: Digest, decision: &Decision, t: &Turn<'_>) {
        let now = t.now;
        let rejected = match decision {
            Decision::Certified(c) if c.choice.as_slice() == YES => {
                if self.mine.is_some_and(|(m, _)| m == id) {
                    self.counters.certified.fetch_add(1, Ordering::Relaxed);
                    ctx.submit(t.round + 1, &ChessInput::Move(c.clone()));
                    self.cert = Some((c.clone(), now));
                }
                false
            }
            // A quorum said no, or the deadline passed.
            Decision::Certified(_) => true,
            Decision::Expired => {
                if self.mine.is_some_and(|(m, _)| m == id) {
                    self.counters.expired.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
        };
        // Retry this ply without the proposer whose proposal failed.
        if rejected && let Some(p) = self.proposers.get(&id) {
            if !self.skip.contains(p) {
                self.skip.push(*p);
            }
            self.ready_since = Some(now);
        }
    }

    /// A cheater's turn: proposes an illegal move and signs both answers to every proposal.
    fn cheat_turn(&mut self, ctx: &mut Ctx, t: &Turn<'_>) {
        if !self.sent {
            self.sent = true;
            let body = wire::encode(&MoveBody { ply: t.ply, uci: "a1h8".into() });
            if ctx.propose(&body, t.st.live(t.side), Duration::from_secs(2)).is_ok() {
                self.counters.proposals.fetch_add(1, Ordering::Relaxed);
            }
        }
        for p in std::mem::take(&mut self.pending) {
            if p.proposer != t.me && self.voted.insert(p.id()) {
                ctx.vote(&p, YES);
                ctx.vote(&p, NO);
            }
        }
    }

    /// An honest piece's turn: sends its candidate, proposes the winner if it is ours, and votes.
    fn honest_turn(&mut self, ctx: &mut Ctx, square: u8, t: &Turn<'_>) {
        let (ply, now, me) = (t.ply, t.now, t.me);
        if !self.sent {
            self.sent = true;
            let mv = best_move(t.board, square, self.seed ^ u64::from(ply).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            ctx.broadcast(&self.swarm, wire::encode(&Candidate { ply, mv: mv.clone() }));
            self.candidates.insert(me, mv);
            self.collect_until = now + 600;
        }
        let live = t.st.live(t.side);
        let all_in = live.iter().all(|a| self.candidates.contains_key(a));
        if !all_in && now < self.collect_until {
            return;
        }
        let ready_since = *self.ready_since.get_or_insert(now);
        let Some((w, uci)) = winner(&self.candidates, &self.skip) else {
            // Every candidate failed once: start over with all of them.
            self.skip.clear();
            return;
        };
        if w == me && self.mine.is_none() {
            let body = wire::encode(&MoveBody { ply, uci: uci.clone() });
            if let Ok(p) = ctx.propose(&body, live.clone(), Duration::from_secs(3)) {
                self.counters.proposals.fetch_add(1, Ordering::Relaxed);
                self.mine = Some((p.id(), now));
            }
        }
        // Re-submit a certified move the mesh has not applied yet.
        if let Some((c, at)) = &self.cert
            && now > at + 1500
        {
            ctx.submit(t.round + 1, &ChessInput::Move(c.clone()));
            self.cert = Some((c.clone(), now));
        }
        for p in std::mem::take(&mut self.pending) {
            let Ok(body) = wire::decode::<MoveBody>(&p.body) else {
                self.vote(ctx, &p, NO);
                continue;
            };
            if body.ply != ply {
                continue;
            }
            let agree =
                p.proposer == w && body.uci == uci && legal(t.board, &body.uci).is_some() && p.voters.to_vec() == live;
            if !self.proposed_this_ply.contains(&p.proposer) {
                self.proposed_this_ply.push(p.proposer);
            }
            self.vote(ctx, &p, if agree { YES } else { NO });
        }
        // A winner that never proposes is skipped after a while.
        if w != me && !self.proposed_this_ply.contains(&w) && now > ready_since + 2500 {
            self.skip.push(w);
            self.ready_since = Some(now);
        }
    }
}

impl Agent for PieceAgent {
    fn step(&mut self, ctx: &mut Ctx) {
        ctx.wake_in(Duration::from_millis(20));
        let events = ctx.take_events();
        let Some((round, st)) = self.view.borrow().clone() else { return };
        if st.status != Status::Ongoing {
            ctx.stop();
            return;
        }
        let me = ctx.me();
        let Some(rec) = st.piece(&me).cloned() else { return };
        let Some(square) = rec.square else {
            ctx.stop();
            return;
        };
        let Some(board) = st.board() else { return };
        let ply = st.moves.len() as u32;
        let mut events = events;
        let now = ctx.now_ms();
        // A ply that has not moved for 5 s starts over: candidates again, fresh proposals (the
        // liveness timer; every piece hits it, and what they agree on next is new).
        if self.ply == Some(ply) && now > self.ply_started + PLY_RESTART_MS {
            self.ply = None;
        }
        if self.ply != Some(ply) {
            self.begin_ply(ply, now, &mut events);
        }
        let side = st.white_to_move();
        let t = Turn { round, st: &st, board: &board, ply, side, now, me };
        for e in events {
            self.on_event(ctx, e, &t);
        }
        if rec.white != side {
            return;
        }
        if self.cheat {
            // Proposes an illegal move and signs both answers to every proposal.
            self.cheat_turn(ctx, &t);
            return;
        }
        self.honest_turn(ctx, square, &t);
    }
}

/// How following the game on one node ended.
enum Followed {
    /// The game ended: the final state and the time of each ply, ms.
    Done(Arc<ChessState>, Vec<u64>),
    /// No ply was played for too long: the error to return once everything is stopped.
    Stalled(String),
}

/// Starts the chess mesh on every node of `cluster` (and attaches it), with a view of each.
async fn start_meshes(
    cfg: &GameConfig,
    n: usize,
    cluster: &Cluster,
    s0: &ChessState,
) -> Result<(Vec<Mesh<ChessState>>, Vec<View<ChessState>>), String> {
    let members: Vec<_> = (0..n).map(|i| identity("chess member", cfg.seed, i as u64)).collect();
    let limits = Limits { max_input_bytes: 8192, ..Limits::default() };
    let genesis =
        Genesis::for_world(&Chess, s0, members.iter().map(|m| m.public_key()).collect(), cfg.round_interval_ms, limits)
            .ok_or("genesis")?;
    let mut meshes = Vec::new();
    let mut views = Vec::new();
    for (i, (node, rt)) in cluster.nodes.iter().zip(&cluster.runtimes).enumerate() {
        let id = identity("chess member", cfg.seed, i as u64);
        let mesh = Mesh::start(node.clone(), Chess, genesis.clone(), s0.clone(), Some(id), MeshConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        rt.attach_mesh(&mesh);
        views.push(follow(&mesh));
        meshes.push(mesh);
    }
    Ok((meshes, views))
}

/// Spawns the 32 piece agents round-robin on the nodes (cheaters among white's pawns).
async fn spawn_pieces(
    cfg: &GameConfig,
    n: usize,
    cluster: &Cluster,
    views: &[View<ChessState>],
    counters: &Arc<Counters>,
) -> Result<(), String> {
    for i in 0..32usize {
        let white_piece = i < 16;
        // Cheaters are white pawns (squares a2, b2, …).
        let cheat = white_piece && i >= 8 && i - 8 < cfg.cheaters;
        let view = views.get(i % n).cloned().ok_or("no view")?;
        let agent = PieceAgent::new(view, cfg.seed, white_piece, cheat, counters.clone());
        let profile = Profile {
            kind: "piece".into(),
            capabilities: vec!["chess".into(), if white_piece { "white".into() } else { "black".into() }],
            swarms: vec![side_swarm(cfg.seed, white_piece)],
            tick: Some(Duration::from_millis(20)),
            announce: true,
            ..Profile::default()
        };
        cluster
            .runtimes
            .get(i % n)
            .ok_or("no runtime")?
            .spawn_with(identity("chess piece", cfg.seed, i as u64), profile, agent)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Follows the game on `view` until it ends or stalls, telling `progress` each ply.
async fn follow_game(
    cfg: &GameConfig,
    mut view: View<ChessState>,
    mut progress: impl FnMut(&ChessState),
) -> Result<Followed, String> {
    let mut last_ply = 0usize;
    let mut last_change = Instant::now();
    let mut ply_times = Vec::new();
    loop {
        let changed = tokio::time::timeout(Duration::from_millis(500), view.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            return Err("mesh stopped".into());
        }
        let current = view.borrow().clone();
        if let Some((_, st)) = current {
            if st.moves.len() != last_ply {
                ply_times.push(last_change.elapsed().as_millis() as u64);
                last_ply = st.moves.len();
                last_change = Instant::now();
                progress(&st);
            }
            if st.status != Status::Ongoing {
                return Ok(Followed::Done(st, ply_times));
            }
        }
        if last_change.elapsed() > cfg.stall {
            let fen = view.borrow().as_ref().map(|(_, s)| s.fen.clone()).unwrap_or_default();
            return Ok(Followed::Stalled(format!("no move for {:?} at ply {last_ply} ({fen})", cfg.stall)));
        }
    }
}

/// Writes the move list, final FEN, SVG and report into `dir`.
fn write_outputs(dir: &std::path::Path, final_state: &ChessState, report: &GameReport) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("moves.uci"), final_state.moves.join(" ") + "\n").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("final.fen"), final_state.fen.clone() + "\n").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("board.svg"), board_svg(final_state)).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), json + "\n").map_err(|e| e.to_string())?;
    Ok(())
}

/// Plays a game between piece agents on `cfg.nodes` nodes; `progress` is told each ply.
pub async fn play(cfg: GameConfig, progress: impl FnMut(&ChessState)) -> Result<GameReport, String> {
    let started = Instant::now();
    let n = cfg.nodes.max(1);
    let cluster =
        Cluster::start(n, cfg.seed, RuntimeConfig { announce_topic: false, ..RuntimeConfig::default() }).await?;
    let white: [AgentId; 16] = std::array::from_fn(|i| identity("chess piece", cfg.seed, i as u64).public_key());
    let black: [AgentId; 16] = std::array::from_fn(|i| identity("chess piece", cfg.seed, 16 + i as u64).public_key());
    let s0 = ChessState::new(&white, &black, cfg.move_limit);
    let (meshes, views) = start_meshes(&cfg, n, &cluster, &s0).await?;
    let counters = Arc::new(Counters::default());
    spawn_pieces(&cfg, n, &cluster, &views, &counters).await?;
    // Follow the game on node 0.
    let view = views.first().cloned().ok_or("no view")?;
    let (final_state, mut ply_times) = match follow_game(&cfg, view, progress).await? {
        Followed::Done(st, ply_times) => (st, ply_times),
        Followed::Stalled(err) => {
            for m in &meshes {
                m.stop();
            }
            cluster.stop().await;
            return Err(err);
        }
    };
    let mut refused = 0;
    for m in &meshes {
        if let Some(s) = m.status().await {
            refused += s.stats.inputs_refused.values().sum::<u64>();
        }
    }
    let equivocations = cluster.runtimes.iter().map(|r| r.stats().ballots.equivocations).sum();
    ply_times.sort_unstable();
    let report = GameReport {
        moves: final_state.moves.clone(),
        fen: final_state.fen.clone(),
        status: final_state.status,
        wall_ms: started.elapsed().as_millis() as u64,
        ply_p50_ms: ply_times.get(ply_times.len() / 2).copied().unwrap_or(0),
        proposals: counters.proposals.load(Ordering::Relaxed),
        certified: counters.certified.load(Ordering::Relaxed),
        expired: counters.expired.load(Ordering::Relaxed),
        equivocations,
        refused_inputs: refused,
        nodes: n,
        cheaters: cfg.cheaters,
    };
    for m in &meshes {
        m.stop();
    }
    cluster.stop().await;
    if let Some(dir) = &cfg.out {
        write_outputs(dir, &final_state, &report)?;
    }
    Ok(report)
}
