//! Discovery by criteria, sans-IO: which DHT sets a query reads, and how their entries are sifted
//! (wire-spec §14.2).
//!
//! An agent's announcement is a set entry signed by the agent's key in bucket
//! [`crate::wire::bucket`] of its kind's set and of each of its capabilities' sets. A query
//! names its capabilities (all required), its kind, resource minimums and a ball around a
//! position. It reads the 16 buckets of one set, its first capability's or else its kind's, in
//! one parallel round of lookups, and keeps the entries that decode, verify against the bucket
//! they were read from, are fresh and match every criterion.

use std::collections::HashMap;

use suprnova_dht::wire::SetEntry;

use crate::wire::{AgentId, Announcement, BUCKETS, Resources, bucket, capability_key, decode, kind_key};

/// What to look for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Criteria {
    /// Capabilities the agent must all have.
    pub capabilities: Vec<String>,
    /// Its kind, if it matters.
    pub kind: Option<String>,
    /// Resources it must offer at least.
    pub min: Resources,
    /// Within `radius` of this position (agents without a position never match).
    pub near: Option<([f64; 3], f64)>,
    /// Results wanted at most (0: all).
    pub limit: usize,
}

impl Criteria {
    /// Agents with capability `c`.
    pub fn capability(c: &str) -> Criteria {
        Criteria { capabilities: vec![c.to_string()], ..Criteria::default() }
    }

    /// The sets a query reads: the 16 buckets of its first capability, or else of its kind;
    /// `None` if it names neither.
    pub fn keys(&self) -> Option<Vec<[u8; 32]>> {
        if let Some(c) = self.capabilities.first() {
            return Some((0..BUCKETS).map(|b| capability_key(c, b)).collect());
        }
        self.kind.as_ref().map(|k| (0..BUCKETS).map(|b| kind_key(k, b)).collect())
    }

    /// Whether announcement `a` matches.
    pub fn matches(&self, a: &Announcement) -> bool {
        if !self.capabilities.iter().all(|c| a.has(c)) {
            return false;
        }
        if self.kind.as_ref().is_some_and(|k| a.kind.as_str() != k) {
            return false;
        }
        if !a.resources.covers(&self.min) {
            return false;
        }
        match (&self.near, &a.position) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((c, r)), Some(p)) => {
                let d2: f64 = c.iter().zip(p.iter()).map(|(x, y)| (x - y) * (x - y)).sum();
                d2 <= r * r
            }
        }
    }
}

/// An agent a query found.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The agent's id (the entry's writer).
    pub agent: AgentId,
    /// Its announcement.
    pub announcement: Announcement,
}

/// Entries a query dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryDrops {
    /// The value does not decode as an announcement or breaks its rules.
    pub malformed: u64,
    /// Its time is not the entry's seq, or it is older than the lifetime plus the allowed skew,
    /// or newer than now plus the skew.
    pub stale: u64,
    /// Found in a bucket or set it does not belong to (forged placement).
    pub misplaced: u64,
    /// An empty value: the agent withdrew from this set.
    pub withdrawn: u64,
}

impl DiscoveryDrops {
    /// Drops of bad entries (withdrawals are not bad).
    pub fn total_bad(&self) -> u64 {
        self.malformed + self.stale + self.misplaced
    }

    /// Adds `o`.
    pub fn add(&mut self, o: &DiscoveryDrops) {
        self.malformed += o.malformed;
        self.stale += o.stale;
        self.misplaced += o.misplaced;
        self.withdrawn += o.withdrawn;
    }
}

/// Sifts the entries read from the query's sets: `sets[i]` is what bucket `i` gave.
pub struct Sifter<'a> {
    criteria: &'a Criteria,
    now_ms: u64,
    max_age_ms: u64,
    skew_ms: u64,
    best: HashMap<AgentId, (u64, Option<Announcement>)>,
    /// Drops so far.
    pub drops: DiscoveryDrops,
}

impl<'a> Sifter<'a> {
    /// A sifter for `criteria` at `now_ms`: entries older than `max_age_ms` (the announcement
    /// lifetime) plus `skew_ms`, or newer than now plus `skew_ms`, are stale.
    pub fn new(criteria: &'a Criteria, now_ms: u64, max_age_ms: u64, skew_ms: u64) -> Sifter<'a> {
        Sifter { criteria, now_ms, max_age_ms, skew_ms, best: HashMap::new(), drops: DiscoveryDrops::default() }
    }

    /// Adds the entries read from bucket `b` of the query's set (the DHT checked their
    /// signatures for that set's key).
    pub fn add(&mut self, b: u8, entries: &[SetEntry]) {
        for e in entries {
            if bucket(&e.public_key) != b {
                self.drops.misplaced += 1;
                continue;
            }
            if e.value.is_empty() {
                self.drops.withdrawn += 1;
                self.keep(e.public_key, e.seq, None);
                continue;
            }
            let Ok(a) = decode::<Announcement>(&e.value) else {
                self.drops.malformed += 1;
                continue;
            };
            if a.check().is_err() {
                self.drops.malformed += 1;
                continue;
            }
            let belongs = match (self.criteria.capabilities.first(), &self.criteria.kind) {
                (Some(c), _) => a.has(c),
                (None, Some(k)) => a.kind.as_str() == k,
                (None, None) => false,
            };
            if !belongs {
                self.drops.misplaced += 1;
                continue;
            }
            let too_old = a.time_ms.saturating_add(self.max_age_ms).saturating_add(self.skew_ms) < self.now_ms;
            let too_new = a.time_ms > self.now_ms.saturating_add(self.skew_ms);
            if a.time_ms != e.seq || too_old || too_new {
                self.drops.stale += 1;
                continue;
            }
            self.keep(e.public_key, e.seq, Some(a));
        }
    }

    fn keep(&mut self, agent: AgentId, seq: u64, a: Option<Announcement>) {
        match self.best.get(&agent) {
            Some((s, _)) if *s >= seq => {}
            _ => {
                self.best.insert(agent, (seq, a));
            }
        }
    }

    /// The matching agents, by agent id (at most the criteria's limit when it is not 0).
    pub fn finish(self) -> Vec<Found> {
        let mut out: Vec<Found> = self
            .best
            .into_iter()
            .filter_map(|(agent, (_, a))| a.map(|announcement| Found { agent, announcement }))
            .filter(|f| self.criteria.matches(&f.announcement))
            .collect();
        out.sort_by_key(|f| f.agent);
        if self.criteria.limit > 0 {
            out.truncate(self.criteria.limit);
        }
        out
    }
}
