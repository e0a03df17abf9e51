//! Proposals and votes as a sans-IO state machine (wire-spec §14.4).
//!
//! [`Ballots`] is fed proposals, votes, certificates and evidence as they arrive (from any
//! source), with the current Unix time in milliseconds, and polled for what follows:
//!
//! - a **certificate** once strictly more than 2/3 of a proposal's eligible voters have signed one
//!   choice (the voter set is frozen in the signed proposal, so keys outside it cannot vote);
//! - **evidence** when a voter signed two different choices: both signatures, which anyone can
//!   check. The voter is excluded from that proposal and none of its votes count;
//! - **expired** at the deadline without a certificate.
//!
//! Votes are queued unverified and checked in batches when polled ([`crate::batch`]). Every
//! dropped input is counted by reason in [`VoteDrops`]. Memory is bounded: open proposals, votes
//! waiting for a proposal not yet seen, queued votes per proposal and remembered decisions all
//! have caps.
//!
//! **Safety.** Two certificates for different choices on one proposal need two sets of more than
//! 2n/3 signers, which share more than n/3 voters, all of whom signed both choices. With at most
//! a third of the voters malicious this cannot happen, and any attempt leaves evidence.

use std::collections::{BTreeMap, HashMap, VecDeque};

use suprnova_dht::wire::bounded::{BoundedBytes, BoundedVec};

use crate::wire::{Certificate, Digest, Evidence, MAX_CHOICE, Proposal, Vote, vote_bytes};

/// Bounds of a [`Ballots`].
#[derive(Clone, Debug)]
pub struct BallotConfig {
    /// Proposals open at once.
    pub max_open: usize,
    /// Votes held for proposals not seen yet.
    pub max_early: usize,
    /// Decided proposals remembered (so their late votes are recognised, not held).
    pub max_decided: usize,
    /// A proposal whose deadline is further than this in the future is refused, ms.
    pub max_horizon_ms: u64,
}

impl Default for BallotConfig {
    fn default() -> Self {
        BallotConfig { max_open: 1024, max_early: 8192, max_decided: 4096, max_horizon_ms: 10 * 60 * 1000 }
    }
}

/// Inputs dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VoteDrops {
    /// A proposal, vote, certificate or evidence whose signature does not verify.
    pub bad_signature: u64,
    /// A proposal with a bad voter list, or a deadline past or too far ahead.
    pub bad_proposal: u64,
    /// A vote whose voter index is not in the proposal's voter list (not eligible).
    pub not_voter: u64,
    /// A vote already counted (a replay).
    pub duplicate: u64,
    /// A vote from a voter excluded for equivocating.
    pub excluded: u64,
    /// A vote after the proposal's deadline (or for a decided proposal no longer held).
    pub late: u64,
    /// A vote for a proposal not seen, with the early-vote buffer full.
    pub unknown_proposal: u64,
    /// A proposal refused because `max_open` are open.
    pub too_many_open: u64,
    /// A certificate or evidence that does not check.
    pub bad_certificate: u64,
    /// A vote refused because its proposal has queued as many as it has voters, twice.
    pub flood: u64,
}

impl VoteDrops {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.bad_signature
            + self.bad_proposal
            + self.not_voter
            + self.duplicate
            + self.excluded
            + self.late
            + self.unknown_proposal
            + self.too_many_open
            + self.bad_certificate
            + self.flood
    }
}

/// How a proposal ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A certificate (formed here or received).
    Certified(Box<Certificate>),
    /// The deadline passed without one.
    Expired,
}

/// What a [`Ballots`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A proposal is decided (`formed`: the certificate was formed here, so publish it).
    Decided {
        /// The proposal's id.
        id: Digest,
        /// How.
        decision: Decision,
        /// Whether this machine formed the certificate.
        formed: bool,
    },
    /// A voter equivocated (`found`: found here, so publish it).
    Evidence {
        /// The evidence.
        evidence: Evidence,
        /// Whether this machine found it.
        found: bool,
    },
}

