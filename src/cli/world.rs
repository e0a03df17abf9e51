//! `suprnova world chess|universe|layout`: example worlds where agents organise themselves on a
//! mesh, each on N in-process nodes on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Subcommand;
use suprnova_agents::worlds::chess::Status;
use suprnova_agents::worlds::chess_game::{self, GameConfig};
use suprnova_agents::worlds::layout_game::{self, LayoutConfig};
use suprnova_agents::worlds::universe_game::{self, UniverseConfig};

/// The worlds.
#[derive(Subcommand, Debug)]
pub enum WorldCmd {
    /// Distributed chess: every piece is an agent; each side's pieces negotiate and vote on the
    /// side's move; the board is mesh state and F enforces the rules. Writes moves.uci,
    /// final.fen, board.svg and report.json.
    #[command(after_help = "Example:\n  suprnova world chess --nodes 5 --seed 7 --out chess-out")]
    Chess {
        /// Nodes (mesh members hosting the pieces).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Seed of every key and of the pieces' evaluation noise (same seed, same game).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the results.
        #[arg(long, default_value = "chess-out")]
        out: PathBuf,
        /// Plies at most.
        #[arg(long, default_value_t = 200)]
        moves: u32,
        /// White pawns that cheat (propose illegal moves, vote twice).
        #[arg(long, default_value_t = 0)]
        cheaters: usize,
    },
    /// A particle universe: gravity and elastic collisions integrated by F with a fixed step in
    /// IEEE-exact f64 (every node certifies the same state hash); particle agents announce their
    /// positions and find neighbours with spatial queries. Writes frames/, universe.svg
    /// (animated), final.svg, energy.csv and report.json.
    #[command(
        after_help = "Example:\n  suprnova world universe --nodes 5 --particles 1000 --rounds 200 --out universe-out"
    )]
    Universe {
        /// Nodes (mesh members).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Seed of the keys and initial conditions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the results.
        #[arg(long, default_value = "universe-out")]
        out: PathBuf,
        /// Particles.
        #[arg(long, default_value_t = 1000)]
        particles: usize,
        /// Particle agents (the first particles get one).
        #[arg(long, default_value_t = 200)]
        agents: usize,
        /// Rounds (steps) to run.
        #[arg(long, default_value_t = 200)]
        rounds: u64,
        /// A frame every this many rounds.
        #[arg(long, default_value_t = 10)]
        frame_every: u64,
    },
    /// SVG layout: boxes with sizes and links are agents that negotiate positions (the box of
    /// lower priority yields when asked) until nothing overlaps and linked boxes sit close.
    /// Writes initial.svg, final.svg and report.json.
    #[command(after_help = "Example:\n  suprnova world layout --nodes 5 --boxes 24 --out layout-out")]
    Layout {
        /// Nodes (mesh members hosting the boxes).
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Seed of the keys, sizes, starting places and links.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the results.
        #[arg(long, default_value = "layout-out")]
        out: PathBuf,
        /// Boxes.
        #[arg(long, default_value_t = 24)]
        boxes: usize,
        /// Rounds at most.
        #[arg(long, default_value_t = 400)]
        max_rounds: u64,
    },
}

/// Runs a world.
pub async fn run(cmd: WorldCmd) -> Result<()> {
    match cmd {
        WorldCmd::Layout { nodes, seed, out, boxes, max_rounds } => {
            let cfg =
                LayoutConfig { nodes, seed, boxes, max_rounds, out: Some(out.clone()), ..LayoutConfig::default() };
            run_layout(cfg, &out).await
        }
        WorldCmd::Universe { nodes, seed, out, particles, agents, rounds, frame_every } => {
            let cfg = UniverseConfig {
                nodes,
                seed,
                particles,
                agents,
                rounds,
                frame_every,
                out: Some(out.clone()),
                ..UniverseConfig::default()
            };
            run_universe(cfg, &out).await
        }
        WorldCmd::Chess { nodes, seed, out, moves, cheaters } => {
            let cfg = GameConfig {
                nodes,
                seed,
                move_limit: moves,
                cheaters,
                out: Some(out.clone()),
                stall: Duration::from_secs(60),
                ..GameConfig::default()
            };
            run_chess(cfg, &out).await
        }
    }
}

