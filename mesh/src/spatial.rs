//! The spatial index's geometry: positions in a world's box, Morton (Z-order) cells at several
//! levels, the DHT key of each cell, and which cells a radius query reads.
//!
//! A world defines a [`Space`]: 2 or 3 dimensions, a box, and the levels at which presence is
//! indexed (level L cuts every side into 2^L slices). An agent at position p is present in one
//! cell per level, `cell(p, L)`; each cell is a multi-writer DHT set whose key is
//! [`Space::cell_key`]. A query for the ball (p, r) picks the finest level whose cells covering
//! the ball's bounding box number at most `max_cells`, reads those cells, and keeps the entries
//! within distance r: so a query's cost is bounded whatever r is, and a large r is served by
//! coarse cells and filtered.
//!
//! The Z-order interleave is the textbook bit-spreading (no crate: the one crate for it that we
//! found pulls in `num` 0.2 for what is twenty lines here).

use serde::{Deserialize, Serialize};

use crate::simplex::Digest;

/// Finest level (3-D: 3 × 21 = 63 bits of Morton code).
pub const MAX_LEVEL: u8 = 21;

const CELL_DOMAIN: &str = "suprnova mesh v1 cell";

/// A position (`z` is ignored in 2-D).
pub type Position = [f64; 3];

/// A cell: a level and the Morton code of its integer coordinates at that level.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Level: each side is cut into 2^level slices.
    pub level: u8,
    /// Z-order code of the cell's coordinates.
    pub code: u64,
}

/// Why a space or a query is refused.
#[derive(Clone, Copy, PartialEq, Debug, thiserror::Error)]
pub enum SpatialError {
    /// Dimensions other than 2 or 3.
    #[error("a space has 2 or 3 dimensions")]
    Dims,
    /// The box is empty, inverted or not finite.
    #[error("the box must be finite with min < max on every axis")]
    BadBox,
    /// No levels, unsorted, repeated, or above `MAX_LEVEL`.
    #[error("levels must be ascending, distinct, 0 ..= 21")]
    BadLevels,
    /// The position is outside the box or not finite.
    #[error("position is outside the world's box")]
    Outside,
    /// The radius is negative or not finite.
    #[error("radius must be finite and ≥ 0")]
    BadRadius,
    /// Even the coarsest level needs more cells than allowed.
    #[error("the query needs {0} cells even at the coarsest level")]
    TooWide(u64),
}

/// A world's space.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Space {
    /// 2 or 3.
    pub dims: u8,
    /// Lower corner.
    pub min: Position,
    /// Upper corner.
    pub max: Position,
    /// Levels presence is indexed at, ascending (coarse to fine).
    pub levels: Vec<u8>,
}

