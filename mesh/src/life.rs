//! Conway's Game of Life on a torus, as a mesh world: the example world of the docs and tests.
//!
//! F is one generation (B3/S23). The round seed also brings one cell to life at a position it
//! picks, so a board never dies out and the seed's use shows. An input sets one cell.

use serde::{Deserialize, Serialize};

use crate::world::World;

/// The board.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Board {
    /// Width.
    pub w: u16,
    /// Height.
    pub h: u16,
    /// Cells, row by row, 0 or 1.
    pub cells: Vec<u8>,
}

impl Board {
    /// An empty `w` × `h` board (each side 1 ..= 1024).
    pub fn empty(w: u16, h: u16) -> Board {
        let (w, h) = (w.clamp(1, 1024), h.clamp(1, 1024));
        Board { w, h, cells: vec![0; usize::from(w) * usize::from(h)] }
    }

    /// Whether (x, y) is alive (wrapping around the edges).
    pub fn alive(&self, x: i64, y: i64) -> bool {
        let (w, h) = (i64::from(self.w), i64::from(self.h));
        let i = y.rem_euclid(h) * w + x.rem_euclid(w);
        usize::try_from(i).ok().and_then(|i| self.cells.get(i)).is_some_and(|c| *c != 0)
    }

    /// Live cells.
    pub fn population(&self) -> usize {
        self.cells.iter().filter(|c| **c != 0).count()
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
                let live = matches!((b.alive(x, y), n), (true, 2) | (_, 3));
                let i = usize::try_from(y * i64::from(b.w) + x).unwrap_or(usize::MAX);
                if let Some(c) = next.cells.get_mut(i) {
                    *c = u8::from(live);
                }
            }
        }
        let pick = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]) as usize;
        let len = next.cells.len().max(1);
        if let Some(c) = next.cells.get_mut(pick % len) {
            *c = 1;
        }
        next
    }

    fn validate(&self, b: &Board, _author: &[u8; 32], i: &SetCell) -> Result<(), String> {
        if i.x >= b.w || i.y >= b.h {
            return Err(format!("cell ({}, {}) is off the {}×{} board", i.x, i.y, b.w, b.h));
        }
        Ok(())
    }

    fn apply(&self, b: &mut Board, _author: &[u8; 32], i: &SetCell) {
        let idx = usize::from(i.y) * usize::from(b.w) + usize::from(i.x);
        if let Some(c) = b.cells.get_mut(idx) {
            *c = u8::from(i.alive);
        }
    }
}
