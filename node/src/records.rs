//! Records on the node: the DHT's put and get family, peers by id.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_dht::proto::PutOutcome;
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};

use crate::{DhtNodeStats, GotRecord, Node, NodeError, Peer, PingReply, Restored, Target, dht_net_ttl, unix_ms};

impl Node {
    // ---- records ------------------------------------------------------------------------------

    /// Stores `record` under `key` on the closest nodes (`cas`: expected seq of a mutable record).
    pub async fn put(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
    ) -> Result<PutOutcome, NodeError> {
        Ok(self.inner.dht.put(key, record, ttl, cas).await?)
    }

    /// Stores an immutable value; returns its key (BLAKE3 of the value).
    pub async fn put_immutable(&self, value: Vec<u8>) -> Result<Key, NodeError> {
        Ok(self.store_immutable(value).await?.0)
    }

    /// Like [`Node::put_immutable`], with how many replicas took it.
    pub async fn store_immutable(&self, value: Vec<u8>) -> Result<(Key, PutOutcome), NodeError> {
        let key = Key::for_immutable(&value);
        let len = value.len();
        let value = suprnova_dht::wire::bounded::BoundedBytes::try_from(value.as_slice())
            .map_err(|_| NodeError::too_large(len, suprnova_dht::wire::limits::MAX_VALUE_LEN))?;
        let out = self.put(key, Record::Immutable { value }, dht_net_ttl(), None).await?;
        Ok((key, out))
    }

    /// The immutable value under `key`.
    pub async fn get_immutable(&self, key: Key) -> Result<Vec<u8>, NodeError> {
        match self.inner.dht.get(key).await?.record {
            Record::Immutable { value } => Ok(value.to_vec()),
            _ => Err(NodeError::WrongRecord),
        }
    }

    /// Signs and stores a mutable record of ours under `salt` with `seq`; returns its key.
    pub async fn put_mutable(&self, salt: &[u8], seq: u64, value: &[u8], cas: Option<u64>) -> Result<Key, NodeError> {
        Ok(self.store_mutable(salt, seq, value, cas).await?.0)
    }

