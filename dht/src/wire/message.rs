//! The `Message` carried inside transport data (wire-spec §6): a request id and a body, postcard
//! encoded. Requests and their responses share the id.

use serde::{Deserialize, Serialize};

use super::addr::WireAddr;
use super::bounded::{BoundedBytes, BoundedString, BoundedVec};
use super::limits::{
    MAX_ERROR_DETAIL_LEN, MAX_NODES_PER_MESSAGE, MAX_RECORDS_PER_VALUE, MAX_SALT_LEN, MAX_SET_VALUE_LEN, MAX_VALUE_LEN,
};
use crate::identity::{NodeId, NodeRecord};

/// A 256-bit storage key (§7.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Key(pub [u8; 32]);

/// One transport message: request id (varint) then body (§6.2).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Message {
    /// Chosen by the requester; echoed by the response.
    pub id: u64,
    /// What the message says.
    pub body: Body,
}

/// Message bodies. The variant index (varint) is the wire tag; new variants are only appended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Body {
    /// 0: are you there?
    Ping,
    /// 1: answer to Ping, with the address the request came from and the responder's record seq.
    Pong {
        /// The requester's address as the responder saw it.
        observed: WireAddr,
        /// Sequence number of the responder's current node record.
        record_seq: u64,
    },
    /// 2: who are the nodes you know closest to `target`?
    FindNode {
        /// Target id.
        target: NodeId,
    },
    /// 3: node records answering FindNode or FindValue; `total` messages carry the full answer.
    Nodes {
        /// How many `Nodes` messages make up this answer (1..=255).
        total: u8,
        /// Signed node records.
        nodes: BoundedVec<NodeRecord, MAX_NODES_PER_MESSAGE>,
    },
    /// 4: give me the record(s) under `key`, or closer nodes.
    FindValue {
        /// The key.
        key: Key,
    },
    /// 5: records stored under `key`.
    Value {
        /// The key.
        key: Key,
        /// Records found.
        records: BoundedVec<Record, MAX_RECORDS_PER_VALUE>,
    },
    /// 6: store `record` under `key`.
    Store {
        /// The key.
        key: Key,
        /// The record.
        record: Record,
        /// Requested lifetime in seconds.
        ttl_s: u32,
        /// Compare-and-swap: store only if the held mutable record has this seq.
        expected_seq: Option<u64>,
    },
    /// 7: the record under `key` was stored.
    StoreAck {
        /// The key.
        key: Key,
    },
    /// 8: the request was refused or not understood.
    Error {
        /// Machine-readable reason (§6.5).
        code: u16,
        /// Human-readable detail.
        detail: BoundedString<MAX_ERROR_DETAIL_LEN>,
    },
    /// 9: give me the entries of the multi-writer set under `key` whose writer key is greater
    /// than `after` (all of them if `None`), in ascending writer order; or closer nodes.
    FindSet {
        /// The key.
        key: Key,
        /// Continue after this writer key (the last one of the previous page).
        after: Option<[u8; 32]>,
    },
    /// 10: one page of a set's entries, ascending by writer key.
    SetPage {
        /// The key.
        key: Key,
        /// Entries, each with a writer key greater than the request's `after` and the one before.
        entries: BoundedVec<SetEntry, MAX_RECORDS_PER_VALUE>,
        /// More entries follow the last one: ask again with `after` = its writer key.
        more: bool,
    },
    /// 11: keep a relay reservation for me for `ttl_s` seconds; 0 releases it (§15.2).
    Reserve {
        /// Lifetime asked for.
        ttl_s: u32,
    },
    /// 12: answer to `Reserve`: the reservation is held, within these limits.
    Reserved {
        /// Lifetime granted (at most the one asked for).
        ttl_s: u32,
        /// Circuits the relay opens to this node at once.
        max_circuits: u16,
        /// Bytes per second the relay forwards on one circuit, each way.
        circuit_bytes_per_s: u32,
    },
    /// 13: open a circuit to `target`, which holds a reservation on this relay.
    Connect {
        /// The node to reach.
        target: NodeId,
    },
    /// 14: answer to `Connect`: the circuit id of the asker's leg (§15.3).
    Connected {
        /// Circuit id to put in the asker's relayed frames.
        circuit: u64,
    },
}

/// Error codes of `Body::Error` (§6.5).
pub mod error_code {
    /// Message tag not understood.
    pub const UNSUPPORTED: u16 = 1;
    /// Message body malformed.
    pub const MALFORMED: u16 = 2;
    /// Sender is over a rate limit.
    pub const RATE_LIMITED: u16 = 3;
    /// Storage quota exceeded.
    pub const QUOTA: u16 = 4;
    /// Record failed validation.
    pub const INVALID_RECORD: u16 = 5;
    /// Compare-and-swap sequence mismatch.
    pub const CAS_MISMATCH: u16 = 6;
    /// Record is older than the one held.
    pub const STALE: u16 = 7;
    /// A relay is at one of its limits (reservations, circuits).
    pub const RESOURCE_LIMIT: u16 = 8;
    /// `Connect` to a node that holds no reservation on this relay.
    pub const NO_RESERVATION: u16 = 9;
    /// This node does not serve as a relay.
    pub const RELAY_OFF: u16 = 10;
}

