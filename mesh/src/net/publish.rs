//! The members' store worker: the genesis and each certified round written into the DHT (records,
//! blobs, the head set), so any node can read the state.

use super::*;

/// How long heads and round records live in the DHT; the worker rewrites the newest well before.
pub(super) const RECORD_TTL: Duration = Duration::from_secs(600);

/// Writes the genesis once, then each newest certified round: its record (state inline when it
/// fits, else a blob this member serves) and our head. Rounds certified while a write is under
/// way are coalesced to the newest. The newest is rewritten every 100 s while nothing new comes.
pub(super) async fn store_worker<S: serde::Serialize + Send + Sync + 'static>(
    node: Node,
    genesis: Genesis,
    mut rx: watch::Receiver<Latest<S>>,
    counters: Arc<StoreCounters>,
) {
    let mesh = genesis.mesh_id();
    if let Err(e) = store_genesis(&node, &genesis).await {
        tracing::warn!(error = %e, "mesh: could not store the genesis");
    }
    // Blobs served for the newest rounds (state or record too large for one DHT value): the
    // last two are kept (a reader may be fetching the one before the newest), older ones
    // dropped, so a long-running mesh with a large state does not grow without bound.
    let mut served: std::collections::VecDeque<Vec<BlobHash>> = std::collections::VecDeque::new();
    loop {
        let changed = tokio::time::timeout(Duration::from_secs(100), rx.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            for b in served.iter().flatten() {
                node.remove_blob(b);
            }
            return;
        }
        let Some(c) = rx.borrow_and_update().clone() else { continue };
        let mut blobs = Vec::new();
        let stored = store_round(&node, &mesh, &c, &mut blobs).await;
        served.push_back(blobs);
        while served.len() > 2 {
            for b in served.pop_front().unwrap_or_default() {
                // The same state (a world at rest) gives the same blob: keep it while it is newer.
                if !served.iter().flatten().any(|k| *k == b) {
                    node.remove_blob(&b);
                }
            }
        }
        match stored {
            Ok(()) => counters.stored.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, round = c.round, "mesh: storing a round failed");
                if let Ok(mut last) = counters.last_error.lock() {
                    *last = Some(format!("round {}: {e}", c.round));
                }
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The genesis as an immutable record under the mesh id when it fits one DHT value (up to
/// about 25 members); else as a blob this member serves, located through the set under
/// `store::genesis_locator_key` (wire-spec §13.8).
pub(super) async fn store_genesis(node: &Node, genesis: &Genesis) -> Result<(), StoreError> {
    let bytes = postcard::to_allocvec(genesis).map_err(StoreError::Encode)?;
    if bytes.len() <= MAX_IMMUTABLE {
        node.put_immutable(bytes).await?;
        return Ok(());
    }
    let hash = node.add_blob(bytes);
    node.provide_blob(hash).await?;
    node.put_set_entry(Key(store::genesis_locator_key(&genesis.mesh_id())), &hash.0, RECORD_TTL).await?;
    Ok(())
}

pub(super) async fn store_round<S: serde::Serialize>(
    node: &Node,
    mesh: &Digest,
    c: &Certified<S>,
    blobs: &mut Vec<BlobHash>,
) -> Result<(), StoreError> {
    let Some(certificate) = c.certificate.clone() else { return Ok(()) };
    let bytes = postcard::to_allocvec(&*c.state).map_err(StoreError::Encode)?;
    let base = RoundRecord {
        height: c.proposal.height,
        parent_height: c.proposal.parent_height,
        parent: c.proposal.parent,
        payload: c.proposal.payload.clone(),
        certificate,
        state: StateRef::Blob([0; 32]),
    };
    let inline = BoundedBytes::try_from(bytes.as_slice())
        .ok()
        .map(|b| RoundRecord { state: StateRef::Inline(b), ..base.clone() });
    let fits = |r: &RoundRecord| postcard::to_allocvec(r).ok().filter(|v| v.len() <= MAX_IMMUTABLE);
    let record = match inline.as_ref().and_then(fits) {
        Some(v) => v,
        None => {
            let hash = node.add_blob(bytes);
            blobs.push(hash);
            node.provide_blob(hash).await?;
            postcard::to_allocvec(&RoundRecord { state: StateRef::Blob(hash.0), ..base }).map_err(StoreError::Encode)?
        }
    };
    let at = if record.len() <= MAX_IMMUTABLE {
        let key = Key::for_immutable(&record);
        // Not republished: each round has its own record, and only the newest matters (the
        // worker rewrites it while no newer round comes), so older ones lapse after RECORD_TTL.
        node.put_once(key, immutable(&record)?, RECORD_TTL).await?;
        Ref::Immutable(key.0)
    } else {
        let hash = node.add_blob(record);
        blobs.push(hash);
        node.provide_blob(hash).await?;
        Ref::Blob(hash.0)
    };
    let head = postcard::to_allocvec(&Head { round: c.round, record: at }).map_err(StoreError::Encode)?;
    node.put_set_entry(Key(store::heads_key(mesh)), &head, RECORD_TTL).await?;
    Ok(())
}

pub(super) fn immutable(bytes: &[u8]) -> Result<suprnova_dht::wire::Record, StoreError> {
    let value = BoundedBytes::try_from(bytes).map_err(|_| StoreError::TooLarge(bytes.len()))?;
    Ok(suprnova_dht::wire::Record::Immutable { value })
}

/// Why a certified round (or the genesis) could not be stored.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    /// It did not encode.
    #[error("encoding: {0}")]
    Encode(#[source] postcard::Error),
    /// Over an immutable record's size.
    #[error("record of {0} bytes, over the {MAX_IMMUTABLE} an immutable value holds")]
    TooLarge(usize),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}
