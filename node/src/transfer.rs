//! Blobs: serving, announcing in the DHT, and fetching from several providers at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use suprnova_dht::NodeId;
use tokio::sync::mpsc;

use std::sync::Mutex;

use suprnova_gossip::net::kind;
use suprnova_gossip::net::topics::{decode_contact, encode_contact};

use crate::blobs::{self, BlobRequest, FetchState, Partial};
use crate::direct::status;
use crate::{BlobError, BlobHash, BlobProgress, FetchReport, Manifest, Node, NodeError};

impl Node {
    // ---- blobs --------------------------------------------------------------------------------

    /// Serves `data` under its hash from now on.
    pub fn add_blob(&self, data: Vec<u8>) -> BlobHash {
        self.inner.blobs.add(data, self.inner.cfg.blob_chunk_size)
    }

    /// Announces in the DHT that this node serves blob `hash` (which it must hold): a signed entry
    /// with our contact data in the set under [`BlobHash::providers_key`], refreshed while the
    /// node runs. Returns how many nodes stored the first announcement.
    pub async fn provide_blob(&self, hash: BlobHash) -> Result<usize, NodeError> {
        if self.inner.blobs.get(&hash).is_none() {
            return Err(BlobError::NotFound.into());
        }
        let ttl = self.inner.cfg.topic_entry_ttl;
        let contact = encode_contact(&self.contact_addrs());
        let outcome = self.put_set_entry_once(hash.providers_key(), &contact, ttl).await?;
        let fresh = self.inner.providing.lock().map(|p| !p.contains_key(&hash)).unwrap_or(false);
        if fresh {
            let node = self.clone();
            let task = tokio::spawn(async move {
                let mut interval = tokio::time::interval(ttl / 3);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await;
                loop {
                    interval.tick().await;
                    let contact = encode_contact(&node.contact_addrs());
                    let _ = node.put_set_entry_once(hash.providers_key(), &contact, ttl).await;
                }
            });
            if let Ok(mut p) = self.inner.providing.lock() {
                p.insert(hash, task);
            }
        }
        Ok(outcome.stored)
    }

    /// Stops serving blob `hash`: drops it from memory and stops refreshing our provider entry,
    /// which lapses within its lifetime. Returns whether it was held.
    pub fn remove_blob(&self, hash: &BlobHash) -> bool {
        if let Some(task) = self.inner.providing.lock().ok().and_then(|mut p| p.remove(hash)) {
            task.abort();
        }
        self.inner.blobs.remove(hash)
    }

