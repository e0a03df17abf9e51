//! Per-key rate limits for the sans-IO cores (wire-spec §8.1): handshakes and record requests
//! per source address and per IP, requests and stores per authenticated peer.
//!
//! Each key gets a token bucket of `burst` tokens refilled at `per_s`, kept as the time its bucket
//! will be full again (the "theoretical arrival time" of the generic cell rate algorithm), so an
//! entry is one `Instant`. A key whose bucket is full again holds no information and is swept.
//! The table is bounded: when it is full of keys still refilling, newcomers share one overflow
//! bucket instead of evicting anybody, so a flood from many sources can neither grow memory nor
//! reset the buckets of the sources already limited. A `BTreeMap` keeps every walk in key order,
//! so the simulator stays deterministic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events per second, sustained.
    pub per_s: u32,
    /// Events allowed at once from a bucket that has been idle.
    pub burst: u32,
}

impl Rate {
    /// `per_s` sustained, `burst` at once.
    pub const fn new(per_s: u32, burst: u32) -> Rate {
        Rate { per_s, burst }
    }

    /// Time to earn one token (at most a day: a rate of 0 admits only the burst, once a day).
    fn interval(self) -> Duration {
        if self.per_s == 0 {
            Duration::from_secs(86_400)
        } else {
            Duration::from_nanos(1_000_000_000 / u64::from(self.per_s)).max(Duration::from_nanos(1))
        }
    }
}

/// Seen by metrics: one limiter's configuration, size and refusals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitStat {
    /// Stable name (`handshakes_per_addr`, …), as in wire-spec §8.1 and the metrics.
    pub name: &'static str,
    /// The limit, or `None` when switched off.
    pub rate: Option<Rate>,
    /// Keys tracked now (bounded by the table size).
    pub tracked: usize,
    /// Events refused so far.
    pub refused: u64,
}

/// How often a full table is swept of keys whose buckets are full again.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Token buckets per key, at most `max_keys` of them. See the module docs.
#[derive(Clone, Debug)]
pub struct Limiter<K> {
    name: &'static str,
    rate: Option<Rate>,
    max_keys: usize,
    full_at: BTreeMap<K, Instant>,
    overflow: Option<Instant>,
    next_sweep: Option<Instant>,
    refused: u64,
}

impl<K: Ord + Copy> Limiter<K> {
    /// A limiter named `name` (for metrics) allowing `rate` per key (`None`: no limit), tracking
    /// at most `max_keys` keys.
    pub fn new(name: &'static str, rate: Option<Rate>, max_keys: usize) -> Self {
        Limiter { name, rate, max_keys, full_at: BTreeMap::new(), overflow: None, next_sweep: None, refused: 0 }
    }

    /// Whether one more event from `key` at `now` is within the limit; if so it is charged,
    /// else it is counted as refused.
    pub fn allow(&mut self, now: Instant, key: K) -> bool {
        let ok = self.would_allow(now, &key);
        if ok {
            self.charge(now, key);
        } else {
            self.refused += 1;
        }
        ok
    }

    /// Whether `key` has a token at `now`, without charging it.
    pub fn would_allow(&mut self, now: Instant, key: &K) -> bool {
        let Some(rate) = self.rate else { return true };
        self.sweep(now);
        let mut t = match self.full_at.get(key) {
            Some(t) => *t,
            None if self.full_at.len() < self.max_keys => now,
            None => self.overflow.unwrap_or(now),
        };
        gcra(rate, now, &mut t)
    }

    /// Charges one event to `key` (call after `would_allow` said yes).
    fn charge(&mut self, now: Instant, key: K) {
        let Some(rate) = self.rate else { return };
        if let Some(t) = self.full_at.get_mut(&key) {
            gcra(rate, now, t);
        } else if self.full_at.len() < self.max_keys {
            let mut t = now;
            gcra(rate, now, &mut t);
            self.full_at.insert(key, t);
        } else {
            gcra(rate, now, self.overflow.get_or_insert(now));
        }
    }

    /// Forgets keys whose buckets are full again, at most every 100 ms (so a full table of
    /// active keys costs one walk per 100 ms, not one per event).
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        self.full_at.retain(|_, t| *t > now);
    }
}

/// Admits one event only if both limiters have a token for their keys, and then charges both;
/// a refusal is counted by the first limiter that refuses. So one limiter's refusal never spends
/// the other's tokens (or makes it track a new key).
pub fn allow_both<A: Ord + Copy, B: Ord + Copy>(
    now: Instant,
    a: &mut Limiter<A>,
    ka: A,
    b: &mut Limiter<B>,
    kb: B,
) -> bool {
    if !a.would_allow(now, &ka) {
        a.refused += 1;
        return false;
    }
    if !b.would_allow(now, &kb) {
        b.refused += 1;
        return false;
    }
    a.charge(now, ka);
    b.charge(now, kb);
    true
}

