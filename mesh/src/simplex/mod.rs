//! Agreement on every round: Simplex consensus, as a sans-IO state machine.
//!
//! The protocol is Simplex (Benjamin Y. Chan and Rafael Pass, "Simplex Consensus: A Simple and Fast
//! Consensus Protocol", TCC 2023, <https://eprint.iacr.org/2023/463>). It is safe with any message
//! delays while fewer than a third of the `n` members are byzantine (f < n/3), and it finalises a
//! block in three message delays once the network is synchronous and the leader honest. We follow
//! the paper's rules; the only liberties are bookkeeping (bounded buffers, re-sending on timeout,
//! naming the block in the finalize vote) that do not change what is signed or when.
//!
//! Heights h = 1, 2, … each have a leader, `leader(h)`, drawn from a hash of the mesh id and h.
//! At every height a member, in this order of events:
//!
//! 1. **Propose.** On entering h the leader proposes a block that extends the *notarised chain*:
//!    its parent is a notarised block at some height p < h (or the genesis, p = 0) and every height
//!    strictly between p and h has a notarised *dummy* block. The proposal's signature is also the
//!    leader's vote.
//! 2. **Vote.** On the first valid proposal of `leader(h)` for h (the chain rule above holds and
//!    the application accepts the payload), the member signs `vote(h, block)`.
//! 3. **Time out.** If the member is still at h when its timer (`Config::timeout`, the paper's
//!    3Δ) fires, it signs `vote(h, ⊥)`, a vote for the dummy block.
//! 4. **Move on.** Once it sees a *notarisation* for h (q = n − ⌊(n−1)/3⌋ votes for one block, or
//!    for ⊥), it forwards the notarisation, enters h + 1 and, if it did not vote ⊥ at h and the
//!    block (not ⊥) is notarised, signs `finalize(h, block)`.
//! 5. **Finalise.** q finalize votes for (h, block) finalise that block and every ancestor. The
//!    q signatures are its *certificate*, checkable by anyone who knows the member keys.
//!
//! Why it is safe (the paper's argument, in brief): q finalize votes at h mean at least f + 1
//! honest members did not vote ⊥ at h, so ⊥ cannot be notarised at h; two notarisations at h for
//! different blocks would need an honest member to vote for both, which it never does; so every
//! notarised chain reaching past h runs through the finalised block.
//!
//! A member that signs two different blocks for one height (votes or finalize votes) produces
//! self-proving [`Evidence`]. Nothing here touches a socket, a clock or the OS: the driver feeds
//! `(now, input)` and polls outputs.

mod io;
mod votes;

pub use io::{Config, Drops, In, Out, Stats};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::{Identity, verify_strict};
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedVec};

/// A 32-byte BLAKE3 digest.
pub type Digest = [u8; 32];

/// Most members a mesh may have.
pub const MAX_MEMBERS: usize = 256;
/// Largest proposal payload (the application's header, hashed into the block digest), bytes.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest proposal body (the application's bulk, committed through the payload), bytes.
pub const MAX_BODY: usize = 256 * 1024;
/// Heights ahead of ours whose votes are kept (later ones are dropped and counted).
pub const MAX_AHEAD: u64 = 32;

const VOTE_DOMAIN: &[u8] = b"suprnova mesh v1 vote";
const FINALIZE_DOMAIN: &[u8] = b"suprnova mesh v1 finalize";
const BLOCK_DOMAIN: &str = "suprnova mesh v1 block";
const LEADER_DOMAIN: &str = "suprnova mesh v1 leader";

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Sig(#[serde(with = "suprnova_dht::wire::serde_sig")] pub [u8; 64]);

/// A block proposal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Proposal {
    /// Its height.
    pub height: u64,
    /// Height of the parent block (0 = the genesis).
    pub parent_height: u64,
    /// Digest of the parent block (the mesh id for the genesis).
    pub parent: Digest,
    /// The application's header, hashed into the digest (for the mesh: round, state hash and
    /// the hash of the inputs).
    pub payload: BoundedBytes<MAX_PAYLOAD>,
    /// The application's bulk (for the mesh: the inputs). Not part of the digest: the
    /// application commits to it inside `payload` and checks it before a vote, so a block's
    /// certificate can be checked from the header alone.
    pub body: BoundedBytes<MAX_BODY>,
}

