//! The spatial index's geometry against brute force: 1,000 agents in 2-D and in 3-D, indexed in
//! one cell per level, queried by radius through the cells `query_cells` picks, before and after
//! they move. A query finds exactly the agents within r, and never reads more cells than allowed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::needless_range_loop
)]

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_mesh::spatial::{Position, Space, SpatialError, distance, morton2, morton3};

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn random_pos(rng: &mut ChaCha8Rng, s: &Space) -> Position {
    let mut p = [0.0; 3];
    for a in 0..usize::from(s.dims) {
        p[a] = s.min[a] + unit(rng) * (s.max[a] - s.min[a]);
    }
    p
}

/// An in-memory stand-in for the DHT: cell key → agents present.
#[derive(Default)]
struct Index {
    cells: HashMap<[u8; 32], BTreeSet<usize>>,
}

impl Index {
    fn add(&mut self, s: &Space, id: usize, p: &Position) {
        for c in s.presence_cells(p).unwrap() {
            self.cells.entry(s.cell_key(&[7; 32], c)).or_default().insert(id);
        }
    }
    fn remove(&mut self, s: &Space, id: usize, p: &Position) {
        for c in s.presence_cells(p).unwrap() {
            if let Some(set) = self.cells.get_mut(&s.cell_key(&[7; 32], c)) {
                set.remove(&id);
            }
        }
    }
}

fn check_queries(s: &Space, idx: &Index, agents: &[Position], rng: &mut ChaCha8Rng, max_cells: u64) {
    let side = s.max[0] - s.min[0];
    for _ in 0..200 {
        let p = random_pos(rng, s);
        let r = unit(rng) * side * if rng.next_u32().is_multiple_of(4) { 0.6 } else { 0.05 };
        let (_, cells) = s.query_cells(&p, r, max_cells).unwrap();
        assert!(cells.len() as u64 <= max_cells);
        let mut found = BTreeSet::new();
        for c in cells {
            if let Some(set) = idx.cells.get(&s.cell_key(&[7; 32], c)) {
                found.extend(set.iter().copied().filter(|i| distance(&agents[*i], &p, s.dims) <= r));
            }
        }
        let truth: BTreeSet<usize> = (0..agents.len()).filter(|i| distance(&agents[*i], &p, s.dims) <= r).collect();
        assert_eq!(found, truth, "query at {p:?} r {r}");
    }
}

fn run(s: Space, max_cells: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(s.dims));
    let mut agents: Vec<Position> = (0..1000).map(|_| random_pos(&mut rng, &s)).collect();
    let mut idx = Index::default();
    for (i, p) in agents.iter().enumerate() {
        idx.add(&s, i, p);
    }
    check_queries(&s, &idx, &agents, &mut rng, max_cells);
    // Everyone moves a little (and some far); the old cells are cleared, the new ones written.
    for i in 0..agents.len() {
        let old = agents[i];
        let new = if i % 10 == 0 {
            random_pos(&mut rng, &s)
        } else {
            let mut p = old;
            for a in 0..usize::from(s.dims) {
                p[a] = (p[a] + (unit(&mut rng) - 0.5) * 20.0).clamp(s.min[a], s.max[a]);
            }
            p
        };
        idx.remove(&s, i, &old);
        idx.add(&s, i, &new);
        agents[i] = new;
    }
    check_queries(&s, &idx, &agents, &mut rng, max_cells);
}

#[test]
fn queries_match_brute_force_in_2d_before_and_after_moves() {
    run(Space::new(2, [0.0, 0.0, 0.0], [1000.0, 1000.0, 0.0], vec![1, 3, 5, 7]).unwrap(), 16);
}

#[test]
fn queries_match_brute_force_in_3d_before_and_after_moves() {
    run(Space::new(3, [-500.0, -500.0, -500.0], [500.0, 500.0, 500.0], vec![1, 2, 4, 6]).unwrap(), 27);
}

#[test]
fn morton_codes() {
    assert_eq!((morton2(1, 0), morton2(0, 1), morton2(3, 3), morton2(2, 1)), (1, 2, 15, 6));
    assert_eq!((morton3(1, 0, 0), morton3(0, 1, 0), morton3(0, 0, 1), morton3(7, 7, 7)), (1, 2, 4, 511));
    assert_eq!(morton3(0x1f_ffff, 0x1f_ffff, 0x1f_ffff), (1u64 << 63) - 1);
    let codes: BTreeSet<u64> = (0..32).flat_map(|x| (0..32).map(move |y| morton2(x, y))).collect();
    assert_eq!(codes.len(), 1024, "distinct cells, distinct codes");
    assert_eq!(*codes.iter().max().unwrap(), 1023, "a 32 × 32 grid fills codes 0..1024");
}

#[test]
fn bad_spaces_and_queries_are_refused() {
    assert_eq!(Space::new(4, [0.0; 3], [1.0; 3], vec![1]), Err(SpatialError::Dims));
    assert_eq!(Space::new(2, [0.0; 3], [0.0, 1.0, 0.0], vec![1]), Err(SpatialError::BadBox));
    assert_eq!(Space::new(2, [0.0; 3], [f64::INFINITY, 1.0, 0.0], vec![1]), Err(SpatialError::BadBox));
    assert_eq!(Space::new(2, [0.0; 3], [1.0; 3], vec![3, 2]), Err(SpatialError::BadLevels));
    assert_eq!(Space::new(2, [0.0; 3], [1.0; 3], vec![22]), Err(SpatialError::BadLevels));
    let s = Space::new(2, [0.0; 3], [1.0, 1.0, 0.0], vec![4, 8]).unwrap();
    assert_eq!(s.cell(&[1.5, 0.5, 0.0], 4), Err(SpatialError::Outside));
    assert_eq!(s.cell(&[f64::NAN, 0.5, 0.0], 4), Err(SpatialError::Outside));
    assert_eq!(s.query_cells(&[0.5, 0.5, 0.0], -1.0, 16), Err(SpatialError::BadRadius));
    assert_eq!(s.query_cells(&[0.5, 0.5, 0.0], f64::NAN, 16), Err(SpatialError::BadRadius));
    // The whole box at level 4 is 256 cells: more than 16 allowed.
    assert_eq!(s.query_cells(&[0.5, 0.5, 0.0], 10.0, 16), Err(SpatialError::TooWide(256)));
    // A tiny radius is served at the finest level, in one cell.
    let (level, cells) = s.query_cells(&[0.5, 0.5, 0.0], 0.0, 16).unwrap();
    assert_eq!((level, cells.len()), (8, 1));
    // The box's corners belong to its edge cells.
    assert_eq!(s.cell(&[1.0, 1.0, 0.0], 4).unwrap().code, morton2(15, 15));
}

proptest! {
    #[test]
    fn every_point_within_r_lies_in_a_queried_cell(
        px in 0.0f64..100.0, py in 0.0f64..100.0, pz in 0.0f64..100.0,
        r in 0.0f64..60.0, ang in 0.0f64..std::f64::consts::TAU, elev in -1.5f64..1.5, frac in 0.0f64..1.0,
    ) {
        let s = Space::new(3, [0.0; 3], [100.0; 3], vec![1, 3, 5, 7]).unwrap();
        let p = [px, py, pz];
        let (level, cells) = s.query_cells(&p, r, 27).unwrap();
        let d = r * frac;
        let q = [px + d * elev.cos() * ang.cos(), py + d * elev.cos() * ang.sin(), pz + d * elev.sin()];
        if s.contains(&q) {
            prop_assert!(cells.contains(&s.cell(&q, level).unwrap()), "{q:?} at level {level}");
        }
    }
}
