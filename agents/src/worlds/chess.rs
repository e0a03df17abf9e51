//! Distributed chess: the board is mesh state, F enforces the rules (with cozy-chess, MIT), and
//! every piece is an agent.
//!
//! On each ply, the live pieces of the side to move **negotiate**: each finds its own best legal
//! move with a simple evaluation (material won, checks, promotion, centre, and whether the piece
//! is left hanging, plus a little seeded noise) and broadcasts it to its side's swarm. When every
//! live piece's candidate is in, each piece picks the best; the piece whose move won
//! **proposes** it, the eligible voters frozen in the proposal being the side's live pieces, and
//! they **vote** `yes` if it is the move they picked and legal, `no` otherwise. The certificate
//! (strictly more than 2/3 `yes`) is submitted to the mesh, and F applies the move only if the
//! certificate verifies, its voters are exactly the side's live pieces, the ply is the current
//! one and the move is legal. A proposal that expires is retried without its proposer.
//!
//! A cheating piece (an illegal move, a double vote) changes nothing: honest pieces vote `no`,
//! its double vote is evidence that excludes it, and F would refuse an illegal move anyway.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cozy_chess::{Board, Color, GameStatus, Move, Piece, Square};
use serde::{Deserialize, Serialize};
use suprnova_mesh::world::World;

use crate::wire::{AgentId, Certificate};

/// The world (F and ⊕).
#[derive(Clone, Copy, Debug, Default)]
pub struct Chess;

/// How the game stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Being played.
    Ongoing,
    /// Mate; `white` won if true.
    Checkmate {
        /// Whether white won.
        white: bool,
    },
    /// Stalemate or the fifty-move rule.
    Draw,
    /// The move limit was reached.
    MoveLimit,
}

/// A piece's agent and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRec {
    /// The piece's agent.
    pub agent: AgentId,
    /// Its colour.
    pub white: bool,
    /// Its square (0 = a1 … 63 = h8), `None` once captured.
    pub square: Option<u8>,
}

/// The mesh state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChessState {
    /// The position, as FEN.
    pub fen: String,
    /// The moves played, UCI.
    pub moves: Vec<String>,
    /// The pieces, in their starting order.
    pub pieces: Vec<PieceRec>,
    /// How the game stands.
    pub status: Status,
    /// Plies at most.
    pub move_limit: u32,
}

/// What a side's pieces vote on: a move for a ply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveBody {
    /// The ply (moves played so far).
    pub ply: u32,
    /// The move, UCI.
    pub uci: String,
}

/// An input: a certified move.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ChessInput {
    /// The side's certificate for a move.
    Move(Box<Certificate>),
}

/// The choice a piece signs for a move it backs.
pub const YES: &[u8] = b"yes";
/// The choice a piece signs against a move.
pub const NO: &[u8] = b"no";

fn sq(i: u8) -> Square {
    Square::index(usize::from(i & 63))
}

impl ChessState {
    /// The starting position with `white` and `black` piece agents, in the order of the squares
    /// they start on (a1, b1, … h2; a7, … h8).
    pub fn new(white: &[AgentId; 16], black: &[AgentId; 16], move_limit: u32) -> ChessState {
        let mut pieces = Vec::with_capacity(32);
        for (i, a) in white.iter().enumerate() {
            pieces.push(PieceRec { agent: *a, white: true, square: Some(i as u8) });
        }
        for (i, a) in black.iter().enumerate() {
            pieces.push(PieceRec { agent: *a, white: false, square: Some(48 + i as u8) });
        }
        ChessState { fen: Board::default().to_string(), moves: vec![], pieces, status: Status::Ongoing, move_limit }
    }

    /// The board.
    pub fn board(&self) -> Option<Board> {
        self.fen.parse().ok()
    }

    /// Whether white is to move.
    pub fn white_to_move(&self) -> bool {
        self.moves.len().is_multiple_of(2)
    }

    /// The live pieces of a colour, by agent id (ascending: the voter list of its proposals).
    pub fn live(&self, white: bool) -> Vec<AgentId> {
        let mut v: Vec<AgentId> =
            self.pieces.iter().filter(|p| p.white == white && p.square.is_some()).map(|p| p.agent).collect();
        v.sort_unstable();
        v
    }

    /// The piece record of `agent`.
    pub fn piece(&self, agent: &AgentId) -> Option<&PieceRec> {
        self.pieces.iter().find(|p| p.agent == *agent)
    }

