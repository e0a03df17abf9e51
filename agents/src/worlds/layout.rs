//! SVG layout: boxes with sizes and links are agents that negotiate positions until nothing
//! overlaps and linked boxes sit close.
//!
//! The state holds every box (integer pixels, so F is exact) and the links. An input moves one
//! box by a bounded step, and only its own agent may move it. The agents' loop: **check
//! conflicts** (which boxes overlap mine), **negotiate** (for each overlapping pair, the box of
//! higher priority, larger area and then lower index, asks the other to yield by the smallest
//! separating step; the other agrees and answers with the move it will make), **apply** (the
//! yielder submits the sum of what it agreed to; every box also drifts towards linked boxes that
//! are too far), and the next round shows the result.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use suprnova_mesh::world::World;

use crate::wire::AgentId;

/// Largest step of one move, px per axis.
pub const MAX_STEP: i32 = 60;
/// Linked boxes count as close when the gap between them is at most this, px.
pub const CLOSE: i32 = 120;

/// One box.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elem {
    /// Its agent.
    pub agent: AgentId,
    /// The node hosting the agent (for messages).
    pub node: [u8; 32],
    /// Its label.
    pub label: String,
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width.
    pub w: i32,
    /// Height.
    pub h: i32,
}

impl Elem {
    fn centre(&self) -> (i32, i32) {
        (self.x + self.w / 2, self.y + self.h / 2)
    }
}

/// The mesh state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutState {
    /// Canvas width.
    pub width: i32,
    /// Canvas height.
    pub height: i32,
    /// The boxes.
    pub elems: Vec<Elem>,
    /// Links between boxes (indices).
    pub links: Vec<(u16, u16)>,
    /// Rounds so far.
    pub round: u64,
    /// Moves applied.
    pub moves: u64,
}

/// An input: move box `elem` by `(dx, dy)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayoutMove {
    /// The box.
    pub elem: u16,
    /// Step right.
    pub dx: i32,
    /// Step down.
    pub dy: i32,
}

/// The world.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout;

/// How much `a` and `b` overlap along x and y (both positive when they overlap).
pub fn overlap(a: &Elem, b: &Elem) -> (i32, i32) {
    let ox = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let oy = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    (ox, oy)
}

/// The gap between two boxes (0 when they touch or overlap).
pub fn gap(a: &Elem, b: &Elem) -> i32 {
    let gx = (a.x.max(b.x) - (a.x + a.w).min(b.x + b.w)).max(0);
    let gy = (a.y.max(b.y) - (a.y + a.h).min(b.y + b.h)).max(0);
    gx.max(gy)
}

impl LayoutState {
    /// Pairs of overlapping boxes.
    pub fn overlaps(&self) -> usize {
        let mut n = 0;
        for (i, a) in self.elems.iter().enumerate() {
            for b in self.elems.iter().skip(i + 1) {
                let (ox, oy) = overlap(a, b);
                if ox > 0 && oy > 0 {
                    n += 1;
                }
            }
        }
        n
    }

    /// Links whose boxes are farther apart than [`CLOSE`].
    pub fn stretched(&self) -> usize {
        self.links
            .iter()
            .filter(|(a, b)| match (self.elems.get(usize::from(*a)), self.elems.get(usize::from(*b))) {
                (Some(a), Some(b)) => gap(a, b) > CLOSE,
                _ => false,
            })
            .count()
    }

    /// Whether one of box `i`'s links is stretched.
    pub fn has_stretched_link(&self, i: usize) -> bool {
        self.elems.get(i).is_some_and(|me| self.partners(i).any(|o| gap(me, o) > CLOSE))
    }

    /// Whether box `a` outranks box `b` (larger area, then lower index): the other yields.
    pub fn outranks(&self, a: usize, b: usize) -> bool {
        let area = |i: usize| self.elems.get(i).map_or(0, |e| e.w * e.h);
        (area(a), std::cmp::Reverse(a)) > (area(b), std::cmp::Reverse(b))
    }

    /// The step that moves box `yielder` off box `stayer`: of the four axis-aligned escapes
    /// (left, right, up, down, each capped at [`MAX_STEP`] and kept on the canvas), the one
    /// that leaves the yielder overlapping the fewest boxes that outrank it, then the fewest
    /// boxes, then the shortest.
    pub fn separation(&self, stayer: usize, yielder: usize) -> Option<(i32, i32)> {
        let (s, y) = (self.elems.get(stayer)?, self.elems.get(yielder)?);
        let (ox, oy) = overlap(s, y);
        if ox <= 0 || oy <= 0 {
            return None;
        }
        let escapes = [
            (s.x - (y.x + y.w) - 1, 0),
            (s.x + s.w - y.x + 1, 0),
            (0, s.y - (y.y + y.h) - 1),
            (0, s.y + s.h - y.y + 1),
        ];
        escapes
            .iter()
            .map(|&(dx, dy)| self.clamp_step(yielder, dx, dy))
            .filter(|&(dx, dy)| dx != 0 || dy != 0)
            .min_by_key(|&(dx, dy)| {
                (
                    self.greater_overlaps_at(yielder, dx, dy, stayer),
                    self.overlaps_at(yielder, dx, dy),
                    dx.abs() + dy.abs(),
                )
            })
    }

