//! Messages from members: proposals, votes, finalize votes and certificates, checked, counted,
//! and turned into notarisations and finalisations; equivocations become evidence.

use super::*;

impl Simplex {
    pub(super) fn on_message(&mut self, now: Instant, m: Message) {
        match m {
            Message::Propose { proposal, sig } => {
                let height = proposal.height;
                if !self.height_ok(height) {
                    return;
                }
                let leader = self.members.leader(&self.mesh, height);
                let digest = proposal.digest(&self.mesh);
                let Some(key) = self.members.key(leader) else { return };
                if !verify_strict(key, &vote_message(&self.mesh, height, &Some(digest)), &sig.0) {
                    // Either a forgery or a proposal by someone who does not lead this height.
                    self.stats.drops.wrong_leader += 1;
                    return;
                }
                let slot = self.slots.entry(height).or_default();
                // Only the leader's first proposal is kept; a second one is evidence (below), not
                // something to store: a faulty leader could otherwise fill memory with blocks.
                if slot.proposal.is_none() {
                    slot.blocks.insert(digest, proposal.clone());
                    slot.proposal = Some((digest, proposal.clone()));
                }
                let first = slot.proposal.as_ref().is_some_and(|(d, _)| *d == digest);
                self.add_vote(now, height, Some(digest), leader, sig);
                if first {
                    self.consider(digest, proposal);
                }
            }
            Message::Vote { height, choice, signer, sig } => {
                let held =
                    self.slots.get(&height).and_then(|s| s.votes.get(&choice)).is_some_and(|v| v.contains_key(&signer));
                if self.accept_signed(height, signer, held, &vote_message(&self.mesh, height, &choice), &sig) {
                    self.add_vote(now, height, choice, signer, sig);
                }
            }
            Message::Finalize { height, digest, signer, sig } => {
                let held = self
                    .slots
                    .get(&height)
                    .and_then(|s| s.finalizes.get(&digest))
                    .is_some_and(|v| v.contains_key(&signer));
                if self.accept_signed(height, signer, held, &finalize_message(&self.mesh, height, &digest), &sig) {
                    self.add_finalize(now, height, digest, signer, sig);
                }
            }
            Message::Notarization { height, proposal, votes } => self.on_notarization(now, height, proposal, votes),
            Message::Finalization { proposal, votes } => self.on_finalization(now, proposal, votes),
        }
    }

    /// A notarisation (a quorum's votes for a block or ⊥ at `height`), checked and recorded.
    fn on_notarization(&mut self, now: Instant, height: u64, proposal: Option<Proposal>, votes: Signers) {
        if height <= self.finalized.0 {
            self.stats.drops.old += 1;
            return;
        }
        let choice = proposal.as_ref().map(|p| p.digest(&self.mesh));
        if proposal.as_ref().is_some_and(|p| p.height != height) {
            self.stats.drops.bad_certificate += 1;
            return;
        }
        if self.slots.get(&height).is_some_and(|s| s.notarized.contains(&choice)) {
            self.stats.drops.duplicate += 1;
            return;
        }
        if self.members.check(&vote_message(&self.mesh, height, &choice), &votes).is_err() {
            self.stats.drops.bad_certificate += 1;
            return;
        }
        let slot = self.slots.entry(height).or_default();
        if let (Some(p), Some(d)) = (proposal, choice) {
            slot.blocks.insert(d, p);
        }
        for (i, sig) in votes.iter() {
            slot.votes.entry(choice).or_default().insert(*i, *sig);
        }
        if let Some(d) = choice {
            for (i, sig) in votes.iter() {
                self.check_equivocation(height, false, *i, d, *sig);
            }
        }
        self.notarized(now, height, choice);
    }