    /// Plays `uci` (already checked legal), moving the piece agents with it.
    fn play(&mut self, board: &mut Board, mv: Move, uci: &str) {
        let from = mv.from as u8;
        let to = mv.to as u8;
        let mover = board.piece_on(mv.from);
        let us = board.side_to_move();
        let castle = mover == Some(Piece::King) && board.color_on(mv.to) == Some(us);
        let en_passant =
            mover == Some(Piece::Pawn) && mv.from.file() != mv.to.file() && board.piece_on(mv.to).is_none();
        let rank = from / 8;
        if castle {
            // cozy-chess writes castling as the king taking its own rook.
            let short = to % 8 > from % 8;
            let (king_to, rook_to) = if short { (rank * 8 + 6, rank * 8 + 5) } else { (rank * 8 + 2, rank * 8 + 3) };
            for p in &mut self.pieces {
                if p.square == Some(from) {
                    p.square = Some(king_to);
                } else if p.square == Some(to) {
                    p.square = Some(rook_to);
                }
            }
        } else {
            let victim = if en_passant { rank * 8 + to % 8 } else { to };
            for p in &mut self.pieces {
                if p.square == Some(victim) {
                    p.square = None;
                }
            }
            for p in &mut self.pieces {
                if p.square == Some(from) {
                    p.square = Some(to);
                }
            }
        }
        board.play_unchecked(mv);
        self.fen = board.to_string();
        self.moves.push(uci.to_string());
        self.status = match board.status() {
            GameStatus::Won => Status::Checkmate { white: board.side_to_move() == Color::Black },
            GameStatus::Drawn => Status::Draw,
            GameStatus::Ongoing if self.moves.len() >= self.move_limit as usize => Status::MoveLimit,
            GameStatus::Ongoing => Status::Ongoing,
        };
    }
}

/// Parses a UCI move on `board` and checks it is legal.
pub fn legal(board: &Board, uci: &str) -> Option<Move> {
    let mv = cozy_chess::util::parse_uci_move(board, uci).ok()?;
    board.is_legal(mv).then_some(mv)
}

impl World for Chess {
    type State = ChessState;
    type Input = ChessInput;
    fn name(&self) -> &str {
        "chess"
    }
    fn version(&self) -> u32 {
        1
    }
    fn evolve(&self, state: &ChessState, _seed: &[u8; 32]) -> ChessState {
        state.clone()
    }
    fn validate(&self, state: &ChessState, _author: &[u8; 32], input: &ChessInput) -> Result<(), String> {
        let ChessInput::Move(cert) = input;
        if state.status != Status::Ongoing {
            return Err("the game is over".into());
        }
        if cert.choice.as_slice() != YES {
            return Err("the certificate is not for yes".into());
        }
        let body: MoveBody = crate::wire::decode(&cert.proposal.body).map_err(|_| "bad proposal body")?;
        if body.ply as usize != state.moves.len() {
            return Err(format!("ply {} is not the current {}", body.ply, state.moves.len()));
        }
        if cert.proposal.voters.to_vec() != state.live(state.white_to_move()) {
            return Err("the voters are not the side's live pieces".into());
        }
        cert.verify().map_err(|e| format!("certificate: {e}"))?;
        let board = state.board().ok_or("bad position")?;
        legal(&board, &body.uci).ok_or_else(|| format!("illegal move {}", body.uci))?;
        Ok(())
    }
    fn apply(&self, state: &mut ChessState, _author: &[u8; 32], input: &ChessInput) {
        let ChessInput::Move(cert) = input;
        let Ok(body) = crate::wire::decode::<MoveBody>(&cert.proposal.body) else { return };
        let Some(mut board) = state.board() else { return };
        if let Some(mv) = legal(&board, &body.uci) {
            state.play(&mut board, mv, &body.uci);
        }
    }
}

fn value(p: Piece) -> i64 {
    match p {
        Piece::Pawn => 1,
        Piece::Knight | Piece::Bishop => 3,
        Piece::Rook => 5,
        Piece::Queen => 9,
        Piece::King => 0,
    }
}

/// The best move of the piece on `square` by a one-ply evaluation, with noise from `seed`:
/// `(uci, score)`, or `None` if it has no legal move.
pub fn best_move(board: &Board, square: u8, seed: u64) -> Option<(String, i64)> {
    let from = sq(square);
    let mut moves = Vec::new();
    board.generate_moves_for(from.bitboard(), |pm| {
        moves.extend(pm);
        false
    });
    let mover = board.piece_on(from)?;
    let mut best: Option<(String, i64)> = None;
    for mv in moves {
        let uci = cozy_chess::util::display_uci_move(board, mv).to_string();
        let mut score = 0i64;
        let castle = mover == Piece::King && board.color_on(mv.to) == Some(board.side_to_move());
        if let Some(victim) = board.piece_on(mv.to).filter(|_| !castle) {
            score += 100 * value(victim);
        }
        if let Some(p) = mv.promotion {
            score += 90 * value(p);
        }
        let mut after = board.clone();
        after.play_unchecked(mv);
        match after.status() {
            GameStatus::Won => score += 100_000,
            GameStatus::Drawn => score -= 500,
            GameStatus::Ongoing => {}
        }
        if !after.checkers().is_empty() {
            score += 30;
        }
        if castle {
            score += 40;
        }
        // Left hanging: can the other side take the piece where it lands?
        let landed = if castle { None } else { Some(mv.to) };
        if let Some(t) = landed {
            let mut attacked = false;
            after.generate_moves(|pm| {
                if pm.to.has(t) {
                    attacked = true;
                }
                attacked
            });
            if attacked {
                score -= 95 * value(mv.promotion.unwrap_or(mover));
            }
        }
        // Centre, a little.
        let (f, r) = (mv.to as i64 % 8, mv.to as i64 / 8);
        score -= (2 * f - 7).abs() + (2 * r - 7).abs();
        let noise = blake3::hash(&[&seed.to_le_bytes()[..], uci.as_bytes()].concat()).as_bytes()[0] as i64 % 9;
        score += noise;
        if best.as_ref().is_none_or(|(u, s)| score > *s || (score == *s && uci < *u)) {
            best = Some((uci, score));
        }
    }
    best
}

