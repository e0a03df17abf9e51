//! Blobs: bytes served under a hash and fetched in verified chunks (wire-spec §12.5).
//!
//! A blob is cut into chunks of `chunk_size` bytes. Its **manifest** lists the total size, the
//! chunk size and the BLAKE3 hash of every chunk; the blob's hash is BLAKE3 of the encoded
//! manifest. A fetch first gets the manifest (checked against the hash), then chunks, each checked
//! against its manifest entry as it arrives, so no corrupt byte is ever accepted. Chunks come from
//! several providers at once; a provider that sends a bad chunk is dropped for the rest of the
//! fetch. Verified chunks are kept, so a fetch that fails part-way resumes where it stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use suprnova_dht::NodeId;

pub use suprnova_gossip::blob::{
    BlobHash, BlobRequest, DEFAULT_CHUNK_SIZE, MAX_BLOB_SIZE, MAX_CHUNK_SIZE, MAX_MANIFEST, Manifest,
};

/// Progress of a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobProgress {
    /// The manifest arrived: this many bytes in this many chunks, some already held.
    Started {
        /// Total bytes.
        size: u64,
        /// Chunks.
        chunks: usize,
        /// Chunks already held (resumed).
        held: usize,
    },
    /// A chunk arrived and verified.
    Chunk {
        /// Which.
        index: usize,
        /// From whom.
        from: NodeId,
        /// Bytes verified so far.
        done: u64,
    },
    /// A provider sent a chunk that did not verify; it is no longer asked.
    Corrupt {
        /// The provider.
        provider: NodeId,
        /// The chunk.
        index: usize,
    },
    /// A provider failed (unreachable, missing the blob); it is no longer asked.
    ProviderFailed {
        /// The provider.
        provider: NodeId,
        /// Why.
        reason: String,
    },
}

/// The outcome of a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// Bytes.
    pub size: u64,
    /// Chunks fetched now, per provider.
    pub per_provider: Vec<(NodeId, usize)>,
    /// Providers caught sending corrupt chunks.
    pub corrupt: Vec<NodeId>,
    /// Chunks already held when the fetch began.
    pub resumed: usize,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// No provider given.
    #[error("no provider")]
    NoProvider,
    /// No provider had a manifest that matched the hash.
    #[error("no provider served the manifest")]
    NoManifest,
    /// Every provider failed before the blob was complete; verified chunks are kept for a retry.
    #[error("every provider failed ({missing} chunks missing; verified chunks kept for a resume)")]
    Incomplete {
        /// Chunks still missing.
        missing: usize,
    },
    /// Too much partial data held already.
    #[error("partial-download space exhausted")]
    NoSpace,
    /// This node does not hold the blob.
    #[error("blob not held here")]
    NotFound,
    /// The manifest announces more bytes than the caller accepts; nothing was downloaded.
    #[error("blob of {size} bytes, over the {max} allowed here")]
    TooLarge {
        /// Size the manifest announces.
        size: u64,
        /// The caller's limit.
        max: u64,
    },
}

/// A complete blob we serve.
pub struct Stored {
    /// The encoded manifest.
    pub manifest_bytes: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
    /// The bytes.
    pub data: Arc<Vec<u8>>,
}

/// A download in progress.
pub struct Partial {
    /// The manifest.
    pub manifest: Manifest,
    /// The encoded manifest.
    pub manifest_bytes: Vec<u8>,
    /// Verified chunks.
    pub chunks: Vec<Option<Vec<u8>>>,
}

/// Blobs served and downloads in progress.
#[derive(Default)]
pub struct BlobStore {
    pub(crate) complete: Mutex<HashMap<BlobHash, Arc<Stored>>>,
    pub(crate) partial: Mutex<HashMap<BlobHash, Partial>>,
}

impl BlobStore {
    /// Adds `data` cut into `chunk_size` chunks; returns its hash.
    pub fn add(&self, data: Vec<u8>, chunk_size: u32) -> BlobHash {
        let manifest = Manifest::of(&data, chunk_size);
        let manifest_bytes = manifest.encode();
        let hash = BlobHash(*blake3::hash(&manifest_bytes).as_bytes());
        if let Ok(mut c) = self.complete.lock() {
            c.insert(hash, Arc::new(Stored { manifest_bytes, manifest, data: Arc::new(data) }));
        }
        hash
    }

    /// The blob under `hash`, if complete.
    pub fn get(&self, hash: &BlobHash) -> Option<Arc<Stored>> {
        self.complete.lock().ok()?.get(hash).cloned()
    }

    /// Drops a complete blob; whether it was held.
    pub fn remove(&self, hash: &BlobHash) -> bool {
        self.complete.lock().is_ok_and(|mut m| m.remove(hash).is_some())
    }

    /// Bytes held by partial downloads.
    pub fn partial_bytes(&self) -> u64 {
        self.partial
            .lock()
            .map(|p| p.values().flat_map(|x| x.chunks.iter().flatten()).map(|c| c.len() as u64).sum())
            .unwrap_or(0)
    }
}

/// Work shared by the provider workers of one fetch.
pub(crate) struct FetchState {
    pub queue: VecDeque<usize>,
    pub chunks: Vec<Option<Vec<u8>>>,
    pub done_bytes: u64,
    pub per_provider: HashMap<NodeId, usize>,
    pub corrupt: Vec<NodeId>,
    pub in_flight: usize,
    /// Failed requests in a row, per provider.
    pub failures: HashMap<NodeId, u32>,
}
