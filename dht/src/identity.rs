//! Node identity (wire-spec §3): the ed25519 key pair, the X25519 static key bound to it, `NodeId`,
//! XOR distance, and the signed node record with its strict verification rules.
//!
//! A node has one 32-byte secret (its *identity seed*). The ed25519 signing key is the seed itself;
//! the X25519 static key for the Noise handshake is derived from it (§3.2), so one secret file keeps
//! a node's whole identity across restarts.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::codec::addr::WireAddr;
use crate::codec::bounded::BoundedVec;
use crate::codec::limits::{MAX_RECORD_ADDRS, PROTOCOL_VERSION};
use crate::codec::{self, DecodeError};
use crate::crypto::CryptoProvider;

/// Context string for deriving the X25519 static secret from the identity seed (BLAKE3 derive_key).
pub const NOISE_KEY_CONTEXT: &str = "suprnova v1 noise static key";
/// Domain-separation prefix of the node-record signature (§3.4).
pub const RECORD_SIGNATURE_DOMAIN: &[u8] = b"suprnova-node-record-v1\0";
/// Domain-separation prefix of the static-key binding signature carried in the handshake (§5.3).
pub const BINDING_SIGNATURE_DOMAIN: &[u8] = b"suprnova-noise-binding-v1\0";

/// A 256-bit node identifier: BLAKE3 of the node's ed25519 public key (§3.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id of the node whose ed25519 public key is `public_key`.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        NodeId(*blake3::hash(public_key).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// XOR distance to `other` (Kademlia metric).
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            // i < 32 for all three arrays.
            *out = self.0.get(i).copied().unwrap_or(0) ^ other.0.get(i).copied().unwrap_or(0);
        }
        Distance(d)
    }

    /// First 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(self.0.get(..4).unwrap_or(&[]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Error parsing a `NodeId` from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a node id is 64 hex digits")]
pub struct ParseNodeIdError;

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseNodeIdError)?;
        Ok(NodeId(out))
    }
}

/// XOR distance between two ids, compared as a 256-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// Number of leading zero bits (256 for distance zero). Bucket index is `255 - leading_zeros`.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

/// A node's secret identity: ed25519 signing key plus the derived X25519 static key.
pub struct Identity {
    seed: Zeroizing<[u8; 32]>,
    signing: SigningKey,
    noise_secret: StaticSecret,
    noise_public: [u8; 32],
    id: NodeId,
    binding: [u8; 64],
    /// The public-key operations it signs and runs handshakes with.
    crypto: &'static CryptoProvider,
}

impl Identity {
    /// Builds the identity from its 32-byte seed (§3.2), with the process's default crypto
    /// provider.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_seed_with(seed, crate::crypto::default_provider())
    }

    /// Builds the identity from its 32-byte seed with the given crypto provider.
    pub fn from_seed_with(seed: [u8; 32], crypto: &'static CryptoProvider) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let noise_bytes = Zeroizing::new(blake3::derive_key(NOISE_KEY_CONTEXT, &seed));
        let noise_secret = StaticSecret::from(*noise_bytes);
        let noise_public = (crypto.x25519_public)(&noise_secret);
        let public = signing.verifying_key().to_bytes();
        let binding = (crypto.sign)(&signing, &binding_message(&noise_public));
        Identity {
            crypto,
            seed: Zeroizing::new(seed),
            id: NodeId::from_public_key(&public),
            signing,
            noise_secret,
            noise_public,
            binding,
        }
    }

    /// A fresh identity from the given random source.
    pub fn generate(rng: &mut impl rand_core::CryptoRng) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The 32-byte seed (secret).
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
    /// The X25519 static public key used in the Noise handshake.
    pub fn noise_public(&self) -> [u8; 32] {
        self.noise_public
    }
    /// The X25519 static secret.
    pub(crate) fn noise_secret(&self) -> &StaticSecret {
        &self.noise_secret
    }
    /// ed25519 signature binding the X25519 static key to this identity (§5.3).
    pub fn binding_signature(&self) -> [u8; 64] {
        self.binding
    }
    /// Signs `msg` with the ed25519 key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        (self.crypto.sign)(&self.signing, msg)
    }
    /// The public-key operations this identity uses.
    pub fn crypto(&self) -> &'static CryptoProvider {
        self.crypto
    }

    /// A signed node record for this identity.
    pub fn make_record(&self, seq: u64, capabilities: u64, addrs: &[WireAddr]) -> Result<NodeRecord, RecordError> {
        if addrs.len() > MAX_RECORD_ADDRS {
            return Err(RecordError::TooManyAddrs);
        }
        let mut rec = NodeRecord {
            version: PROTOCOL_VERSION,
            id: self.id,
            public_key: self.public_key(),
            noise_key: self.noise_public,
            seq,
            capabilities,
            addrs: BoundedVec::try_from(addrs.to_vec()).map_err(|_| RecordError::TooManyAddrs)?,
            signature: [0u8; 64],
        };
        let body = rec.signed_bytes().map_err(|_| RecordError::Malformed)?;
        rec.signature = self.sign(&body);
        Ok(rec)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id.short())
    }
}

