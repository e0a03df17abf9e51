//! The agents' wire formats (wire-spec §14): announcements, messages between agents, proposals,
//! votes, certificates, equivocation evidence and knowledge indexes.
//!
//! Every type here is decoded canonically with [`decode`] (postcard, no trailing bytes, and the
//! bytes must re-encode identically), with every length checked against its cap before anything
//! is allocated. Signed bytes start with a domain string, so no signature made for one purpose
//! verifies for another.

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::{Identity, verify_strict};
use suprnova_dht::wire::WireAddr;
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedString, BoundedVec};
use suprnova_mesh::simplex::Sig;

/// An agent's id: its ed25519 public key.
pub type AgentId = [u8; 32];
/// A 32-byte hash.
pub type Digest = [u8; 32];

/// Longest agent kind, bytes.
pub const MAX_KIND: usize = 16;
/// Longest capability name, bytes.
pub const MAX_CAPABILITY: usize = 24;
/// Most capabilities one agent announces.
pub const MAX_CAPABILITIES: usize = 8;
/// Most contact addresses in an announcement.
pub const MAX_ADDRS: usize = 2;
/// Largest encoded announcement (it is a DHT set entry's value, wire-spec §7.3).
pub const MAX_ANNOUNCEMENT: usize = suprnova_dht::wire::limits::MAX_SET_VALUE_LEN;
/// Largest message body between agents, bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Most eligible voters of one proposal.
pub const MAX_VOTERS: usize = 512;
/// Largest proposal body, bytes.
pub const MAX_PROPOSAL_BODY: usize = 4096;
/// Largest vote choice, bytes.
pub const MAX_CHOICE: usize = 64;
/// Longest knowledge domain or item name, bytes.
pub const MAX_NAME: usize = 64;
/// Most items in one knowledge index.
pub const MAX_ITEMS: usize = 1024;
/// Longest swarm name, bytes.
pub const MAX_SWARM: usize = 64;

/// First byte of every agent frame inside a node's direct message or request (wire-spec §14.3),
/// so a node can host agents beside other uses of its direct messages.
pub const FRAME_MAGIC: u8 = 0xA6;

const ANNOUNCE_DOMAIN: &[u8] = b"suprnova agents v1 announce";
const MESSAGE_DOMAIN: &[u8] = b"suprnova agents v1 message";
const REPLY_DOMAIN: &[u8] = b"suprnova agents v1 reply";
const PROPOSAL_DOMAIN: &[u8] = b"suprnova agents v1 proposal";
const VOTE_DOMAIN: &[u8] = b"suprnova agents v1 vote";
const CAPABILITY_KEY: &str = "suprnova agents v1 capability";
const KIND_KEY: &str = "suprnova agents v1 kind";
const DOMAIN_KEY: &str = "suprnova agents v1 knowledge domain";
const INDEX_SALT: &str = "suprnova agents v1 knowledge index";
const PROPOSAL_ID: &str = "suprnova agents v1 proposal id";

/// Why bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a canonical encoding of the type (or over a length cap).
    #[error("malformed encoding")]
    Malformed,
    /// A field breaks a rule of its type (duplicate voters, unordered signers, …).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// The encoding is over its size limit.
    #[error("encoding too large")]
    TooLarge,
}

/// Encodes `v` with postcard.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// Decodes `bytes` canonically: no trailing bytes, and re-encoding gives the same bytes.
pub fn decode<T: Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|_| WireError::Malformed)?;
    if !rest.is_empty() || encode(&v) != bytes {
        return Err(WireError::Malformed);
    }
    Ok(v)
}

fn hash_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

// ---- announcements ----------------------------------------------------------------------------

/// What an agent offers (the roadmap's `resources`): all three are minimums a query can ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU, in thousandths of a core.
    pub cpu_milli: u32,
    /// Memory, MiB.
    pub memory_mb: u32,
    /// Storage, MiB.
    pub storage_mb: u32,
}