/// Counts of a [`Ballots`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BallotStats {
    /// Proposals accepted.
    pub proposals: u64,
    /// Votes verified and counted.
    pub votes_counted: u64,
    /// Signatures checked in batches.
    pub batch_checked: u64,
    /// Certificates formed here.
    pub certificates_formed: u64,
    /// Certificates received and accepted.
    pub certificates_received: u64,
    /// Equivocations found here.
    pub equivocations: u64,
    /// Evidence received that excluded a voter here.
    pub evidence_received: u64,
    /// Proposals that expired.
    pub expired: u64,
    /// Open now.
    pub open: u64,
    /// Drops by reason.
    pub drops: VoteDrops,
}

struct Ballot {
    proposal: Proposal,
    queued: Vec<Vote>,
    /// Verified choice per voter.
    votes: BTreeMap<u16, (BoundedBytes<MAX_CHOICE>, [u8; 64])>,
    /// Voters per choice.
    tally: HashMap<Vec<u8>, usize>,
    excluded: Vec<u16>,
    /// Certified already: kept until the deadline only to catch equivocation in late votes.
    decided: bool,
}

/// Many proposals' ballots.
pub struct Ballots {
    cfg: BallotConfig,
    open: HashMap<Digest, Ballot>,
    early: VecDeque<Vote>,
    decided: HashMap<Digest, Decision>,
    decided_order: VecDeque<Digest>,
    out: VecDeque<Output>,
    stats: BallotStats,
}

