//! The core's interface: its tunables, inputs, outputs and counters.

use super::*;

/// Tunables.
#[derive(Clone, Debug)]
pub struct Config {
    /// The paper's 3Δ: how long a member waits at a height before voting ⊥. Also the interval
    /// at which it re-sends its votes while stuck at a height.
    pub timeout: Duration,
    /// Whether every member forwards each block notarisation it assembles (the paper's rule,
    /// for point-to-point links where a member may have missed votes). Off, only the leader of
    /// the next height forwards a block's notarisation (⊥ notarisations, signatures only, are
    /// forwarded by all): the `net` driver runs this way, because over the mesh topic every
    /// forward is a broadcast of the whole block to everyone, and n of them per height made
    /// 16 members 4× slower. Re-sends at each timeout still carry the notarisation of the
    /// height below.
    pub forward_notarizations: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { timeout: Duration::from_millis(500), forward_notarizations: true }
    }
}

/// Inputs.
#[derive(Clone, Debug)]
pub enum In {
    /// A message from the network (authenticated by its own signatures, not by who relayed it).
    Message(Message),
    /// The application's payload and body for our proposal at `height` (answers
    /// `Out::Propose`).
    Payload {
        /// Height asked for.
        height: u64,
        /// The payload (hashed into the digest).
        payload: Vec<u8>,
        /// The body (committed through the payload).
        body: Vec<u8>,
    },
    /// The application's verdict on a proposal (answers `Out::Verify`).
    Verified {
        /// Height.
        height: u64,
        /// The block.
        digest: Digest,
        /// Whether its payload is valid on its parent.
        valid: bool,
    },
}

/// Outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Send to every other member.
    Broadcast(Message),
    /// We lead `height`: the application should build a payload on `parent` and answer with
    /// `In::Payload`.
    Propose {
        /// Height.
        height: u64,
        /// Parent block (the mesh id for the genesis).
        parent: Digest,
        /// Its height.
        parent_height: u64,
    },
    /// Check this proposal's payload on its parent and answer with `In::Verified`.
    Verify {
        /// The block's digest.
        digest: Digest,
        /// The block.
        proposal: Proposal,
    },
    /// A block is final, in height order. `certificate` is set for the block that gathered the
    /// finalize quorum; its ancestors, final with it, carry `None` (their descendant's
    /// certificate and the parent links prove them).
    Finalized {
        /// The block.
        proposal: Proposal,
        /// Its digest.
        digest: Digest,
        /// The quorum's certificate, for the block that has one.
        certificate: Option<Certificate>,
    },
    /// The chain jumped past blocks we never saw (`from` ..= `to` heights): fetch them elsewhere.
    Gap {
        /// First missing height.
        from: u64,
        /// Last.
        to: u64,
    },
    /// A member equivocated.
    Evidence(Evidence),
    /// With the guard on (`Simplex::guard`): record durably that we may sign up to `up_to`,
    /// then call `Simplex::reserved(up_to)`.
    Reserve {
        /// Highest height the reservation covers.
        up_to: u64,
    },
}

/// Inputs dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Signer index not a member.
    pub not_member: u64,
    /// A signature did not verify.
    pub bad_signature: u64,
    /// A proposal from a member that does not lead that height.
    pub wrong_leader: u64,
    /// For a height already finalised.
    pub old: u64,
    /// More than `MAX_AHEAD` heights ahead of ours.
    pub too_far_ahead: u64,
    /// A proposal that breaks the chain rule or that the application refused.
    pub invalid_proposal: u64,
    /// A certificate or notarisation that does not verify.
    pub bad_certificate: u64,
    /// Already had it.
    pub duplicate: u64,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Heights entered.
    pub heights: u64,
    /// Blocks finalised.
    pub finalized: u64,
    /// Heights that ended with ⊥ notarised.
    pub dummies: u64,
    /// Timeouts (⊥ votes we signed).
    pub timeouts: u64,
    /// Equivocations seen.
    pub equivocations: u64,
    /// Drops by reason.
    pub drops: Drops,
}