impl Resources {
    /// Whether every resource is at least `min`'s.
    pub fn covers(&self, min: &Resources) -> bool {
        self.cpu_milli >= min.cpu_milli && self.memory_mb >= min.memory_mb && self.storage_mb >= min.storage_mb
    }
}

/// An agent's announcement (wire-spec §14.1): the value of its entries in the capability and
/// kind sets, signed there by the agent's key as a DHT set entry, and published on the announce
/// topic inside a [`SignedAnnouncement`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The node that hosts the agent (its id).
    pub node: [u8; 32],
    /// Up to two of the node's contact addresses (so a finder needs no lookup to reach it).
    pub addrs: BoundedVec<WireAddr, MAX_ADDRS>,
    /// The agent's kind ("researcher", "pawn", …).
    pub kind: BoundedString<MAX_KIND>,
    /// Its capabilities, ascending and distinct.
    pub capabilities: BoundedVec<BoundedString<MAX_CAPABILITY>, MAX_CAPABILITIES>,
    /// What it offers.
    pub resources: Resources,
    /// Where it is, if it has a position (`z` is 0 in 2-D).
    pub position: Option<[f64; 3]>,
    /// When it was made, Unix milliseconds (also the set entries' seq).
    pub time_ms: u64,
}

impl Announcement {
    /// Checks the rules a decoder cannot: capabilities ascending and distinct, none empty, the
    /// kind not empty, a finite position, and the encoding within [`MAX_ANNOUNCEMENT`].
    pub fn check(&self) -> Result<(), WireError> {
        if self.kind.as_str().is_empty() {
            return Err(WireError::Invalid("empty kind"));
        }
        if self.capabilities.iter().any(|c| c.as_str().is_empty()) {
            return Err(WireError::Invalid("empty capability"));
        }
        if self.capabilities.windows(2).any(|w| matches!(w, [a, b] if a.as_str() >= b.as_str())) {
            return Err(WireError::Invalid("capabilities not ascending"));
        }
        if self.position.is_some_and(|p| p.iter().any(|v| !v.is_finite())) {
            return Err(WireError::Invalid("position not finite"));
        }
        if encode(self).len() > MAX_ANNOUNCEMENT {
            return Err(WireError::TooLarge);
        }
        Ok(())
    }

    /// Whether it names `capability`.
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.as_str() == capability)
    }
}

/// An announcement with its agent's signature, as published on the announce topic (§14.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedAnnouncement {
    /// The agent.
    pub agent: AgentId,
    /// The announcement.
    pub announcement: Announcement,
    /// ed25519 over `"suprnova agents v1 announce" ‖ agent ‖ postcard(announcement)`.
    pub sig: Sig,
}

impl SignedAnnouncement {
    /// `announcement` signed by `agent`.
    pub fn sign(agent: &Identity, announcement: Announcement) -> SignedAnnouncement {
        let pk = agent.public_key();
        let sig = Sig(agent.sign(&Self::signed_bytes(&pk, &announcement)));
        SignedAnnouncement { agent: pk, announcement, sig }
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(agent: &AgentId, announcement: &Announcement) -> Vec<u8> {
        hash_parts(&[ANNOUNCE_DOMAIN, agent, &encode(announcement)])
    }

    /// Whether the signature verifies and the announcement follows its rules.
    pub fn verify(&self) -> Result<(), WireError> {
        self.announcement.check()?;
        if !verify_strict(&self.agent, &Self::signed_bytes(&self.agent, &self.announcement), &self.sig.0) {
            return Err(WireError::Invalid("bad signature"));
        }
        Ok(())
    }
}

/// Buckets each capability's set is split into (a DHT set holds at most 64 writers, §7.3).
pub const BUCKETS: u8 = 16;

/// The bucket of `agent`: its key's first byte mod [`BUCKETS`].
pub fn bucket(agent: &AgentId) -> u8 {
    agent[0] % BUCKETS
}

/// The DHT key of bucket `b` of capability `capability`'s set:
/// `BLAKE3-derive_key("suprnova agents v1 capability", u8(len) ‖ capability ‖ u8(b))`.
pub fn capability_key(capability: &str, b: u8) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CAPABILITY_KEY);
    h.update(&[u8::try_from(capability.len()).unwrap_or(u8::MAX)]);
    h.update(capability.as_bytes());
    h.update(&[b]);
    *h.finalize().as_bytes()
}

