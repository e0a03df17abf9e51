//! The record store (wire-spec §7): validates and keeps the three record kinds with their TTLs,
//! under quotas. Sans-IO and in memory; persistence hooks in through `RecordStore::items` and
//! `RecordStore::restore`.
//!
//! Rules, checked on every node that stores a record:
//! * immutable: the key is BLAKE3(value);
//! * mutable: the key is BLAKE3(public key ‖ salt), the signature verifies, the sequence number is
//!   higher than the one held (an identical record only refreshes its expiry), and a
//!   compare-and-swap `expected_seq` must equal the held seq (0 when none is held);
//! * set entry: the signature verifies for this key; one entry per writer (higher seq wins); at
//!   most `max_set_entries` writers, the entry expiring soonest making way for a longer-lived one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::wire::message::error_code;
use crate::wire::{self, Key, Record};

/// Quotas and limits of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Items (records and set entries) held in all.
    pub max_items: usize,
    /// Bytes held in all (encoded records plus keys).
    pub max_bytes: usize,
    /// Items held on behalf of one peer.
    pub max_per_peer: usize,
    /// Writers per multi-writer set.
    pub max_set_entries: usize,
    /// Longest lifetime granted.
    pub max_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_items: 100_000,
            max_bytes: 64 << 20,
            max_per_peer: 1_000,
            max_set_entries: 64,
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not belong to the content (hash or public key ‖ salt mismatch).
    #[error("key does not match the record")]
    WrongKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// Not newer than the record held.
    #[error("sequence number not newer than the one held")]
    Stale,
    /// Compare-and-swap failed.
    #[error("compare-and-swap failed: held seq is {held}")]
    CasMismatch {
        /// Seq held (0 if none).
        held: u64,
    },
    /// A quota is exhausted.
    #[error("storage quota exceeded")]
    Quota,
    /// The set has no room for another writer.
    #[error("set is full")]
    SetFull,
    /// The kinds of record under one key differ (e.g. a set entry under a mutable record's key).
    #[error("key already holds a record of another kind")]
    KindConflict,
}

impl StoreError {
    /// The wire error code (§6.5).
    pub fn code(&self) -> u16 {
        match self {
            StoreError::WrongKey | StoreError::BadSignature | StoreError::KindConflict => error_code::INVALID_RECORD,
            StoreError::Stale => error_code::STALE,
            StoreError::CasMismatch { .. } => error_code::CAS_MISMATCH,
            StoreError::Quota | StoreError::SetFull => error_code::QUOTA,
        }
    }
}

/// Checks a record against its key (content and signature rules; no state).
pub fn validate(key: &Key, record: &Record) -> Result<(), StoreError> {
    match record {
        Record::Immutable { value } => {
            if Key::for_immutable(value) != *key {
                return Err(StoreError::WrongKey);
            }
        }
        Record::Mutable(m) => {
            if m.key() != *key {
                return Err(StoreError::WrongKey);
            }
            if !m.signature_ok() {
                return Err(StoreError::BadSignature);
            }
        }
        Record::SetEntry(e) => {
            if !e.signature_ok(key) {
                return Err(StoreError::BadSignature);
            }
        }
        Record::Reach(r) => {
            if r.key() != *key {
                return Err(StoreError::WrongKey);
            }
            if r.verify().is_err() {
                return Err(StoreError::BadSignature);
            }
        }
    }
    Ok(())
}

/// What a successful put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new item.
    New,
    /// Replaced an older version.
    Replaced,
    /// Identical to the one held: expiry refreshed.
    Refreshed,
}

/// A held item with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The record.
    pub record: Record,
    /// When it expires.
    pub expires: Instant,
    /// Who stored it (charged to its quota).
    pub owner: NodeId,
    size: usize,
}

/// Set entries are keyed by writer; single records use the all-zero writer slot.
type Writer = [u8; 32];
const SINGLE: Writer = [0u8; 32];

fn writer_of(record: &Record) -> Writer {
    match record {
        Record::SetEntry(e) => e.public_key,
        _ => SINGLE,
    }
}

fn seq_of(record: &Record) -> Option<u64> {
    match record {
        Record::Immutable { .. } => None,
        Record::Mutable(m) => Some(m.seq),
        Record::SetEntry(e) => Some(e.seq),
        Record::Reach(r) => Some(r.seq),
    }
}

/// The store. See the module docs.
#[derive(Debug)]
pub struct RecordStore {
    cfg: StoreConfig,
    items: BTreeMap<Key, BTreeMap<Writer, Item>>,
    expiry: BTreeSet<(Instant, Key, Writer)>,
    bytes: usize,
    count: usize,
    per_peer: HashMap<NodeId, usize>,
    generation: u64,
}

