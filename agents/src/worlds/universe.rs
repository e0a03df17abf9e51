//! A particle universe: thousands of particles under gravity and elastic collisions, integrated
//! by F with a fixed time step.
//!
//! **Determinism.** Every member re-executes F and must get the same bytes, on any platform. F
//! uses only IEEE 754 operations that are exactly rounded (`+`, `−`, `×`, `÷`, `sqrt`) on `f64`,
//! in a fixed order, with no fused multiply-add (Rust never contracts `a * b + c`), no
//! transcendental functions and no parallel reductions. The same seed therefore gives the same
//! state hash on every node.
//!
//! **Physics.** Drift–kick–drift leapfrog (symplectic, one force evaluation per step). Gravity
//! with Plummer softening: exact pairwise within a particle's grid cell and its eight
//! neighbours, and each farther cell as a point mass at its centre of mass (a particle–cell
//! approximation, O(n · cells)). Walls reflect. Overlapping particles that approach each other
//! bounce elastically (momentum and kinetic energy conserved). Energy is reported from the exact
//! pairwise potential, so the drift it shows includes the force approximation's error.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use suprnova_mesh::spatial::Space;
use suprnova_mesh::world::World;

/// One particle.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Particle {
    /// Position.
    pub x: f64,
    /// Position.
    pub y: f64,
    /// Velocity.
    pub vx: f64,
    /// Velocity.
    pub vy: f64,
    /// Mass.
    pub m: f64,
}

/// Constants of a universe.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Time step.
    pub dt: f64,
    /// Gravitational constant.
    pub g: f64,
    /// Plummer softening length.
    pub softening: f64,
    /// Particle radius (contact at twice this).
    pub radius: f64,
    /// The box is `[-half, half]²`.
    pub half: f64,
    /// Grid cells per axis.
    pub grid: u32,
}

/// The mesh state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UniverseState {
    /// Steps taken.
    pub step: u64,
    /// Constants.
    pub params: Params,
    /// The particles.
    pub particles: Vec<Particle>,
    /// Collisions resolved so far.
    pub collisions: u64,
}

/// The world: F integrates one step; it takes no inputs. `half` is the box's half-width (the
/// spatial index covers the box).
#[derive(Clone, Copy, Debug)]
pub struct Universe {
    /// Half-width of the box.
    pub half: f64,
}

/// Inputs (none are accepted: the universe runs by F alone).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum UniverseInput {}