/// The message signed by the binding signature: domain ‖ X25519 static public key.
pub fn binding_message(noise_public: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(BINDING_SIGNATURE_DOMAIN.len() + 32);
    m.extend_from_slice(BINDING_SIGNATURE_DOMAIN);
    m.extend_from_slice(noise_public);
    m
}

/// Verifies an ed25519 signature strictly (canonical encodings, no small-order keys), with the
/// process's default crypto provider.
pub fn verify_strict(public_key: &[u8; 32], msg: &[u8], signature: &[u8; 64]) -> bool {
    (crate::crypto::default_provider().verify)(public_key, msg, signature)
}

/// Capability flags of a node record (§3.5).
pub mod capability {
    /// The node serves as a relay for nodes behind NAT (§15.2).
    pub const RELAY: u64 = 1;
    /// The node cannot be dialled unsolicited (it is behind NAT): reach it through the relays
    /// of its reach record (§15.4), and keep it out of routing tables.
    pub const PRIVATE: u64 = 2;
}

/// A signed node record: what peers exchange to learn how to reach and authenticate a node (§3.4).
///
/// Field order is the wire order. The signature covers the postcard encoding of every field before it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Protocol version the node speaks (1).
    pub version: u8,
    /// BLAKE3(public_key).
    pub id: NodeId,
    /// ed25519 public key.
    pub public_key: [u8; 32],
    /// X25519 static public key for the Noise handshake.
    pub noise_key: [u8; 32],
    /// Sequence number; a record with a higher `seq` replaces one with a lower.
    pub seq: u64,
    /// Capability flags (§3.5).
    pub capabilities: u64,
    /// Addresses the node can be reached at (at most 4).
    pub addrs: BoundedVec<WireAddr, MAX_RECORD_ADDRS>,
    /// ed25519 signature over `RECORD_SIGNATURE_DOMAIN ‖ encoding-without-signature`.
    #[serde(with = "codec::serde_sig")]
    pub signature: [u8; 64],
}

/// Why a node record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Bytes do not decode as a canonical record.
    #[error("malformed node record")]
    Malformed,
    /// The record speaks a protocol version we do not.
    #[error("unsupported record version")]
    WrongVersion,
    /// `id` is not BLAKE3(public_key).
    #[error("node id does not match public key")]
    IdMismatch,
    /// The signature does not verify.
    #[error("bad node record signature")]
    BadSignature,
    /// More addresses than allowed.
    #[error("too many addresses in node record")]
    TooManyAddrs,
    /// An address is unusable (port 0 or unspecified IP).
    #[error("unusable address in node record")]
    BadAddr,
    /// Not newer than the record already held.
    #[error("node record is not newer than the one held")]
    Stale,
}

