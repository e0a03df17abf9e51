//! Certified state in the DHT: what members write and how anyone checks it.
//!
//! - The **genesis** is an immutable record; its key is the mesh id (§13.5).
//! - Every certified round that carries its own certificate is written as a [`RoundRecord`]: the
//!   block's header fields, the certificate and the state, inline when the record fits an
//!   immutable DHT value (900 bytes), else as a blob (served and announced by the members that
//!   certified it) referenced by hash. Snapshots, not deltas: any one record gives the whole
//!   state, so a reader or a late member needs the newest valid record only, never a chain.
//! - Each member keeps a **head**, its entry in the multi-writer set under [`heads_key`], naming
//!   its newest stored round and where the record is.
//!
//! [`verify_record`] is what makes a record trustworthy without trusting whoever served it: the
//! certificate must verify against the genesis' members, be for the block whose header the
//! record carries, and the state must hash to the header's state hash.

use serde::{Deserialize, Serialize};
use suprnova_dht::wire::bounded::BoundedBytes;

use crate::simplex::{Certificate, CertificateError, Digest, MAX_PAYLOAD, Members, Proposal};
use crate::world::{BatchHeader, Genesis};

const HEADS_DOMAIN: &str = "suprnova mesh v1 heads";

/// Largest immutable DHT value (wire-spec §7.1).
pub const MAX_IMMUTABLE: usize = suprnova_dht::wire::limits::MAX_VALUE_LEN;

/// The key of the set that locates a genesis too large for one immutable record:
/// BLAKE3-derive_key("suprnova mesh v1 genesis", mesh id). Each member's entry is the 32-byte
/// hash of a blob holding `postcard(Genesis)`; a reader checks BLAKE3 of what it fetches against
/// the mesh id, so a planted entry costs one failed fetch.
pub fn genesis_locator_key(mesh: &Digest) -> [u8; 32] {
    blake3::derive_key("suprnova mesh v1 genesis", mesh)
}

/// The key of mesh `mesh`'s heads set: BLAKE3-derive_key("suprnova mesh v1 heads", mesh id).
pub fn heads_key(mesh: &Digest) -> [u8; 32] {
    blake3::derive_key(HEADS_DOMAIN, mesh)
}

/// Where bytes are: an immutable DHT record's key, or a blob's hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Ref {
    /// An immutable record (key = BLAKE3 of the bytes).
    Immutable([u8; 32]),
    /// A blob (wire-spec §12.5).
    Blob([u8; 32]),
}

/// A member's head: its newest stored round (a set entry's value, ≤ 256 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Head {
    /// The round.
    pub round: u64,
    /// Its record.
    pub record: Ref,
}

/// The state of a round: in the record, or a blob.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum StateRef {
    /// `postcard(State)`.
    Inline(BoundedBytes<MAX_IMMUTABLE>),
    /// A blob holding `postcard(State)`.
    Blob([u8; 32]),
}

/// A certified round as stored: enough to check its certificate and its state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Block height.
    pub height: u64,
    /// Parent's height.
    pub parent_height: u64,
    /// Parent's digest.
    pub parent: Digest,
    /// The block's payload: `postcard(BatchHeader)`.
    pub payload: BoundedBytes<MAX_PAYLOAD>,
    /// The finalize quorum's certificate for this block.
    pub certificate: Certificate,
    /// The state after the round.
    pub state: StateRef,
}

/// Why a stored record was not accepted.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RecordError {
    /// The bytes do not decode.
    #[error("record does not decode")]
    Malformed,
    /// The genesis' member list is invalid.
    #[error("genesis member list is invalid")]
    BadGenesis,
    /// The certificate is for another block.
    #[error("certificate is for another block")]
    CertificateMismatch,
    /// The certificate does not verify.
    #[error("certificate does not verify: {0}")]
    Certificate(CertificateError),
    /// The header is not a batch header, or its round is not the head's.
    #[error("header does not match (round {0})")]
    Header(u64),
    /// The state does not hash to the header's state hash.
    #[error("state does not match the certified hash")]
    StateMismatch,
}

impl RoundRecord {
    /// The block digest this record claims.
    pub fn digest(&self, mesh: &Digest) -> Digest {
        let p = Proposal {
            height: self.height,
            parent_height: self.parent_height,
            parent: self.parent,
            payload: self.payload.clone(),
            body: BoundedBytes::default(),
        };
        p.digest(mesh)
    }
}

/// Checks a record's certificate against the genesis; returns its header (round, state hash).
pub fn verify_record(genesis: &Genesis, rec: &RoundRecord) -> Result<BatchHeader, RecordError> {
    let mesh = genesis.mesh_id();
    let members = Members::new(genesis.members.to_vec()).ok_or(RecordError::BadGenesis)?;
    let digest = rec.digest(&mesh);
    if rec.certificate.digest != digest || rec.certificate.height != rec.height {
        return Err(RecordError::CertificateMismatch);
    }
    members.verify_certificate(&mesh, &rec.certificate).map_err(RecordError::Certificate)?;
    postcard::from_bytes::<BatchHeader>(rec.payload.as_slice()).map_err(|_| RecordError::Header(0))
}

/// Checks state bytes against a verified header: `state_hash(decode(bytes))` must equal the
/// certified hash (decoded and re-encoded, so only the canonical encoding passes).
pub fn verify_state<S: Serialize + serde::de::DeserializeOwned>(
    header: &BatchHeader,
    bytes: &[u8],
) -> Result<S, RecordError> {
    let s: S = postcard::from_bytes(bytes).map_err(|_| RecordError::Malformed)?;
    if crate::world::state_hash(&s) != header.state_hash {
        return Err(RecordError::StateMismatch);
    }
    Ok(s)
}
