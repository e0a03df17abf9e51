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
fn pack<T: serde::Serialize>(items: Vec<T>) -> (Vec<T>, bool) {
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

impl Dht {
    pub(super) fn serve(&mut self, now: Instant, peer: NodeId, addr: std::net::SocketAddr, msg: Message) {
        match msg.body {
            Body::Ping => {
                let body = Body::Pong { observed: WireAddr::from(addr), record_seq: self.record.seq };
                self.reply(now, peer, msg.id, body);
            }
            Body::FindNode { target } => self.send_nodes(now, peer, msg.id, &target),
            Body::FindValue { key } => {
                let lies = self.adversary.as_ref().and_then(|a| a.values.clone());
                let recs = lies.unwrap_or_else(|| self.store.get(now, &key));
                if recs.is_empty() {
                    self.send_nodes(now, peer, msg.id, &NodeId(key.0));
                } else {
                    let records = BoundedVec::try_from(pack(recs).0).unwrap_or_default();
                    self.reply(now, peer, msg.id, Body::Value { key, records });
                }
            }
            Body::FindSet { key, after } => {
                if let Some(lies) = self.adversary.as_ref().and_then(|a| a.values.clone()) {
                    // A liar: the same page whatever was asked, always with more to come.
                    let page: Vec<SetEntry> = lies
                        .into_iter()
                        .filter_map(|r| if let Record::SetEntry(e) = r { Some(e) } else { None })
                        .collect();
                    let entries = BoundedVec::try_from(pack(page).0).unwrap_or_default();
                    self.reply(now, peer, msg.id, Body::SetPage { key, entries, more: true });
                    return;
                }
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
                    self.send_nodes(now, peer, msg.id, &NodeId(key.0));
                } else {
                    entries.sort_by_key(|e| e.public_key);
                    let (page, more) = pack(entries);
                    let entries = BoundedVec::try_from(page).unwrap_or_default();
                    self.reply(now, peer, msg.id, Body::SetPage { key, entries, more });
                }
            }
            Body::Store { key, record, ttl_s, expected_seq } => {
                self.serve_store(now, peer, msg.id, key, record, ttl_s, expected_seq)
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn serve_store(
        &mut self,
        now: Instant,
        peer: NodeId,
        id: u64,
        key: Key,
        record: Record,
        ttl_s: u32,
        cas: Option<u64>,
    ) {
        match self.store.put(now, key, record, Duration::from_secs(u64::from(ttl_s)), cas, peer) {
            Ok(_) => {
                self.stats.stores_accepted += 1;
                self.events.push_back(DhtEvent::RecordStored { key, from: peer });
                self.reply(now, peer, id, Body::StoreAck { key });
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
                self.reply(now, peer, id, error(e.code(), &e.to_string()));
            }
        }
    }

    /// Answers with the k closest nodes to `target` we know, except the asker, in as many
    /// `Nodes` messages as needed.
    fn send_nodes(&mut self, now: Instant, peer: NodeId, id: u64, target: &NodeId) {
        let k = self.cfg.lookup.k;
        let mut recs: Vec<NodeRecord> = self.table.closest_records(target, k, &peer);
        if let Some(c) = self.adversary.as_ref().and_then(|a| a.colluders.clone()) {
            let mut by: Vec<(crate::identity::Distance, &NodeRecord)> =
                c.iter().filter(|r| r.id != peer).map(|r| (target.distance(&r.id), r)).collect();
            if k > 0 && by.len() > k {
                by.select_nth_unstable_by_key(k - 1, |x| x.0);
                by.truncate(k);
            }
            by.sort_unstable_by_key(|x| x.0);
            recs = by.into_iter().map(|(_, r)| r.clone()).collect();
        }
        if let Some(a) = &self.adversary {
            if a.only_extra_nodes {
                recs.clear();
            }
            recs.extend(a.extra_nodes.iter().cloned());
        }
        let parts = pack_nodes(recs);
        let total = u8::try_from(parts.len().max(1)).unwrap_or(u8::MAX);
        if parts.is_empty() {
            self.reply(now, peer, id, Body::Nodes { total, nodes: BoundedVec::new() });
        }
        for part in parts {
            let nodes = BoundedVec::try_from(part).unwrap_or_default();
            self.reply(now, peer, id, Body::Nodes { total, nodes });
        }
    }
}
