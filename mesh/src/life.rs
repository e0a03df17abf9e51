//! Conway's Game of Life on a torus, as a mesh world: the example world of the docs and tests.
//!
//! F is one generation (B3/S23). The round seed also brings one cell to life at a position it
//! picks, so a board never dies out and the seed's use shows. An input sets one cell.

use serde::{Deserialize, Serialize};

use crate::world::World;

/// The board: `w` × `h` cells, one bit each, row by row (bit i of the board is bit i % 8 of
/// byte i / 8), so a 64 × 64 board is 512 bytes and a state up to about 80 × 80 fits inline in
/// a DHT round record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Board {
    /// Width.
    pub w: u16,
    /// Height.
    pub h: u16,
    /// Cells, one bit each.
    pub bits: Vec<u8>,
}

impl Board {
    /// An empty `w` × `h` board (each side 1 ..= 1024).
    pub fn empty(w: u16, h: u16) -> Board {
        let (w, h) = (w.clamp(1, 1024), h.clamp(1, 1024));
        Board { w, h, bits: vec![0; (usize::from(w) * usize::from(h)).div_ceil(8)] }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        let (w, h) = (i64::from(self.w), i64::from(self.h));
        usize::try_from(y.rem_euclid(h) * w + x.rem_euclid(w)).ok()
    }

    /// Whether (x, y) is alive (wrapping around the edges).
    pub fn alive(&self, x: i64, y: i64) -> bool {
        let Some(i) = self.index(x, y) else { return false };
        self.bits.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1)
    }

    /// Sets (x, y) (wrapping around the edges).
    pub fn set(&mut self, x: i64, y: i64, alive: bool) {
        let Some(i) = self.index(x, y) else { return };
        if let Some(b) = self.bits.get_mut(i / 8) {
            let m = 1u8 << (i % 8);
            if alive { *b |= m } else { *b &= !m }
        }
    }

    /// Live cells.
    pub fn population(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }
}

/// Set cell (x, y) alive or dead.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SetCell {
    /// Column.
    pub x: u16,
    /// Row.
    pub y: u16,
    /// Alive?
    pub alive: bool,
}

/// The Life world.
#[derive(Clone, Copy, Debug, Default)]
pub struct Life;

impl World for Life {
    type State = Board;
    type Input = SetCell;

    fn name(&self) -> &str {
        "life"
    }

    fn version(&self) -> u32 {
        1
    }

    fn evolve(&self, b: &Board, seed: &[u8; 32]) -> Board {
        let mut next = b.clone();
        for y in 0..i64::from(b.h) {
            for x in 0..i64::from(b.w) {
                let n = [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)]
                    .iter()
                    .filter(|(dx, dy)| b.alive(x + dx, y + dy))
                    .count();
                next.set(x, y, matches!((b.alive(x, y), n), (true, 2) | (_, 3)));
            }
        }
        let pick = i64::from(u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]));
        let cells = i64::from(b.w) * i64::from(b.h);
        let at = pick % cells.max(1);
        next.set(at % i64::from(b.w), at / i64::from(b.w), true);
        next
    }

    fn validate(&self, b: &Board, _author: &[u8; 32], i: &SetCell) -> Result<(), String> {
        if i.x >= b.w || i.y >= b.h {
            return Err(format!("cell ({}, {}) is off the {}×{} board", i.x, i.y, b.w, b.h));
        }
        Ok(())
    }

    fn apply(&self, b: &mut Board, _author: &[u8; 32], i: &SetCell) {
        b.set(i64::from(i.x), i64::from(i.y), i.alive);
    }
}
