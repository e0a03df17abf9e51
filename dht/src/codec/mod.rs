//! The encoding every wire type is built on (a leaf below `identity` and `wire`): canonical
//! postcard encode and decode (§6.1), wire addresses, bounded containers, the protocol's limits,
//! and signatures as fixed 64-byte tuples.

pub mod addr;
pub mod bounded;
pub mod limits;

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes did not decode (or a value did not encode) as a message or record.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    /// postcard rejected the bytes (bad tag, bound exceeded, truncated ...).
    #[error("malformed encoding")]
    Malformed,
    /// Bytes left over after the value.
    #[error("trailing bytes")]
    Trailing,
    /// Decoded, but not the canonical encoding of the value.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// The encoding exceeds the space available.
    #[error("encoding too large")]
    TooLarge,
}

/// Encodes `v` with postcard.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, DecodeError> {
    postcard::to_allocvec(v).map_err(|_| DecodeError::TooLarge)
}

/// Decodes `bytes` canonically (§6.1).
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing);
    }
    let again = encode(&v)?;
    if again != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(v)
}

/// serde for 64-byte signatures as a fixed 64-byte tuple (no length prefix), like `[u8; 32]`.
pub mod serde_sig {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    /// Serialize 64 raw bytes.
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in v {
            t.serialize_element(b)?;
        }
        t.end()
    }

    struct SigVisitor;
    impl<'de> Visitor<'de> for SigVisitor {
        type Value = [u8; 64];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("64 bytes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
            let mut out = [0u8; 64];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    /// Deserialize 64 raw bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        d.deserialize_tuple(64, SigVisitor)
    }
}