/// The DHT key of bucket `b` of kind `kind`'s set (as [`capability_key`], its own domain).
pub fn kind_key(kind: &str, b: u8) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(KIND_KEY);
    h.update(&[u8::try_from(kind.len()).unwrap_or(u8::MAX)]);
    h.update(kind.as_bytes());
    h.update(&[b]);
    *h.finalize().as_bytes()
}

// ---- messages between agents ------------------------------------------------------------------

/// What an envelope is (part of its signed bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeKind {
    /// A one-way message.
    Message,
    /// A request, answered with a [`Reply`].
    Request,
    /// A broadcast to a swarm (`to` is all zeros).
    Broadcast,
}

impl EnvelopeKind {
    fn byte(self) -> u8 {
        match self {
            EnvelopeKind::Message => 0,
            EnvelopeKind::Request => 1,
            EnvelopeKind::Broadcast => 2,
        }
    }
}

/// A message from one agent to another (or to a swarm), signed by the sender (§14.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// What it is.
    pub kind: EnvelopeKind,
    /// The recipient (all zeros for a broadcast).
    pub to: AgentId,
    /// The sender.
    pub from: AgentId,
    /// The sender's counter: with `from`, names the message (replays are dropped).
    pub nonce: u64,
    /// When it was sent, Unix milliseconds.
    pub time_ms: u64,
    /// The body.
    pub body: BoundedBytes<MAX_BODY>,
    /// ed25519 by `from` over [`Envelope::signed_bytes`].
    pub sig: Sig,
}

impl Envelope {
    /// `body` from `from` to `to`, signed.
    pub fn sign(
        from: &Identity,
        kind: EnvelopeKind,
        to: AgentId,
        nonce: u64,
        time_ms: u64,
        body: &[u8],
    ) -> Result<Envelope, WireError> {
        let body = BoundedBytes::try_from(body).map_err(|_| WireError::TooLarge)?;
        let mut e = Envelope { kind, to, from: from.public_key(), nonce, time_ms, body, sig: Sig([0; 64]) };
        e.sig = Sig(from.sign(&e.signed_bytes()));
        Ok(e)
    }

    /// `"suprnova agents v1 message" ‖ u8(kind) ‖ to ‖ from ‖ u64_le(nonce) ‖ u64_le(time_ms) ‖
    /// BLAKE3(body)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        hash_parts(&[
            MESSAGE_DOMAIN,
            &[self.kind.byte()],
            &self.to,
            &self.from,
            &self.nonce.to_le_bytes(),
            &self.time_ms.to_le_bytes(),
            blake3::hash(&self.body).as_bytes(),
        ])
    }

    /// Whether the sender's signature verifies.
    pub fn verify(&self) -> bool {
        verify_strict(&self.from, &self.signed_bytes(), &self.sig.0)
    }

    /// BLAKE3 of the encoding: the id a reply names.
    pub fn id(&self) -> Digest {
        *blake3::hash(&encode(self)).as_bytes()
    }
}

/// The answer to a request envelope (§14.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The recipient answered; `sig` is its signature over
    /// `"suprnova agents v1 reply" ‖ request id ‖ BLAKE3(body)`.
    Answer {
        /// The answer.
        body: BoundedBytes<MAX_BODY>,
        /// The answering agent's signature.
        sig: Sig,
    },
    /// The node hosts no such agent.
    NoSuchAgent,
    /// The agent's mailbox is full.
    MailboxFull,
    /// The agent dropped the request without answering, or it stopped.
    Refused,
    /// The request was malformed, badly signed, stale or replayed.
    Rejected,
}

