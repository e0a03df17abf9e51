//! Reach records (wire-spec §15.4): how to reach a node that cannot be dialled unsolicited (it is
//! behind NAT): its signed node record and the relays that hold a reservation for it, signed by
//! the node. Stored under [`Key::for_reach`] of its id, one writer per key (the node itself).

use serde::{Deserialize, Serialize};

use super::addr::WireAddr;
use super::bounded::BoundedVec;
use super::message::Key;
use crate::identity::{Identity, NodeId, NodeRecord, RecordError};

/// Relays a reach record lists at most.
pub const MAX_REACH_RELAYS: usize = 2;
/// Domain prefix of a reach record's signature.
pub const REACH_SIGNATURE_DOMAIN: &[u8] = b"suprnova-reach-record-v1\0";
/// Domain prefix of a reach record's key.
pub const REACH_KEY_DOMAIN: &[u8] = b"suprnova-reach-v1\0";

/// A relay a node holds a reservation on: enough to open a Noise session with it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RelayRef {
    /// The relay's node id.
    pub id: NodeId,
    /// The relay's X25519 static key (from its node record).
    pub noise_key: [u8; 32],
    /// Where the relay listens.
    pub addr: WireAddr,
}

/// A node's signed statement of how to reach it (§15.4).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReachRecord {
    /// The node's own signed record.
    pub node: NodeRecord,
    /// Sequence number; a higher one replaces a lower.
    pub seq: u64,
    /// Relays holding a reservation for the node, preferred first.
    pub relays: BoundedVec<RelayRef, MAX_REACH_RELAYS>,
    /// ed25519 signature by `node.public_key` over `REACH_SIGNATURE_DOMAIN ‖ encoding-without-signature`.
    #[serde(with = "super::serde_sig")]
    pub signature: [u8; 64],
}

/// Why a reach record is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ReachError {
    /// The embedded node record is invalid.
    #[error("invalid node record: {0}")]
    Node(RecordError),
    /// The record's signature does not verify.
    #[error("bad reach record signature")]
    BadSignature,
    /// More relays than allowed.
    #[error("too many relays")]
    TooManyRelays,
    /// A relay address is unusable.
    #[error("unusable relay address")]
    BadAddr,
}

impl Key {
    /// Key of a node's reach record: BLAKE3("suprnova-reach-v1\0" ‖ id).
    pub fn for_reach(id: &NodeId) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(REACH_KEY_DOMAIN);
        h.update(&id.0);
        Key(*h.finalize().as_bytes())
    }
}

impl ReachRecord {
    /// A reach record for `identity` (whose record is `node`), signed.
    pub fn sign(identity: &Identity, node: NodeRecord, seq: u64, relays: Vec<RelayRef>) -> Result<Self, ReachError> {
        let relays = BoundedVec::try_from(relays).map_err(|_| ReachError::TooManyRelays)?;
        let mut r = ReachRecord { node, seq, relays, signature: [0; 64] };
        let msg = r.signed_bytes().ok_or(ReachError::BadSignature)?;
        r.signature = identity.sign(&msg);
        Ok(r)
    }

    /// Bytes the signature covers: domain ‖ encoding of every field before the signature.
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        let mut enc = super::encode(self).ok()?;
        enc.truncate(enc.len().checked_sub(64)?);
        let mut out = REACH_SIGNATURE_DOMAIN.to_vec();
        out.extend_from_slice(&enc);
        Some(out)
    }

    /// The key this record lives under.
    pub fn key(&self) -> Key {
        Key::for_reach(&self.node.id)
    }

    /// Full check: the node record, the relay addresses, the signature (strict ed25519).
    pub fn verify(&self) -> Result<(), ReachError> {
        self.node.verify().map_err(ReachError::Node)?;
        if self.relays.iter().any(|r| !r.addr.is_usable()) {
            return Err(ReachError::BadAddr);
        }
        let msg = self.signed_bytes().ok_or(ReachError::BadSignature)?;
        if !crate::identity::verify_strict(&self.node.public_key, &msg, &self.signature) {
            return Err(ReachError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn relay(b: u8) -> RelayRef {
        RelayRef { id: NodeId([b; 32]), noise_key: [b; 32], addr: WireAddr::V4([198, 18, 0, b], 4433) }
    }

    #[test]
    fn signed_reach_records_verify_and_tampering_is_caught() {
        let me = Identity::from_seed([7; 32]);
        let node = me.make_record(3, crate::identity::capability::PRIVATE, &[]).unwrap();
        let r = ReachRecord::sign(&me, node, 1, vec![relay(1), relay(2)]).unwrap();
        assert_eq!(r.verify(), Ok(()));
        assert_eq!(r.key(), Key::for_reach(&me.id()));
        let mut t = r.clone();
        t.seq = 2;
        assert_eq!(t.verify(), Err(ReachError::BadSignature));
        let mut t = r.clone();
        let nowhere = RelayRef { addr: WireAddr::V4([0; 4], 4433), ..relay(2) };
        t.relays = BoundedVec::try_from(vec![relay(1), nowhere]).unwrap();
        assert_eq!(t.verify(), Err(ReachError::BadAddr));
        let other = Identity::from_seed([8; 32]);
        let mut t = r.clone();
        t.node = other.make_record(3, 0, &[]).unwrap();
        assert_eq!(t.verify(), Err(ReachError::BadSignature));
        assert_eq!(
            ReachRecord::sign(&me, r.node.clone(), 1, vec![relay(1), relay(2), relay(3)]),
            Err(ReachError::TooManyRelays)
        );
        let enc = super::super::encode(&r).unwrap();
        assert!(enc.len() <= 504, "{} bytes", enc.len());
    }
}
