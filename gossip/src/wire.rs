//! What gossip puts on a QUIC stream (wire-spec §12): frames of a gossip stream, and the signed
//! envelope every broadcast travels in. Sans-IO: encoding, decoding and verification only.

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::verify_strict;
use suprnova_dht::wire::WireAddr;
use suprnova_dht::{Identity, NodeId};

use crate::proto::{hyparview, plumtree};

/// Largest frame on a gossip stream (length prefix excluded).
pub const MAX_FRAME: usize = 128 * 1024;

/// Largest application payload of one broadcast.
pub const MAX_BROADCAST_PAYLOAD: usize = 64 * 1024;

/// Domain prefix of a broadcast signature.
pub const BROADCAST_SIGNATURE_DOMAIN: &[u8] = b"suprnova-broadcast-v1\0";

/// A topic: BLAKE3-derived from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 32]);

impl TopicId {
    /// The topic called `name`.
    pub fn from_name(name: &str) -> TopicId {
        TopicId(blake3::derive_key("suprnova v1 topic", name.as_bytes()))
    }

    /// The DHT key of the topic's member set.
    pub fn members_key(&self) -> suprnova_dht::wire::Key {
        suprnova_dht::wire::Key(blake3::derive_key("suprnova v1 topic members", &self.0))
    }
}

/// One frame of a gossip stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// 0: nothing (keeps the connection alive while the peer is a neighbour).
    KeepAlive,
    /// 1: HyParView message of a topic.
    Membership {
        /// Topic.
        topic: TopicId,
        /// Message.
        msg: hyparview::Message<NodeId>,
    },
    /// 2: Plumtree message of a topic; `Gossip` payloads are encoded [`Envelope`]s.
    Broadcast {
        /// Topic.
        topic: TopicId,
        /// Message.
        msg: plumtree::Message,
    },
}

/// A broadcast as its origin signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Origin's ed25519 public key (its NodeId is BLAKE3 of it).
    pub origin: [u8; 32],
    /// Origin's run: its Unix start time in milliseconds. A newer run resets the order of `seq`.
    pub epoch: u64,
    /// Position in the origin's run, from 0.
    pub seq: u64,
    /// When it was sent, Unix milliseconds.
    pub time_ms: u64,
    /// The application's bytes.
    pub payload: Vec<u8>,
    /// ed25519 over `BROADCAST_SIGNATURE_DOMAIN ‖ topic ‖ encoding of every field above`.
    #[serde(with = "suprnova_dht::wire::serde_sig")]
    pub signature: [u8; 64],
}

/// Why an envelope was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a canonical encoding.
    #[error("malformed envelope")]
    Malformed,
    /// Payload over [`MAX_BROADCAST_PAYLOAD`].
    #[error("payload too large")]
    TooLarge,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Older than the TTL.
    #[error("expired")]
    Expired,
    /// From the future beyond the allowed clock skew.
    #[error("timestamp in the future")]
    FromTheFuture,
}

/// Clock skew tolerated on a broadcast's timestamp.
pub const MAX_FUTURE_SKEW_MS: u64 = 30_000;

