//! Misbehaving providers for tests (feature `testing`, never in a deployment): chunk filters
//! plugged in as [`NodeConfig::chunk_filter`](crate::NodeConfig::chunk_filter).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{BlobHash, ChunkFilter};

/// Serves every chunk with its first byte flipped (a provider that lies).
#[derive(Debug, Default)]
pub struct CorruptChunks;

impl ChunkFilter for CorruptChunks {
    fn chunk(&self, _hash: &BlobHash, _index: usize, mut chunk: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(b) = chunk.first_mut() {
            *b ^= 0xff;
        }
        Some(chunk)
    }
}

/// Serves `limit` chunks, then refuses every request (a provider going away mid-download).
#[derive(Debug, Default)]
pub struct ChunkLimit {
    /// Chunks served before the refusals start.
    pub limit: u64,
    served: AtomicU64,
}

impl ChunkLimit {
    /// Serves `limit` chunks, then refuses.
    pub fn new(limit: u64) -> ChunkLimit {
        ChunkLimit { limit, served: AtomicU64::new(0) }
    }
}

impl ChunkFilter for ChunkLimit {
    fn chunk(&self, _hash: &BlobHash, _index: usize, chunk: Vec<u8>) -> Option<Vec<u8>> {
        (self.served.fetch_add(1, Ordering::Relaxed) < self.limit).then_some(chunk)
    }
}