impl Proposal {
    /// The block's digest: BLAKE3 derive_key(block domain) over mesh id ‖ height ‖ parent height
    /// ‖ parent ‖ BLAKE3(payload), integers little-endian.
    pub fn digest(&self, mesh: &Digest) -> Digest {
        let mut h = blake3::Hasher::new_derive_key(BLOCK_DOMAIN);
        h.update(mesh);
        h.update(&self.height.to_le_bytes());
        h.update(&self.parent_height.to_le_bytes());
        h.update(&self.parent);
        h.update(blake3::hash(self.payload.as_slice()).as_bytes());
        *h.finalize().as_bytes()
    }
}

/// What a vote is for.
pub type Choice = Option<Digest>;

/// The bytes a vote signs: domain ‖ mesh id ‖ height ‖ 0 (⊥) or 1 ‖ digest.
pub fn vote_message(mesh: &Digest, height: u64, choice: &Choice) -> Vec<u8> {
    let mut m = Vec::with_capacity(VOTE_DOMAIN.len() + 32 + 8 + 33);
    m.extend_from_slice(VOTE_DOMAIN);
    m.extend_from_slice(mesh);
    m.extend_from_slice(&height.to_le_bytes());
    match choice {
        None => m.push(0),
        Some(d) => {
            m.push(1);
            m.extend_from_slice(d);
        }
    }
    m
}

/// The bytes a finalize vote signs: domain ‖ mesh id ‖ height ‖ digest.
pub fn finalize_message(mesh: &Digest, height: u64, digest: &Digest) -> Vec<u8> {
    let mut m = Vec::with_capacity(FINALIZE_DOMAIN.len() + 32 + 8 + 32);
    m.extend_from_slice(FINALIZE_DOMAIN);
    m.extend_from_slice(mesh);
    m.extend_from_slice(&height.to_le_bytes());
    m.extend_from_slice(digest);
    m
}

/// Signatures of members, by member index, ascending and distinct.
pub type Signers = BoundedVec<(u16, Sig), MAX_MEMBERS>;

/// Messages between members.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// A leader's proposal; `sig` is its vote for the block.
    Propose {
        /// The block.
        proposal: Proposal,
        /// The leader's vote signature.
        sig: Sig,
    },
    /// A vote for a block or for ⊥.
    Vote {
        /// Height.
        height: u64,
        /// The block's digest, or `None` for ⊥.
        choice: Choice,
        /// Member index.
        signer: u16,
        /// Signature over `vote_message`.
        sig: Sig,
    },
    /// A finalize vote.
    Finalize {
        /// Height.
        height: u64,
        /// The notarised block.
        digest: Digest,
        /// Member index.
        signer: u16,
        /// Signature over `finalize_message`.
        sig: Sig,
    },
    /// q votes for one choice at one height, with the block when it is not ⊥.
    Notarization {
        /// Height.
        height: u64,
        /// The notarised block (`None`: ⊥).
        proposal: Option<Proposal>,
        /// The votes.
        votes: Signers,
    },
    /// q finalize votes for one block: its certificate, with the block.
    Finalization {
        /// The finalised block.
        proposal: Proposal,
        /// The finalize votes.
        votes: Signers,
    },
}

/// A finalised block's proof: q finalize signatures over (mesh, height, digest).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Certificate {
    /// Height.
    pub height: u64,
    /// The block's digest.
    pub digest: Digest,
    /// q member signatures over `finalize_message`.
    pub votes: Signers,
}

/// Why a certificate does not verify.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CertificateError {
    /// Fewer than q distinct members signed.
    #[error("{got} of the {need} signatures needed")]
    TooFew {
        /// Distinct valid signers.
        got: usize,
        /// Quorum.
        need: usize,
    },
    /// A signer index is not a member, repeats, or is out of order.
    #[error("signer {0} is not a member or repeats")]
    BadSigner(u16),
    /// A signature does not verify.
    #[error("signature of member {0} does not verify")]
    BadSignature(u16),
}

/// The members of a mesh, in genesis order, and what follows from them.
#[derive(Clone, Debug)]
pub struct Members {
    keys: Vec<[u8; 32]>,
}

