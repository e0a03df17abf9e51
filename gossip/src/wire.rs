//! What gossip puts on a QUIC stream (wire-spec §12): topics, the signed envelope every
//! broadcast travels in, contact data; the frame that carries the cores' messages is
//! `proto::frame`. Sans-IO: encoding, decoding and verification only.

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::verify_strict;
use suprnova_dht::wire::WireAddr;
use suprnova_dht::{Identity, NodeId};

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
        let (e, msg) = Envelope::decode_unverified(bytes, topic, now_ms, ttl_ms)?;
        if !verify_strict(&e.origin, &msg, &e.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(e)
    }
}

impl Envelope {
    /// Decodes and checks everything but the signature (canonical encoding, size, time); returns
    /// the envelope and the bytes its signature must cover. `bytes` is canonical when this
    /// succeeds, so the signed bytes are taken from it without encoding again.
    pub fn decode_unverified(
        bytes: &[u8],
        topic: &TopicId,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(Envelope, Vec<u8>), EnvelopeError> {
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
        let body = bytes.get(..bytes.len().saturating_sub(64)).ok_or(EnvelopeError::Malformed)?;
        let mut msg = Vec::with_capacity(BROADCAST_SIGNATURE_DOMAIN.len() + 32 + body.len());
        msg.extend_from_slice(BROADCAST_SIGNATURE_DOMAIN);
        msg.extend_from_slice(&topic.0);
        msg.extend_from_slice(body);
        Ok((e, msg))
    }
}

/// Ed25519 public keys decompressed once per signer (at most 4,096 remembered; then forgotten
/// all at once). Weak (small-order) keys are remembered as unusable.
#[derive(Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<[u8; 32], Option<ed25519_dalek::VerifyingKey>>,
}

impl KeyCache {
    const MAX: usize = 4096;

    fn get(&mut self, pk: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
        if let Some(k) = self.keys.get(pk) {
            return *k;
        }
        let k = ed25519_dalek::VerifyingKey::from_bytes(pk).ok().filter(|k| !k.is_weak());
        if self.keys.len() >= Self::MAX {
            self.keys.clear();
        }
        self.keys.insert(*pk, k);
        k
    }

    /// Strict verification of one signature.
    pub fn verify_strict(&mut self, pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        self.get(pk).is_some_and(|k| k.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig)).is_ok())
    }
}

/// One signature to check: (public key, signed bytes, signature).
pub type SigCheck<'a> = (&'a [u8; 32], &'a [u8], &'a [u8; 64]);

/// Verdicts (true = valid), in order, for several signatures (wire-spec §12.4). Two or more go
/// through Ed25519 batch verification, about half the cost of checking each; if the batch fails,
/// each is checked on its own with strict verification, so one bad signature costs the batch a
/// second pass but never condemns a good one.
pub fn verify_many(items: &[SigCheck<'_>], keys: &mut KeyCache) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    let mut idx = Vec::with_capacity(items.len());
    let mut vks = Vec::with_capacity(items.len());
    for (i, (pk, _, _)) in items.iter().enumerate() {
        if let Some(k) = keys.get(pk) {
            idx.push(i);
            vks.push(k);
        }
    }
    let batch_ok = idx.len() >= 2 && {
        let msgs: Vec<&[u8]> = idx.iter().filter_map(|&i| items.get(i).map(|x| x.1)).collect();
        let sigs: Vec<ed25519_dalek::Signature> =
            idx.iter().filter_map(|&i| items.get(i).map(|x| ed25519_dalek::Signature::from_bytes(x.2))).collect();
        ed25519_dalek::verify_batch(&msgs, &sigs, &vks).is_ok()
    };
    for (&i, k) in idx.iter().zip(&vks) {
        let ok = batch_ok
            || items
                .get(i)
                .is_some_and(|(_, m, s)| k.verify_strict(m, &ed25519_dalek::Signature::from_bytes(s)).is_ok());
        if let Some(v) = verdicts.get_mut(i) {
            *v = ok;
        }
    }
    verdicts
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
/// re-encode to exactly `bytes`; the re-encoding is compared as it is produced, never stored).
pub fn decode_canonical<T: Serialize + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let v: T = postcard::from_bytes(bytes).ok()?;
    postcard::serialize_with_flavor(&v, Compare { expected: bytes, pos: 0 }).ok()?.then_some(v)
}

/// A postcard output that checks the encoding against `expected` instead of writing it.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = bool;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos.saturating_add(data.len());
        if self.expected.get(self.pos..end) != Some(data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos = end;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.pos == self.expected.len())
    }
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
    fn batch_verdicts_match_strict_verification_one_by_one() {
        let topic = TopicId::from_name("t");
        let mut keys = KeyCache::default();
        // 40 envelopes from 5 signers; every 7th tampered, one signed for another topic.
        let mut items = Vec::new();
        for k in 0..40u8 {
            let id = Identity::from_seed([k % 5 + 1; 32]);
            let t = if k == 13 { TopicId::from_name("other") } else { topic };
            let e = Envelope::sign(&id, &t, 1, u64::from(k), 1_000_000, vec![k; 20]).unwrap();
            let mut bytes = e.encode();
            if k % 7 == 3 {
                let i = bytes.len() - 70;
                bytes[i] ^= 1;
            }
            items.push(bytes);
        }
        let decoded: Vec<(Envelope, Vec<u8>)> =
            items.iter().map(|b| Envelope::decode_unverified(b, &topic, 1_000_000, 300_000).unwrap()).collect();
        let checks: Vec<SigCheck<'_>> = decoded.iter().map(|(e, m)| (&e.origin, m.as_slice(), &e.signature)).collect();
        let got = verify_many(&checks, &mut keys);
        let want: Vec<bool> =
            items.iter().map(|b| Envelope::decode_verified(b, &topic, 1_000_000, 300_000).is_ok()).collect();
        assert_eq!(got, want);
        assert_eq!(want.iter().filter(|v| !**v).count(), 7);
        // All good: one batch; a single item; nothing.
        let good: Vec<SigCheck<'_>> = checks.iter().zip(&want).filter(|(_, w)| **w).map(|(c, _)| *c).collect();
        assert!(verify_many(&good, &mut keys).iter().all(|v| *v));
        assert_eq!(verify_many(&good[..1], &mut keys), vec![true]);
        assert!(verify_many(&[], &mut keys).is_empty());
        // A weak (small-order) key never verifies: the identity point, compressed.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let (e, m) = &decoded[0];
        assert_eq!(verify_many(&[(&weak, m.as_slice(), &e.signature), checks[0]], &mut keys), vec![false, true]);
    }
}