/// Stored records (§7). Validation rules belong to the store; these are the wire shapes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Record {
    /// 0: key = BLAKE3(value).
    Immutable {
        /// The value.
        value: BoundedBytes<MAX_VALUE_LEN>,
    },
    /// 1: key = BLAKE3(public_key ‖ salt); signed; higher seq wins.
    Mutable(MutableRecord),
    /// 2: one writer's entry in a multi-writer set under the store key.
    SetEntry(SetEntry),
    /// 3: how to reach a node behind NAT; key = `Key::for_reach(node id)` (§15.4).
    Reach(Box<super::reach::ReachRecord>),
}

/// A signed, sequenced record owned by one key pair (§7.2).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MutableRecord {
    /// Writer's ed25519 public key.
    pub public_key: [u8; 32],
    /// Salt distinguishing several records of one writer.
    pub salt: BoundedBytes<MAX_SALT_LEN>,
    /// Sequence number.
    pub seq: u64,
    /// The value.
    pub value: BoundedBytes<MAX_VALUE_LEN>,
    /// ed25519 signature (§7.2).
    #[serde(with = "super::serde_sig")]
    pub signature: [u8; 64],
}

/// One writer's signed entry in a multi-writer set (§7.3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SetEntry {
    /// Writer's ed25519 public key.
    pub public_key: [u8; 32],
    /// Writer's sequence number for this entry.
    pub seq: u64,
    /// Lifetime the writer asks for, in seconds.
    pub ttl_s: u32,
    /// The value.
    pub value: BoundedBytes<MAX_SET_VALUE_LEN>,
    /// ed25519 signature (§7.3).
    #[serde(with = "super::serde_sig")]
    pub signature: [u8; 64],
}

/// Domain prefix of a mutable record's signature (§7.2).
pub const MUTABLE_SIGNATURE_DOMAIN: &[u8] = b"suprnova-mutable-record-v1\0";
/// Domain prefix of a set entry's signature (§7.3).
pub const SET_ENTRY_SIGNATURE_DOMAIN: &[u8] = b"suprnova-set-entry-v1\0";

/// The encoding of `v` without its trailing 64-byte signature.
fn unsigned_encoding<T: Serialize>(v: &T) -> Option<Vec<u8>> {
    let mut enc = super::encode(v).ok()?;
    enc.truncate(enc.len().checked_sub(64)?);
    Some(enc)
}

impl Key {
    /// Key of an immutable record: BLAKE3(value).
    pub fn for_immutable(value: &[u8]) -> Key {
        Key(*blake3::hash(value).as_bytes())
    }

    /// Key of a mutable record: BLAKE3(public_key ‖ salt).
    pub fn for_mutable(public_key: &[u8; 32], salt: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(public_key);
        h.update(salt);
        Key(*h.finalize().as_bytes())
    }
}

impl MutableRecord {
    /// A record signed by `writer`; fails if the salt or value is over its limit.
    pub fn sign(
        writer: &crate::identity::Identity,
        salt: &[u8],
        seq: u64,
        value: &[u8],
    ) -> Result<Self, super::bounded::TooLong> {
        let mut m = MutableRecord {
            public_key: writer.public_key(),
            salt: BoundedBytes::try_from(salt)?,
            seq,
            value: BoundedBytes::try_from(value)?,
            signature: [0; 64],
        };
        m.signature = writer.sign(&m.signed_bytes().unwrap_or_default());
        Ok(m)
    }

    /// Bytes the signature covers: domain ‖ encoding of every field before the signature.
    pub fn signed_bytes(&self) -> Option<Vec<u8>> {
        let mut out = MUTABLE_SIGNATURE_DOMAIN.to_vec();
        out.extend_from_slice(&unsigned_encoding(self)?);
        Some(out)
    }

    /// The key this record lives under.
    pub fn key(&self) -> Key {
        Key::for_mutable(&self.public_key, &self.salt)
    }

    /// Whether the signature verifies (strict ed25519).
    pub fn signature_ok(&self) -> bool {
        self.signed_bytes().is_some_and(|m| crate::identity::verify_strict(&self.public_key, &m, &self.signature))
    }
}

impl SetEntry {
    /// An entry of the set under `set_key`, signed by `writer`; fails if the value is too long.
    pub fn sign(
        writer: &crate::identity::Identity,
        set_key: &Key,
        seq: u64,
        ttl_s: u32,
        value: &[u8],
    ) -> Result<Self, super::bounded::TooLong> {
        let mut e = SetEntry {
            public_key: writer.public_key(),
            seq,
            ttl_s,
            value: BoundedBytes::try_from(value)?,
            signature: [0; 64],
        };
        e.signature = writer.sign(&e.signed_bytes(set_key).unwrap_or_default());
        Ok(e)
    }

    /// Bytes the signature covers: domain ‖ set key ‖ encoding of every field before the signature.
    pub fn signed_bytes(&self, set_key: &Key) -> Option<Vec<u8>> {
        let mut out = SET_ENTRY_SIGNATURE_DOMAIN.to_vec();
        out.extend_from_slice(&set_key.0);
        out.extend_from_slice(&unsigned_encoding(self)?);
        Some(out)
    }

    /// Whether the signature verifies for membership in the set under `set_key`.
    pub fn signature_ok(&self, set_key: &Key) -> bool {
        self.signed_bytes(set_key)
            .is_some_and(|m| crate::identity::verify_strict(&self.public_key, &m, &self.signature))
    }
}