/// `world layout`: checks the options, lays out the boxes and prints how it went.
async fn run_layout(cfg: LayoutConfig, out: &Path) -> Result<()> {
    let (nodes, boxes, max_rounds) = (cfg.nodes, cfg.boxes, cfg.max_rounds);
    if nodes == 0 || nodes > 64 {
        return Err(anyhow!("--nodes must be 1 ..= 64"));
    }
    if !(2..=200).contains(&boxes) {
        return Err(anyhow!("--boxes must be 2 ..= 200"));
    }
    eprintln!("layout: {nodes} nodes, {boxes} box agents, at most {max_rounds} rounds");
    let r = layout_game::run(cfg, |st| {
        if st.round % 10 == 0 {
            eprintln!("round {:>4}: {} overlapping pairs, {} stretched links", st.round, st.overlaps(), st.stretched());
        }
    })
    .await
    .map_err(|e| anyhow!(e))?;
    match r.converged_round {
        Some(round) => println!("converged     at round {round}: no overlaps, every link close"),
        None => {
            println!("not converged ({} overlapping pairs, {} stretched links left)", r.overlaps_end, r.stretched_end)
        }
    }
    println!("boxes         {} with {} links; {} overlapping pairs at the start", r.boxes, r.links, r.overlaps_start);
    println!(
        "moves         {} applied after {} negotiations; wall {:.1} s",
        r.moves,
        r.negotiations,
        r.wall_ms as f64 / 1000.0
    );
    println!("written       {}/{{initial.svg,final.svg,report.json}}", out.display());
    if r.overlaps_end > 0 {
        return Err(anyhow!("{} boxes still overlap", r.overlaps_end));
    }
    Ok(())
}

/// `world universe`: checks the options, runs the universe and prints what it measured.
async fn run_universe(cfg: UniverseConfig, out: &Path) -> Result<()> {
    let (nodes, particles, agents, rounds) = (cfg.nodes, cfg.particles, cfg.agents, cfg.rounds);
    if nodes == 0 || nodes > 64 {
        return Err(anyhow!("--nodes must be 1 ..= 64"));
    }
    if particles == 0 || particles > 100_000 {
        return Err(anyhow!("--particles must be 1 ..= 100000"));
    }
    eprintln!("universe: {nodes} nodes, {particles} particles, {agents} particle agents, {rounds} rounds");
    let bar = indicatif::ProgressBar::new(rounds);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rounds ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let r = universe_game::run(cfg, |round| bar.set_position(round.min(rounds))).await.map_err(|e| anyhow!(e))?;
    bar.finish_and_clear();
    println!(
        "rounds        {} at {:.1} rounds/s ({:.1} ms per F step on one core)",
        r.rounds, r.rounds_per_s, r.step_ms
    );
    println!(
        "agreement     {} rounds with one state hash on all {} nodes, {} disagreeing",
        r.rounds_agreed, r.nodes, r.rounds_disagreed
    );
    println!(
        "energy        {:.6} -> {:.6} (drift {:.2e}); momentum change {:.2e}; {} collisions",
        r.energy_start, r.energy_end, r.energy_drift, r.momentum_change, r.collisions
    );
    println!(
        "neighbours    {} queries, {:.1} found per query, latency p50 {} ms, p99 {} ms",
        r.queries, r.neighbours_mean, r.query_p50_ms, r.query_p99_ms
    );
    println!("written       {}/{{frames/,universe.svg,final.svg,energy.csv,report.json}}", out.display());
    if r.rounds_disagreed > 0 {
        return Err(anyhow!("nodes disagreed on {} rounds", r.rounds_disagreed));
    }
    Ok(())
}

/// `world chess`: checks the options, plays the game (moves on stderr) and prints the result.
async fn run_chess(cfg: GameConfig, out: &Path) -> Result<()> {
    let (nodes, seed, moves) = (cfg.nodes, cfg.seed, cfg.move_limit);
    if nodes == 0 || nodes > 64 {
        return Err(anyhow!("--nodes must be 1 ..= 64"));
    }
    eprintln!("chess: {nodes} nodes, 32 piece agents, seed {seed}, at most {moves} plies");
    let r = chess_game::play(cfg, |st| {
        if let Some(m) = st.moves.last() {
            let n = st.moves.len();
            if n % 2 == 1 {
                eprint!("{}. {m} ", n.div_ceil(2));
            } else {
                eprint!("{m}  ");
            }
            if n % 16 == 0 {
                eprintln!();
            }
        }
    })
    .await
    .map_err(|e| anyhow!(e))?;
    eprintln!();
    let result = match r.status {
        Status::Checkmate { white: true } => "1-0 (checkmate)".to_string(),
        Status::Checkmate { white: false } => "0-1 (checkmate)".to_string(),
        Status::Draw => "1/2-1/2 (draw)".to_string(),
        Status::MoveLimit => format!("unfinished (move limit of {moves} plies)"),
        Status::Ongoing => "ongoing".to_string(),
    };
    println!("result        {result}");
    println!("plies         {}", r.moves.len());
    println!("final FEN     {}", r.fen);
    println!("wall time     {:.1} s ({} ms per ply, median)", r.wall_ms as f64 / 1000.0, r.ply_p50_ms);
    println!(
        "proposals     {} ({} certified, {} expired); equivocations caught {}; inputs refused by F {}",
        r.proposals, r.certified, r.expired, r.equivocations, r.refused_inputs
    );
    println!("written       {}/{{moves.uci,final.fen,board.svg,report.json}}", out.display());
    Ok(())
}