impl Ballots {
    /// An empty set of ballots.
    pub fn new(cfg: BallotConfig) -> Ballots {
        Ballots {
            cfg,
            open: HashMap::new(),
            early: VecDeque::new(),
            decided: HashMap::new(),
            decided_order: VecDeque::new(),
            out: VecDeque::new(),
            stats: BallotStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> BallotStats {
        BallotStats { open: self.open.values().filter(|b| !b.decided).count() as u64, ..self.stats }
    }

    /// The proposal `id`, if it is held (open, or certified and before its deadline).
    pub fn proposal(&self, id: &Digest) -> Option<&Proposal> {
        self.open.get(id).map(|b| &b.proposal)
    }

    /// How proposal `id` ended, if it did (and is still remembered).
    pub fn decision(&self, id: &Digest) -> Option<&Decision> {
        self.decided.get(id)
    }

    /// A proposal arrived. `Ok(true)` if it is new and open now, `Ok(false)` if already known.
    pub fn on_proposal(&mut self, now_ms: u64, p: Proposal) -> Result<bool, &'static str> {
        let id = p.id();
        if self.open.contains_key(&id) || self.decided.contains_key(&id) {
            return Ok(false);
        }
        if let Err(e) = p.verify() {
            if matches!(e, crate::wire::WireError::Invalid("bad signature")) {
                self.stats.drops.bad_signature += 1;
            } else {
                self.stats.drops.bad_proposal += 1;
            }
            return Err("invalid proposal");
        }
        if p.deadline_ms <= now_ms || p.deadline_ms > now_ms.saturating_add(self.cfg.max_horizon_ms) {
            self.stats.drops.bad_proposal += 1;
            return Err("deadline past or too far ahead");
        }
        if self.open.len() >= self.cfg.max_open {
            self.stats.drops.too_many_open += 1;
            return Err("too many open proposals");
        }
        self.stats.proposals += 1;
        let mut b = Ballot {
            proposal: p,
            queued: Vec::new(),
            votes: BTreeMap::new(),
            tally: HashMap::new(),
            excluded: vec![],
            decided: false,
        };
        // Votes that came first.
        let mut keep = VecDeque::with_capacity(self.early.len());
        for v in self.early.drain(..) {
            if v.proposal == id { b.queued.push(v) } else { keep.push_back(v) }
        }
        self.early = keep;
        self.open.insert(id, b);
        Ok(true)
    }

    /// A vote arrived (checked when polled).
    pub fn on_vote(&mut self, now_ms: u64, v: Vote) {
        let Some(b) = self.open.get_mut(&v.proposal) else {
            if self.decided.contains_key(&v.proposal) {
                self.stats.drops.late += 1;
            } else if self.early.len() >= self.cfg.max_early {
                self.stats.drops.unknown_proposal += 1;
            } else {
                self.early.push_back(v);
            }
            return;
        };
        if now_ms > b.proposal.deadline_ms {
            self.stats.drops.late += 1;
            return;
        }
        if usize::from(v.voter) >= b.proposal.voters.len() {
            self.stats.drops.not_voter += 1;
            return;
        }
        if b.excluded.contains(&v.voter) {
            self.stats.drops.excluded += 1;
            return;
        }
        if b.votes.get(&v.voter).is_some_and(|(c, s)| *c == v.choice && *s == v.sig.0) {
            self.stats.drops.duplicate += 1;
            return;
        }
        if b.queued.len() >= 2 * b.proposal.voters.len() {
            self.stats.drops.flood += 1;
            return;
        }
        b.queued.push(v);
    }

    /// A certificate arrived: if it checks, the proposal is decided (its proposal need not
    /// have been seen).
    pub fn on_certificate(&mut self, c: Certificate) {
        let id = c.proposal.id();
        if self.decided.contains_key(&id) {
            return;
        }
        if c.verify().is_err() {
            self.stats.drops.bad_certificate += 1;
            return;
        }
        self.stats.certificates_received += 1;
        // An open ballot stays until its deadline to catch equivocation in late votes.
        if let Some(b) = self.open.get_mut(&id) {
            b.decided = true;
        }
        self.decide(id, Decision::Certified(Box::new(c)), false);
    }

    /// Evidence arrived: if it checks and names a voter of an open proposal, that voter is
    /// excluded.
    pub fn on_evidence(&mut self, e: Evidence) {
        // Cheap checks first: evidence about a ballot not held, or a voter already excluded,
        // changes nothing and is not worth two signature checks.
        let Some(b) = self.open.get(&e.proposal) else { return };
        let Some(i) = b.proposal.voter_index(&e.voter) else {
            self.stats.drops.bad_certificate += 1;
            return;
        };
        if b.excluded.contains(&i) {
            return;
        }
        if !e.verify() {
            self.stats.drops.bad_certificate += 1;
            return;
        }
        if let Some(b) = self.open.get_mut(&e.proposal) {
            self.stats.evidence_received += 1;
            Self::exclude(b, i);
            self.out.push_back(Output::Evidence { evidence: e, found: false });
        }
    }

    fn exclude(b: &mut Ballot, i: u16) {
        b.excluded.push(i);
        if let Some((c, _)) = b.votes.remove(&i)
            && let Some(n) = b.tally.get_mut(c.as_slice())
        {
            *n = n.saturating_sub(1);
        }
    }

    fn decide(&mut self, id: Digest, decision: Decision, formed: bool) {
        if matches!(decision, Decision::Expired) {
            self.stats.expired += 1;
        }
        self.out.push_back(Output::Decided { id, decision: decision.clone(), formed });
        self.decided.insert(id, decision);
        self.decided_order.push_back(id);
        while self.decided_order.len() > self.cfg.max_decided {
            if let Some(old) = self.decided_order.pop_front() {
                self.decided.remove(&old);
            }
        }
    }

    /// Checks queued votes in batches, forms certificates, finds equivocations and expires
    /// proposals past their deadline. Then take the results with [`Ballots::next_output`].
    pub fn poll(&mut self, now_ms: u64) {
        let ids: Vec<Digest> = self.open.keys().copied().collect();
        for id in ids {
            let Some(mut b) = self.open.remove(&id) else { continue };
            let queued = std::mem::take(&mut b.queued);
            if !queued.is_empty() {
                self.count(&id, &mut b, queued);
            }
            if b.decided {
                // Certified: kept only to catch equivocation until the deadline.
                if now_ms <= b.proposal.deadline_ms {
                    self.open.insert(id, b);
                }
            } else if let Some(cert) = Self::certificate(&b) {
                self.stats.certificates_formed += 1;
                self.decide(id, Decision::Certified(Box::new(cert)), true);
                b.decided = true;
                if now_ms <= b.proposal.deadline_ms {
                    self.open.insert(id, b);
                }
            } else if now_ms > b.proposal.deadline_ms {
                self.decide(id, Decision::Expired, false);
            } else {
                self.open.insert(id, b);
            }
        }
    }

    fn count(&mut self, id: &Digest, b: &mut Ballot, queued: Vec<Vote>) {
        let msgs: Vec<Vec<u8>> = queued.iter().map(|v| vote_bytes(id, &v.choice)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let sigs: Vec<[u8; 64]> = queued.iter().map(|v| v.sig.0).collect();
        let keys: Vec<[u8; 32]> =
            queued.iter().map(|v| b.proposal.voters.get(usize::from(v.voter)).copied().unwrap_or([0; 32])).collect();
        self.stats.batch_checked += queued.len() as u64;
        let ok = crate::batch::verify_each(&refs, &sigs, &keys);
        for (v, good) in queued.into_iter().zip(ok) {
            if !good {
                self.stats.drops.bad_signature += 1;
                continue;
            }
            if b.excluded.contains(&v.voter) {
                self.stats.drops.excluded += 1;
                continue;
            }
            match b.votes.get(&v.voter) {
                Some((c, _)) if *c == v.choice => self.stats.drops.duplicate += 1,
                Some((c, s)) => {
                    let voter = b.proposal.voters.get(usize::from(v.voter)).copied().unwrap_or([0; 32]);
                    let evidence = Evidence {
                        proposal: *id,
                        voter,
                        a: (c.clone(), suprnova_mesh::simplex::Sig(*s)),
                        b: (v.choice.clone(), v.sig),
                    };
                    self.stats.equivocations += 1;
                    Self::exclude(b, v.voter);
                    self.out.push_back(Output::Evidence { evidence, found: true });
                }
                None => {
                    self.stats.votes_counted += 1;
                    *b.tally.entry(v.choice.to_vec()).or_insert(0) += 1;
                    b.votes.insert(v.voter, (v.choice, v.sig.0));
                }
            }
        }
    }

    fn certificate(b: &Ballot) -> Option<Certificate> {
        let q = b.proposal.quorum();
        let (choice, _) = b.tally.iter().find(|(_, n)| **n >= q)?;
        let signers: Vec<(u16, suprnova_mesh::simplex::Sig)> = b
            .votes
            .iter()
            .filter(|(_, (c, _))| c.as_slice() == choice.as_slice())
            .map(|(i, (_, s))| (*i, suprnova_mesh::simplex::Sig(*s)))
            .collect();
        Some(Certificate {
            proposal: b.proposal.clone(),
            choice: BoundedBytes::try_from(choice.as_slice()).ok()?,
            signers: BoundedVec::try_from(signers).ok()?,
        })
    }

    /// The next result, if any.
    pub fn next_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline among undecided proposals (when to poll next at the latest).
    pub fn next_deadline(&self) -> Option<u64> {
        self.open.values().filter(|b| !b.decided).map(|b| b.proposal.deadline_ms.saturating_add(1)).min()
    }

    /// Current tally of an open proposal: `(choice, votes)`, most votes first.
    pub fn tally(&self, id: &Digest) -> Vec<(Vec<u8>, usize)> {
        let mut t: Vec<(Vec<u8>, usize)> =
            self.open.get(id).map(|b| b.tally.iter().map(|(c, n)| (c.clone(), *n)).collect()).unwrap_or_default();
        t.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        t
    }
}