impl Reply {
    /// The bytes an answer's signature covers.
    pub fn signed_bytes(request: &Digest, body: &[u8]) -> Vec<u8> {
        hash_parts(&[REPLY_DOMAIN, request, blake3::hash(body).as_bytes()])
    }

    /// An answer by `agent` to request `request`.
    pub fn answer(agent: &Identity, request: &Digest, body: &[u8]) -> Result<Reply, WireError> {
        let sig = Sig(agent.sign(&Self::signed_bytes(request, body)));
        Ok(Reply::Answer { body: BoundedBytes::try_from(body).map_err(|_| WireError::TooLarge)?, sig })
    }
}

/// An agent frame inside a node's direct message or request: [`FRAME_MAGIC`] then postcard.
pub fn frame(e: &Envelope) -> Vec<u8> {
    let mut v = vec![FRAME_MAGIC];
    v.extend_from_slice(&encode(e));
    v
}

/// The envelope in a frame; `None` if the bytes are not an agent frame at all (no magic byte),
/// `Some(Err)` if they are one but do not decode.
pub fn unframe(bytes: &[u8]) -> Option<Result<Envelope, WireError>> {
    match bytes.split_first() {
        Some((&FRAME_MAGIC, rest)) => Some(decode(rest)),
        _ => None,
    }
}

// ---- proposals, votes, certificates -----------------------------------------------------------

/// A proposal (§14.4): its eligible voters are frozen inside it, so nobody else can vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposing agent.
    pub proposer: AgentId,
    /// The proposer's counter (distinguishes its proposals).
    pub nonce: u64,
    /// When votes close, Unix milliseconds.
    pub deadline_ms: u64,
    /// The eligible voters, strictly ascending (1 ..= 512).
    pub voters: BoundedVec<AgentId, MAX_VOTERS>,
    /// What is proposed (application bytes).
    pub body: BoundedBytes<MAX_PROPOSAL_BODY>,
    /// ed25519 by `proposer` over `"suprnova agents v1 proposal" ‖ id`.
    pub sig: Sig,
}

impl Proposal {
    /// A proposal signed by `proposer`.
    pub fn sign(
        proposer: &Identity,
        nonce: u64,
        deadline_ms: u64,
        mut voters: Vec<AgentId>,
        body: &[u8],
    ) -> Result<Proposal, WireError> {
        voters.sort_unstable();
        voters.dedup();
        let mut p = Proposal {
            proposer: proposer.public_key(),
            nonce,
            deadline_ms,
            voters: BoundedVec::try_from(voters).map_err(|_| WireError::TooLarge)?,
            body: BoundedBytes::try_from(body).map_err(|_| WireError::TooLarge)?,
            sig: Sig([0; 64]),
        };
        p.check_voters()?;
        p.sig = Sig(proposer.sign(&hash_parts(&[PROPOSAL_DOMAIN, &p.id()])));
        Ok(p)
    }

    /// `BLAKE3-derive_key("suprnova agents v1 proposal id", postcard of every field but sig)`.
    pub fn id(&self) -> Digest {
        let mut h = blake3::Hasher::new_derive_key(PROPOSAL_ID);
        h.update(&encode(&(&self.proposer, self.nonce, self.deadline_ms, &self.voters, &self.body)));
        *h.finalize().as_bytes()
    }

    fn check_voters(&self) -> Result<(), WireError> {
        if self.voters.is_empty() {
            return Err(WireError::Invalid("no voters"));
        }
        if self.voters.windows(2).any(|w| matches!(w, [a, b] if a >= b)) {
            return Err(WireError::Invalid("voters not strictly ascending"));
        }
        Ok(())
    }

    /// Checks the voter list and the proposer's signature.
    pub fn verify(&self) -> Result<(), WireError> {
        self.check_voters()?;
        if !verify_strict(&self.proposer, &hash_parts(&[PROPOSAL_DOMAIN, &self.id()]), &self.sig.0) {
            return Err(WireError::Invalid("bad signature"));
        }
        Ok(())
    }