impl Members {
    /// Members with these ed25519 keys (1 ..= `MAX_MEMBERS`, distinct).
    pub fn new(keys: Vec<[u8; 32]>) -> Option<Members> {
        let distinct: BTreeSet<&[u8; 32]> = keys.iter().collect();
        (!keys.is_empty() && keys.len() <= MAX_MEMBERS && distinct.len() == keys.len()).then_some(Members { keys })
    }
    /// n.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// Never: a mesh has at least one member.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Faults tolerated: f = ⌊(n − 1) / 3⌋.
    pub fn faults(&self) -> usize {
        self.keys.len().saturating_sub(1) / 3
    }
    /// Quorum: q = n − f, which is more than 2n/3.
    pub fn quorum(&self) -> usize {
        self.keys.len() - self.faults()
    }
    /// Key of member `i`.
    pub fn key(&self, i: u16) -> Option<&[u8; 32]> {
        self.keys.get(usize::from(i))
    }
    /// Index of `key`.
    pub fn index_of(&self, key: &[u8; 32]) -> Option<u16> {
        self.keys.iter().position(|k| k == key).and_then(|i| u16::try_from(i).ok())
    }
    /// The leader of `height` in mesh `mesh`.
    pub fn leader(&self, mesh: &Digest, height: u64) -> u16 {
        let mut h = blake3::Hasher::new_derive_key(LEADER_DOMAIN);
        h.update(mesh);
        h.update(&height.to_le_bytes());
        let x = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(x.as_bytes().get(..8).unwrap_or(&[0; 8]));
        u16::try_from(u64::from_le_bytes(b) % self.keys.len().max(1) as u64).unwrap_or(0)
    }

    /// Checks `votes` as q distinct members' signatures over `msg`.
    pub fn check(&self, msg: &[u8], votes: &Signers) -> Result<(), CertificateError> {
        let mut last: Option<u16> = None;
        for (i, sig) in votes.iter() {
            if last.is_some_and(|l| *i <= l) {
                return Err(CertificateError::BadSigner(*i));
            }
            last = Some(*i);
            let key = self.key(*i).ok_or(CertificateError::BadSigner(*i))?;
            if !verify_strict(key, msg, &sig.0) {
                return Err(CertificateError::BadSignature(*i));
            }
        }
        if votes.len() < self.quorum() {
            return Err(CertificateError::TooFew { got: votes.len(), need: self.quorum() });
        }
        Ok(())
    }

    /// Verifies a certificate for mesh `mesh`.
    pub fn verify_certificate(&self, mesh: &Digest, c: &Certificate) -> Result<(), CertificateError> {
        self.check(&finalize_message(mesh, c.height, &c.digest), &c.votes)
    }
}

/// Self-proving misbehaviour: one member signed two different blocks for one height.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Evidence {
    /// The member.
    pub signer: u16,
    /// The height.
    pub height: u64,
    /// Finalize votes (true) or votes (false).
    pub finalize: bool,
    /// The two blocks and signatures.
    pub a: (Digest, Sig),
    /// The second.
    pub b: (Digest, Sig),
}

impl Evidence {
    /// Whether both signatures verify and name different blocks (proof of equivocation).
    pub fn verify(&self, mesh: &Digest, members: &Members) -> bool {
        let Some(key) = members.key(self.signer) else { return false };
        let msg = |d: &Digest| {
            if self.finalize {
                finalize_message(mesh, self.height, d)
            } else {
                vote_message(mesh, self.height, &Some(*d))
            }
        };
        self.a.0 != self.b.0
            && verify_strict(key, &msg(&self.a.0), &self.a.1.0)
            && verify_strict(key, &msg(&self.b.0), &self.b.1.0)
    }
}

/// What is known about one height.
#[derive(Debug, Default)]
struct Slot {
    /// The leader's proposal (the first valid one) and its digest.
    proposal: Option<(Digest, Proposal)>,
    /// Every block seen for this height by digest (from proposals and notarisations).
    blocks: BTreeMap<Digest, Proposal>,
    /// Votes by choice, then signer.
    votes: BTreeMap<Choice, BTreeMap<u16, Sig>>,
    /// Each signer's first block vote (to detect equivocation).
    block_vote_of: BTreeMap<u16, (Digest, Sig)>,
    /// Finalize votes by block, then signer.
    finalizes: BTreeMap<Digest, BTreeMap<u16, Sig>>,
    finalize_of: BTreeMap<u16, (Digest, Sig)>,
    /// Notarised choices.
    notarized: BTreeSet<Choice>,
    /// Our own votes here.
    voted_block: bool,
    voted_dummy: bool,
    /// Asked the application to verify this digest.
    verifying: Option<Digest>,
    /// The parent we asked the application to build on (`Out::Propose`).
    proposing: Option<(u64, Digest)>,
    evidence_sent: BTreeSet<(u16, bool)>,
}

