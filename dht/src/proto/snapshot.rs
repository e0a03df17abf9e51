//! What a node keeps across restarts (its routing table and the records it holds), as plain data
//! the driver writes to disk. Expiry times are wall-clock milliseconds so they survive a restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Dht;
use crate::identity::{NodeId, NodeRecord};
use crate::routing::Entry;
use crate::wire::{Key, Record, WireAddr};

/// A routing-table entry on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPeer {
    /// Its record.
    pub record: NodeRecord,
    /// Where it answered.
    pub addr: WireAddr,
}

/// A stored record on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRecord {
    /// The key.
    pub key: Key,
    /// The record.
    pub record: Record,
    /// Expiry, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// Who stored it.
    pub owner: NodeId,
}

/// Routing table and records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Routing-table entries.
    pub peers: Vec<SavedPeer>,
    /// Records held.
    pub records: Vec<SavedRecord>,
}

/// What `restore` took back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Routing-table entries restored.
    pub peers: usize,
    /// Records restored.
    pub records: usize,
    /// Records skipped: expired meanwhile, or no longer valid.
    pub skipped: usize,
}

impl Dht {
    /// The routing table and the unexpired records, with expiry as Unix milliseconds (`unix_ms`
    /// is the wall clock at `now`).
    pub fn snapshot(&self, now: Instant, unix_ms: u64) -> Snapshot {
        let peers = self
            .table
            .entries()
            .map(|e| SavedPeer { record: e.record.clone(), addr: WireAddr::from(e.addr) })
            .collect();
        let records = self
            .store
            .items()
            .filter(|(_, i)| i.expires > now)
            .map(|(k, i)| SavedRecord {
                key: *k,
                record: i.record.clone(),
                expires_unix_ms: unix_ms
                    .saturating_add(u64::try_from(i.expires.duration_since(now).as_millis()).unwrap_or(u64::MAX)),
                owner: i.owner,
            })
            .collect();
        Snapshot { peers, records }
    }

    /// Puts back a snapshot: entries whose records still verify go into the routing table (their
    /// liveness is checked by the next bootstrap or lookup), records are validated again and kept
    /// for what remains of their lifetime.
    pub fn restore(&mut self, now: Instant, unix_ms: u64, snap: Snapshot) -> Restored {
        let mut out = Restored::default();
        for p in snap.peers {
            if p.record.verify().is_err() || p.record.id == self.id() {
                out.skipped += 1;
                continue;
            }
            let addr: SocketAddr = p.addr.to_socket_addr();
            let entry = Entry { record: p.record.clone(), addr, last_seen: now, failures: 0, failed_at: None };
            if matches!(self.table.insert(now, entry), crate::routing::Insert::Added) {
                out.peers += 1;
            } else {
                // Not in the table (bucket full or refused): keep the record where lookups find it.
                self.remember(&p.record);
            }
        }
        for r in snap.records {
            let left = Duration::from_millis(r.expires_unix_ms.saturating_sub(unix_ms));
            if left.is_zero() {
                out.skipped += 1;
                continue;
            }
            match self.store.restore(now, r.key, r.record, left, r.owner) {
                Ok(_) => out.records += 1,
                Err(_) => out.skipped += 1,
            }
        }
        out
    }

    /// (routing-table changes, store changes): what a snapshot would capture has changed when
    /// either moved since the last call (cheap to poll).
    pub fn snapshot_generation(&self) -> (u64, u64) {
        (self.table_changes, self.store.generation())
    }
}
