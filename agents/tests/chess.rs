//! A chess game between piece agents on 5 nodes, one of them cheating: the move list replays as
//! legal with the move generator, the final position matches, and the cheater's double votes
//! were caught.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use cozy_chess::Board;
use suprnova_agents::worlds::chess::Status;
use suprnova_agents::worlds::chess_game::{GameConfig, play};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_on_five_nodes_replays_as_legal_and_a_cheater_changes_nothing() {
    let cfg = GameConfig {
        nodes: 5,
        seed: 7,
        move_limit: 24,
        cheaters: 1,
        stall: Duration::from_secs(60),
        ..GameConfig::default()
    };
    let report = play(cfg, |_| {}).await.unwrap();
    eprintln!("{report:?}");
    assert!(matches!(report.status, Status::MoveLimit | Status::Checkmate { .. } | Status::Draw));
    if report.status == Status::MoveLimit {
        assert_eq!(report.moves.len(), 24);
    }
    // Replay with the move generator: every move legal, same final position.
    let mut board = Board::default();
    for uci in &report.moves {
        let mv = cozy_chess::util::parse_uci_move(&board, uci).unwrap();
        assert!(board.is_legal(mv), "illegal move {uci} in {board}");
        board.play(mv);
    }
    assert_eq!(board.to_string(), report.fen);
    // The cheater (a white pawn) proposed illegal moves and voted twice on every white proposal.
    assert!(report.equivocations >= 1, "{report:?}");
    assert!(!report.moves.iter().any(|m| m == "a1h8"));
}
