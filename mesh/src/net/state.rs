//! Reading a mesh from the DHT, from any node: the genesis, then the newest head whose record
//! and state check out.

use super::*;

/// Reads mesh `mesh`'s genesis from the DHT and checks that it hashes to the id: the immutable
/// record under the id, or, for a genesis too large for one, a blob named in the locator set
/// (at most 4 entries tried).
pub async fn get_genesis(node: &Node, mesh: Digest) -> Result<Genesis, GetStateError> {
    let bytes = match node.get_immutable(Key(mesh)).await {
        Ok(b) => b,
        Err(e) => {
            let located = node.get_set(Key(store::genesis_locator_key(&mesh))).await.unwrap_or_default();
            let mut found = None;
            for entry in located.iter().take(4) {
                let Ok(h) = <[u8; 32]>::try_from(entry.value.as_slice()) else { continue };
                if let Ok(b) = fetch(node, Ref::Blob(h), Some(MAX_GENESIS_BLOB)).await
                    && *blake3::hash(&b).as_bytes() == mesh
                {
                    found = Some(b);
                    break;
                }
            }
            found.ok_or(GetStateError::NoGenesis(e))?
        }
    };
    let genesis: Genesis = postcard::from_bytes(&bytes).map_err(|_| GetStateError::BadGenesis)?;
    if genesis.mesh_id() != mesh {
        return Err(GetStateError::BadGenesis);
    }
    Ok(genesis)
}

/// A state read from the DHT and checked.
#[derive(Clone, Debug)]
pub struct FetchedState<S> {
    /// Its round.
    pub round: u64,
    /// Its hash (as certified).
    pub state_hash: Digest,
    /// The state.
    pub state: S,
    /// The certificate that proves it.
    pub certificate: simplex::Certificate,
    /// Its block's header (the body, the inputs, is not stored).
    pub proposal: simplex::Proposal,
    /// Heads that were not used because they did not check out (writer key, why).
    pub rejected: Vec<([u8; 32], HeadRejection)>,
}

/// Heads examined at most by one `get_state` (a set holds at most 64 writers).
const MAX_HEADS_TRIED: usize = 64;

/// Why `get_state` found nothing.
#[derive(Debug, thiserror::Error)]
pub enum GetStateError {
    /// The genesis is not in the DHT (or not reachable).
    #[error("genesis not found: {0}")]
    NoGenesis(NodeError),
    /// The genesis record does not decode or hash to the mesh id.
    #[error("genesis record is invalid")]
    BadGenesis,
    /// No head led to a record whose certificate and state check out.
    #[error("no valid certified state ({} heads rejected)", .0.len())]
    NoValidHead(Vec<([u8; 32], HeadRejection)>),
}

