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
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedVec};

use crate::simplex::Digest;

/// Finest level (3-D: 3 × 21 = 63 bits of Morton code).
pub const MAX_LEVEL: u8 = 21;

/// Levels a space may index at (0 ..= 21, each at most once).
pub const MAX_LEVELS: usize = 22;

/// Bytes of application data a presence entry may carry.
pub const MAX_INFO: usize = 96;

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
    pub levels: BoundedVec<u8, MAX_LEVELS>,
}

fn spread2(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

fn compact2(x: u64) -> u32 {
    let mut x = x & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0f0f_0f0f_0f0f_0f0f;
    x = (x | (x >> 4)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x >> 8)) & 0x0000_ffff_0000_ffff;
    x = (x | (x >> 16)) & 0x0000_0000_ffff_ffff;
    x as u32
}

fn compact3(x: u64) -> u32 {
    let mut x = x & 0x1249_2492_4924_9249;
    x = (x | (x >> 2)) & 0x10c3_0c30_c30c_30c3;
    x = (x | (x >> 4)) & 0x100f_00f0_0f00_f00f;
    x = (x | (x >> 8)) & 0x001f_0000_ff00_00ff;
    x = (x | (x >> 16)) & 0x001f_0000_0000_ffff;
    x = (x | (x >> 32)) & 0x1f_ffff;
    x as u32
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
        let levels = BoundedVec::try_from(levels).map_err(|_| SpatialError::BadLevels)?;
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

    /// The integer coordinates of a cell (inverse of the Z-order code).
    fn coords(&self, code: u64) -> [u32; 3] {
        if self.dims == 2 {
            [compact2(code), compact2(code >> 1), 0]
        } else {
            [compact3(code), compact3(code >> 1), compact3(code >> 2)]
        }
    }

    /// The next indexed level finer than `level`, if any.
    pub fn finer(&self, level: u8) -> Option<u8> {
        self.levels.iter().copied().find(|l| *l > level)
    }

    /// The cells at level `finer` that lie inside `cell` and meet the bounding box of the ball
    /// (p, r), or `None` if there would be more than `max` of them (or `finer` is not finer).
    pub fn children_in(&self, cell: Cell, finer: u8, p: &Position, r: f64, max: u64) -> Option<Vec<Cell>> {
        if finer <= cell.level || finer > MAX_LEVEL {
            return None;
        }
        let shift = finer - cell.level;
        let base = self.coords(cell.code);
        let ball = self.ranges(p, r, finer);
        let mut rs = [(0u32, 0u32); 3];
        for a in 0..self.axes() {
            let lo = base.get(a).copied().unwrap_or(0).checked_shl(u32::from(shift))?;
            let hi = lo | ((1u32 << shift) - 1);
            let (blo, bhi) = ball.get(a).copied().unwrap_or((0, 0));
            let (l, h) = (lo.max(blo), hi.min(bhi));
            if l > h {
                return Some(Vec::new());
            }
            if let Some(slot) = rs.get_mut(a) {
                *slot = (l, h);
            }
        }
        if self.count(&rs) > max {
            return None;
        }
        Some(self.enumerate(finer, &rs))
    }

    fn enumerate(&self, level: u8, rs: &[(u32, u32); 3]) -> Vec<Cell> {
        let mut cells = Vec::with_capacity(usize::try_from(self.count(rs)).unwrap_or(0));
        let z = if self.dims == 3 { rs[2] } else { (0, 0) };
        for x in rs[0].0..=rs[0].1 {
            for y in rs[1].0..=rs[1].1 {
                for zz in z.0..=z.1 {
                    cells.push(Cell { level, code: self.code([x, y, zz]) });
                }
            }
        }
        cells
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
            return Ok((*level, self.enumerate(*level, &rs)));
        }
        Err(SpatialError::TooWide(fewest))
    }
}