impl RecordStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        RecordStore {
            cfg,
            items: BTreeMap::new(),
            expiry: BTreeSet::new(),
            bytes: 0,
            count: 0,
            per_peer: HashMap::new(),
            generation: 0,
        }
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys held.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.items.keys()
    }

    /// Keys held, from `from` on (inclusive), in order.
    pub fn keys_from<'a>(&'a self, from: &Key) -> impl Iterator<Item = &'a Key> + 'a {
        self.items.range(*from..).map(|(k, _)| k)
    }

    /// Items held under `key` (expired ones included until `expire` runs).
    pub fn items_under<'a>(&'a self, key: &Key) -> impl Iterator<Item = &'a Item> + 'a {
        self.items.get(key).into_iter().flat_map(|m| m.values())
    }

    /// Unexpired records under `key`.
    pub fn get(&self, now: Instant, key: &Key) -> Vec<Record> {
        self.items
            .get(key)
            .map(|m| m.values().filter(|i| i.expires > now).map(|i| i.record.clone()).collect())
            .unwrap_or_default()
    }

    /// Every held item, for republishing and persistence.
    pub fn items(&self) -> impl Iterator<Item = (&Key, &Item)> {
        self.items.iter().flat_map(|(k, m)| m.values().map(move |i| (k, i)))
    }

    fn unlink(&mut self, key: &Key, writer: &Writer) -> Option<Item> {
        let m = self.items.get_mut(key)?;
        let item = m.remove(writer)?;
        self.generation += 1;
        if m.is_empty() {
            self.items.remove(key);
        }
        self.expiry.remove(&(item.expires, *key, *writer));
        self.bytes = self.bytes.saturating_sub(item.size);
        self.count = self.count.saturating_sub(1);
        if let Some(c) = self.per_peer.get_mut(&item.owner) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_peer.remove(&item.owner);
            }
        }
        Some(item)
    }

    /// Increases whenever an item is added, replaced or removed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn link(&mut self, key: Key, writer: Writer, item: Item) {
        self.generation += 1;
        self.expiry.insert((item.expires, key, writer));
        self.bytes += item.size;
        self.count += 1;
        *self.per_peer.entry(item.owner).or_insert(0) += 1;
        self.items.entry(key).or_default().insert(writer, item);
    }

    /// Validates and stores `record` under `key` for `ttl` (clamped to 1 s ..= `max_ttl`; a set
    /// entry also to its own `ttl_s`), on behalf of `from`.
    pub fn put(
        &mut self,
        now: Instant,
        key: Key,
        record: Record,
        ttl: Duration,
        expected_seq: Option<u64>,
        from: NodeId,
    ) -> Result<Stored, StoreError> {
        validate(&key, &record)?;
        let mut ttl = ttl.clamp(Duration::from_secs(1), self.cfg.max_ttl);
        if let Record::SetEntry(e) = &record {
            ttl = ttl.min(Duration::from_secs(u64::from(e.ttl_s).max(1)));
        }
        let writer = writer_of(&record);
        let held_kind_ok = self
            .items
            .get(&key)
            .is_none_or(|m| m.values().all(|i| std::mem::discriminant(&i.record) == std::mem::discriminant(&record)));
        if !held_kind_ok {
            return Err(StoreError::KindConflict);
        }
        let held = self.items.get(&key).and_then(|m| m.get(&writer)).filter(|i| i.expires > now).cloned();
        if let (Some(want), Record::Mutable(_)) = (expected_seq, &record) {
            let held_seq = held.as_ref().and_then(|i| seq_of(&i.record)).unwrap_or(0);
            if held_seq != want {
                return Err(StoreError::CasMismatch { held: held_seq });
            }
        }
        let size = wire::encode(&record).map(|v| v.len()).unwrap_or(0) + 32;
        let expires = now + ttl;
        let outcome = match &held {
            Some(h) if h.record == record => Stored::Refreshed,
            Some(h) => match (seq_of(&h.record), seq_of(&record)) {
                (Some(old), Some(new)) if new > old => Stored::Replaced,
                _ => return Err(StoreError::Stale),
            },
            None => Stored::New,
        };
        if outcome == Stored::New {
            self.make_room(now, &key, writer, expires, from, size)?;
        } else if self.bytes + size > self.cfg.max_bytes + held.as_ref().map_or(0, |h| h.size) {
            return Err(StoreError::Quota);
        }
        // An expired item in the slot is simply replaced.
        self.unlink(&key, &writer);
        self.link(key, writer, Item { record, expires, owner: from, size });
        Ok(outcome)
    }

    fn make_room(
        &mut self,
        now: Instant,
        key: &Key,
        writer: Writer,
        expires: Instant,
        from: NodeId,
        size: usize,
    ) -> Result<(), StoreError> {
        if self.per_peer.get(&from).copied().unwrap_or(0) >= self.cfg.max_per_peer {
            return Err(StoreError::Quota);
        }
        if self.count >= self.cfg.max_items || self.bytes + size > self.cfg.max_bytes {
            self.expire(now);
            if self.count >= self.cfg.max_items || self.bytes + size > self.cfg.max_bytes {
                return Err(StoreError::Quota);
            }
        }
        if writer != SINGLE {
            let set = self.items.get(key);
            let live = set.map_or(0, |m| m.values().filter(|i| i.expires > now).count());
            if live >= self.cfg.max_set_entries {
                let soonest = set.and_then(|m| m.iter().min_by_key(|(_, i)| i.expires).map(|(w, i)| (*w, i.expires)));
                match soonest {
                    Some((w, e)) if e < expires => {
                        self.unlink(key, &w);
                    }
                    _ => return Err(StoreError::SetFull),
                }
            }
        }
        Ok(())
    }

    /// Drops expired items; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let due: Vec<(Instant, Key, Writer)> = self.expiry.iter().take_while(|(t, _, _)| *t <= now).copied().collect();
        for (_, k, w) in &due {
            self.unlink(k, w);
        }
        due.len()
    }

    /// When the next item expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(t, _, _)| *t)
    }

    /// Puts back an item loaded from disk (already validated when first stored; checked again).
    pub fn restore(
        &mut self,
        now: Instant,
        key: Key,
        record: Record,
        remaining: Duration,
        owner: NodeId,
    ) -> Result<Stored, StoreError> {
        self.put(now, key, record, remaining, None, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::wire::bounded::BoundedBytes;
    use crate::wire::{MutableRecord, SetEntry};

    fn mutable(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> (Key, Record) {
        let m = MutableRecord::sign(id, salt, seq, value).unwrap();
        (m.key(), Record::Mutable(m))
    }

    fn entry(id: &Identity, key: &Key, seq: u64, ttl_s: u32) -> Record {
        let mut e = SetEntry {
            public_key: id.public_key(),
            seq,
            ttl_s,
            value: BoundedBytes::try_from(&b"v"[..]).unwrap(),
            signature: [0; 64],
        };
        e.signature = id.sign(&e.signed_bytes(key).unwrap());
        Record::SetEntry(e)
    }

    const T: Duration = Duration::from_secs(300);

    #[test]
    fn immutable_key_must_be_the_hash() {
        let now = Instant::now();
        let mut s = RecordStore::new(StoreConfig::default());
        let rec = Record::Immutable { value: BoundedBytes::try_from(&b"abc"[..]).unwrap() };
        let me = NodeId([1; 32]);
        assert_eq!(s.put(now, Key([0; 32]), rec.clone(), T, None, me), Err(StoreError::WrongKey));
        assert_eq!(s.put(now, Key::for_immutable(b"abc"), rec.clone(), T, None, me), Ok(Stored::New));
        assert_eq!(s.put(now, Key::for_immutable(b"abc"), rec.clone(), T, None, me), Ok(Stored::Refreshed));
        assert_eq!(s.get(now, &Key::for_immutable(b"abc")), vec![rec]);
    }

    #[test]
    fn mutable_seq_cas_and_signature() {
        let now = Instant::now();
        let id = Identity::from_seed([4; 32]);
        let me = NodeId([1; 32]);
        let mut s = RecordStore::new(StoreConfig::default());
        let (k, r1) = mutable(&id, b"s", 1, b"one");
        let (_, r2) = mutable(&id, b"s", 2, b"two");
        let (_, r2b) = mutable(&id, b"s", 2, b"other two");
        assert_eq!(s.put(now, k, r1.clone(), T, Some(1), me), Err(StoreError::CasMismatch { held: 0 }));
        assert_eq!(s.put(now, k, r1.clone(), T, Some(0), me), Ok(Stored::New));
        assert_eq!(s.put(now, k, r2.clone(), T, Some(0), me), Err(StoreError::CasMismatch { held: 1 }));
        assert_eq!(s.put(now, k, r2.clone(), T, Some(1), me), Ok(Stored::Replaced));
        assert_eq!(s.put(now, k, r1.clone(), T, None, me), Err(StoreError::Stale));
        assert_eq!(s.put(now, k, r2b, T, None, me), Err(StoreError::Stale));
        let Record::Mutable(mut forged) = r2.clone() else { unreachable!() };
        forged.seq = 3;
        assert_eq!(s.put(now, k, Record::Mutable(forged), T, None, me), Err(StoreError::BadSignature));
        let (other_key, _) = mutable(&id, b"other salt", 3, b"x");
        let (_, r3) = mutable(&id, b"s", 3, b"x");
        assert_eq!(s.put(now, other_key, r3, T, None, me), Err(StoreError::WrongKey));
        assert_eq!(s.get(now, &k), vec![r2]);
    }

    #[test]
    fn sets_hold_one_entry_per_writer_and_evict_the_soonest_expiring() {
        let now = Instant::now();
        let key = Key([7; 32]);
        let me = NodeId([1; 32]);
        let mut s = RecordStore::new(StoreConfig { max_set_entries: 3, ..StoreConfig::default() });
        let ws: Vec<Identity> = (0..5u8).map(|i| Identity::from_seed([i + 10; 32])).collect();
        for (i, w) in ws.iter().take(3).enumerate() {
            assert_eq!(s.put(now, key, entry(w, &key, 1, 100 + i as u32), T, None, me), Ok(Stored::New));
        }
        assert_eq!(s.put(now, key, entry(&ws[0], &key, 2, 100), T, None, me), Ok(Stored::Replaced));
        assert_eq!(s.put(now, key, entry(&ws[0], &key, 1, 100), T, None, me), Err(StoreError::Stale));
        // Full: a longer-lived newcomer evicts the soonest-expiring entry (ws[0] at 100 s)...
        assert_eq!(s.put(now, key, entry(&ws[3], &key, 1, 200), T, None, me), Ok(Stored::New));
        assert_eq!(s.get(now, &key).len(), 3);
        // ... a shorter-lived one is refused.
        assert_eq!(s.put(now, key, entry(&ws[4], &key, 1, 50), T, None, me), Err(StoreError::SetFull));
        // A signature for another set is refused.
        let other = Key([8; 32]);
        assert_eq!(s.put(now, key, entry(&ws[4], &other, 1, 50), T, None, me), Err(StoreError::BadSignature));
        // Entries expire on their own TTL: ws[1] (101 s) and ws[2] (102 s) go, ws[3] (200 s) stays.
        assert_eq!(s.expire(now + Duration::from_secs(150)), 2);
        assert_eq!(s.get(now + Duration::from_secs(150), &key), vec![entry(&ws[3], &key, 1, 200)]);
    }

    #[test]
    fn quotas_and_expiry() {
        let now = Instant::now();
        let peer = NodeId([2; 32]);
        let mut s = RecordStore::new(StoreConfig { max_per_peer: 10, max_items: 15, ..StoreConfig::default() });
        let put = |s: &mut RecordStore, i: u32, from: NodeId| {
            let v = i.to_le_bytes();
            s.put(
                now,
                Key::for_immutable(&v),
                Record::Immutable { value: BoundedBytes::try_from(&v[..]).unwrap() },
                T,
                None,
                from,
            )
        };
        for i in 0..10 {
            assert_eq!(put(&mut s, i, peer), Ok(Stored::New));
        }
        assert_eq!(put(&mut s, 10, peer), Err(StoreError::Quota), "per-peer quota");
        for i in 10..15 {
            assert_eq!(put(&mut s, i, NodeId([3; 32])), Ok(Stored::New));
        }
        assert_eq!(put(&mut s, 15, NodeId([4; 32])), Err(StoreError::Quota), "node quota");
        assert_eq!(s.len(), 15);
        assert_eq!(s.next_expiry(), Some(now + T));
        assert_eq!(s.expire(now + T), 15);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        assert_eq!(put(&mut s, 10, peer), Ok(Stored::New), "quota freed by expiry");
    }

    #[test]
    fn kinds_do_not_mix_under_one_key() {
        let now = Instant::now();
        let id = Identity::from_seed([4; 32]);
        let (k, r1) = mutable(&id, b"s", 1, b"one");
        let mut s = RecordStore::new(StoreConfig::default());
        s.put(now, k, r1, T, None, NodeId([1; 32])).unwrap();
        assert_eq!(s.put(now, k, entry(&id, &k, 1, 60), T, None, NodeId([1; 32])), Err(StoreError::KindConflict));
    }
}
