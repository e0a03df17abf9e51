//! Bytes <-> types for wire-spec v1: limits, packet framing, and the postcard-encoded messages and
//! records. No state and no crypto live here.
//!
//! Decoding is *canonical*: a value decodes only if re-encoding it gives back exactly the input
//! (no trailing bytes, no over-long varints), so every accepted byte string has one meaning (§6.1).

pub mod message;
pub mod packet;
pub mod reach;

pub use crate::codec::{DecodeError, addr, bounded, decode, encode, limits, serde_sig};

pub use addr::WireAddr;
pub use message::{Body, Key, Message, MutableRecord, Record, SetEntry};
pub use reach::{ReachRecord, RelayRef};

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