/// A small deterministic generator (splitmix64) for initial conditions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl UniverseState {
    /// `n` particles of total mass 1 in a rotating disc of radius 1 (a box of half-width 2),
    /// from `seed`.
    pub fn disc(n: usize, seed: u64) -> UniverseState {
        let grid = ((n as f64 / 4.0).sqrt() as u32).clamp(4, 48);
        let params = Params { dt: 0.004, g: 1.0, softening: 0.03, radius: 0.004, half: 2.0, grid };
        let mut rng = Rng(seed ^ 0x005e_ed0f_0001);
        let m = 1.0 / n.max(1) as f64;
        let mut particles = Vec::with_capacity(n);
        for _ in 0..n {
            // Uniform in the disc: r = sqrt(u).
            let (mut x, mut y);
            loop {
                x = rng.unit() * 2.0 - 1.0;
                y = rng.unit() * 2.0 - 1.0;
                if x * x + y * y <= 1.0 {
                    break;
                }
            }
            let r = (x * x + y * y).sqrt().max(1e-3);
            // Circular speed for the enclosed mass of a uniform disc, M(r) = r², slowed a little
            // so the disc collapses into arms.
            let v = 0.8 * (params.g * r * r / r).sqrt();
            particles.push(Particle { x, y, vx: -y / r * v, vy: x / r * v, m });
        }
        UniverseState { step: 0, params, particles, collisions: 0 }
    }

    /// Kinetic energy.
    pub fn kinetic(&self) -> f64 {
        self.particles.iter().map(|p| 0.5 * p.m * (p.vx * p.vx + p.vy * p.vy)).sum()
    }

    /// Softened pairwise potential energy (exact, O(n²)).
    pub fn potential(&self) -> f64 {
        let eps2 = self.params.softening * self.params.softening;
        let mut u = 0.0;
        for (i, a) in self.particles.iter().enumerate() {
            let mut ui = 0.0;
            for b in self.particles.iter().skip(i + 1) {
                let dx = a.x - b.x;
                let dy = a.y - b.y;
                ui -= b.m / (dx * dx + dy * dy + eps2).sqrt();
            }
            u += self.params.g * a.m * ui;
        }
        u
    }

    /// Total momentum.
    pub fn momentum(&self) -> (f64, f64) {
        self.particles.iter().fold((0.0, 0.0), |(px, py), p| (px + p.m * p.vx, py + p.m * p.vy))
    }

    fn cell_of(&self, x: f64, y: f64) -> (u32, u32) {
        let g = self.params.grid;
        let h = self.params.half;
        let f = |v: f64| {
            let c = ((v + h) / (2.0 * h) * f64::from(g)) as i64;
            c.clamp(0, i64::from(g) - 1) as u32
        };
        (f(x), f(y))
    }

    /// Particle indices per cell (row-major), in index order.
    fn cells(&self) -> Vec<Vec<u32>> {
        let g = self.params.grid as usize;
        let mut cells = vec![Vec::new(); g * g];
        for (i, p) in self.particles.iter().enumerate() {
            let (cx, cy) = self.cell_of(p.x, p.y);
            if let Some(c) = cells.get_mut(cy as usize * g + cx as usize) {
                c.push(i as u32);
            }
        }
        cells
    }

    fn accelerations(&self) -> Vec<(f64, f64)> {
        let g = self.params.grid as usize;
        let eps2 = self.params.softening * self.params.softening;
        let cells = self.cells();
        // Monopoles: mass and centre of mass per cell.
        let mono: Vec<(f64, f64, f64)> = cells
            .iter()
            .map(|c| {
                let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
                for &i in c {
                    if let Some(p) = self.particles.get(i as usize) {
                        m += p.m;
                        mx += p.m * p.x;
                        my += p.m * p.y;
                    }
                }
                if m > 0.0 { (m, mx / m, my / m) } else { (0.0, 0.0, 0.0) }
            })
            .collect();
        let mut acc = vec![(0.0, 0.0); self.particles.len()];
        for (i, p) in self.particles.iter().enumerate() {
            let (cx, cy) = self.cell_of(p.x, p.y);
            let (mut ax, mut ay) = (0.0, 0.0);
            for (ci, (m, mx, my)) in mono.iter().enumerate() {
                let (qx, qy) = ((ci % g) as i64, (ci / g) as i64);
                let near = (qx - i64::from(cx)).abs() <= 1 && (qy - i64::from(cy)).abs() <= 1;
                if near {
                    for &j in cells.get(ci).map(Vec::as_slice).unwrap_or_default() {
                        if j as usize == i {
                            continue;
                        }
                        let Some(q) = self.particles.get(j as usize) else { continue };
                        let dx = q.x - p.x;
                        let dy = q.y - p.y;
                        let d2 = dx * dx + dy * dy + eps2;
                        let f = q.m / (d2 * d2.sqrt());
                        ax += f * dx;
                        ay += f * dy;
                    }
                } else if *m > 0.0 {
                    let dx = mx - p.x;
                    let dy = my - p.y;
                    let d2 = dx * dx + dy * dy + eps2;
                    let f = m / (d2 * d2.sqrt());
                    ax += f * dx;
                    ay += f * dy;
                }
            }
            if let Some(a) = acc.get_mut(i) {
                *a = (self.params.g * ax, self.params.g * ay);
            }
        }
        acc
    }

    fn walls(&mut self) {
        let h = self.params.half;
        for p in &mut self.particles {
            if p.x > h {
                p.x = 2.0 * h - p.x;
                p.vx = -p.vx;
            } else if p.x < -h {
                p.x = -2.0 * h - p.x;
                p.vx = -p.vx;
            }
            if p.y > h {
                p.y = 2.0 * h - p.y;
                p.vy = -p.vy;
            } else if p.y < -h {
                p.y = -2.0 * h - p.y;
                p.vy = -p.vy;
            }
        }
    }

    /// Elastic bounces between overlapping particles that approach each other, in index order.
    fn collide(&mut self) -> u64 {
        let g = self.params.grid as usize;
        let contact = 2.0 * self.params.radius;
        let cells = self.cells();
        let mut n = 0;
        for i in 0..self.particles.len() {
            let Some(&p) = self.particles.get(i) else { continue };
            let (cx, cy) = self.cell_of(p.x, p.y);
            for ny in cy.saturating_sub(1)..=(cy + 1).min(g as u32 - 1) {
                for nx in cx.saturating_sub(1)..=(cx + 1).min(g as u32 - 1) {
                    let Some(cell) = cells.get(ny as usize * g + nx as usize) else { continue };
                    for &j in cell {
                        let j = j as usize;
                        if j <= i {
                            continue;
                        }
                        let (Some(&a), Some(&b)) = (self.particles.get(i), self.particles.get(j)) else { continue };
                        let dx = b.x - a.x;
                        let dy = b.y - a.y;
                        let d2 = dx * dx + dy * dy;
                        if d2 >= contact * contact || d2 == 0.0 {
                            continue;
                        }
                        let dvx = b.vx - a.vx;
                        let dvy = b.vy - a.vy;
                        let closing = dvx * dx + dvy * dy;
                        if closing >= 0.0 {
                            continue;
                        }
                        // Impulse along the normal: J = 2 m_a m_b / (m_a + m_b) · (Δv·n) n.
                        let k = 2.0 * closing / (d2 * (a.m + b.m));
                        if let Some(pa) = self.particles.get_mut(i) {
                            pa.vx += k * b.m * dx;
                            pa.vy += k * b.m * dy;
                        }
                        if let Some(pb) = self.particles.get_mut(j) {
                            pb.vx -= k * a.m * dx;
                            pb.vy -= k * a.m * dy;
                        }
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// One step: drift half, kick, drift half, walls, collisions.
    pub fn step(&self) -> UniverseState {
        let mut s = self.clone();
        let dt = s.params.dt;
        for p in &mut s.particles {
            p.x += 0.5 * dt * p.vx;
            p.y += 0.5 * dt * p.vy;
        }
        let acc = s.accelerations();
        for (p, (ax, ay)) in s.particles.iter_mut().zip(acc) {
            p.vx += dt * ax;
            p.vy += dt * ay;
            p.x += 0.5 * dt * p.vx;
            p.y += 0.5 * dt * p.vy;
        }
        s.walls();
        s.collisions += s.collide();
        s.step += 1;
        s
    }
}

impl World for Universe {
    type State = UniverseState;
    type Input = UniverseInput;
    fn name(&self) -> &str {
        "universe"
    }
    fn version(&self) -> u32 {
        1
    }
    fn evolve(&self, state: &UniverseState, _seed: &[u8; 32]) -> UniverseState {
        state.step()
    }
    fn validate(&self, _state: &UniverseState, _author: &[u8; 32], input: &UniverseInput) -> Result<(), String> {
        match *input {}
    }
    fn apply(&self, _state: &mut UniverseState, _author: &[u8; 32], input: &UniverseInput) {
        match *input {}
    }
    fn space(&self) -> Option<Space> {
        let h = self.half;
        Space::new(2, [-h, -h, 0.0], [h, h, 0.0], vec![3, 5, 7]).ok()
    }
}

/// One frame as SVG: particles coloured by speed.
pub fn frame_svg(s: &UniverseState, px: u32) -> String {
    let h = s.params.half;
    let scale = f64::from(px) / (2.0 * h);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}" viewBox="0 0 {px} {px}"><rect width="{px}" height="{px}" fill="#05060f"/>"##
    );
    let r = (s.params.radius * scale).max(1.3);
    for p in &s.particles {
        let speed = (p.vx * p.vx + p.vy * p.vy).sqrt();
        let t = (speed / 1.2).min(1.0);
        let (cr, cg, cb) = ((80.0 + 175.0 * t) as u8, (140.0 + 80.0 * (1.0 - t)) as u8, (255.0 - 150.0 * t) as u8);
        let _ = write!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r:.1}" fill="rgb({cr},{cg},{cb})"/>"#,
            (p.x + h) * scale,
            (h - p.y) * scale
        );
    }
    let _ = write!(
        out,
        r##"<text x="8" y="{}" font-family="monospace" font-size="12" fill="#ccc">step {} · {} particles · {} collisions</text></svg>"##,
        px - 8,
        s.step,
        s.particles.len(),
        s.collisions
    );
    out
}

