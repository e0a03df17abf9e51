//! `suprnova world chess|universe|layout`: example worlds where agents organise themselves on a
//! mesh, each on N in-process nodes on 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Subcommand;
use suprnova_agents::worlds::chess::Status;
use suprnova_agents::worlds::chess_game::{self, GameConfig};

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
}

/// Runs a world.
pub async fn run(cmd: WorldCmd) -> Result<()> {
    match cmd {
        WorldCmd::Chess { nodes, seed, out, moves, cheaters } => {
            if nodes == 0 || nodes > 64 {
                return Err(anyhow!("--nodes must be 1 ..= 64"));
            }
            eprintln!("chess: {nodes} nodes, 32 piece agents, seed {seed}, at most {moves} plies");
            let cfg = GameConfig {
                nodes,
                seed,
                move_limit: moves,
                cheaters,
                out: Some(out.clone()),
                stall: Duration::from_secs(60),
                ..GameConfig::default()
            };
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
    }
}
