//! Blob wire types (wire-spec §12.5), sans-IO: the manifest a blob hash names, and the requests
//! a fetcher sends. The transfer itself lives in the node crate.
//!
//! A blob is cut into chunks of `chunk_size` bytes. Its **manifest** lists the total size, the
//! chunk size and the BLAKE3 hash of every chunk; the blob's hash is BLAKE3 of the encoded
//! manifest, so a fetcher checks the manifest against the hash it asked for and every chunk
//! against the manifest as it arrives.

use serde::{Deserialize, Serialize};

/// Default chunk size: 256 KiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Largest chunk size accepted in a manifest.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Largest blob: 16 GiB.
pub const MAX_BLOB_SIZE: u64 = 16 * 1024 * 1024 * 1024;
/// Largest encoded manifest.
pub const MAX_MANIFEST: usize = 2 * 1024 * 1024;

/// A blob's hash: BLAKE3 of its encoded manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The DHT key of the set whose entries name the blob's providers (wire-spec §12.5).
    pub fn providers_key(&self) -> suprnova_dht::wire::Key {
        suprnova_dht::wire::Key(blake3::derive_key("suprnova v1 blob providers", &self.0))
    }
}

impl std::fmt::Display for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for BlobHash {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.is_ascii() {
            return Err("a blob hash is 64 hex digits");
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or("a blob hash is 64 hex digits")?;
            *o = u8::from_str_radix(pair, 16).map_err(|_| "a blob hash is 64 hex digits")?;
        }
        Ok(BlobHash(out))
    }
}

/// What a blob is made of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Total bytes.
    pub size: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_size: u32,
    /// BLAKE3 of each chunk.
    pub chunks: Vec<[u8; 32]>,
}

impl Manifest {
    /// The manifest of `data` cut into `chunk_size` chunks.
    pub fn of(data: &[u8], chunk_size: u32) -> Manifest {
        let cs = chunk_size.clamp(1, MAX_CHUNK_SIZE) as usize;
        Manifest {
            size: data.len() as u64,
            chunk_size: cs as u32,
            chunks: data.chunks(cs).map(|c| *blake3::hash(c).as_bytes()).collect(),
        }
    }

    /// Encoding (what the hash covers).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The blob hash.
    pub fn hash(&self) -> BlobHash {
        BlobHash(*blake3::hash(&self.encode()).as_bytes())
    }

    /// Decodes a manifest and checks it against `hash` and for consistency.
    pub fn decode_verified(bytes: &[u8], hash: &BlobHash) -> Option<Manifest> {
        if bytes.len() > MAX_MANIFEST || blake3::hash(bytes).as_bytes() != &hash.0 {
            return None;
        }
        let m: Manifest = postcard::from_bytes(bytes).ok()?;
        (m.encode() == bytes && m.consistent()).then_some(m)
    }

    fn consistent(&self) -> bool {
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE || self.size > MAX_BLOB_SIZE {
            return false;
        }
        self.size.div_ceil(u64::from(self.chunk_size)) == self.chunks.len() as u64
    }

    /// Byte length of chunk `i`.
    pub fn chunk_len(&self, i: usize) -> usize {
        let start = i as u64 * u64::from(self.chunk_size);
        self.size.saturating_sub(start).min(u64::from(self.chunk_size)) as usize
    }
}

/// A blob request (the body of a kind-4 stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobRequest {
    /// 0: the manifest of a blob.
    Manifest(BlobHash),
    /// 1: one chunk.
    Chunk(BlobHash, u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_checks() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let m = Manifest::of(&data, 300);
        assert_eq!(m.chunks.len(), 4);
        assert_eq!(m.chunk_len(3), 100);
        let h = m.hash();
        assert_eq!(Manifest::decode_verified(&m.encode(), &h), Some(m.clone()));
        let mut other = m.clone();
        other.size = 1201;
        assert_eq!(Manifest::decode_verified(&other.encode(), &other.hash()), None, "inconsistent chunk count");
        assert_eq!(Manifest::decode_verified(&m.encode(), &BlobHash([0; 32])), None);
        let s = h.to_string();
        assert_eq!(s.parse::<BlobHash>(), Ok(h));
        assert!("xyz".parse::<BlobHash>().is_err());
    }

    #[test]
    fn empty_blob_has_no_chunks() {
        let m = Manifest::of(&[], 10);
        assert_eq!(m.chunks.len(), 0);
        assert_eq!(Manifest::decode_verified(&m.encode(), &m.hash()), Some(m));
    }
}
