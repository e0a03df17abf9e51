//! The engine: virtual time, the event queue, seeded randomness and the network model.
//!
//! Time is nanoseconds since the start of the run (`u64`, good for 584 years). Events at the same
//! instant run in the order they were scheduled (a sequence number breaks ties), so a run is a
//! pure function of its seed and parameters.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Nanoseconds of virtual time.
pub type Nanos = u64;

/// One millisecond in [`Nanos`].
pub const MS: Nanos = 1_000_000;
/// One second in [`Nanos`].
pub const SEC: Nanos = 1_000_000_000;

/// A duration in nanoseconds, saturating.
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A seeded RNG for one purpose: the same (seed, purpose) always gives the same stream, and
/// different purposes never share one (so adding draws in one place does not shift another).
pub fn rng(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new_derive_key("suprnova-sim v1 rng");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// 32 bytes for `(seed, purpose, index)`: identity seeds and per-node RNG seeds.
pub fn derive(seed: u64, purpose: &str, index: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("suprnova-sim v1 derive");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    h.update(&index.to_le_bytes());
    *h.finalize().as_bytes()
}

/// A uniform float in [0, 1).
pub fn unit(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform integer in [0, n) (0 when n is 0).
pub fn below(rng: &mut impl Rng, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // Multiply-shift: unbiased enough for n far below 2^64 and free of division.
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// An exponentially distributed value with the given mean.
pub fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    -mean * (1.0 - unit(rng)).ln()
}

struct Scheduled<E> {
    at: Nanos,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Scheduled<E> {
    // Reversed: the heap pops the earliest (then the first scheduled).
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// The event queue with the virtual clock.
pub struct Queue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    seq: u64,
    now: Nanos,
    /// Events run so far.
    pub processed: u64,
    /// Most events ever waiting at once.
    pub peak_len: usize,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue { heap: BinaryHeap::new(), seq: 0, now: 0, processed: 0, peak_len: 0 }
    }
}

impl<E> Queue<E> {
    /// Virtual now.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Schedules `ev` at `at` (never before now).
    pub fn at(&mut self, at: Nanos, ev: E) {
        let at = at.max(self.now);
        self.seq += 1;
        self.heap.push(Scheduled { at, seq: self.seq, ev });
        self.peak_len = self.peak_len.max(self.heap.len());
    }

    /// Schedules `ev` after `delay`.
    pub fn after(&mut self, delay: Nanos, ev: E) {
        self.at(self.now.saturating_add(delay), ev);
    }

    /// The next event due at or before `until`, advancing the clock to it.
    pub fn pop_until(&mut self, until: Nanos) -> Option<E> {
        if self.heap.peek().is_none_or(|s| s.at > until) {
            self.now = self.now.max(until);
            return None;
        }
        let s = self.heap.pop()?;
        self.now = s.at;
        self.processed += 1;
        Some(s.ev)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The network between simulated nodes.
///
/// Nodes sit on a unit square (a flat map of the world). The round-trip time between two nodes
/// grows linearly with their distance from `min_rtt` (same spot) to `max_rtt` (opposite corners);
/// with uniform placement the median RTT is about 115 ms for the defaults, close to measured
/// internet medians. Each datagram's one-way delay is half the RTT stretched by up to `jitter`
/// (uniform), and it is lost with probability `loss`. Datagrams are small: bandwidth is not
/// modelled. A partition assigns nodes to groups; nothing crosses between groups until it heals.
#[derive(Clone, Debug)]
pub struct NetModel {
    /// Round-trip time between nodes at the same spot.
    pub min_rtt: Nanos,
    /// Round-trip time between opposite corners.
    pub max_rtt: Nanos,
    /// Extra one-way delay, as a fraction of it, drawn uniformly per datagram.
    pub jitter: f64,
    /// Probability that a datagram is lost.
    pub loss: f64,
    pos: Vec<(f32, f32)>,
    /// Partition: the map cut into this many vertical stripes (0 or 1: no partition).
    stripes: u8,
}

impl NetModel {
    /// RTTs from 10 to 300 ms, 10 % jitter, no loss, no partition.
    pub fn new() -> Self {
        NetModel { min_rtt: 10 * MS, max_rtt: 300 * MS, jitter: 0.1, loss: 0.0, pos: Vec::new(), stripes: 0 }
    }

    /// Places node `i` (nodes must be placed in index order).
    pub fn place(&mut self, rng: &mut impl Rng) -> usize {
        let p = (unit(rng) as f32, unit(rng) as f32);
        self.pos.push(p);
        self.pos.len() - 1
    }

    /// Nodes placed.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// Whether no node is placed.
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }

    /// The modelled round-trip time between `a` and `b`.
    pub fn rtt(&self, a: usize, b: usize) -> Nanos {
        let (Some(pa), Some(pb)) = (self.pos.get(a), self.pos.get(b)) else { return self.max_rtt };
        let d = f64::from((pa.0 - pb.0).hypot(pa.1 - pb.1)) / std::f64::consts::SQRT_2;
        let span = self.max_rtt.saturating_sub(self.min_rtt) as f64;
        self.min_rtt + (span * d.clamp(0.0, 1.0)) as Nanos
    }

    /// Whether `a` and `b` can reach each other (same partition group).
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.stripes <= 1 || self.group_of(a) == self.group_of(b)
    }

    /// The one-way delay of one datagram from `a` to `b`, or `None` if it is lost.
    pub fn datagram(&self, rng: &mut impl Rng, a: usize, b: usize) -> Option<Nanos> {
        if !self.connected(a, b) || (self.loss > 0.0 && unit(rng) < self.loss) {
            return None;
        }
        Some(self.one_way(rng, a, b))
    }

    /// The one-way delay of a message from `a` to `b` with jitter (no loss).
    pub fn one_way(&self, rng: &mut impl Rng, a: usize, b: usize) -> Nanos {
        let half = self.rtt(a, b) / 2;
        half + (half as f64 * self.jitter * unit(rng)) as Nanos
    }

    /// Splits the nodes into `groups` partitions by position (vertical stripes of the map), so a
    /// partition cuts the world along geography, as real ones tend to.
    pub fn partition(&mut self, groups: u8) {
        self.stripes = groups;
    }

    /// The partition group of node `i` (0 when there is none): its stripe of the map, so nodes
    /// placed after the cut fall on their own side of it.
    pub fn group_of(&self, i: usize) -> u8 {
        if self.stripes <= 1 {
            return 0;
        }
        let x = self.pos.get(i).map_or(0.0, |p| p.0);
        ((x * f32::from(self.stripes)) as u8).min(self.stripes - 1)
    }

    /// Heals any partition.
    pub fn heal(&mut self) {
        self.stripes = 0;
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.stripes > 1
    }
}

impl Default for NetModel {
    fn default() -> Self {
        Self::new()
    }
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Current resident memory of this process in bytes (Linux `VmRSS`), if known.
pub fn rss() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A kB field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
