//! What the devnet's phases share: latency percentiles, this process's CPU and memory, and the
//! random choice of the node that does the next operation. A leaf: the phases and the devnet
//! import from here, never from each other's files for these.

use anyhow::Result;
use serde::Serialize;

use super::{percentiles_ms, random_seed};

/// Latency percentiles in milliseconds (null when nothing was measured).
#[derive(Serialize, Default, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Latency {
    /// Percentiles of `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Latency {
        let [p50_ms, p95_ms, p99_ms] = percentiles_ms(v, [50.0, 95.0, 99.0]);
        Latency { p50_ms, p95_ms, p99_ms }
    }
}

/// CPU seconds (user + system) this process has used, from /proc (Linux).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // /proc reports clock ticks of USER_HZ, which is 100 on Linux.
    Some((utime + stime) / 100.0)
}

/// A memory figure of this process in kB from /proc/self/status (Linux): `VmRSS:`, `VmHWM:`.
pub fn rss_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// xorshift over a random seed: which node does the next operation.
pub fn picker() -> Result<impl FnMut(usize) -> usize> {
    let mut x = u64::from_le_bytes(random_seed()?.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([7; 8])) | 1;
    Ok(move |len: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % len.max(1) as u64) as usize
    })
}