    /// A finalisation (a quorum's finalize votes for a block), checked and recorded.
    fn on_finalization(&mut self, now: Instant, proposal: Proposal, votes: Signers) {
        let height = proposal.height;
        if height <= self.finalized.0 {
            self.stats.drops.old += 1;
            return;
        }
        let digest = proposal.digest(&self.mesh);
        if self.members.check(&finalize_message(&self.mesh, height, &digest), &votes).is_err() {
            self.stats.drops.bad_certificate += 1;
            return;
        }
        let slot = self.slots.entry(height).or_default();
        slot.blocks.insert(digest, proposal);
        for (i, sig) in votes.iter() {
            slot.finalizes.entry(digest).or_default().insert(*i, *sig);
        }
        for (i, sig) in votes.iter() {
            self.check_equivocation(height, true, *i, digest, *sig);
        }
        let Some(slot) = self.slots.get_mut(&height) else { return };
        // A finalised block is notarised (its finalize voters saw q votes).
        slot.notarized.insert(Some(digest));
        self.finalize(now, height, digest);
    }

    /// Records `signer`'s (verified) signature for block `d` at `height`; false, with evidence
    /// published once, if it signed a different block there before.
    pub(super) fn check_equivocation(&mut self, height: u64, finalize: bool, signer: u16, d: Digest, sig: Sig) -> bool {
        let slot = self.slots.entry(height).or_default();
        let seen = if finalize { &mut slot.finalize_of } else { &mut slot.block_vote_of };
        match seen.get(&signer) {
            Some((first, first_sig)) if *first != d => {
                let ev = Evidence { signer, height, finalize, a: (*first, *first_sig), b: (d, sig) };
                if slot.evidence_sent.insert((signer, finalize)) {
                    self.stats.equivocations += 1;
                    self.out.push_back(Out::Evidence(ev));
                }
                false
            }
            Some(_) => true,
            None => {
                seen.insert(signer, (d, sig));
                true
            }
        }
    }

    /// The checks one member's signed vote or finalize vote passes before it counts, in order:
    /// height window, membership, not already held (`held`), signature over `msg`. Each drop is
    /// counted.
    pub(super) fn accept_signed(&mut self, height: u64, signer: u16, held: bool, msg: &[u8], sig: &Sig) -> bool {
        if !self.height_ok(height) {
            return false;
        }
        let Some(key) = self.members.key(signer) else {
            self.stats.drops.not_member += 1;
            return false;
        };
        if held {
            self.stats.drops.duplicate += 1;
            return false;
        }
        if !verify_strict(key, msg, &sig.0) {
            self.stats.drops.bad_signature += 1;
            return false;
        }
        true
    }

    pub(super) fn add_vote(&mut self, now: Instant, height: u64, choice: Choice, signer: u16, sig: Sig) {
        let quorum = self.members.quorum();
        // An equivocator's second block vote is not counted.
        if let Some(d) = choice
            && !self.check_equivocation(height, false, signer, d, sig)
        {
            return;
        }
        let slot = self.slots.entry(height).or_default();
        let votes = slot.votes.entry(choice).or_default();
        votes.insert(signer, sig);
        if votes.len() >= quorum && !slot.notarized.contains(&choice) {
            self.notarized(now, height, choice);
        }
    }

    pub(super) fn add_finalize(&mut self, now: Instant, height: u64, digest: Digest, signer: u16, sig: Sig) {
        let quorum = self.members.quorum();
        if !self.check_equivocation(height, true, signer, digest, sig) {
            return;
        }
        let slot = self.slots.entry(height).or_default();
        let fins = slot.finalizes.entry(digest).or_default();
        fins.insert(signer, sig);
        if fins.len() >= quorum {
            self.finalize(now, height, digest);
        }
    }

