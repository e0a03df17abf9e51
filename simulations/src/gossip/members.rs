//! A model of one topic's DHT member set, as the topic core reads and writes it through the node.
//!
//! The set follows the DHT's rules (wire-spec: at most 64 writers; when full, the entry expiring
//! soonest makes way for a longer-lived newcomer; entries expire `ttl` after they were written).
//! Reads and writes take a modelled DHT round trip. A partition splits the set: each side's
//! replicas take the writes made on that side, so a read during the cut sees the entries written
//! before it plus those of its own side; at the heal the copies merge (replica repair and reads
//! that consult replicas of both sides).

use std::collections::BTreeMap;

use crate::engine::Nanos;

/// Writers a set holds at most (the DHT's `max_set_entries`).
pub const MAX_WRITERS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Entry {
    expires: Nanos,
    /// The side of a partition it was written on (`None`: before the cut, or merged since).
    side: Option<u8>,
}

/// One topic's member set.
#[derive(Debug, Default)]
pub struct MemberSet {
    entries: BTreeMap<u32, Entry>,
}

impl MemberSet {
    /// `node` writes its entry at `now` (on partition side `side`, if cut), living `ttl`.
    pub fn write(&mut self, node: u32, now: Nanos, ttl: Nanos, side: Option<u8>) {
        self.entries.retain(|_, e| e.expires > now);
        let expires = now.saturating_add(ttl);
        if !self.entries.contains_key(&node) && self.entries.len() >= MAX_WRITERS {
            let soonest = self.entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, e)| (*k, e.expires));
            match soonest {
                Some((k, at)) if at < expires => drop(self.entries.remove(&k)),
                _ => return,
            }
        }
        self.entries.insert(node, Entry { expires, side });
    }

    /// The writers a read at `now` from partition side `side` (if cut) sees.
    pub fn read(&self, now: Nanos, side: Option<u8>) -> Vec<u32> {
        self.entries
            .iter()
            .filter(|(_, e)| e.expires > now && (side.is_none() || e.side.is_none() || e.side == side))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The partition healed: every side's entries are visible to all.
    pub fn merge(&mut self) {
        for e in self.entries.values_mut() {
            e.side = None;
        }
    }
}
