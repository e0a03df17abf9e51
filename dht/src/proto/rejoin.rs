//! Never alone (wire-spec §7.6): a node that loses its peers finds them again.
//!
//! - **Dormant peers.** A node removed from the routing table for failing to answer is kept as
//!   dormant (at most `MAX_DORMANT`, for `dormant_keep`). One dormant peer is pinged every
//!   `dormant_probe`, the least recently probed first. One that answers is back in the table, and
//!   the node looks itself up again to find that peer's neighbourhood: after a partition heals,
//!   the first peer probed across the cut reconnects the halves (as SWIM and Cassandra probe dead
//!   members, and unlike Kademlia, which forgets them).
//! - **Rejoining.** When the table holds fewer than `min_peers` nodes the node bootstraps again
//!   through the seeds it was given (remembered across calls) and its most recent dormant peers,
//!   with a backoff doubling from 1 s to `rejoin_backoff_max`, forever, and reports every attempt
//!   (`DhtEvent::Rejoining`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Dht, DhtEvent, PingPurpose, Target, Waiting};
use crate::identity::{NodeId, NodeRecord};
use crate::wire::Body;

/// Dormant peers kept at most (the oldest removal is forgotten first).
pub const MAX_DORMANT: usize = 64;
/// Seeds remembered at most.
pub const MAX_SEEDS: usize = 16;
/// Dormant peers asked at most by one rejoin attempt, besides the seeds.
const REJOIN_DORMANT: usize = 8;
/// First wait between rejoin attempts.
const REJOIN_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// A self-lookup after a dormant peer came back runs at most this often.
const SELF_LOOKUP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
struct Dormant {
    record: NodeRecord,
    since: Instant,
    probed: Option<Instant>,
}

/// The state of rejoining and of the dormant peers.
#[derive(Debug, Default)]
pub(super) struct Rejoin {
    seeds: Vec<Target>,
    dormant: BTreeMap<NodeId, Dormant>,
    next_probe: Option<Instant>,
    next_attempt: Option<Instant>,
    backoff: Duration,
    attempts: u32,
    last_self_lookup: Option<Instant>,
    revived: u64,
}

/// What `Dht::rejoin_status` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RejoinStatus {
    /// Whether the table is below `min_peers` and the node is rejoining.
    pub rejoining: bool,
    /// Rejoin attempts since the table was last at or above `min_peers`.
    pub attempts: u32,
    /// Seeds remembered.
    pub seeds: usize,
    /// Dormant peers being probed.
    pub dormant: usize,
    /// Dormant peers that answered again since start: a sign that a partition healed, which the
    /// layers above use to reconnect their own overlays.
    pub revived: u64,
}

impl Rejoin {
    /// Remembers `seeds` (the newest replace the oldest beyond [`MAX_SEEDS`]).
    pub fn remember_seeds(&mut self, seeds: &[Target]) {
        for s in seeds {
            if !self.seeds.contains(s) {
                self.seeds.push(s.clone());
            }
        }
        let extra = self.seeds.len().saturating_sub(MAX_SEEDS);
        self.seeds.drain(..extra);
    }
}

impl Dht {
    /// Rejoining and dormant-peer state, for status displays.
    pub fn rejoin_status(&self) -> RejoinStatus {
        let r = &self.rejoin;
        RejoinStatus {
            rejoining: r.next_attempt.is_some(),
            attempts: r.attempts,
            seeds: r.seeds.len(),
            dormant: r.dormant.len(),
            revived: r.revived,
        }
    }

    /// A node left the table for failing: keep it dormant, and rejoin if the table is too small.
    pub(super) fn note_dormant(&mut self, now: Instant, peer: NodeId) {
        if let Some(record) = self.lookup_record(&peer) {
            if self.rejoin.dormant.len() >= MAX_DORMANT
                && let Some(oldest) = self.rejoin.dormant.iter().min_by_key(|(_, d)| d.since).map(|(id, _)| *id)
            {
                self.rejoin.dormant.remove(&oldest);
            }
            self.rejoin.dormant.insert(peer, Dormant { record, since: now, probed: None });
            if self.rejoin.next_probe.is_none() && !self.cfg.dormant_probe.is_zero() {
                self.rejoin.next_probe = Some(now + self.cfg.dormant_probe);
            }
        }
        self.check_floor(now);
    }