/// Euclidean distance over the first `dims` axes.
pub fn distance(a: &Position, b: &Position, dims: u8) -> f64 {
    a.iter().zip(b.iter()).take(usize::from(dims.clamp(2, 3))).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// The value of an agent's entry in a cell's set (wire-spec §13.9). The entry itself is a DHT
/// set entry signed by the agent's key, so the writer is the agent.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Presence {
    /// The agent is at `position`, hosted by node `node`.
    Here {
        /// Where (`z` is 0 in 2-D).
        position: Position,
        /// The node that hosts the agent (its id), for messages to it.
        node: [u8; 32],
        /// Application data (kind, capabilities): at most `MAX_INFO` bytes.
        info: BoundedBytes<MAX_INFO>,
    },
    /// The agent left this cell. Written with a higher seq over its `Here` entry when it moves.
    Gone,
}

/// An agent a query found.
#[derive(Clone, PartialEq, Debug)]
pub struct Neighbour {
    /// The agent's ed25519 key (the entry's writer).
    pub agent: [u8; 32],
    /// Its position.
    pub position: Position,
    /// The node that hosts it.
    pub node: [u8; 32],
    /// Its application data.
    pub info: Vec<u8>,
    /// Distance from the query's centre.
    pub distance: f64,
    /// The entry's sequence number (newer entries win).
    pub seq: u64,
}

/// Presence entries a query dropped, by reason.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PresenceDrops {
    /// The value does not decode as a [`Presence`].
    pub undecodable: u64,
    /// The position is outside the box or not finite.
    pub outside: u64,
    /// The position is not in the cell the entry was found in.
    pub misplaced: u64,
}

impl PresenceDrops {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &PresenceDrops) {
        self.undecodable += o.undecodable;
        self.outside += o.outside;
        self.misplaced += o.misplaced;
    }
}

/// Collects the entries of the cells a query read (sans-IO): decodes and checks each, keeps
/// each agent's newest entry, and yields the agents within the radius.
pub struct Sifter<'a> {
    space: &'a Space,
    centre: Position,
    radius: f64,
    here: std::collections::BTreeMap<[u8; 32], Neighbour>,
    gone: std::collections::BTreeMap<[u8; 32], u64>,
    /// What was dropped, by reason.
    pub drops: PresenceDrops,
}

impl<'a> Sifter<'a> {
    /// A sifter for the ball (`centre`, `radius`).
    pub fn new(space: &'a Space, centre: Position, radius: f64) -> Sifter<'a> {
        Sifter {
            space,
            centre,
            radius,
            here: Default::default(),
            gone: Default::default(),
            drops: PresenceDrops::default(),
        }
    }

    /// One entry of cell `cell`: writer, seq and value as the DHT returned them (the DHT has
    /// checked the writer's signature).
    pub fn add(&mut self, cell: Cell, writer: [u8; 32], seq: u64, value: &[u8]) {
        let (position, node, info) = match postcard::from_bytes::<Presence>(value) {
            Ok(Presence::Here { position, node, info }) => (position, node, info),
            Ok(Presence::Gone) => {
                let g = self.gone.entry(writer).or_insert(seq);
                *g = (*g).max(seq);
                return;
            }
            Err(_) => {
                self.drops.undecodable += 1;
                return;
            }
        };
        match self.space.cell(&position, cell.level) {
            Err(_) => self.drops.outside += 1,
            Ok(c) if c != cell => self.drops.misplaced += 1,
            Ok(_) => {
                if self.here.get(&writer).is_some_and(|n| n.seq >= seq) {
                    return;
                }
                let distance = distance(&self.centre, &position, self.space.dims);
                let n = Neighbour { agent: writer, position, node, info: info.to_vec(), distance, seq };
                self.here.insert(writer, n);
            }
        }
    }

    /// The agents within the radius whose newest entry says they are here, nearest first.
    pub fn finish(self) -> Vec<Neighbour> {
        let gone = self.gone;
        let r = self.radius;
        let mut out: Vec<Neighbour> = self
            .here
            .into_values()
            .filter(|n| n.distance <= r && gone.get(&n.agent).is_none_or(|g| *g <= n.seq))
            .collect();
        out.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.agent.cmp(&b.agent)));
        out
    }
}