fn spread2(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

fn spread3(v: u32) -> u64 {
    let mut x = u64::from(v) & 0x1f_ffff;
    x = (x | (x << 32)) & 0x001f_0000_0000_ffff;
    x = (x | (x << 16)) & 0x001f_0000_ff00_00ff;
    x = (x | (x << 8)) & 0x100f_00f0_0f00_f00f;
    x = (x | (x << 4)) & 0x10c3_0c30_c30c_30c3;
    (x | (x << 2)) & 0x1249_2492_4924_9249
}

/// Z-order code of (x, y): x on the even bits.
pub fn morton2(x: u32, y: u32) -> u64 {
    spread2(x) | (spread2(y) << 1)
}

/// Z-order code of (x, y, z) (21 bits each).
pub fn morton3(x: u32, y: u32, z: u32) -> u64 {
    spread3(x) | (spread3(y) << 1) | (spread3(z) << 2)
}

impl Space {
    /// A checked space.
    pub fn new(dims: u8, min: Position, max: Position, levels: Vec<u8>) -> Result<Space, SpatialError> {
        let s = Space { dims, min, max, levels };
        s.check()?;
        Ok(s)
    }

    /// Checks a space (also one that arrived over the wire).
    pub fn check(&self) -> Result<(), SpatialError> {
        if self.dims != 2 && self.dims != 3 {
            return Err(SpatialError::Dims);
        }
        for a in 0..usize::from(self.dims) {
            let (lo, hi) = (self.min.get(a).copied().unwrap_or(0.0), self.max.get(a).copied().unwrap_or(0.0));
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(SpatialError::BadBox);
            }
        }
        let sorted = self.levels.windows(2).all(|w| w.first() < w.get(1));
        if self.levels.is_empty() || !sorted || self.levels.iter().any(|l| *l > MAX_LEVEL) {
            return Err(SpatialError::BadLevels);
        }
        Ok(())
    }

    fn axes(&self) -> usize {
        usize::from(self.dims.clamp(2, 3))
    }

    /// Whether `p` lies in the box (bounds included) and is finite.
    pub fn contains(&self, p: &Position) -> bool {
        (0..self.axes()).all(|a| {
            let v = p.get(a).copied().unwrap_or(f64::NAN);
            v.is_finite()
                && v >= self.min.get(a).copied().unwrap_or(0.0)
                && v <= self.max.get(a).copied().unwrap_or(0.0)
        })
    }

    /// Slice index of coordinate `v` on axis `a` at `level`, clamped into the box.
    fn slot(&self, a: usize, v: f64, level: u8) -> u32 {
        let (lo, hi) = (self.min.get(a).copied().unwrap_or(0.0), self.max.get(a).copied().unwrap_or(1.0));
        let n = 1u64 << level.min(MAX_LEVEL);
        let t = ((v - lo) / (hi - lo) * n as f64).floor();
        let max = (n - 1) as f64;
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, max) };
        t as u32
    }

    fn code(&self, c: [u32; 3]) -> u64 {
        if self.dims == 2 { morton2(c[0], c[1]) } else { morton3(c[0], c[1], c[2]) }
    }

    /// The cell of `p` at `level`.
    pub fn cell(&self, p: &Position, level: u8) -> Result<Cell, SpatialError> {
        if !self.contains(p) {
            return Err(SpatialError::Outside);
        }
        let mut c = [0u32; 3];
        for (a, slot) in c.iter_mut().enumerate().take(self.axes()) {
            *slot = self.slot(a, p.get(a).copied().unwrap_or(0.0), level);
        }
        Ok(Cell { level, code: self.code(c) })
    }

    /// The cells `p` is present in: one per level.
    pub fn presence_cells(&self, p: &Position) -> Result<Vec<Cell>, SpatialError> {
        self.levels.iter().map(|l| self.cell(p, *l)).collect()
    }

    /// The DHT key of cell `c` in mesh `mesh`: BLAKE3-derive_key("suprnova mesh v1 cell",
    /// mesh ‖ dims ‖ level ‖ u64_le(code)).
    pub fn cell_key(&self, mesh: &Digest, c: Cell) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(CELL_DOMAIN);
        h.update(mesh);
        h.update(&[self.dims, c.level]);
        h.update(&c.code.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Per-axis slice ranges covering the ball (p, r) clipped to the box, at `level`.
    fn ranges(&self, p: &Position, r: f64, level: u8) -> [(u32, u32); 3] {
        let mut out = [(0u32, 0u32); 3];
        for (a, range) in out.iter_mut().enumerate().take(self.axes()) {
            let v = p.get(a).copied().unwrap_or(0.0);
            *range = (self.slot(a, v - r, level), self.slot(a, v + r, level));
        }
        out
    }

    fn count(&self, rs: &[(u32, u32); 3]) -> u64 {
        rs.iter().take(self.axes()).map(|(lo, hi)| u64::from(hi - lo) + 1).product()
    }

    /// The level and cells a query for the ball (p, r) reads: the finest indexed level at
    /// which at most `max_cells` cells cover the ball's bounding box.
    pub fn query_cells(&self, p: &Position, r: f64, max_cells: u64) -> Result<(u8, Vec<Cell>), SpatialError> {
        if !self.contains(p) {
            return Err(SpatialError::Outside);
        }
        if !(r.is_finite() && r >= 0.0) {
            return Err(SpatialError::BadRadius);
        }
        let mut fewest = u64::MAX;
        for level in self.levels.iter().rev() {
            let rs = self.ranges(p, r, *level);
            let n = self.count(&rs);
            fewest = fewest.min(n);
            if n > max_cells {
                continue;
            }
            let mut cells = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            let z = if self.dims == 3 { rs[2] } else { (0, 0) };
            for x in rs[0].0..=rs[0].1 {
                for y in rs[1].0..=rs[1].1 {
                    for zz in z.0..=z.1 {
                        cells.push(Cell { level: *level, code: self.code([x, y, zz]) });
                    }
                }
            }
            return Ok((*level, cells));
        }
        Err(SpatialError::TooWide(fewest))
    }
}

/// Euclidean distance over the first `dims` axes.
pub fn distance(a: &Position, b: &Position, dims: u8) -> f64 {
    a.iter().zip(b.iter()).take(usize::from(dims.clamp(2, 3))).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}
