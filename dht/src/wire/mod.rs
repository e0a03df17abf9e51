//! Bytes <-> types for wire-spec v1: limits, packet framing, and the postcard-encoded messages and
//! records. No state and no crypto live here.
//!
//! Decoding is *canonical*: a value decodes only if re-encoding it gives back exactly the input
//! (no trailing bytes, no over-long varints), so every accepted byte string has one meaning (§6.1).

pub mod addr;
pub mod bounded;
pub mod limits;
pub mod message;
pub mod packet;

use serde::{Serialize, de::DeserializeOwned};

pub use addr::WireAddr;
pub use message::{Body, Key, Message, MutableRecord, Record, SetEntry};

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

impl Message {
    /// Encodes the message; fails if it would not fit one transport packet.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let v = encode(self)?;
        if v.len() > limits::MAX_PLAINTEXT {
            return Err(DecodeError::TooLarge);
        }
        Ok(v)
    }

    /// Decodes a transport plaintext canonically.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > limits::MAX_PLAINTEXT {
            return Err(DecodeError::TooLarge);
        }
        let m: Message = decode(bytes)?;
        // Field rules beyond the encoding (§6.2).
        if let Body::Nodes { total: 0, .. } = m.body {
            return Err(DecodeError::Malformed);
        }
        Ok(m)
    }

    /// The request id alone, for answering a message whose body did not decode.
    pub fn peek_id(bytes: &[u8]) -> Option<u64> {
        postcard::take_from_bytes::<u64>(bytes).ok().map(|(id, _)| id)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_varint_is_non_canonical() {
        // id 0 encoded as 0x80 0x00 then Ping (tag 0).
        assert!(Message::decode(&[0x80, 0x00, 0x00]).is_err());
        assert_eq!(Message::decode(&[0x00, 0x00]).unwrap(), Message { id: 0, body: Body::Ping });
        assert_eq!(Message::decode(&[0x00, 0x00, 0x00]), Err(DecodeError::Trailing));
    }

    #[test]
    fn spec_examples_6_1() {
        let hexed = |m: Message| hex::encode(m.encode().unwrap());
        assert_eq!(hexed(Message { id: 0, body: Body::Ping }), "0000");
        let pong = Body::Pong { observed: WireAddr::V4([127, 0, 0, 1], 4000), record_seq: 5 };
        assert_eq!(hexed(Message { id: 1, body: pong }), "0101007f000001a01f05");
        let err = Body::Error { code: 1, detail: bounded::BoundedString::truncated("") };
        assert_eq!(hexed(Message { id: 7, body: err }), "07080100");
    }

    #[test]
    fn peek_id_survives_unknown_tag() {
        assert!(Message::decode(&[0x05, 0x63]).is_err());
        assert_eq!(Message::peek_id(&[0x05, 0x63]), Some(5));
    }
}