/// The Simplex state machine of one member (or of an observer, which only follows).
pub struct Simplex {
    cfg: Config,
    mesh: Digest,
    members: Members,
    me: Option<(u16, Identity)>,
    height: u64,
    deadline: Instant,
    slots: BTreeMap<u64, Slot>,
    /// Highest finalised block: (height, digest).
    finalized: (u64, Digest),
    out: VecDeque<Out>,
    stats: Stats,
    /// We sign only at heights in `(sign_floor, sign_ceiling]` (see `guard`).
    sign_floor: u64,
    sign_ceiling: u64,
    /// Heights reserved per `Out::Reserve` (0: no guard, sign anywhere above the floor).
    reserve_step: u64,
}

impl Simplex {
    /// A member (`identity` is one of `members`) or an observer (`None`) of mesh `mesh`, at
    /// height 1 with the genesis finalised.
    pub fn new(cfg: Config, mesh: Digest, members: Members, identity: Option<Identity>, now: Instant) -> Self {
        let me = identity.and_then(|id| members.index_of(&id.public_key()).map(|i| (i, id)));
        let mut s = Simplex {
            deadline: now + cfg.timeout,
            cfg,
            mesh,
            members,
            me,
            height: 0,
            slots: BTreeMap::new(),
            finalized: (0, mesh),
            out: VecDeque::new(),
            stats: Stats::default(),
            sign_floor: 0,
            sign_ceiling: u64::MAX,
            reserve_step: 0,
        };
        s.enter(now, 1);
        s
    }

    /// Guards against signing twice after a restart. A member must never sign two different
    /// things at one height, yet a restarted one remembers nothing of what it signed. With the
    /// guard on, it signs only at heights above `signed_up_to` (what the previous run reserved,
    /// read from durable storage) and within a reservation: whenever its height comes within
    /// `step / 2` of the reserved ceiling it emits `Out::Reserve { up_to }`, and signs past the
    /// old ceiling only after the driver has written `up_to` durably and called `reserved`. A
    /// restart thus costs at most `step` heights of this member's votes, never safety.
    pub fn guard(&mut self, signed_up_to: u64, step: u64) {
        self.sign_floor = signed_up_to;
        self.sign_ceiling = signed_up_to;
        self.reserve_step = step.max(2);
        self.maybe_reserve();
    }

    /// The driver has durably recorded a reservation up to `up_to` (answers `Out::Reserve`).
    pub fn reserved(&mut self, up_to: u64) {
        self.sign_ceiling = self.sign_ceiling.max(up_to);
    }

    fn maybe_reserve(&mut self) {
        if self.reserve_step == 0 || self.me.is_none() {
            return;
        }
        let base = self.height.max(self.sign_floor);
        if base.saturating_add(self.reserve_step / 2) >= self.sign_ceiling {
            self.out.push_back(Out::Reserve { up_to: base.saturating_add(self.reserve_step) });
        }
    }

    /// Starts after a finalised block known from elsewhere (a restart or a late join that
    /// fetched the chain): `height` and `digest` of that block.
    pub fn resume_after(&mut self, now: Instant, height: u64, digest: Digest) {
        if height <= self.finalized.0 {
            return;
        }
        self.finalized = (height, digest);
        self.slots.retain(|h, _| *h >= height);
        let slot = self.slots.entry(height).or_default();
        slot.notarized.insert(Some(digest));
        if self.height <= height {
            self.enter(now, height.saturating_add(1));
        }
    }

    /// Current height.
    pub fn height(&self) -> u64 {
        self.height
    }
    /// Highest finalised (height, digest).
    pub fn finalized(&self) -> (u64, Digest) {
        self.finalized
    }
    /// Heights with state held (bounded by the heights since the last finalised block plus
    /// `MAX_AHEAD`).
    pub fn slots_held(&self) -> usize {
        self.slots.len()
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// The members.
    pub fn members(&self) -> &Members {
        &self.members
    }
    /// A block this core holds (proposed, or carried by a notarisation or finalisation) at
    /// `height` with digest `digest`.
    pub fn block(&self, height: u64, digest: &Digest) -> Option<&Proposal> {
        self.slots.get(&height)?.blocks.get(digest)
    }
    /// Next output.
    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }
    /// When `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    /// Our index, if we are a member.
    fn my_index(&self) -> Option<u16> {
        self.me.as_ref().map(|(i, _)| *i)
    }