    /// The boxes box `i` would overlap after moving by `(dx, dy)`.
    fn overlapped_at(&self, i: usize, dx: i32, dy: i32) -> impl Iterator<Item = usize> + '_ {
        let moved = self.elems.get(i).map(|e| Elem { x: e.x + dx, y: e.y + dy, ..e.clone() });
        self.elems.iter().enumerate().filter_map(move |(j, o)| {
            let m = moved.as_ref()?;
            let (ox, oy) = overlap(m, o);
            (j != i && ox > 0 && oy > 0).then_some(j)
        })
    }

    /// How many boxes that outrank box `i` (other than `except`) it would overlap after moving
    /// by `(dx, dy)`.
    pub fn greater_overlaps_at(&self, i: usize, dx: i32, dy: i32, except: usize) -> usize {
        self.overlapped_at(i, dx, dy).filter(|j| *j != except && self.outranks(*j, i)).count()
    }

    /// The boxes linked to box `i`.
    fn partners(&self, i: usize) -> impl Iterator<Item = &Elem> + '_ {
        self.links.iter().filter_map(move |(a, b)| {
            let other = if usize::from(*a) == i {
                usize::from(*b)
            } else if usize::from(*b) == i {
                usize::from(*a)
            } else {
                return None;
            };
            self.elems.get(other)
        })
    }

    /// A force-directed step for box `i` at `round` (Fruchterman and Reingold): links attract
    /// (d²/k), every box repels (k²/d), a weak pull keeps the layout near the canvas centre, and
    /// the step is capped by a temperature that cools from 60 px to 4 px over `cooling` rounds.
    pub fn force(&self, i: usize, round: u64, cooling: u64) -> (i32, i32) {
        let Some(me) = self.elems.get(i) else { return (0, 0) };
        let k = 140.0f64;
        let (mx, my) = (f64::from(me.centre().0), f64::from(me.centre().1));
        let (mut fx, mut fy) = (0.0f64, 0.0f64);
        for (j, o) in self.elems.iter().enumerate() {
            if j == i {
                continue;
            }
            let (ox, oy) = (f64::from(o.centre().0), f64::from(o.centre().1));
            let (dx, dy) = (mx - ox, my - oy);
            let d = (dx * dx + dy * dy).sqrt().max(1.0);
            let rep = k * k / d;
            fx += dx / d * rep;
            fy += dy / d * rep;
        }
        for o in self.partners(i) {
            let (ox, oy) = (f64::from(o.centre().0), f64::from(o.centre().1));
            let (dx, dy) = (ox - mx, oy - my);
            let d = (dx * dx + dy * dy).sqrt().max(1.0);
            let att = 2.0 * d * d / k;
            fx += dx / d * att;
            fy += dy / d * att;
        }
        fx += (f64::from(self.width) / 2.0 - mx) * 0.05;
        fy += (f64::from(self.height) / 2.0 - my) * 0.05;
        let t = 4.0 + 56.0 * (1.0 - (round as f64 / cooling.max(1) as f64).min(1.0));
        let f = (fx * fx + fy * fy).sqrt();
        if f < 1e-9 {
            return (0, 0);
        }
        let step = f.min(t);
        ((fx / f * step).round() as i32, (fy / f * step).round() as i32)
    }

    /// How many boxes box `i` would overlap after moving by `(dx, dy)`.
    pub fn overlaps_at(&self, i: usize, dx: i32, dy: i32) -> usize {
        self.overlapped_at(i, dx, dy).count()
    }

    /// The step that brings box `i` towards its linked boxes that are too far (at most 20 px
    /// towards each, 30 in all per axis).
    pub fn pull(&self, i: usize) -> (i32, i32) {
        let Some(me) = self.elems.get(i) else { return (0, 0) };
        let (mut dx, mut dy) = (0i64, 0i64);
        for o in self.partners(i) {
            let g = gap(me, o);
            if g > CLOSE - 10 {
                let (mc, oc) = (me.centre(), o.centre());
                let (vx, vy) = (i64::from(oc.0 - mc.0), i64::from(oc.1 - mc.1));
                let len = vx.abs().max(vy.abs()).max(1);
                let step = i64::from((g - CLOSE / 2).min(20));
                dx += vx * step / len;
                dy += vy * step / len;
            }
        }
        (dx.clamp(-30, 30) as i32, dy.clamp(-30, 30) as i32)
    }

    /// Clamps a step so box `i` stays on the canvas and within [`MAX_STEP`].
    pub fn clamp_step(&self, i: usize, dx: i32, dy: i32) -> (i32, i32) {
        let Some(e) = self.elems.get(i) else { return (0, 0) };
        let dx = dx.clamp(-MAX_STEP, MAX_STEP).clamp(-e.x, self.width - e.w - e.x);
        let dy = dy.clamp(-MAX_STEP, MAX_STEP).clamp(-e.y, self.height - e.h - e.y);
        (dx, dy)
    }

    /// `n` boxes of varied sizes crowded near the centre of a `width × height` canvas, linked
    /// as a random tree plus a few extra links, from `seed`; agents and nodes from the lists.
    pub fn crowded(n: usize, seed: u64, agents: &[(AgentId, [u8; 32])], width: i32, height: i32) -> LayoutState {
        let mut r = seed ^ 0x1a70_0700;
        let mut next = move || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        let mut elems = Vec::with_capacity(n);
        for i in 0..n {
            let w = 60 + (next() % 100) as i32;
            let h = 30 + (next() % 40) as i32;
            let x = width / 2 - 120 + (next() % 240) as i32 - w / 2;
            let y = height / 2 - 80 + (next() % 160) as i32 - h / 2;
            let (agent, node) = agents.get(i).copied().unwrap_or(([0; 32], [0; 32]));
            elems.push(Elem { agent, node, label: format!("n{i}"), x, y, w, h });
        }
        let mut links = Vec::new();
        for i in 1..n {
            links.push(((next() % i as u64) as u16, i as u16));
        }
        for _ in 0..n / 6 {
            let (a, b) = ((next() % n as u64) as u16, (next() % n as u64) as u16);
            if a != b && !links.contains(&(a, b)) && !links.contains(&(b, a)) {
                links.push((a.min(b), a.max(b)));
            }
        }
        LayoutState { width, height, elems, links, round: 0, moves: 0 }
    }
}