    /// The index of `agent` among the voters.
    pub fn voter_index(&self, agent: &AgentId) -> Option<u16> {
        self.voters.binary_search(agent).ok().and_then(|i| u16::try_from(i).ok())
    }

    /// Votes a certificate needs: strictly more than two thirds of the voters, `⌊2n/3⌋ + 1`.
    pub fn quorum(&self) -> usize {
        self.voters.len() * 2 / 3 + 1
    }
}

/// The bytes a vote signs: `"suprnova agents v1 vote" ‖ proposal id ‖ u8(len choice) ‖ choice`.
pub fn vote_bytes(proposal: &Digest, choice: &[u8]) -> Vec<u8> {
    hash_parts(&[VOTE_DOMAIN, proposal, &[u8::try_from(choice.len()).unwrap_or(u8::MAX)], choice])
}

/// One voter's signed choice (§14.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The proposal's id.
    pub proposal: Digest,
    /// The voter's index in the proposal's voter list.
    pub voter: u16,
    /// The choice (application bytes, e.g. `yes`, or a chess move).
    pub choice: BoundedBytes<MAX_CHOICE>,
    /// ed25519 by the voter over [`vote_bytes`].
    pub sig: Sig,
}

impl Vote {
    /// `voter`'s vote for `choice` on `proposal`; `None` if it is not eligible or the choice is
    /// too long.
    pub fn sign(voter: &Identity, proposal: &Proposal, choice: &[u8]) -> Option<Vote> {
        let index = proposal.voter_index(&voter.public_key())?;
        let id = proposal.id();
        let sig = Sig(voter.sign(&vote_bytes(&id, choice)));
        Some(Vote { proposal: id, voter: index, choice: BoundedBytes::try_from(choice).ok()?, sig })
    }
}

/// A quorum certificate (§14.4): strictly more than 2/3 of the eligible voters signed one
/// choice. It carries the proposal, so anyone checks it offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The proposal (with its frozen voter list).
    pub proposal: Proposal,
    /// The choice.
    pub choice: BoundedBytes<MAX_CHOICE>,
    /// `(voter index, signature)`, strictly ascending indices.
    pub signers: BoundedVec<(u16, Sig), MAX_VOTERS>,
}

impl Certificate {
    /// Checks the proposal's signature, the signer list (ascending, in range, at least the
    /// quorum) and every signature, in one batch.
    pub fn verify(&self) -> Result<(), WireError> {
        self.proposal.verify()?;
        if self.signers.windows(2).any(|w| matches!(w, [(a, _), (b, _)] if a >= b)) {
            return Err(WireError::Invalid("signers not strictly ascending"));
        }
        if self.signers.len() < self.proposal.quorum() {
            return Err(WireError::Invalid("below quorum"));
        }
        let id = self.proposal.id();
        let msg = vote_bytes(&id, &self.choice);
        let mut keys = Vec::with_capacity(self.signers.len());
        for (i, _) in self.signers.iter() {
            keys.push(*self.proposal.voters.get(usize::from(*i)).ok_or(WireError::Invalid("signer out of range"))?);
        }
        let sigs: Vec<[u8; 64]> = self.signers.iter().map(|(_, s)| s.0).collect();
        let msgs: Vec<&[u8]> = keys.iter().map(|_| msg.as_slice()).collect();
        if crate::batch::verify(&msgs, &sigs, &keys).is_err() {
            return Err(WireError::Invalid("bad signature"));
        }
        Ok(())
    }
}

/// Self-proving equivocation (§14.4): one voter signed two different choices on one proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The proposal's id.
    pub proposal: Digest,
    /// The voter's key.
    pub voter: AgentId,
    /// One signed choice.
    pub a: (BoundedBytes<MAX_CHOICE>, Sig),
    /// Another, different, signed choice.
    pub b: (BoundedBytes<MAX_CHOICE>, Sig),
}

impl Evidence {
    /// Whether the two choices differ and both signatures verify.
    pub fn verify(&self) -> bool {
        self.a.0 != self.b.0
            && verify_strict(&self.voter, &vote_bytes(&self.proposal, &self.a.0), &self.a.1.0)
            && verify_strict(&self.voter, &vote_bytes(&self.proposal, &self.b.0), &self.b.1.0)
    }
}

