//! Votes: proposals, ballots, certificates and evidence, and the votes topic.

use super::*;

impl Runtime {
    /// Publishes proposal `p` (signed by hosted agent `proposer`) and opens its ballot here.
    pub(super) async fn propose(&self, proposer: AgentId, p: Proposal) {
        let id = p.id();
        let local = self.register_interest(id, &p, Some(proposer));
        let opened = lock(&self.inner.ballots).on_proposal(unix_ms(), p.clone());
        if opened.is_err() {
            lock(&self.inner.interest).remove(&id);
            return;
        }
        self.notify_proposal(&local, &p);
        let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&VoteWire::Proposal(p))).await;
    }

    pub(super) async fn vote(&self, v: Vote) {
        lock(&self.inner.ballots).on_vote(unix_ms(), v.clone());
        self.inner.ballot_wake.notify_one();
        let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&VoteWire::Vote(v))).await;
    }

    /// Proposes `body` from hosted agent `proposer` to `voters`, open for `deadline`.
    pub async fn propose_from(
        &self,
        proposer: &AgentId,
        body: &[u8],
        voters: Vec<AgentId>,
        deadline: Duration,
    ) -> Result<Proposal, WireError> {
        let me = self.hosted(proposer).ok_or(WireError::Invalid("no such agent"))?;
        let nonce = me.nonce.fetch_add(1, Ordering::Relaxed);
        let p = Proposal::sign(&me.identity, nonce, unix_ms().saturating_add(ms(deadline)), voters, body)?;
        self.propose(*proposer, p.clone()).await;
        Ok(p)
    }

    /// Casts hosted agent `voter`'s vote `choice` on `proposal`; false if it is not eligible.
    pub async fn vote_from(&self, voter: &AgentId, proposal: &Proposal, choice: &[u8]) -> bool {
        let Some(me) = self.hosted(voter) else { return false };
        let Some(v) = Vote::sign(&me.identity, proposal, choice) else { return false };
        self.vote(v).await;
        true
    }

    /// How proposal `id` ended, if it did (as seen here).
    pub fn decision(&self, id: &Digest) -> Option<Decision> {
        lock(&self.inner.ballots).decision(id).cloned()
    }

    /// Publishes `vote` as it is (for tests of hostile voters: replays, forged votes).
    pub async fn publish_raw_vote(&self, vote: Vote) {
        self.vote(vote).await;
    }

    /// Records which local agents care about proposal `p` (before its ballot opens, so no
    /// outcome can come before the interest) and returns them.
    pub(super) fn register_interest(&self, id: Digest, p: &Proposal, proposer: Option<AgentId>) -> Vec<AgentId> {
        let agents = lock(&self.inner.agents);
        let mut local: Vec<AgentId> = p.voters.iter().filter(|v| agents.contains_key(*v)).copied().collect();
        if let Some(x) = proposer.or_else(|| agents.contains_key(&p.proposer).then_some(p.proposer))
            && !local.contains(&x)
        {
            local.push(x);
        }
        drop(agents);
        if !local.is_empty() {
            let mut i = lock(&self.inner.interest);
            if i.len() < self.inner.cfg.ballots.max_open * 2 && !i.contains_key(&id) {
                i.insert(id, local.clone());
            }
        }
        local
    }

    /// Hands proposal `p` to the local agents that may vote on it (and its proposer).
    pub(super) fn notify_proposal(&self, local: &[AgentId], p: &Proposal) {
        let proposal = Arc::new(p.clone());
        for a in local {
            if let Some(h) = self.hosted(a) {
                let _ = h.tx.try_send(Event::Proposal { proposal: proposal.clone() });
            }
        }
    }

    pub(super) async fn votes_reader(self, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let Ok(w) = wire::decode::<VoteWire>(&payload) else {
                self.inner.counters.drop_bad_vote_wire.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let now = unix_ms();
            match w {
                VoteWire::Proposal(p) => {
                    let id = p.id();
                    let known = lock(&self.inner.interest).contains_key(&id);
                    let local = self.register_interest(id, &p, None);
                    let opened = lock(&self.inner.ballots).on_proposal(now, p.clone());
                    match opened {
                        Ok(true) => {
                            self.notify_proposal(&local, &p);
                            self.inner.ballot_wake.notify_one();
                        }
                        Ok(false) => {}
                        Err(_) if !known => {
                            lock(&self.inner.interest).remove(&id);
                        }
                        Err(_) => {}
                    }
                }
                VoteWire::Vote(v) => {
                    lock(&self.inner.ballots).on_vote(now, v);
                    self.inner.ballot_wake.notify_one();
                }
                VoteWire::Certificate(c) => {
                    self.seen(WireKey::Certificate(c.proposal.id()));
                    lock(&self.inner.ballots).on_certificate(c);
                    self.inner.ballot_wake.notify_one();
                }
                VoteWire::Evidence(e) => {
                    self.seen(WireKey::Evidence(e.proposal, e.voter));
                    lock(&self.inner.ballots).on_evidence(e);
                    self.inner.ballot_wake.notify_one();
                }
            }
        }
    }

    pub(super) fn hosts(&self, agent: &AgentId) -> bool {
        lock(&self.inner.agents).contains_key(agent)
    }

    pub(super) fn seen(&self, key: WireKey) {
        let mut s = lock(&self.inner.seen_wire);
        if !s.contains(&key) {
            s.push_back(key);
            while s.len() > 8192 {
                s.pop_front();
            }
        }
    }

    pub(super) fn defer(&self, key: WireKey, w: VoteWire) {
        let jitter = u64::from(self.inner.node.id().0[0]) * DEFER_MS / 256;
        let mut d = lock(&self.inner.deferred);
        if d.len() < 4096 {
            d.push((unix_ms() + DEFER_MS + jitter, key, w));
        }
    }

    /// Publishes deferred certificates and evidence that are due and nobody else published.
    pub(super) async fn publish_due(&self) {
        let now = unix_ms();
        let due: Vec<VoteWire> = {
            let mut d = lock(&self.inner.deferred);
            let seen = lock(&self.inner.seen_wire);
            let mut out = Vec::new();
            d.retain(|(at, key, w)| {
                if seen.contains(key) {
                    return false;
                }
                if *at <= now {
                    out.push(w.clone());
                    return false;
                }
                true
            });
            out
        };
        for w in due {
            let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
        }
    }

    pub(super) async fn ballot_driver(self) {
        loop {
            self.publish_due().await;
            let next = lock(&self.inner.ballots).next_deadline();
            let next = match lock(&self.inner.deferred).iter().map(|(at, _, _)| *at).min() {
                Some(d) => Some(next.map_or(d, |n| n.min(d))),
                None => next,
            };
            let sleep = next.map_or(Duration::from_secs(1), |d| Duration::from_millis(d.saturating_sub(unix_ms())));
            tokio::select! {
                _ = self.inner.ballot_wake.notified() => {}
                _ = tokio::time::sleep(sleep.min(Duration::from_secs(1))) => {}
            }
            let outputs = {
                let mut b = lock(&self.inner.ballots);
                b.poll(unix_ms());
                let mut out = Vec::new();
                while let Some(o) = b.next_output() {
                    out.push(o);
                }
                // Interest lasts while the ballot is held (certified ones until their deadline,
                // so late equivocation still reaches the proposer).
                lock(&self.inner.interest).retain(|id, _| {
                    b.proposal(id).is_some()
                        || out.iter().any(|o| matches!(o, Output::Decided { id: d, .. } if d == id))
                });
                out
            };
            for o in outputs {
                match o {
                    Output::Decided { id, decision, formed } => {
                        if formed && let Decision::Certified(c) = &decision {
                            let w = VoteWire::Certificate((**c).clone());
                            if self.hosts(&c.proposal.proposer) {
                                let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
                            } else {
                                self.defer(WireKey::Certificate(id), w);
                            }
                        }
                        let local = lock(&self.inner.interest).get(&id).cloned().unwrap_or_default();
                        let decision = Arc::new(decision);
                        for a in local {
                            if let Some(h) = self.hosted(&a) {
                                let _ = h.tx.try_send(Event::Decided { id, decision: decision.clone() });
                            }
                        }
                    }
                    Output::Evidence { evidence, found } => {
                        if found {
                            let w = VoteWire::Evidence(evidence.clone());
                            let proposer = lock(&self.inner.ballots).proposal(&evidence.proposal).map(|p| p.proposer);
                            if self.hosts(&evidence.voter) || proposer.is_some_and(|p| self.hosts(&p)) {
                                let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
                            } else {
                                self.defer(WireKey::Evidence(evidence.proposal, evidence.voter), w);
                            }
                        }
                        let local = lock(&self.inner.interest).get(&evidence.proposal).cloned().unwrap_or_default();
                        let evidence = Arc::new(evidence);
                        for a in local {
                            if let Some(h) = self.hosted(&a) {
                                let _ = h.tx.try_send(Event::Equivocation { evidence: evidence.clone() });
                            }
                        }
                    }
                }
            }
        }
    }
}