    /// Like [`Node::put_mutable`], with how many replicas took it.
    pub async fn store_mutable(
        &self,
        salt: &[u8],
        seq: u64,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<(Key, PutOutcome), NodeError> {
        let m = MutableRecord::sign(&self.inner.identity, salt, seq, value)
            .map_err(|_| NodeError::too_large(value.len(), suprnova_dht::wire::limits::MAX_VALUE_LEN))?;
        let key = m.key();
        let out = self.put(key, Record::Mutable(m), dht_net_ttl(), cas).await?;
        Ok((key, out))
    }

    /// The newest mutable record under `key` found by a full lookup.
    pub async fn get_mutable(&self, key: Key) -> Result<MutableRecord, NodeError> {
        let all = self.inner.dht.get_all(key).await?;
        all.into_iter()
            .filter_map(|g| match g.record {
                Record::Mutable(m) => Some(m),
                _ => None,
            })
            .max_by_key(|m| m.seq)
            .ok_or(NodeError::NotFound)
    }

    /// Adds our signed entry to the multi-writer set under `key` (republished by the DHT while
    /// the node runs).
    pub async fn put_set_entry(&self, key: Key, value: &[u8], ttl: Duration) -> Result<PutOutcome, NodeError> {
        let e = self.sign_set_entry(&key, value, ttl)?;
        self.put(key, Record::SetEntry(e), ttl, None).await
    }

    /// Like [`Node::put_set_entry`], but not republished: the entry lapses after `ttl` unless
    /// the caller writes it again (for entries the caller refreshes itself, and stops).
    pub async fn put_set_entry_once(&self, key: Key, value: &[u8], ttl: Duration) -> Result<PutOutcome, NodeError> {
        let e = self.sign_set_entry(&key, value, ttl)?;
        Ok(self.inner.dht.put_once(key, Record::SetEntry(e), ttl, None).await?)
    }

    /// Our entry for the set under `key`, with a seq above every one we signed before.
    fn sign_set_entry(&self, key: &Key, value: &[u8], ttl: Duration) -> Result<SetEntry, NodeError> {
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let now = unix_ms();
        let prev =
            self.inner.set_seq.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
        let seq = now.max(prev.unwrap_or(0) + 1);
        SetEntry::sign(&self.inner.identity, key, seq, ttl_s, value)
            .map_err(|_| NodeError::too_large(value.len(), suprnova_dht::wire::limits::MAX_SET_VALUE_LEN))
    }

    /// The entries of the set under `key` found by a full lookup (one per writer, newest).
    pub async fn get_set(&self, key: Key) -> Result<Vec<SetEntry>, NodeError> {
        let all = self.inner.dht.get_set(key).await?;
        let mut best: HashMap<[u8; 32], SetEntry> = HashMap::new();
        for g in all {
            if let Record::SetEntry(e) = g.record {
                match best.get(&e.public_key) {
                    Some(old) if old.seq >= e.seq => {}
                    _ => drop(best.insert(e.public_key, e)),
                }
            }
        }
        Ok(best.into_values().collect())
    }

    /// Any record under `key`, as soon as one arrives.
    pub async fn get(&self, key: Key) -> Result<GotRecord, NodeError> {
        Ok(self.inner.dht.get(key).await?)
    }

    /// The nodes closest to `target` that answered, closest first.
    pub async fn find_peers(&self, target: NodeId) -> Result<Vec<Peer>, NodeError> {
        let r = self.inner.dht.find_node(target).await?;
        Ok(r.nodes
            .into_iter()
            .map(|f| {
                self.learn(f.record.id, vec![f.addr]);
                Peer { id: f.record.id, addr: f.addr }
            })
            .collect())
    }

    /// Stores `record` under `key` on the closest nodes once: the DHT does not republish it (the
    /// caller writes it again while it should live, and lets it lapse when it should not).
    pub async fn put_once(&self, key: Key, record: Record, ttl: Duration) -> Result<PutOutcome, NodeError> {
        Ok(self.inner.dht.put_once(key, record, ttl, None).await?)
    }

    /// Stores `record` under `key` and reports each replica's answer as well: kept (republished
    /// by the DHT) or, with `kept` false, written once. The replicas' answers come even when the
    /// put as a whole failed (one refusal says why).
    pub async fn put_reported(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        kept: bool,
    ) -> (Result<PutOutcome, NodeError>, Vec<ReplicaAnswer>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = if kept {
            self.inner.dht.put_with_progress(key, record, ttl, None, tx).await
        } else {
            self.inner.dht.put_once(key, record, ttl, Some(tx)).await
        };
        let mut answers = Vec::new();
        while let Ok((peer, a)) = rx.try_recv() {
            answers.push((peer, a.map_err(NodeError::from)));
        }
        (r.map_err(NodeError::from), answers)
    }

    /// Every valid record found under `key` (all kinds, all versions the replicas hold).
    pub async fn get_all(&self, key: Key) -> Result<Vec<GotRecord>, NodeError> {
        Ok(self.inner.dht.get_all(key).await?)
    }

    /// Pings `target` over the DHT (a handshake first if there is no session).
    pub async fn ping(&self, target: Target) -> Result<PingReply, NodeError> {
        Ok(self.inner.dht.ping(target).await?)
    }

    /// What the DHT restored from its saved state at start, if anything.
    pub fn restored(&self) -> Option<Restored> {
        self.inner.dht.restored()
    }

    /// Whether this node's own store holds a record under each of `keys` (a diagnostic).
    pub async fn holds(&self, keys: Vec<Key>) -> Result<Vec<bool>, NodeError> {
        Ok(self.inner.dht.holds(keys).await?)
    }

    /// The DHT's counters and routing-table state.
    pub async fn dht_stats(&self) -> Result<DhtNodeStats, NodeError> {
        Ok(self.inner.dht.stats().await?)
    }
}

/// One replica's answer to a put.
pub type ReplicaAnswer = (NodeId, Result<(), NodeError>);