impl NodeRecord {
    /// The bytes the signature covers: domain ‖ encoding of all fields but the signature.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        let enc = codec::encode(self)?;
        let body = enc.get(..enc.len().saturating_sub(64)).unwrap_or(&[]);
        let mut out = Vec::with_capacity(RECORD_SIGNATURE_DOMAIN.len() + body.len());
        out.extend_from_slice(RECORD_SIGNATURE_DOMAIN);
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Full verification (§3.4): version, id/key match, address sanity, signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        if self.version != PROTOCOL_VERSION {
            return Err(RecordError::WrongVersion);
        }
        if NodeId::from_public_key(&self.public_key) != self.id {
            return Err(RecordError::IdMismatch);
        }
        if self.addrs.iter().any(|a| !a.is_usable()) {
            return Err(RecordError::BadAddr);
        }
        let msg = self.signed_bytes().map_err(|_| RecordError::Malformed)?;
        if !verify_strict(&self.public_key, &msg, &self.signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(())
    }

    /// Decodes (canonically) and verifies a record.
    pub fn decode_verified(bytes: &[u8]) -> Result<NodeRecord, RecordError> {
        let rec: NodeRecord = codec::decode(bytes).map_err(|_| RecordError::Malformed)?;
        rec.verify()?;
        Ok(rec)
    }

    /// Whether this (verified) record should replace `held`: same node, strictly higher seq.
    pub fn supersedes(&self, held: &NodeRecord) -> Result<(), RecordError> {
        if self.id != held.id {
            return Err(RecordError::IdMismatch);
        }
        if self.seq <= held.seq {
            return Err(RecordError::Stale);
        }
        Ok(())
    }

    /// The first address usable from a socket of the given family, if any.
    pub fn addr_for(&self, ipv6: bool) -> Option<std::net::SocketAddr> {
        self.addrs.iter().map(|a| a.to_socket_addr()).find(|a| a.is_ipv6() == ipv6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(n: u8) -> Identity {
        Identity::from_seed([n; 32])
    }

    #[test]
    fn id_is_blake3_of_public_key() {
        let i = ident(1);
        assert_eq!(i.id().0, *blake3::hash(&i.public_key()).as_bytes());
    }

    #[test]
    fn distance_laws() {
        let a = ident(1).id();
        let b = ident(2).id();
        assert_eq!(a.distance(&a).leading_zeros(), 256);
        assert_eq!(a.distance(&b), b.distance(&a));
        assert!(a.distance(&b).leading_zeros() < 256);
    }

    #[test]
    fn record_roundtrip_and_verify() {
        let i = ident(7);
        let rec = i.make_record(3, 1, &[WireAddr::V4([127, 0, 0, 1], 4000)]).unwrap();
        rec.verify().unwrap();
        let bytes = codec::encode(&rec).unwrap();
        assert_eq!(NodeRecord::decode_verified(&bytes).unwrap(), rec);
    }

    #[test]
    fn record_tampering_is_refused() {
        let i = ident(7);
        let rec = i.make_record(3, 1, &[WireAddr::V4([127, 0, 0, 1], 4000)]).unwrap();
        let mut r = rec.clone();
        r.seq = 4;
        assert_eq!(r.verify(), Err(RecordError::BadSignature));
        let mut r = rec.clone();
        r.id = ident(8).id();
        assert_eq!(r.verify(), Err(RecordError::IdMismatch));
        let mut r = rec.clone();
        r.version = 2;
        assert_eq!(r.verify(), Err(RecordError::WrongVersion));
        let r = i.make_record(3, 1, &[WireAddr::V4([127, 0, 0, 1], 0)]).unwrap();
        assert_eq!(r.verify(), Err(RecordError::BadAddr));
    }

    #[test]
    fn newer_seq_wins() {
        let i = ident(7);
        let old = i.make_record(3, 0, &[]).unwrap();
        let new = i.make_record(4, 0, &[]).unwrap();
        assert!(new.supersedes(&old).is_ok());
        assert_eq!(old.supersedes(&new), Err(RecordError::Stale));
        assert_eq!(old.supersedes(&old), Err(RecordError::Stale));
        let other = ident(8).make_record(9, 0, &[]).unwrap();
        assert_eq!(other.supersedes(&old), Err(RecordError::IdMismatch));
    }

    #[test]
    fn node_id_parse() {
        let id = ident(3).id();
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert!("zz".parse::<NodeId>().is_err());
    }
}