/// An animated SVG of up to `max` particles over `frames` (SMIL: each particle's position steps
/// through the frames, looping).
pub fn animated_svg(frames: &[UniverseState], px: u32, max: usize, seconds: f64) -> String {
    let Some(first) = frames.first() else { return String::new() };
    let h = first.params.half;
    let scale = f64::from(px) / (2.0 * h);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}" viewBox="0 0 {px} {px}"><rect width="{px}" height="{px}" fill="#05060f"/>"##
    );
    let n = first.particles.len();
    let stride = n.div_ceil(max.max(1)).max(1);
    for i in (0..n).step_by(stride) {
        let xs: Vec<String> =
            frames.iter().filter_map(|f| f.particles.get(i)).map(|p| format!("{:.1}", (p.x + h) * scale)).collect();
        let ys: Vec<String> =
            frames.iter().filter_map(|f| f.particles.get(i)).map(|p| format!("{:.1}", (h - p.y) * scale)).collect();
        let (Some(x0), Some(y0)) = (xs.first(), ys.first()) else { continue };
        let _ = write!(
            out,
            r##"<circle cx="{x0}" cy="{y0}" r="1.6" fill="#9cf"><animate attributeName="cx" values="{}" dur="{seconds}s" repeatCount="indefinite"/><animate attributeName="cy" values="{}" dur="{seconds}s" repeatCount="indefinite"/></circle>"##,
            xs.join(";"),
            ys.join(";")
        );
    }
    out.push_str("</svg>");
    out
}
