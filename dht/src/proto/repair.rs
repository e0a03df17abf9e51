//! Replica repair: a record outlives the nodes that hold it (wire-spec §7.5).
//!
//! Writers republish their own records at four fifths of the lifetime, but a record whose
//! replicas die between two republishes would be down to fewer than r copies until then, or gone.
//! So the holders repair it, as the Kademlia paper's replication rule says:
//!
//! - When a node leaves our routing table (it stopped answering) and it was one of the r closest
//!   to a key we hold while we are one too, we store that key's records again on the r closest
//!   nodes we now know. The node that moved into the replica set gets its copy; the others answer
//!   "refreshed".
//! - When a node enters our table and is one of the r closest to a key we hold while we are one
//!   too, we store that key's records on it: a joining or restarted node receives the records it
//!   is now responsible for.
//!
//! The work is a sweep over the store, paced at `REPAIR_CHUNK` keys per `REPAIR_PACE` and by a
//! window of `REPAIR_WINDOW` repair stores in flight: a step sends only while fewer are waiting for
//! their answer, so a busy network (or a busy machine) slows repair down instead of being flooded
//! by it, and repair never fills the table of pending requests that user requests need. Triggers
//! collect while a sweep runs and start the next one. A store sent for repair keeps the remaining
//! lifetime of the held copy, so repair never extends a record's life.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{Dht, Waiting};
use crate::channel::PeerInfo;
use crate::identity::NodeId;
use crate::wire::{Body, Key};

/// Keys checked per step of a sweep.
const REPAIR_CHUNK: usize = 128;
/// Time between steps of a sweep.
const REPAIR_PACE: Duration = Duration::from_millis(10);
/// Repair stores waiting for their answer at most (a key's records go out together, so one key
/// may overshoot it by its records times r - 1).
pub(super) const REPAIR_WINDOW: usize = 32;
/// Triggers remembered for the next sweep; past this the next sweep checks every key against the
/// whole table (`Trigger::All`).
const MAX_TRIGGERS: usize = 256;
/// The query id repair stores carry: no query waits for them (queries start at 1).
pub(super) const REPAIR_QUERY: super::QueryId = 0;

/// What a sweep looks for.
#[derive(Debug, Default)]
pub(super) struct Repair {
    /// Nodes that left the table since the current sweep started.
    gone: BTreeSet<NodeId>,
    /// Nodes that entered the table since the current sweep started.
    joined: BTreeSet<NodeId>,
    /// Too many triggers were dropped: check every key against the table.
    overflow: bool,
    /// When the next sweep starts (set by the first trigger after a sweep began).
    start: Option<Instant>,
    /// The sweep in progress: its triggers, the next key, when its next step is due.
    sweep: Option<Sweep>,
    /// Repair stores sent and not yet answered, refused or timed out.
    in_flight: usize,
}

#[derive(Debug)]
struct Sweep {
    gone: BTreeSet<NodeId>,
    joined: BTreeSet<NodeId>,
    all: bool,
    next_key: Option<Key>,
    due: Instant,
}

impl Repair {
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        self.sweep.as_ref().map(|s| s.due).or(self.start)
    }

    fn trigger(&mut self, now: Instant) -> bool {
        self.start.get_or_insert(now + REPAIR_PACE);
        if self.gone.len() + self.joined.len() >= MAX_TRIGGERS {
            self.overflow = true;
            return false;
        }
        true
    }
}

impl Dht {
    /// A repair store was answered, refused or timed out: its place in the window is free.
    pub(super) fn repair_store_done(&mut self) {
        self.repair.in_flight = self.repair.in_flight.saturating_sub(1);
    }

    /// A node left the routing table (`joined` false) or entered it (`joined` true).
    pub(super) fn repair_trigger(&mut self, now: Instant, peer: NodeId, joined: bool) {
        if self.store.is_empty() {
            return;
        }
        let r = &mut self.repair;
        // A node that flaps counts once, as what it did last.
        if joined {
            r.gone.remove(&peer);
        } else {
            r.joined.remove(&peer);
        }
        if r.trigger(now) {
            if joined {
                r.joined.insert(peer);
            } else {
                r.gone.insert(peer);
            }
        }
    }