/// Why a head of a mesh's head set was not used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HeadRejection {
    /// The head does not decode.
    #[error("head does not decode")]
    Undecodable,
    /// A non-member's head points at a blob (only members may make readers fetch blobs).
    #[error("a non-member's head points at a blob")]
    NonMemberHeadBlob,
    /// A non-member's round record points at a blob.
    #[error("a non-member's record points at a blob")]
    NonMemberRecordBlob,
    /// The record or state could not be fetched.
    #[error("fetch failed: {0}")]
    Fetch(#[source] std::sync::Arc<NodeError>),
    /// The record or state does not check out.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Largest genesis blob a reader fetches (256 members need about 8.3 KiB).
const MAX_GENESIS_BLOB: u64 = 16 << 10;
/// Largest round-record blob (a certificate of 256 signatures and a header: about 17 KiB).
const MAX_RECORD_BLOB: u64 = 64 << 10;

/// Reads `r`; a blob only if its manifest says it is at most `max` bytes (None: any size),
/// so a planted reference cannot make the reader download something large.
async fn fetch(node: &Node, r: Ref, max: Option<u64>) -> Result<Vec<u8>, HeadRejection> {
    let failed = |e| HeadRejection::Fetch(std::sync::Arc::new(e));
    match r {
        Ref::Immutable(k) => node.get_immutable(Key(k)).await.map_err(failed),
        Ref::Blob(h) => {
            let hash = BlobHash(h);
            let providers = node.find_blob_providers(hash).await.map_err(failed)?;
            // Refused from the manifest, before any chunk, when over `max`.
            let max = max.unwrap_or(u64::MAX);
            let (data, _) = node.fetch_blob_at_most(hash, &providers, max, None).await.map_err(failed)?;
            Ok(data.to_vec())
        }
    }
}

/// Reads mesh `mesh`'s newest certified state from the DHT, from any node, member or not: the
/// genesis, then the heads, newest first, until one leads to a record whose certificate verifies
/// against the genesis' members and whose state hashes to the certified hash. Heads that fail
/// are reported in `rejected`, with why.
pub async fn get_state<W: World>(node: &Node, mesh: Digest) -> Result<FetchedState<W::State>, GetStateError> {
    let genesis = get_genesis(node, mesh).await?;
    read_state::<W::State>(node, &genesis).await
}

/// [`get_state`] with the genesis already in hand (and checked).
pub async fn read_state<S: Serialize + serde::de::DeserializeOwned>(
    node: &Node,
    genesis: &Genesis,
) -> Result<FetchedState<S>, GetStateError> {
    let mesh = genesis.mesh_id();
    let entries = node.get_set(Key(store::heads_key(&mesh))).await.unwrap_or_default();
    let mut rejected = Vec::new();
    let mut heads: Vec<([u8; 32], Head)> = Vec::new();
    for e in entries {
        match postcard::from_bytes::<Head>(e.value.as_slice()) {
            Ok(h) => heads.push((e.public_key, h)),
            Err(_) => rejected.push((e.public_key, HeadRejection::Undecodable)),
        }
    }
    heads.sort_by_key(|h| std::cmp::Reverse(h.1.round));
    for (writer, head) in heads.into_iter().take(MAX_HEADS_TRIED) {
        // Anyone can write a head. Only members' heads may send us fetching blobs (which can be
        // large); anyone else's must point at an immutable record with the state inline, so
        // that refusing it costs one small read.
        let member = genesis.members.contains(&writer);
        let checked: Result<FetchedState<S>, HeadRejection> = async {
            if !member && matches!(head.record, Ref::Blob(_)) {
                return Err(HeadRejection::NonMemberHeadBlob);
            }
            let rec: RoundRecord = postcard::from_bytes(&fetch(node, head.record, Some(MAX_RECORD_BLOB)).await?)
                .map_err(|_| RecordError::Malformed)?;
            // The round is checked before any signature.
            let header: crate::world::BatchHeader =
                postcard::from_bytes(rec.payload.as_slice()).map_err(|_| RecordError::Header(0))?;
            if header.round != head.round {
                return Err(RecordError::Header(header.round).into());
            }
            let header = store::verify_record(genesis, &rec)?;
            let state_bytes = match &rec.state {
                StateRef::Inline(b) => b.to_vec(),
                StateRef::Blob(_) if !member => return Err(HeadRejection::NonMemberRecordBlob),
                StateRef::Blob(h) => fetch(node, Ref::Blob(*h), None).await?,
            };
            let state = store::verify_state::<S>(&header, &state_bytes)?;
            let proposal = simplex::Proposal {
                height: rec.height,
                parent_height: rec.parent_height,
                parent: rec.parent,
                payload: rec.payload.clone(),
                body: BoundedBytes::default(),
            };
            Ok(FetchedState {
                round: header.round,
                state_hash: header.state_hash,
                state,
                certificate: rec.certificate,
                proposal,
                rejected: Vec::new(),
            })
        }
        .await;
        match checked {
            Ok(mut s) => {
                s.rejected = rejected;
                return Ok(s);
            }
            Err(why) => rejected.push((writer, why)),
        }
    }
    Err(GetStateError::NoValidHead(rejected))
}
