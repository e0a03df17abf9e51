//! Answering peers' requests (wire-spec §6.2): Ping, FindNode, FindValue, FindSet and Store.

use std::time::{Duration, Instant};

use super::{Dht, DhtEvent};
use crate::identity::{NodeId, NodeRecord};
use crate::wire::bounded::{BoundedString, BoundedVec};
use crate::wire::limits::{MAX_NODES_PER_MESSAGE, MAX_PLAINTEXT, MAX_RECORDS_PER_VALUE};
use crate::wire::{self, Body, Key, Message, Record, SetEntry, WireAddr};

/// Room a message needs besides its node records or values: id, tags, counts, key.
const MESSAGE_OVERHEAD: usize = 10 + 1 + 1 + 2 + 32;

/// An `Error` body.
pub(super) fn error(code: u16, detail: &str) -> Body {
    Body::Error { code, detail: BoundedString::truncated(detail) }
}

/// Splits records into groups that each fit one `Nodes` message.
pub(super) fn pack_nodes(recs: Vec<NodeRecord>) -> Vec<Vec<NodeRecord>> {
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for r in recs {
        let len = wire::encode(&r).map(|v| v.len()).unwrap_or(MAX_PLAINTEXT);
        if !cur.is_empty() && (size + len + MESSAGE_OVERHEAD > MAX_PLAINTEXT || cur.len() >= MAX_NODES_PER_MESSAGE) {
            parts.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push(r);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// As many of `items` as fit one `Value` or `SetPage` message (at most 8, within a datagram),
/// first ones first, and whether any were left out.
pub(crate) fn pack<T: serde::Serialize>(items: Vec<T>) -> (Vec<T>, bool) {
    let total = items.len();
    let mut out = Vec::new();
    let mut size = 0;
    for r in items {
        let len = wire::encode(&r).map(|v| v.len()).unwrap_or(MAX_PLAINTEXT);
        if size + len + MESSAGE_OVERHEAD > MAX_PLAINTEXT || out.len() >= MAX_RECORDS_PER_VALUE {
            break;
        }
        size += len;
        out.push(r);
    }
    let more = out.len() < total;
    (out, more)
}

/// A rewrite of this core's answers before they are sealed and sent: the seam through which
/// tests and the simulator make a node lie (see `testing::Adversary`, feature `testing`), so
/// the honest nodes' defences run against the real core. A deployment never sets one.
pub trait AnswerFilter: Send + Sync + std::fmt::Debug {
    /// The bodies to send instead of `answers`, this core's honest answer to `request` from
    /// `peer` (several `Nodes` parts, or one body).
    fn rewrite(&self, peer: &NodeId, request: &Body, answers: Vec<Body>) -> Vec<Body>;
}

impl Dht {
    pub(super) fn serve(&mut self, now: Instant, peer: NodeId, addr: std::net::SocketAddr, msg: Message) {
        let request = self.answer_filter.is_some().then(|| msg.body.clone());
        let mut answers = self.answer(now, peer, addr, msg.body);
        if let (Some(f), Some(request)) = (&self.answer_filter, &request) {
            answers = f.rewrite(&peer, request, answers);
        }
        for body in answers {
            self.reply(now, peer, msg.id, body);
        }
    }

    /// The honest answer to a request.
    fn answer(&mut self, now: Instant, peer: NodeId, addr: std::net::SocketAddr, body: Body) -> Vec<Body> {
        match body {
            Body::Ping => {
                // Through a relay the source is a local name, never told (§15.3): unspecified.
                let observed =
                    if crate::path::is_virtual(&addr) { WireAddr::V4([0; 4], 0) } else { WireAddr::from(addr) };
                vec![Body::Pong { observed, record_seq: self.record.seq }]
            }
            Body::FindNode { target } => self.nodes_answer(peer, &target),
            Body::FindValue { key } => {
                let recs = self.store.get(now, &key);
                if recs.is_empty() {
                    self.nodes_answer(peer, &NodeId(key.0))
                } else {
                    let records = BoundedVec::try_from(pack(recs).0).unwrap_or_default();
                    vec![Body::Value { key, records }]
                }
            }
            Body::FindSet { key, after } => {
                let mut entries: Vec<SetEntry> = self
                    .store
                    .get(now, &key)
                    .into_iter()
                    .filter_map(|r| match r {
                        Record::SetEntry(e) if after.is_none_or(|a| e.public_key > a) => Some(e),
                        _ => None,
                    })
                    .collect();
                if entries.is_empty() && after.is_none() {
                    // Nothing here: help the lookup on, as for FindValue.
                    self.nodes_answer(peer, &NodeId(key.0))
                } else {
                    entries.sort_by_key(|e| e.public_key);
                    let (page, more) = pack(entries);
                    let entries = BoundedVec::try_from(page).unwrap_or_default();
                    vec![Body::SetPage { key, entries, more }]
                }
            }
            Body::Store { key, record, ttl_s, expected_seq } => {
                vec![self.serve_store(now, peer, key, record, ttl_s, expected_seq)]
            }
            Body::Reserve { ttl_s } => vec![self.serve_reserve(now, peer, addr, ttl_s)],
            Body::Connect { target } => vec![self.serve_connect(now, peer, addr, target)],
            _ => Vec::new(),
        }
    }

    fn serve_store(
        &mut self,
        now: Instant,
        peer: NodeId,
        key: Key,
        record: Record,
        ttl_s: u32,
        cas: Option<u64>,
    ) -> Body {
        match self.store.put(now, key, record, Duration::from_secs(u64::from(ttl_s)), cas, peer) {
            Ok(_) => {
                self.stats.stores_accepted += 1;
                self.events.push_back(DhtEvent::RecordStored { key, from: peer });
                Body::StoreAck { key }
            }
            Err(e) => {
                let name = match e {
                    crate::store::StoreError::WrongKey => "wrong_key",
                    crate::store::StoreError::BadSignature => "bad_signature",
                    crate::store::StoreError::Stale => "stale",
                    crate::store::StoreError::CasMismatch { .. } => "cas_mismatch",
                    crate::store::StoreError::Quota => "quota",
                    crate::store::StoreError::SetFull => "set_full",
                    crate::store::StoreError::KindConflict => "kind_conflict",
                };
                *self.stats.stores_refused.entry(name).or_insert(0) += 1;
                error(e.code(), &e.to_string())
            }
        }
    }

    /// The k closest nodes to `target` we know, except the asker, in as many `Nodes` messages
    /// as needed.
    fn nodes_answer(&self, peer: NodeId, target: &NodeId) -> Vec<Body> {
        let recs: Vec<NodeRecord> = self.table.closest_records(target, self.cfg.lookup.k, &peer);
        nodes_bodies(recs)
    }
}

/// `Nodes` bodies carrying `recs` (one, empty, if there are none).
pub(crate) fn nodes_bodies(recs: Vec<NodeRecord>) -> Vec<Body> {
    let parts = pack_nodes(recs);
    let total = u8::try_from(parts.len().max(1)).unwrap_or(u8::MAX);
    if parts.is_empty() {
        return vec![Body::Nodes { total, nodes: BoundedVec::new() }];
    }
    parts.into_iter().map(|part| Body::Nodes { total, nodes: BoundedVec::try_from(part).unwrap_or_default() }).collect()
}
