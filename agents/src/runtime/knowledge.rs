//! Knowledge sharing (wire-spec §14.5): weights and memories as content-addressed blobs,
//! verified chunk by chunk, named in a versioned per-agent, per-domain index.
//!
//! An agent's index for a domain is a blob (an [`Index`]: its items' names, blob hashes and
//! sizes). The agent publishes where it is twice, both signed by the agent's key with the
//! index's version as sequence number: a mutable record under
//! `(agent, index_salt(domain))`, for anyone who asks for that agent's knowledge, and an entry in
//! the domain's set, so a sync finds every agent's index with one read.
//!
//! - `share_knowledge(peers, domain, items)` stores the items as blobs, publishes the new index
//!   and sends each peer an offer; a peer's runtime fetches the index and then only the items its
//!   node does not hold, from the sharing node, verifies them and acknowledges.
//! - `sync_knowledge(domain)` reads the domain's set, the indexes it names, and fetches what is
//!   missing, each item from every node that holds it at once.
//!
//! Bounds: an index blob over `max_index` or a bundle over `max_bundle` is refused before any
//! item is fetched, and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
use suprnova_node::{BlobError, BlobHash, Node, NodeError};
use tokio::task::JoinSet;

use super::{Runtime, lock, unix_ms};
pub use crate::agent::KnowledgeError;
use crate::agent::{AgentAddr, Event, SendError, SyncReport};
use crate::wire::{
    self, Ack, AgentId, DomainEntry, Envelope, Index, IndexRef, Item, Offer, OfferReply, Reply, System, bounded,
    domain_key, index_salt,
};

/// Lifetime of index records and domain entries (republished by the DHT while the node runs).
pub const INDEX_TTL: Duration = Duration::from_secs(3600);
/// Items fetched at once by one offer or sync.
const PARALLEL_ITEMS: usize = 4;
/// Offers a runtime fetches at once; more are refused as busy.
const MAX_OFFERS: usize = 8;

/// What a node's agents published and received.
#[derive(Default)]
pub(crate) struct Store {
    /// Our agents' indexes: (agent, domain) → index.
    own: std::sync::Mutex<HashMap<(AgentId, String), Index>>,
    /// Items held per domain, by name.
    held: std::sync::Mutex<HashMap<String, BTreeMap<String, Item>>>,
    /// Offers being fetched now.
    active: std::sync::atomic::AtomicUsize,
}

impl Store {
    fn hold(&self, domain: &str, items: &[Item]) {
        let mut h = lock(&self.held);
        let d = h.entry(domain.to_string()).or_default();
        for i in items {
            d.insert(i.name.as_str().to_string(), i.clone());
        }
    }
}

/// Fetches blob `hash` from `providers`, refusing it (before any chunk) if its manifest
/// announces more than `max` bytes.
async fn fetch_limited(node: &Node, hash: BlobHash, providers: Vec<NodeId>, max: u64) -> Result<u64, NodeError> {
    let (data, _) = node.fetch_blob_at_most(hash, &providers, max, None).await?;
    Ok(data.len() as u64)
}

/// A node error as the shared source of a [`KnowledgeError`].
fn net(e: NodeError) -> Arc<dyn std::error::Error + Send + Sync> {
    Arc::new(e)
}

impl KnowledgeError {
    /// The node error behind this one, if a node operation failed.
    pub fn node_error(&self) -> Option<&NodeError> {
        match self {
            KnowledgeError::IndexRecord(e)
            | KnowledgeError::Providers(e)
            | KnowledgeError::DomainSet(e)
            | KnowledgeError::IndexFetch(e)
            | KnowledgeError::Fetch(e)
            | KnowledgeError::Offer(SendError::Network(e)) => e.downcast_ref::<NodeError>(),
            KnowledgeError::Item { source, .. } => source.node_error(),
            _ => None,
        }
    }
}

impl Runtime {
    /// The items this node holds in `domain` (received, synced or shared by its agents).
    pub fn knowledge(&self, domain: &str) -> Vec<Item> {
        lock(&self.inner.knowledge.held).get(domain).map(|d| d.values().cloned().collect()).unwrap_or_default()
    }