    /// A node is in the table again: it is not dormant. A dormant one is back by whatever path
    /// (its probe, a rejoin attempt, a lookup): it counts as revived.
    pub(super) fn note_back(&mut self, now: Instant, peer: NodeId) {
        if self.rejoin.dormant.remove(&peer).is_some() {
            self.rejoin.revived += 1;
        }
        self.check_floor(now);
    }

    /// Starts (or stops) rejoining as the table falls below (or reaches) `min_peers`.
    pub(super) fn check_floor(&mut self, now: Instant) {
        let below = self.table.len() < self.cfg.min_peers;
        let r = &mut self.rejoin;
        if !below {
            r.next_attempt = None;
            r.attempts = 0;
            r.backoff = Duration::ZERO;
        } else if r.next_attempt.is_none() && (!r.seeds.is_empty() || !r.dormant.is_empty()) {
            // Not at once: a bootstrap in progress (a node just started) fills the table first.
            r.next_attempt = Some(now + REJOIN_BACKOFF_MIN);
        }
    }

    /// Earliest time a probe or a rejoin attempt is due.
    pub(super) fn rejoin_timeout(&self) -> Option<Instant> {
        let probe = self.rejoin.next_probe.filter(|_| !self.rejoin.dormant.is_empty());
        [probe, self.rejoin.next_attempt].into_iter().flatten().min()
    }

    /// Runs a due probe of a dormant peer and a due rejoin attempt.
    pub(super) fn rejoin_due(&mut self, now: Instant) {
        self.expire_dormant(now);
        if self.rejoin.next_probe.is_some_and(|t| now >= t) {
            self.rejoin.next_probe = (!self.rejoin.dormant.is_empty()).then(|| now + self.cfg.dormant_probe);
            self.probe_one(now);
        }
        if self.rejoin.next_attempt.is_some_and(|t| now >= t) {
            self.rejoin_attempt(now);
        }
    }

    fn expire_dormant(&mut self, now: Instant) {
        let keep = self.cfg.dormant_keep;
        self.rejoin.dormant.retain(|_, d| now.saturating_duration_since(d.since) < keep);
    }

    /// Pings the least recently probed dormant peer.
    fn probe_one(&mut self, now: Instant) {
        let next = self.rejoin.dormant.iter().min_by_key(|(_, d)| (d.probed, d.since)).map(|(id, d)| (*id, d.clone()));
        let Some((id, d)) = next else { return };
        if let Some(entry) = self.rejoin.dormant.get_mut(&id) {
            entry.probed = Some(now);
        }
        let busy = self
            .pending
            .values()
            .any(|p| matches!(p.waiting, Waiting::Pong { peer, purpose: PingPurpose::Dormant } if peer == id));
        if busy {
            return;
        }
        if let Ok(info) = Self::peer_info(&d.record, None) {
            let w = Waiting::Pong { peer: id, purpose: PingPurpose::Dormant };
            let _ = self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout);
        }
    }

    /// A dormant peer answered: it is offered to the table, and we look ourselves up (at most
    /// every few seconds) to find whoever else is reachable again through it.
    pub(super) fn dormant_answered(&mut self, now: Instant, peer: NodeId, addr: std::net::SocketAddr) {
        self.rejoin.dormant.remove(&peer);
        self.rejoin.revived += 1;
        self.responder_alive(now, peer, addr);
        let due = self.rejoin.last_self_lookup.is_none_or(|t| now.saturating_duration_since(t) >= SELF_LOOKUP_EVERY);
        if due {
            self.rejoin.last_self_lookup = Some(now);
            self.self_lookup(now);
        }
    }

    /// One rejoin attempt: bootstrap through the seeds and the most recent dormant peers.
    fn rejoin_attempt(&mut self, now: Instant) {
        let r = &mut self.rejoin;
        r.attempts += 1;
        r.backoff =
            if r.backoff.is_zero() { REJOIN_BACKOFF_MIN } else { (r.backoff * 2).min(self.cfg.rejoin_backoff_max) };
        r.next_attempt = Some(now + r.backoff);
        let mut dormant: Vec<&Dormant> = r.dormant.values().collect();
        dormant.sort_by_key(|d| std::cmp::Reverse(d.since));
        let mut targets = r.seeds.clone();
        targets.extend(dormant.into_iter().take(REJOIN_DORMANT).map(|d| Target::Record(d.record.clone())));
        let (peers, attempt, count) = (self.table.len(), r.attempts, targets.len());
        self.events.push_back(DhtEvent::Rejoining { peers, attempt, targets: count });
        let _ = self.start_bootstrap(now, targets);
    }
}