    /// Signs `msg` for `height`, if we are a member and the guard allows that height.
    fn sign(&self, height: u64, msg: &[u8]) -> Option<(u16, Sig)> {
        if height <= self.sign_floor || height > self.sign_ceiling {
            return None;
        }
        self.me.as_ref().map(|(i, id)| (*i, Sig(id.sign(msg))))
    }

    fn enter(&mut self, now: Instant, height: u64) {
        if height <= self.height {
            return;
        }
        self.height = height;
        self.stats.heights += 1;
        self.deadline = now + self.cfg.timeout;
        // Forget what no valid chain can still need: heights below the finalised block, and
        // buffered votes for heights now too far ahead are bounded by MAX_AHEAD on arrival.
        let keep = self.finalized.0;
        self.slots.retain(|h, _| *h >= keep);
        // Heights two behind keep only what the chain rule and late finalize votes need.
        for (_, slot) in self.slots.range_mut(..height.saturating_sub(2)) {
            slot.votes.clear();
            slot.block_vote_of.clear();
            let notarized = &slot.notarized;
            slot.blocks.retain(|d, _| notarized.contains(&Some(*d)));
            slot.proposal = None;
        }
        self.maybe_reserve();
        self.ask_proposal(height);
        // A proposal that arrived early for this height can be voted on now.
        if let Some((d, p)) = self.slots.get(&height).and_then(|s| s.proposal.clone()) {
            self.consider(d, p);
        }
    }

    /// If we lead `height`, asks the application for a payload on the current chain tip (again
    /// if the tip moved since we last asked).
    fn ask_proposal(&mut self, height: u64) {
        if self.my_index().is_none_or(|i| i != self.members.leader(&self.mesh, height)) || height != self.height {
            return;
        }
        let Some((ph, parent)) = self.chain_tip(height) else { return };
        let slot = self.slots.entry(height).or_default();
        if slot.voted_block || slot.proposing == Some((ph, parent)) {
            return;
        }
        slot.proposing = Some((ph, parent));
        self.out.push_back(Out::Propose { height, parent, parent_height: ph });
    }

    /// The notarised block a proposal at `height` must extend: walk down through notarised ⊥s.
    fn chain_tip(&self, height: u64) -> Option<(u64, Digest)> {
        let mut h = height.checked_sub(1)?;
        loop {
            if h == self.finalized.0 {
                // The finalised block (or the genesis) is the floor: nothing below it counts.
                return Some(self.finalized);
            }
            let slot = self.slots.get(&h)?;
            if let Some(Some(d)) = slot.notarized.iter().find(|c| c.is_some()) {
                return Some((h, *d));
            }
            if !slot.notarized.contains(&None) {
                return None;
            }
            h = h.checked_sub(1)?;
        }
    }

    /// Whether `p` extends the notarised chain (its parent notarised, ⊥ notarised between).
    fn extends_chain(&self, p: &Proposal) -> bool {
        if p.parent_height >= p.height || p.parent_height < self.finalized.0 {
            return false;
        }
        let parent_ok = if p.parent_height == self.finalized.0 {
            p.parent == self.finalized.1
        } else {
            self.slots.get(&p.parent_height).is_some_and(|s| s.notarized.contains(&Some(p.parent)))
        };
        parent_ok
            && (p.parent_height + 1..p.height).all(|h| self.slots.get(&h).is_some_and(|s| s.notarized.contains(&None)))
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: In) {
        match input {
            In::Message(m) => self.on_message(now, m),
            In::Payload { height, payload, body } => self.on_payload(now, height, payload, body),
            In::Verified { height, digest, valid } => self.on_verified(now, height, digest, valid),
        }
    }

    fn on_payload(&mut self, now: Instant, height: u64, payload: Vec<u8>, body: Vec<u8>) {
        if height != self.height {
            return;
        }
        let Some((ph, parent)) = self.chain_tip(height) else { return };
        if self.slots.get(&height).and_then(|s| s.proposing) != Some((ph, parent)) {
            // The chain tip moved while the application built on the old one: ask again.
            self.ask_proposal(height);
            return;
        }
        let Ok(payload) = BoundedBytes::try_from(payload.as_slice()) else { return };
        let Ok(body) = BoundedBytes::try_from(body.as_slice()) else { return };
        let proposal = Proposal { height, parent_height: ph, parent, payload, body };
        let digest = proposal.digest(&self.mesh);
        let Some((i, sig)) = self.sign(height, &vote_message(&self.mesh, height, &Some(digest))) else { return };
        let slot = self.slots.entry(height).or_default();
        if slot.voted_block {
            return;
        }
        slot.voted_block = true;
        slot.proposal = Some((digest, proposal.clone()));
        slot.blocks.insert(digest, proposal.clone());
        self.out.push_back(Out::Broadcast(Message::Propose { proposal, sig }));
        self.add_vote(now, height, Some(digest), i, sig);
    }