    /// The bytes of a held item.
    pub fn knowledge_bytes(&self, item: &Item) -> Option<Arc<Vec<u8>>> {
        self.inner.node.blob(&BlobHash(item.blob))
    }

    /// Stores `items` of `domain` as blobs served by this node, publishes hosted agent
    /// `agent`'s new index, and offers it to `peers`. Returns each peer's answer.
    pub async fn share_knowledge(
        &self,
        agent: &Identity,
        peers: &[AgentAddr],
        domain: &str,
        items: Vec<(String, Arc<Vec<u8>>)>,
    ) -> Result<Vec<(AgentId, Result<Ack, KnowledgeError>)>, KnowledgeError> {
        let domain_b = bounded(domain).ok_or(KnowledgeError::DomainTooLong)?;
        let (index, iref) = self.publish_index(agent, domain, items)?;
        let node = self.inner.node.clone();
        // Publishing in the DHT runs beside the offers: peers fetch from us directly.
        let publish = {
            let rt = self.clone();
            let agent = Identity::from_seed_with(*agent.seed(), agent.crypto());
            let index = index.clone();
            tokio::spawn(async move { rt.publish_records(&agent, &index, iref).await })
        };
        let offer = Offer { domain: domain_b, index: iref, version: index.version };
        let mut body = wire::SYSTEM_TAG.to_vec();
        body.extend_from_slice(&wire::encode(&System::Offer(offer)));
        let Some(me) = self.hosted(&agent.public_key()) else { return Err(KnowledgeError::NotHosted) };
        let mut set = JoinSet::new();
        for p in peers {
            let rt = self.clone();
            let me = me.clone();
            let body = body.clone();
            let p = *p;
            let domain = domain.to_string();
            let items = index.items.to_vec();
            set.spawn(async move {
                let r = if p.node == rt.inner.node.id() {
                    // Same node: the blobs are here already.
                    rt.accept_local(&p.agent, &me.identity.public_key(), domain, &items)
                } else {
                    match rt.request(&me.identity.public_key(), p, &body).await {
                        Ok(bytes) => match wire::decode::<OfferReply>(&bytes) {
                            Ok(OfferReply::Ack(a)) => Ok(a),
                            Ok(OfferReply::Refused(why)) => Err(KnowledgeError::Refused(why)),
                            Err(e) => Err(KnowledgeError::BadAnswer(e)),
                        },
                        Err(e) => Err(KnowledgeError::Offer(e)),
                    }
                };
                (p.agent, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        let _ = publish.await;
        drop(node);
        Ok(out)
    }

    /// Adds the items as blobs and makes the agent's new index (items merged by name with its
    /// previous index of the domain); returns it and its reference.
    fn publish_index(
        &self,
        agent: &Identity,
        domain: &str,
        items: Vec<(String, Arc<Vec<u8>>)>,
    ) -> Result<(Index, IndexRef), KnowledgeError> {
        let node = &self.inner.node;
        let pk = agent.public_key();
        let mut merged: BTreeMap<String, Item> = lock(&self.inner.knowledge.own)
            .get(&(pk, domain.to_string()))
            .map(|i| i.items.iter().map(|x| (x.name.as_str().to_string(), x.clone())).collect())
            .unwrap_or_default();
        let mut new_items = Vec::new();
        for (name, data) in items {
            let size = data.len() as u64;
            let hash = node.add_blob(Arc::try_unwrap(data).unwrap_or_else(|a| (*a).clone()));
            let item = Item { name: bounded(&name).ok_or(KnowledgeError::ItemNameTooLong)?, blob: hash.0, size };
            new_items.push(item.clone());
            merged.insert(name, item);
        }
        let prev = lock(&self.inner.knowledge.own).get(&(pk, domain.to_string())).map_or(0, |i| i.version);
        let index = Index {
            agent: pk,
            domain: bounded(domain).ok_or(KnowledgeError::DomainTooLong)?,
            version: unix_ms().max(prev + 1),
            items: merged.into_values().collect::<Vec<_>>().try_into().map_err(|_| KnowledgeError::TooManyItems)?,
        };
        let bytes = wire::encode(&index);
        let size = u32::try_from(bytes.len()).map_err(|_| KnowledgeError::IndexTooLarge)?;
        let hash = node.add_blob(bytes);
        let iref = IndexRef { blob: hash.0, size, items: index.items.len() as u32, total: index.total_size() };
        lock(&self.inner.knowledge.own).insert((pk, domain.to_string()), index.clone());
        self.inner.knowledge.hold(domain, &index.items);
        let _ = new_items;
        Ok((index, iref))
    }

    /// Announces the blobs and writes the index record and the domain entry.
    async fn publish_records(&self, agent: &Identity, index: &Index, iref: IndexRef) {
        let node = &self.inner.node;
        let mut set = JoinSet::new();
        for h in index.items.iter().map(|i| i.blob).chain(std::iter::once(iref.blob)) {
            let node = node.clone();
            set.spawn(async move { node.provide_blob(BlobHash(h)).await.map(|_| ()) });
        }
        let value = wire::encode(&iref);
        if let Ok(m) = MutableRecord::sign(agent, &index_salt(index.domain.as_str()), index.version, &value) {
            let node = node.clone();
            set.spawn(async move { node.put(m.key(), Record::Mutable(m), INDEX_TTL, None).await.map(|_| ()) });
        }
        let entry = wire::encode(&DomainEntry { node: node.id().0, index: iref });
        let key = Key(domain_key(index.domain.as_str()));
        let ttl_s = u32::try_from(INDEX_TTL.as_secs()).unwrap_or(u32::MAX);
        if let Ok(e) = SetEntry::sign(agent, &key, index.version, ttl_s, &entry) {
            let node = node.clone();
            set.spawn(async move { node.put(key, Record::SetEntry(e), INDEX_TTL, None).await.map(|_| ()) });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::debug!(error = %e, "knowledge record not published");
            }
        }
    }

    /// Agent `agent`'s newest index in `domain`, read from its mutable record and checked.
    pub async fn knowledge_index(&self, agent: &AgentId, domain: &str) -> Result<Index, KnowledgeError> {
        let key = Key::for_mutable(agent, &index_salt(domain));
        let m = self.inner.node.get_mutable(key).await.map_err(|e| KnowledgeError::IndexRecord(net(e)))?;
        let iref: IndexRef = wire::decode(&m.value).map_err(KnowledgeError::BadIndexRef)?;
        let providers = self
            .inner
            .node
            .find_blob_providers(BlobHash(iref.blob))
            .await
            .map_err(|e| KnowledgeError::Providers(net(e)))?;
        self.fetch_index(iref, providers, agent, domain, Some(m.seq)).await
    }

    async fn fetch_index(
        &self,
        iref: IndexRef,
        providers: Vec<NodeId>,
        agent: &AgentId,
        domain: &str,
        version: Option<u64>,
    ) -> Result<Index, KnowledgeError> {
        let c = &self.inner.counters;
        let cfg = &self.inner.cfg;
        if u64::from(iref.size) > cfg.max_index || iref.total > cfg.max_bundle {
            c.knowledge_oversized.fetch_add(1, Ordering::Relaxed);
            return Err(KnowledgeError::TooLarge { bundle: iref.total, index: iref.size });
        }
        let hash = BlobHash(iref.blob);
        if self.inner.node.blob(&hash).is_none()
            && let Err(e) = fetch_limited(&self.inner.node, hash, providers, cfg.max_index).await
        {
            if matches!(e, NodeError::Blob(BlobError::TooLarge { .. })) {
                c.knowledge_oversized.fetch_add(1, Ordering::Relaxed);
            }
            return Err(KnowledgeError::IndexFetch(net(e)));
        }
        let bytes = self.inner.node.blob(&hash).ok_or(KnowledgeError::IndexVanished)?;
        let index: Index = match wire::decode(&bytes) {
            Ok(i) => i,
            Err(e) => {
                c.knowledge_bad_index.fetch_add(1, Ordering::Relaxed);
                return Err(KnowledgeError::IndexDecode(e));
            }
        };
        let ok = index.check().is_ok()
            && index.agent == *agent
            && index.domain.as_str() == domain
            && version.is_none_or(|v| v == index.version)
            && index.total_size() == iref.total
            && index.items.len() as u64 == u64::from(iref.items);
        if !ok {
            c.knowledge_bad_index.fetch_add(1, Ordering::Relaxed);
            return Err(KnowledgeError::IndexMismatch);
        }
        if index.total_size() > cfg.max_bundle {
            c.knowledge_oversized.fetch_add(1, Ordering::Relaxed);
            return Err(KnowledgeError::BundleTooLarge { size: index.total_size(), max: cfg.max_bundle });
        }
        Ok(index)
    }

    /// Fetches the items this node lacks, each from all of its providers; returns
    /// (fetched, skipped, bytes, failures).
    async fn fetch_items(&self, items: Vec<(Item, Vec<NodeId>)>) -> (usize, usize, u64, Vec<(String, KnowledgeError)>) {
        let c = &self.inner.counters;
        let (mut fetched, mut skipped, mut bytes, mut failed) = (0, 0, 0u64, Vec::new());
        let mut set = JoinSet::new();
        for (item, providers) in items {
            if self.inner.node.blob(&BlobHash(item.blob)).is_some() {
                skipped += 1;
                c.knowledge_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            while set.len() >= PARALLEL_ITEMS {
                if let Some(Ok(r)) = set.join_next().await {
                    tally(r, &mut fetched, &mut bytes, &mut failed);
                }
            }
            let node = self.inner.node.clone();
            set.spawn(async move {
                let r = fetch_limited(&node, BlobHash(item.blob), providers, item.size).await;
                (item, r)
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                tally(r, &mut fetched, &mut bytes, &mut failed);
            }
        }
        c.knowledge_fetched.fetch_add(fetched as u64, Ordering::Relaxed);
        c.knowledge_bytes.fetch_add(bytes, Ordering::Relaxed);
        (fetched, skipped, bytes, failed)
    }

    /// Answers a runtime-level request (a knowledge offer) from node `from`.
    pub(crate) async fn system(&self, from: NodeId, e: Envelope, responder: suprnova_node::Responder) {
        let body = e.body.get(wire::SYSTEM_TAG.len()..).unwrap_or_default();
        // At most MAX_OFFERS offers are fetched at once; more are refused as busy.
        let active = &self.inner.knowledge.active;
        let busy = active.fetch_add(1, Ordering::Relaxed) >= MAX_OFFERS;
        let reply = if busy {
            self.inner.counters.knowledge_busy.fetch_add(1, Ordering::Relaxed);
            OfferReply::Refused(bounded_lossy("busy"))
        } else {
            self.answer_system(from, &e, body).await
        };
        active.fetch_sub(1, Ordering::Relaxed);
        let answer = match self.hosted(&e.to) {
            Some(h) => Reply::answer(&h.identity, &e.id(), &wire::encode(&reply)).unwrap_or(Reply::Refused),
            None => Reply::NoSuchAgent,
        };
        responder.respond(wire::encode(&answer));
    }

    async fn answer_system(&self, from: NodeId, e: &Envelope, body: &[u8]) -> OfferReply {
        match wire::decode::<System>(body) {
            Err(_) => {
                self.inner.counters.knowledge_bad_index.fetch_add(1, Ordering::Relaxed);
                OfferReply::Refused(wire::bounded("malformed").unwrap_or_default())
            }
            Ok(System::Offer(offer)) => match self.accept_offer(from, e, offer).await {
                Ok(ack) => OfferReply::Ack(ack),
                Err(why) => OfferReply::Refused(bounded_lossy(&why.to_string())),
            },
        }
    }

    async fn accept_offer(&self, from: NodeId, e: &Envelope, offer: Offer) -> Result<Ack, KnowledgeError> {
        let Some(h) = self.hosted(&e.to) else { return Err(KnowledgeError::NoSuchAgent) };
        let domain = offer.domain.as_str().to_string();
        let index = self.fetch_index(offer.index, vec![from], &e.from, &domain, Some(offer.version)).await?;
        let items: Vec<(Item, Vec<NodeId>)> = index.items.iter().map(|i| (i.clone(), vec![from])).collect();
        let (fetched, skipped, bytes, failed) = self.fetch_items(items).await;
        if let Some((name, why)) = failed.into_iter().next() {
            return Err(KnowledgeError::Item { name, source: Box::new(why) });
        }
        self.inner.knowledge.hold(&domain, &index.items);
        let ack = Ack { fetched: fetched as u32, skipped: skipped as u32, bytes };
        let _ = h.tx_event(Event::Knowledge { from: e.from, domain, items: index.items.to_vec(), ack });
        Ok(ack)
    }

    fn accept_local(
        &self,
        to: &AgentId,
        from: &AgentId,
        domain: String,
        items: &[Item],
    ) -> Result<Ack, KnowledgeError> {
        let h = self.hosted(to).ok_or(KnowledgeError::NoSuchAgent)?;
        let ack = Ack { fetched: 0, skipped: items.len() as u32, bytes: 0 };
        let _ = h.tx_event(Event::Knowledge { from: *from, domain, items: items.to_vec(), ack });
        Ok(ack)
    }

    /// Fetches what this node lacks of every index published in `domain`.
    pub async fn sync_knowledge(&self, domain: &str) -> Result<SyncReport, KnowledgeError> {
        let node = &self.inner.node;
        let entries = match node.get_set(Key(domain_key(domain))).await {
            Ok(e) => e,
            Err(NodeError::NotFound) => Vec::new(),
            Err(e) => return Err(KnowledgeError::DomainSet(net(e))),
        };
        let mut set = JoinSet::new();
        for entry in entries.into_iter().take(64) {
            let Ok(d) = wire::decode::<DomainEntry>(&entry.value) else {
                self.inner.counters.knowledge_bad_index.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let rt = self.clone();
            let domain = domain.to_string();
            set.spawn(async move {
                let r =
                    rt.fetch_index(d.index, vec![NodeId(d.node)], &entry.public_key, &domain, Some(entry.seq)).await;
                (NodeId(d.node), r)
            });
        }
        let mut report = SyncReport::default();
        // Newest version per name; every node serving that blob is a provider.
        let mut best: BTreeMap<String, (u64, Item)> = BTreeMap::new();
        let mut providers: HashMap<[u8; 32], Vec<NodeId>> = HashMap::new();
        while let Some(r) = set.join_next().await {
            let Ok((node_id, Ok(index))) = r else { continue };
            report.indexes += 1;
            for i in index.items.iter() {
                let p = providers.entry(i.blob).or_default();
                if !p.contains(&node_id) {
                    p.push(node_id);
                }
                match best.get(i.name.as_str()) {
                    Some((v, _)) if *v >= index.version => {}
                    _ => {
                        best.insert(i.name.as_str().to_string(), (index.version, i.clone()));
                    }
                }
            }
        }
        report.items = best.len();
        let total: u64 = best.values().fold(0u64, |a, (_, i)| a.saturating_add(i.size));
        if total > self.inner.cfg.max_bundle {
            self.inner.counters.knowledge_oversized.fetch_add(1, Ordering::Relaxed);
            return Err(KnowledgeError::DomainTooLarge { size: total, max: self.inner.cfg.max_bundle });
        }
        let items: Vec<(Item, Vec<NodeId>)> = best
            .values()
            .map(|(_, i)| {
                let p = providers.get(&i.blob).cloned().unwrap_or_default();
                (i.clone(), p.into_iter().filter(|n| *n != node.id()).collect())
            })
            .collect();
        let held: Vec<Item> = best.into_values().map(|(_, i)| i).collect();
        let (fetched, skipped, bytes, failed) = self.fetch_items(items).await;
        report.fetched = fetched;
        report.skipped = skipped;
        report.bytes = bytes;
        let ok: Vec<Item> =
            held.iter().filter(|i| !failed.iter().any(|(n, _)| n == i.name.as_str())).cloned().collect();
        self.inner.knowledge.hold(domain, &ok);
        report.held = ok;
        report.failed = failed;
        Ok(report)
    }
}

fn tally(
    r: (Item, Result<u64, NodeError>),
    fetched: &mut usize,
    bytes: &mut u64,
    failed: &mut Vec<(String, KnowledgeError)>,
) {
    match r {
        (_, Ok(n)) => {
            *fetched += 1;
            *bytes += n;
        }
        (item, Err(e)) => failed.push((item.name.as_str().to_string(), KnowledgeError::Fetch(net(e)))),
    }
}

fn bounded_lossy<const N: usize>(s: &str) -> suprnova_dht::wire::bounded::BoundedString<N> {
    suprnova_dht::wire::bounded::BoundedString::truncated(s)
}