    /// Runs the due step of the sweep, or starts one if triggers are waiting.
    pub(super) fn repair_due(&mut self, now: Instant) {
        if self.repair.sweep.as_ref().is_some_and(|s| now < s.due) {
            return;
        }
        if self.repair.sweep.is_none() {
            let r = &mut self.repair;
            if r.start.is_none_or(|s| now < s) {
                return;
            }
            r.start = None;
            if r.gone.is_empty() && r.joined.is_empty() && !r.overflow {
                return;
            }
            // Recounted at each sweep, so a lost decrement cannot stall repair for good.
            self.repair.in_flight = self
                .pending
                .values()
                .filter(|p| matches!(p.waiting, Waiting::StoreAck { query: REPAIR_QUERY, .. }))
                .count();
            let first = self.store.keys().next().copied();
            self.repair.sweep = Some(Sweep {
                gone: std::mem::take(&mut self.repair.gone),
                joined: std::mem::take(&mut self.repair.joined),
                all: std::mem::take(&mut self.repair.overflow),
                next_key: first,
                due: now,
            });
            self.stats.repair_sweeps += 1;
        }
        let Some(mut sweep) = self.repair.sweep.take() else { return };
        let Some(from) = sweep.next_key else { return };
        let keys: Vec<Key> = self.store.keys_from(&from).take(REPAIR_CHUNK + 1).copied().collect();
        sweep.next_key = keys.get(REPAIR_CHUNK).copied();
        for key in keys.iter().take(REPAIR_CHUNK) {
            if self.repair.in_flight >= REPAIR_WINDOW {
                // The window is full: go on from this key at a later step.
                sweep.next_key = Some(*key);
                self.stats.repair_waits += 1;
                break;
            }
            self.repair_key(now, key, &sweep);
        }
        sweep.due = now + REPAIR_PACE;
        if sweep.next_key.is_some() {
            self.repair.sweep = Some(sweep);
        }
    }

    /// Sends `key`'s records to the replicas that need them after the sweep's triggers.
    fn repair_key(&mut self, now: Instant, key: &Key, sweep: &Sweep) {
        let r = self.cfg.replication;
        let target = NodeId(key.0);
        let me = self.id();
        let closest = self.table.closest_ids(&target, r);
        // Are we one of the r closest among the table and ourselves?
        let ahead_of_me = closest.iter().filter(|id| target.distance(id) < target.distance(&me)).count();
        if ahead_of_me >= r {
            return;
        }
        let peers: Vec<NodeId> = closest.into_iter().take(r.saturating_sub(1)).collect();
        let farthest = peers.last().map(|p| target.distance(p));
        // A gone node was a replica if it was closer than the r-th replica we know now (or we
        // know fewer than r - 1 others).
        let lost_replica = sweep.gone.iter().any(|g| farthest.is_none_or(|f| target.distance(g) < f));
        let send_to: Vec<NodeId> = if lost_replica || sweep.all {
            peers
        } else {
            peers.into_iter().filter(|p| sweep.joined.contains(p)).collect()
        };
        if send_to.is_empty() {
            return;
        }
        let records: Vec<(crate::wire::Record, Instant)> =
            self.store.items_under(key).map(|i| (i.record.clone(), i.expires)).collect();
        for (record, expires) in records {
            let left = expires.saturating_duration_since(now);
            if left < Duration::from_secs(1) {
                continue;
            }
            let ttl_s = u32::try_from(left.as_secs()).unwrap_or(u32::MAX);
            for peer in &send_to {
                let Some(e) = self.table.get(peer) else { continue };
                let info = PeerInfo { id: *peer, noise_key: e.record.noise_key, addr: e.addr };
                let body = Body::Store { key: *key, record: record.clone(), ttl_s, expected_seq: None };
                let w = Waiting::StoreAck { peer: *peer, query: REPAIR_QUERY };
                if self.send_request(now, &info, body, w, self.cfg.rpc_timeout).is_ok() {
                    self.stats.repair_stores += 1;
                    self.repair.in_flight += 1;
                }
            }
        }
    }
}