    /// Asks the application to check a proposal for the current height, if we may vote for it.
    fn consider(&mut self, digest: Digest, p: Proposal) {
        let height = p.height;
        if height != self.height || self.my_index().is_none() || !self.extends_chain(&p) {
            return;
        }
        let slot = self.slots.entry(height).or_default();
        if slot.voted_block || slot.verifying.is_some() {
            return;
        }
        slot.verifying = Some(digest);
        self.out.push_back(Out::Verify { digest, proposal: p });
    }

    fn on_verified(&mut self, now: Instant, height: u64, digest: Digest, valid: bool) {
        let Some(slot) = self.slots.get_mut(&height) else { return };
        if slot.verifying != Some(digest) || slot.voted_block {
            return;
        }
        if !valid {
            self.stats.drops.invalid_proposal += 1;
            return;
        }
        if height != self.height {
            return;
        }
        slot.voted_block = true;
        let Some((i, sig)) = self.sign(height, &vote_message(&self.mesh, height, &Some(digest))) else { return };
        self.out.push_back(Out::Broadcast(Message::Vote { height, choice: Some(digest), signer: i, sig }));
        self.add_vote(now, height, Some(digest), i, sig);
    }

    /// Drops heights that are finalised or too far ahead; counts the reason.
    fn height_ok(&mut self, height: u64) -> bool {
        if height <= self.finalized.0 {
            self.stats.drops.old += 1;
            return false;
        }
        if height > self.height.saturating_add(MAX_AHEAD) {
            self.stats.drops.too_far_ahead += 1;
            return false;
        }
        true
    }

    /// Timer: vote ⊥ at the current height (once), and re-send our votes while stuck.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline {
            return;
        }
        self.deadline = now + self.cfg.timeout;
        let height = self.height;
        let Some(i) = self.my_index() else { return };
        let slot = self.slots.entry(height).or_default();
        if !slot.voted_dummy {
            slot.voted_dummy = true;
            self.stats.timeouts += 1;
            if let Some((_, sig)) = self.sign(height, &vote_message(&self.mesh, height, &None)) {
                self.out.push_back(Out::Broadcast(Message::Vote { height, choice: None, signer: i, sig }));
                self.add_vote(now, height, None, i, sig);
            }
            return;
        }
        // Still here a timeout later: messages were lost. Re-send our votes at this height and
        // the notarisation of the height below, which is how the others got here.
        let slot = self.slots.get(&height);
        let mine: Vec<(Choice, Sig)> = slot
            .map(|s| s.votes.iter().filter_map(|(c, v)| v.get(&i).map(|sig| (*c, *sig))).collect())
            .unwrap_or_default();
        let proposal = slot
            .and_then(|s| s.proposal.as_ref())
            .filter(|(_, p)| self.members.leader(&self.mesh, height) == i && p.height == height);
        if let Some((d, p)) = proposal
            && let Some(sig) = mine.iter().find(|(c, _)| *c == Some(*d)).map(|(_, s)| *s)
        {
            self.out.push_back(Out::Broadcast(Message::Propose { proposal: p.clone(), sig }));
        }
        for (choice, sig) in mine {
            self.out.push_back(Out::Broadcast(Message::Vote { height, choice, signer: i, sig }));
        }
        if let Some(prev) = height.checked_sub(1)
            && let Some(s) = self.slots.get(&prev)
        {
            for choice in s.notarized.iter() {
                let votes: Vec<(u16, Sig)> =
                    s.votes.get(choice).map(|v| v.iter().map(|(i, s)| (*i, *s)).collect()).unwrap_or_default();
                let proposal = choice.and_then(|d| s.blocks.get(&d).cloned());
                if (choice.is_none() || proposal.is_some()) && votes.len() >= self.members.quorum() {
                    let votes = Signers::try_from(votes).unwrap_or_default();
                    self.out.push_back(Out::Broadcast(Message::Notarization { height: prev, proposal, votes }));
                }
            }
        }
    }
}