impl Envelope {
    /// Signs `payload` as `identity` for `topic`.
    pub fn sign(
        identity: &Identity,
        topic: &TopicId,
        epoch: u64,
        seq: u64,
        time_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Envelope, EnvelopeError> {
        if payload.len() > MAX_BROADCAST_PAYLOAD {
            return Err(EnvelopeError::TooLarge);
        }
        let mut e = Envelope { origin: identity.public_key(), epoch, seq, time_ms, payload, signature: [0; 64] };
        let msg = e.signed_bytes(topic).ok_or(EnvelopeError::Malformed)?;
        e.signature = identity.sign(&msg);
        Ok(e)
    }

    /// The origin's NodeId.
    pub fn origin_id(&self) -> NodeId {
        NodeId::from_public_key(&self.origin)
    }

    /// Bytes the signature covers.
    pub fn signed_bytes(&self, topic: &TopicId) -> Option<Vec<u8>> {
        let mut enc = postcard::to_allocvec(self).ok()?;
        enc.truncate(enc.len().checked_sub(64)?);
        let mut out = BROADCAST_SIGNATURE_DOMAIN.to_vec();
        out.extend_from_slice(&topic.0);
        out.extend_from_slice(&enc);
        Some(out)
    }

    /// Encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes and checks an envelope of `topic` at `now_ms` with lifetime `ttl_ms`: canonical
    /// encoding, size, time window, then the signature (the costly check last).
    pub fn decode_verified(bytes: &[u8], topic: &TopicId, now_ms: u64, ttl_ms: u64) -> Result<Envelope, EnvelopeError> {
        let e: Envelope = decode_canonical(bytes).ok_or(EnvelopeError::Malformed)?;
        if e.payload.len() > MAX_BROADCAST_PAYLOAD {
            return Err(EnvelopeError::TooLarge);
        }
        if e.time_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            return Err(EnvelopeError::FromTheFuture);
        }
        if now_ms.saturating_sub(e.time_ms) > ttl_ms {
            return Err(EnvelopeError::Expired);
        }
        let msg = e.signed_bytes(topic).ok_or(EnvelopeError::Malformed)?;
        if !verify_strict(&e.origin, &msg, &e.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(e)
    }
}

/// Contact data of a peer: its addresses as an encoded `Vec<WireAddr>` (at most 4; §12.3).
pub fn encode_contact(addrs: &[std::net::SocketAddr]) -> Vec<u8> {
    let v: Vec<WireAddr> = addrs.iter().take(4).map(|a| WireAddr::from(*a)).collect();
    postcard::to_allocvec(&v).unwrap_or_default()
}

/// Decodes contact data; garbage, unusable addresses and any beyond the fourth are dropped.
pub fn decode_contact(data: &[u8]) -> Vec<std::net::SocketAddr> {
    decode_canonical::<Vec<WireAddr>>(data)
        .map(|v| v.iter().take(4).filter(|a| a.is_usable()).map(WireAddr::to_socket_addr).collect())
        .unwrap_or_default()
}

/// Decodes `bytes` as a `T`, refusing trailing bytes and non-canonical encodings (the value must
/// re-encode to exactly `bytes`).
pub fn decode_canonical<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let v: T = postcard::from_bytes(bytes).ok()?;
    (postcard::to_allocvec(&v).ok()? == bytes).then_some(v)
}

/// Encodes a frame with its 4-byte big-endian length prefix.
pub fn encode_frame(frame: &Frame) -> Option<Vec<u8>> {
    let body = postcard::to_allocvec(frame).ok()?;
    if body.len() > MAX_FRAME {
        return None;
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_frame(body: &[u8]) -> Option<Frame> {
    if body.len() > MAX_FRAME {
        return None;
    }
    decode_canonical(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_refusals() {
        let id = Identity::from_seed([3; 32]);
        let topic = TopicId::from_name("t");
        let e = Envelope::sign(&id, &topic, 1, 2, 1_000_000, b"hello".to_vec()).unwrap();
        let bytes = e.encode();
        assert_eq!(Envelope::decode_verified(&bytes, &topic, 1_000_000, 300_000), Ok(e.clone()));
        assert_eq!(e.origin_id(), id.id());
        // Another topic: the signature covers the topic.
        let other = TopicId::from_name("u");
        assert_eq!(Envelope::decode_verified(&bytes, &other, 1_000_000, 300_000), Err(EnvelopeError::BadSignature));
        // Expired, from the future.
        assert_eq!(Envelope::decode_verified(&bytes, &topic, 1_300_001, 300_000), Err(EnvelopeError::Expired));
        assert_eq!(Envelope::decode_verified(&bytes, &topic, 900_000, 300_000), Err(EnvelopeError::FromTheFuture));
        // A flipped payload bit.
        let mut bad = bytes.clone();
        let i = bad.len() - 65;
        bad[i] ^= 1;
        assert_eq!(Envelope::decode_verified(&bad, &topic, 1_000_000, 300_000), Err(EnvelopeError::BadSignature));
        // Trailing byte.
        let mut long = bytes;
        long.push(0);
        assert_eq!(Envelope::decode_verified(&long, &topic, 1_000_000, 300_000), Err(EnvelopeError::Malformed));
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame::Broadcast { topic: TopicId::from_name("x"), msg: plumtree::Message::Prune };
        let enc = encode_frame(&f).unwrap();
        assert_eq!(u32::from_be_bytes(enc[..4].try_into().unwrap()) as usize, enc.len() - 4);
        assert_eq!(decode_frame(&enc[4..]), Some(f));
        assert_eq!(decode_frame(&[9]), None);
    }
}