impl World for Layout {
    type State = LayoutState;
    type Input = LayoutMove;
    fn name(&self) -> &str {
        "layout"
    }
    fn version(&self) -> u32 {
        1
    }
    fn evolve(&self, state: &LayoutState, _seed: &[u8; 32]) -> LayoutState {
        let mut s = state.clone();
        s.round += 1;
        s
    }
    fn validate(&self, state: &LayoutState, author: &[u8; 32], m: &LayoutMove) -> Result<(), String> {
        let e = state.elems.get(usize::from(m.elem)).ok_or("no such box")?;
        if e.agent != *author {
            return Err("only a box's own agent moves it".into());
        }
        if m.dx.abs() > MAX_STEP || m.dy.abs() > MAX_STEP {
            return Err("step too long".into());
        }
        let (x, y) = (e.x + m.dx, e.y + m.dy);
        if x < 0 || y < 0 || x + e.w > state.width || y + e.h > state.height {
            return Err("off the canvas".into());
        }
        Ok(())
    }
    fn apply(&self, state: &mut LayoutState, _author: &[u8; 32], m: &LayoutMove) {
        if let Some(e) = state.elems.get_mut(usize::from(m.elem)) {
            e.x += m.dx;
            e.y += m.dy;
            state.moves += 1;
        }
    }
}

/// The layout as SVG: links as lines, boxes with labels; overlapping boxes in red.
pub fn svg(s: &LayoutState, title: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, sans-serif"><rect width="{w}" height="{h}" fill="#fbfbf8"/>"##,
        w = s.width,
        h = s.height + 30
    );
    for (a, b) in &s.links {
        if let (Some(a), Some(b)) = (s.elems.get(usize::from(*a)), s.elems.get(usize::from(*b))) {
            let (ac, bc) = (a.centre(), b.centre());
            let colour = if gap(a, b) > CLOSE { "#d9534f" } else { "#8a9bb0" };
            let _ = write!(
                out,
                r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{colour}" stroke-width="1.5"/>"#,
                ac.0, ac.1, bc.0, bc.1
            );
        }
    }
    for (i, e) in s.elems.iter().enumerate() {
        let overlapping = s.elems.iter().enumerate().any(|(j, o)| {
            let (ox, oy) = overlap(e, o);
            j != i && ox > 0 && oy > 0
        });
        let (fill, stroke) = if overlapping { ("#f8d7d5", "#c9302c") } else { ("#dbe9f6", "#3b6ea5") };
        let _ = write!(
            out,
            r##"<rect x="{}" y="{}" width="{}" height="{}" rx="5" fill="{fill}" stroke="{stroke}" stroke-width="1.5" fill-opacity="0.9"/><text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#223">{}</text>"##,
            e.x,
            e.y,
            e.w,
            e.h,
            e.x + e.w / 2,
            e.y + e.h / 2 + 5,
            e.label
        );
    }
    let _ = write!(
        out,
        r##"<text x="10" y="{}" font-size="13" fill="#333">{title} · {} boxes, {} links · {} overlapping pairs, {} stretched links</text></svg>"##,
        s.height + 20,
        s.elems.len(),
        s.links.len(),
        s.overlaps(),
        s.stretched()
    );
    out
}