impl<K: Ord + Copy> Limiter<K> {
    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.full_at.len()
    }

    /// Events refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The limit (`None`: off).
    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// For metrics.
    pub fn stat(&self) -> LimitStat {
        LimitStat { name: self.name, rate: self.rate, tracked: self.tracked(), refused: self.refused }
    }
}

/// GCRA: `full_at` is when the bucket is full again. An event is admitted while the bucket holds
/// a token, i.e. `full_at` is at most `(burst − 1)` intervals ahead of `now`.
fn gcra(rate: Rate, now: Instant, full_at: &mut Instant) -> bool {
    if rate.burst == 0 {
        return false;
    }
    let interval = rate.interval();
    let tolerance = interval.saturating_mul(rate.burst - 1);
    let base = (*full_at).max(now);
    if base.saturating_duration_since(now) > tolerance {
        return false;
    }
    *full_at = base + interval;
    true
}

/// The key an IP address is limited under: IPv4 addresses one by one (IPv4-mapped IPv6 counts as
/// IPv4), IPv6 by /64, the smallest prefix one subscriber usually gets.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new("t", Some(Rate::new(10, 5)), 16);
        let admitted = (0..20).filter(|_| l.allow(t0, 1u8)).count();
        assert_eq!(admitted, 5, "the burst, at once");
        assert_eq!(l.refused(), 15);
        // 10/s: one more every 100 ms.
        assert!(!l.allow(t0 + Duration::from_millis(99), 1));
        assert!(l.allow(t0 + Duration::from_millis(100), 1));
        assert!(!l.allow(t0 + Duration::from_millis(100), 1));
        // Over 10 s at a steady 1,000/s offered, about 10/s get through (plus nothing saved up).
        let mut got = 0;
        for ms in 0..10_000u64 {
            if l.allow(t0 + Duration::from_millis(200 + ms), 1) {
                got += 1;
            }
        }
        assert!((100..=102).contains(&got), "{got}");
        // Other keys are untouched by this one.
        assert!(l.allow(t0, 2));
    }

    #[test]
    fn a_full_table_sweeps_idle_keys_and_then_shares_one_overflow_bucket() {
        let t0 = Instant::now();
        let mut l = Limiter::new("t", Some(Rate::new(1, 2)), 4);
        for k in 0..4u32 {
            assert!(l.allow(t0, k));
        }
        assert_eq!(l.tracked(), 4);
        // Table full of refilling keys: newcomers share the overflow bucket (burst 2).
        assert!(l.allow(t0, 100));
        assert!(l.allow(t0, 101));
        assert!(!l.allow(t0, 102));
        assert_eq!(l.tracked(), 4, "the table never grows past its size");
        // Keys 0..4 are full again after 1 s; the next event sweeps them.
        let t1 = t0 + Duration::from_secs(2);
        assert!(l.allow(t1, 200));
        assert_eq!(l.tracked(), 1);
        // A limited key is never evicted by newcomers: its bucket stays empty.
        let mut l = Limiter::new("t", Some(Rate::new(1, 1)), 2);
        assert!(l.allow(t0, 7u32));
        assert!(!l.allow(t0, 7));
        for k in 0..100u32 {
            let _ = l.allow(t0 + Duration::from_millis(u64::from(k)), 1000 + k);
        }
        assert!(!l.allow(t0 + Duration::from_millis(500), 7), "still limited");
    }

    #[test]
    fn allow_both_charges_neither_when_one_refuses() {
        let t0 = Instant::now();
        let mut per_addr = Limiter::new("a", Some(Rate::new(1, 5)), 16);
        let mut per_ip = Limiter::new("b", Some(Rate::new(1, 2)), 16);
        assert!(allow_both(t0, &mut per_addr, 1u8, &mut per_ip, 0u8));
        assert!(allow_both(t0, &mut per_addr, 2u8, &mut per_ip, 0u8));
        // The IP is out: the addresses are neither charged nor tracked.
        for k in 3..10u8 {
            assert!(!allow_both(t0, &mut per_addr, k, &mut per_ip, 0u8));
        }
        assert_eq!((per_addr.tracked(), per_addr.refused(), per_ip.refused()), (2, 0, 7));
        // Address 1 was charged once: 4 of its 5 tokens are left.
        assert!((0..4).all(|_| per_addr.allow(t0, 1)) && !per_addr.allow(t0, 1));
    }

    #[test]
    fn no_rate_means_no_limit_and_zero_burst_refuses_all() {
        let t0 = Instant::now();
        let mut off = Limiter::new("t", None, 1);
        assert!((0..10_000u32).all(|k| off.allow(t0, k)));
        assert_eq!(off.tracked(), 0);
        let mut shut = Limiter::new("t", Some(Rate::new(100, 0)), 4);
        assert!(!shut.allow(t0, 1u8));
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_key(m), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