/// What travels on the votes topic (§14.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteWire {
    /// A new proposal.
    Proposal(Proposal),
    /// A vote.
    Vote(Vote),
    /// A certificate someone formed.
    Certificate(Certificate),
    /// Proof that a voter equivocated.
    Evidence(Evidence),
}

// ---- knowledge --------------------------------------------------------------------------------

/// One item of knowledge: a named blob (weights, memories, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its name within the domain.
    pub name: BoundedString<MAX_NAME>,
    /// Its blob hash (wire-spec §12.5).
    pub blob: [u8; 32],
    /// Its size, bytes.
    pub size: u64,
}

/// An agent's knowledge in one domain, version `version` (§14.5). Stored as a blob; the agent's
/// mutable record names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The agent.
    pub agent: AgentId,
    /// The domain.
    pub domain: BoundedString<MAX_NAME>,
    /// The version (also the mutable record's seq).
    pub version: u64,
    /// The items, names strictly ascending.
    pub items: BoundedVec<Item, MAX_ITEMS>,
}

impl Index {
    /// Checks that item names are strictly ascending.
    pub fn check(&self) -> Result<(), WireError> {
        if self.items.windows(2).any(|w| matches!(w, [a, b] if a.name.as_str() >= b.name.as_str())) {
            return Err(WireError::Invalid("items not strictly ascending"));
        }
        Ok(())
    }

    /// Total size of the items.
    pub fn total_size(&self) -> u64 {
        self.items.iter().fold(0u64, |a, i| a.saturating_add(i.size))
    }
}

/// The value of an agent's index record: where the [`Index`] blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRef {
    /// The index blob's hash.
    pub blob: [u8; 32],
    /// The index blob's size, bytes.
    pub size: u32,
    /// Items in it.
    pub items: u32,
    /// Their total size, bytes.
    pub total: u64,
}

/// The salt of `domain`'s index record (a mutable record signed by the agent, §7.2):
/// `BLAKE3-derive_key("suprnova agents v1 knowledge index", domain)`.
pub fn index_salt(domain: &str) -> [u8; 32] {
    blake3::derive_key(INDEX_SALT, domain.as_bytes())
}

/// The DHT key of the set of agents with an index in `domain`:
/// `BLAKE3-derive_key("suprnova agents v1 knowledge domain", domain)`.
pub fn domain_key(domain: &str) -> [u8; 32] {
    blake3::derive_key(DOMAIN_KEY, domain.as_bytes())
}

/// The value of an agent's entry in a domain's set: where its index is and who serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEntry {
    /// The node that hosts the agent and serves its blobs.
    pub node: [u8; 32],
    /// The index.
    pub index: IndexRef,
}

/// The answer to an [`Offer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferReply {
    /// Fetched and verified.
    Ack(Ack),
    /// Refused, with the reason.
    Refused(BoundedString<128>),
}

/// A request body the runtime answers itself (§14.5): an agent offers its index to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The domain.
    pub domain: BoundedString<MAX_NAME>,
    /// The offering agent's index record value.
    pub index: IndexRef,
    /// The index's version.
    pub version: u64,
}

/// What the receiver of an [`Offer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    /// Items fetched.
    pub fetched: u32,
    /// Items it already held.
    pub skipped: u32,
    /// Bytes fetched.
    pub bytes: u64,
}

/// The body of a runtime-level request (first byte of an envelope body after [`SYSTEM_TAG`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum System {
    /// A knowledge offer.
    Offer(Offer),
}

/// An envelope body that starts with these bytes is for the runtime, not the agent.
pub const SYSTEM_TAG: &[u8] = b"\x00snrt";

/// `s` as a bounded string; `None` if too long.
pub fn bounded<const N: usize>(s: &str) -> Option<BoundedString<N>> {
    (s.len() <= N).then(|| BoundedString::truncated(s))
}