    /// Providers of blob `hash` announced in the DHT (other than this node). Their contact data
    /// is remembered, so [`Node::fetch_blob`] dials them without another lookup.
    pub async fn find_blob_providers(&self, hash: BlobHash) -> Result<Vec<NodeId>, NodeError> {
        let entries = match self.get_set(hash.providers_key()).await {
            Ok(e) => e,
            Err(NodeError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let me = self.id();
        let mut out = Vec::new();
        for e in entries {
            let id = NodeId::from_public_key(&e.public_key);
            let addrs = decode_contact(&e.value);
            if id == me || addrs.is_empty() || out.contains(&id) {
                continue;
            }
            if let Ok(mut m) = self.inner.addrs.lock() {
                m.entry(id).or_insert(addrs);
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The blob under `hash`, if this node holds it complete.
    pub fn blob(&self, hash: &BlobHash) -> Option<Arc<Vec<u8>>> {
        self.inner.blobs.get(hash).map(|s| s.data.clone())
    }

    /// Fetches the blob `hash` from `providers` in verified chunks, reporting on `progress`. The
    /// blob is kept and served afterwards. After a failure, verified chunks are kept and a new
    /// call resumes from them.
    pub async fn fetch_blob(
        &self,
        hash: BlobHash,
        providers: &[NodeId],
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) -> Result<(Arc<Vec<u8>>, FetchReport), NodeError> {
        self.fetch_blob_at_most(hash, providers, u64::MAX, progress).await
    }

    /// [`Node::fetch_blob`], refusing the blob with `BlobError::TooLarge` as soon as its verified
    /// manifest announces more than `max` bytes, before any chunk is asked for (a blob already
    /// held is returned whatever its size).
    pub async fn fetch_blob_at_most(
        &self,
        hash: BlobHash,
        providers: &[NodeId],
        max: u64,
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) -> Result<(Arc<Vec<u8>>, FetchReport), NodeError> {
        if let Some(s) = self.inner.blobs.get(&hash) {
            let report = FetchReport {
                size: s.manifest.size,
                per_provider: vec![],
                corrupt: vec![],
                resumed: s.manifest.chunks.len(),
            };
            return Ok((s.data.clone(), report));
        }
        let providers: Vec<NodeId> = providers.iter().copied().filter(|p| *p != self.id()).collect();
        if providers.is_empty() {
            return Err(BlobError::NoProvider.into());
        }
        let report_progress = |p: BlobProgress| report(&progress, p);
        let (manifest, manifest_bytes, chunks) = self.manifest_for(hash, &providers, &progress).await?;
        if manifest.size > max {
            return Err(BlobError::TooLarge { size: manifest.size, max }.into());
        }
        let resumed = chunks.iter().filter(|c| c.is_some()).count();
        report_progress(BlobProgress::Started { size: manifest.size, chunks: manifest.chunks.len(), held: resumed });
        let done_bytes: u64 = chunks.iter().flatten().map(|c| c.len() as u64).sum();
        let queue = chunks.iter().enumerate().filter(|(_, c)| c.is_none()).map(|(i, _)| i).collect();
        let state = Arc::new(Mutex::new(FetchState {
            queue,
            chunks,
            done_bytes,
            per_provider: HashMap::new(),
            corrupt: Vec::new(),
            in_flight: 0,
            failures: HashMap::new(),
        }));
        let manifest = Arc::new(manifest);
        let mut workers = Vec::new();
        for p in &providers {
            for _ in 0..self.inner.cfg.blob_parallel_per_provider.max(1) {
                let node = self.clone();
                let (st, m, pr, p) = (state.clone(), manifest.clone(), progress.clone(), *p);
                workers.push(tokio::spawn(async move { node.chunk_worker(hash, p, m, st, pr).await }));
            }
        }
        for w in workers {
            let _ = w.await;
        }
        let mut st = state.lock().map_err(|_| NodeError::Stopped)?;
        let missing = st.chunks.iter().filter(|c| c.is_none()).count();
        if missing > 0 {
            // Keep what verified, for a resume.
            let chunks = std::mem::take(&mut st.chunks);
            if let Ok(mut p) = self.inner.blobs.partial.lock() {
                p.insert(hash, Partial { manifest: (*manifest).clone(), manifest_bytes, chunks });
            }
            return Err(BlobError::Incomplete { missing }.into());
        }
        let mut data = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        for c in st.chunks.iter().flatten() {
            data.extend_from_slice(c);
        }
        let report = FetchReport {
            size: manifest.size,
            per_provider: st.per_provider.iter().map(|(k, v)| (*k, *v)).collect(),
            corrupt: st.corrupt.clone(),
            resumed,
        };
        drop(st);
        if let Ok(mut p) = self.inner.blobs.partial.lock() {
            p.remove(&hash);
        }
        let data = Arc::new(data);
        if let Ok(mut c) = self.inner.blobs.complete.lock() {
            c.insert(
                hash,
                Arc::new(blobs::Stored { manifest_bytes, manifest: (*manifest).clone(), data: data.clone() }),
            );
        }
        Ok((data, report))
    }

    /// The manifest of `hash` with the chunks already held: from a resumed download, or from the
    /// first provider that serves one that verifies (within the space for partial downloads).
    async fn manifest_for(
        &self,
        hash: BlobHash,
        providers: &[NodeId],
        progress: &Option<mpsc::UnboundedSender<BlobProgress>>,
    ) -> Result<(Manifest, Vec<u8>, Vec<Option<Vec<u8>>>), NodeError> {
        let held = self
            .inner
            .blobs
            .partial
            .lock()
            .ok()
            .and_then(|p| p.get(&hash).map(|x| (x.manifest.clone(), x.manifest_bytes.clone(), x.chunks.clone())));
        if let Some(h) = held {
            return Ok(h);
        }
        let mut got = None;
        for p in providers {
            match self.blob_call(*p, &BlobRequest::Manifest(hash), blobs::MAX_MANIFEST).await {
                Ok(bytes) => {
                    if let Some(m) = Manifest::decode_verified(&bytes, &hash) {
                        got = Some((m, bytes));
                        break;
                    }
                    report(progress, BlobProgress::Corrupt { provider: *p, index: usize::MAX });
                }
                Err(e) => report(progress, BlobProgress::ProviderFailed { provider: *p, reason: e.to_string() }),
            }
        }
        let (m, bytes) = got.ok_or(BlobError::NoManifest)?;
        if self.inner.blobs.partial_bytes().saturating_add(m.size) > self.inner.cfg.max_partial_bytes {
            return Err(BlobError::NoSpace.into());
        }
        let n = m.chunks.len();
        Ok((m, bytes, vec![None; n]))
    }

    async fn chunk_worker(
        &self,
        hash: BlobHash,
        provider: NodeId,
        manifest: Arc<Manifest>,
        state: Arc<Mutex<FetchState>>,
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) {
        let say = |p: BlobProgress| {
            if let Some(tx) = &progress {
                let _ = tx.send(p);
            }
        };
        loop {
            let next = {
                let Ok(mut st) = state.lock() else { return };
                if st.corrupt.contains(&provider) || st.failures.get(&provider).is_some_and(|f| *f >= 3) {
                    return;
                }
                match st.queue.pop_front() {
                    Some(i) => {
                        st.in_flight += 1;
                        Some(i)
                    }
                    // Others still have chunks in flight: one may fail and come back.
                    None if st.in_flight > 0 => None,
                    None => return,
                }
            };
            let Some(next) = next else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(index) = u32::try_from(next) else { return };
            let want = manifest.chunks.get(next).copied();
            let len = manifest.chunk_len(next);
            let r = self.blob_call(provider, &BlobRequest::Chunk(hash, index), len).await;
            let Ok(mut st) = state.lock() else { return };
            st.in_flight -= 1;
            match r {
                Ok(bytes) if bytes.len() == len && want == Some(*blake3::hash(&bytes).as_bytes()) => {
                    // A success resets the count, unless the provider was already given up on
                    // (an answer still in flight when the third failure came).
                    if st.failures.get(&provider).is_some_and(|f| *f < 3) {
                        st.failures.remove(&provider);
                    }
                    st.done_bytes += bytes.len() as u64;
                    self.inner.counters.blob_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    *st.per_provider.entry(provider).or_default() += 1;
                    if let Some(slot) = st.chunks.get_mut(next) {
                        *slot = Some(bytes);
                    }
                    say(BlobProgress::Chunk { index: next, from: provider, done: st.done_bytes });
                }
                Ok(_) => {
                    st.queue.push_front(next);
                    if !st.corrupt.contains(&provider) {
                        st.corrupt.push(provider);
                        say(BlobProgress::Corrupt { provider, index: next });
                    }
                    return;
                }
                Err(e) => {
                    st.queue.push_front(next);
                    let failures = st.failures.entry(provider).or_default();
                    *failures += 1;
                    // Three failures in a row, counted per provider over all its workers.
                    if *failures == 3 {
                        say(BlobProgress::ProviderFailed { provider, reason: e.to_string() });
                    }
                    if *failures >= 3 {
                        return;
                    }
                }
            }
        }
    }

    /// One blob request to `peer`: the response body, at most `max` bytes.
    async fn blob_call(&self, peer: NodeId, req: &BlobRequest, max: usize) -> Result<Vec<u8>, NodeError> {
        let t = self.inner.cfg.request_timeout;
        let body = postcard::to_allocvec(req)?;
        match tokio::time::timeout(t, self.exchange(peer, kind::BLOB, &body, max)).await {
            Err(_) => Err(NodeError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status::OK, data))) => Ok(data),
            Ok(Ok(_)) => Err(NodeError::Refused { code: None }),
        }
    }
}

/// Sends a progress event if anyone listens.
fn report(progress: &Option<mpsc::UnboundedSender<BlobProgress>>, p: BlobProgress) {
    if let Some(tx) = progress {
        let _ = tx.send(p);
    }
}