/// The final board as SVG (light and dark squares, pieces as Unicode glyphs, the last move
/// marked).
pub fn board_svg(state: &ChessState) -> String {
    let mut s = String::new();
    let size = 60;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, sans-serif">"#,
        w = size * 8 + 40,
        h = size * 8 + 70
    );
    let last = state.moves.last().map(|m| (m.get(0..2).unwrap_or(""), m.get(2..4).unwrap_or("")));
    let board = state.board();
    for rank in 0..8u8 {
        for file in 0..8u8 {
            let x = 20 + usize::from(file) * size;
            let y = 20 + usize::from(7 - rank) * size;
            let name = format!("{}{}", (b'a' + file) as char, rank + 1);
            let marked = last.is_some_and(|(a, b)| a == name || b == name);
            let fill = match ((file + rank) % 2 == 0, marked) {
                (_, true) => "#cdd16e",
                (true, false) => "#b58863",
                (false, false) => "#f0d9b5",
            };
            let _ = write!(s, r#"<rect x="{x}" y="{y}" width="{size}" height="{size}" fill="{fill}"/>"#);
            let Some(b) = &board else { continue };
            let square = Square::index(usize::from(rank * 8 + file));
            if let (Some(p), Some(c)) = (b.piece_on(square), b.color_on(square)) {
                let glyph = match (p, c) {
                    (Piece::King, Color::White) => '♔',
                    (Piece::Queen, Color::White) => '♕',
                    (Piece::Rook, Color::White) => '♖',
                    (Piece::Bishop, Color::White) => '♗',
                    (Piece::Knight, Color::White) => '♘',
                    (Piece::Pawn, Color::White) => '♙',
                    (Piece::King, Color::Black) => '♚',
                    (Piece::Queen, Color::Black) => '♛',
                    (Piece::Rook, Color::Black) => '♜',
                    (Piece::Bishop, Color::Black) => '♝',
                    (Piece::Knight, Color::Black) => '♞',
                    (Piece::Pawn, Color::Black) => '♟',
                };
                let _ = write!(
                    s,
                    r#"<text x="{}" y="{}" font-size="46" text-anchor="middle">{glyph}</text>"#,
                    x + size / 2,
                    y + size - 13
                );
            }
        }
    }
    for i in 0..8u8 {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#444">{}</text><text x="10" y="{}" font-size="13" text-anchor="middle" fill="#444">{}</text>"##,
            20 + usize::from(i) * size + size / 2,
            20 + 8 * size + 15,
            (b'a' + i) as char,
            20 + usize::from(7 - i) * size + size / 2 + 5,
            i + 1
        );
    }
    let result = match state.status {
        Status::Ongoing => "in progress".to_string(),
        Status::Checkmate { white: true } => "1-0, checkmate".to_string(),
        Status::Checkmate { white: false } => "0-1, checkmate".to_string(),
        Status::Draw => "½-½, draw".to_string(),
        Status::MoveLimit => format!("move limit ({} plies)", state.move_limit),
    };
    let _ = write!(
        s,
        r##"<text x="20" y="{}" font-size="14" fill="#222">{} plies, {}</text></svg>"##,
        20 + 8 * size + 40,
        state.moves.len(),
        result
    );
    s
}

/// Candidates a piece heard this ply: agent → (move, score); `None` if it has no move.
pub type Candidates = BTreeMap<AgentId, Option<(String, i64)>>;

/// The winning candidate: highest score, then smallest UCI, then smallest agent id; skipping
/// proposers whose proposals expired this ply.
pub fn winner(c: &Candidates, skip: &[AgentId]) -> Option<(AgentId, String)> {
    c.iter()
        .filter(|(a, _)| !skip.contains(a))
        .filter_map(|(a, m)| m.as_ref().map(|(u, s)| (*a, u.clone(), *s)))
        .max_by(|x, y| x.2.cmp(&y.2).then(y.1.cmp(&x.1)).then(y.0.cmp(&x.0)))
        .map(|(a, u, _)| (a, u))
}