    /// `choice` is notarised at `height`: forward it, and move on if it is ours.
    pub(super) fn notarized(&mut self, now: Instant, height: u64, choice: Choice) {
        let Some(slot) = self.slots.get_mut(&height) else { return };
        if !slot.notarized.insert(choice) {
            return;
        }
        let votes: Vec<(u16, Sig)> =
            slot.votes.get(&choice).map(|v| v.iter().map(|(i, s)| (*i, *s)).collect()).unwrap_or_default();
        let proposal = choice.and_then(|d| slot.blocks.get(&d).cloned());
        if choice.is_none() {
            self.stats.dummies += 1;
        }
        let voted_dummy = slot.voted_dummy;
        // Forward: whoever missed votes catches up from the notarisation (a block notarisation
        // travels with its block, so a member that missed the proposal can still extend it).
        // Without full forwarding, a ⊥ notarisation (signatures only) is still forwarded by
        // everyone, and a block's by the next height's leader alone: one copy of the block per
        // height for whoever missed a vote.
        let next_leader = self.my_index() == Some(self.members.leader(&self.mesh, height.saturating_add(1)));
        let forward = self.cfg.forward_notarizations || choice.is_none() || next_leader;
        if forward && (choice.is_none() || proposal.is_some()) && votes.len() >= self.members.quorum() {
            let votes = Signers::try_from(votes).unwrap_or_default();
            self.out.push_back(Out::Broadcast(Message::Notarization { height, proposal, votes }));
        }
        if height >= self.height {
            if let Some(d) = choice
                && !voted_dummy
                && height == self.height
                && let Some((i, sig)) = self.sign(height, &finalize_message(&self.mesh, height, &d))
            {
                self.out.push_back(Out::Broadcast(Message::Finalize { height, digest: d, signer: i, sig }));
                self.add_finalize(now, height, d, i, sig);
            }
            self.enter(now, height.saturating_add(1));
        }
        // A notarisation can make a waiting proposal at the current height valid, and change
        // the tip a leader builds on.
        let h = self.height;
        self.ask_proposal(h);
        if let Some((d, p)) = self.slots.get(&h).and_then(|s| s.proposal.clone()) {
            self.consider(d, p);
        }
    }

    /// Block `digest` at `height` has a finalize quorum: it and its ancestors are final.
    pub(super) fn finalize(&mut self, now: Instant, height: u64, digest: Digest) {
        if height <= self.finalized.0 {
            return;
        }
        let votes: Vec<(u16, Sig)> = self
            .slots
            .get(&height)
            .and_then(|s| s.finalizes.get(&digest))
            .map(|v| v.iter().map(|(i, s)| (*i, *s)).collect())
            .unwrap_or_default();
        let certificate = Certificate { height, digest, votes: Signers::try_from(votes).unwrap_or_default() };
        // Walk the parent links down to the previous finalised block.
        let mut chain: Vec<(Digest, Proposal)> = Vec::new();
        let (mut h, mut d) = (height, digest);
        let mut gap = None;
        while h > self.finalized.0 {
            let Some(p) = self.slots.get(&h).and_then(|s| s.blocks.get(&d)).cloned() else {
                gap = Some(h);
                break;
            };
            let (ph, pd) = (p.parent_height, p.parent);
            chain.push((d, p));
            h = ph;
            d = pd;
        }
        if let Some(missing) = gap {
            self.out.push_back(Out::Gap { from: self.finalized.0 + 1, to: missing });
        } else if d != self.finalized.1 {
            // The chain does not lead to our finalised block: impossible with f < n/3. Refuse.
            self.stats.drops.bad_certificate += 1;
            return;
        }
        let n = chain.len();
        for (k, (d, p)) in chain.into_iter().rev().enumerate() {
            let certificate = (k + 1 == n).then(|| certificate.clone());
            self.stats.finalized += 1;
            self.out.push_back(Out::Finalized { proposal: p, digest: d, certificate });
        }
        let slot_has = self.slots.get(&height).and_then(|s| s.blocks.get(&digest)).cloned();
        if let Some(p) = slot_has {
            let votes = certificate.votes.clone();
            self.out.push_back(Out::Broadcast(Message::Finalization { proposal: p, votes }));
        }
        self.finalized = (height, digest);
        if self.height <= height {
            self.enter(now, height.saturating_add(1));
        }
        let keep = self.finalized.0;
        self.slots.retain(|h, _| *h >= keep);
    }
}
