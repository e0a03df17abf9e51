//! Messages between agents: envelopes, direct messages and requests, swarm broadcasts, and the
//! node's incoming streams delivered to mailboxes.

use super::*;

impl Runtime {
    pub(super) fn envelope(
        &self,
        me: &Hosted,
        kind: EnvelopeKind,
        to: AgentId,
        body: &[u8],
    ) -> Result<Envelope, SendError> {
        let nonce = me.nonce.fetch_add(1, Ordering::Relaxed);
        Envelope::sign(&me.identity, kind, to, nonce, unix_ms(), body).map_err(|_| SendError::TooLarge(body.len()))
    }

    pub(super) async fn send_from(&self, me: &Hosted, to: AgentAddr, body: &[u8]) -> Result<(), SendError> {
        let e = self.envelope(me, EnvelopeKind::Message, to.agent, body)?;
        if to.node == self.inner.node.id() {
            return self.deliver(e, None).map_err(|r| reply_error(&r));
        }
        self.inner.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.inner.node.send(to.node, &wire::frame(&e)).await.map_err(|err| {
            self.inner.counters.send_failures.fetch_add(1, Ordering::Relaxed);
            SendError::Network(std::sync::Arc::new(err))
        })
    }

    /// Sends `body` from hosted agent `from` to `to` (for drivers outside an agent's step).
    pub async fn send(&self, from: &AgentId, to: AgentAddr, body: &[u8]) -> Result<(), SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.send_from(&me, to, body).await
    }

    /// Sends a request from hosted agent `from` to `to` and waits for the answer.
    pub async fn request(&self, from: &AgentId, to: AgentAddr, body: &[u8]) -> Result<Vec<u8>, SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.request_from(&me, to, body).await
    }

    pub(super) async fn request_from(&self, me: &Hosted, to: AgentAddr, body: &[u8]) -> Result<Vec<u8>, SendError> {
        let e = self.envelope(me, EnvelopeKind::Request, to.agent, body)?;
        let id = e.id();
        let reply = if to.node == self.inner.node.id() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.deliver(e, Some(LocalOrRemote::Local(tx))) {
                Err(r) => r,
                Ok(()) => match tokio::time::timeout(Duration::from_secs(30), rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Reply::Refused,
                    Err(_) => return Err(SendError::Timeout),
                },
            }
        } else {
            self.inner.counters.sent.fetch_add(1, Ordering::Relaxed);
            let bytes = self.inner.node.request(to.node, &wire::frame(&e)).await.map_err(|err| {
                self.inner.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                match err {
                    NodeError::Timeout => SendError::Timeout,
                    NodeError::Refused { .. } => SendError::Refused,
                    other => SendError::Network(std::sync::Arc::new(other)),
                }
            })?;
            wire::decode::<Reply>(&bytes).map_err(|_| SendError::BadAnswer)?
        };
        match reply {
            Reply::Answer { body, sig } => {
                if suprnova_dht::identity::verify_strict(&to.agent, &Reply::signed_bytes(&id, &body), &sig.0) {
                    Ok(body.to_vec())
                } else {
                    Err(SendError::BadAnswer)
                }
            }
            other => Err(reply_error(&other)),
        }
    }

    pub(super) fn respond(&self, me: &Hosted, id: RequestId, body: &[u8]) {
        let Some((responder, request, _)) = lock(&self.inner.pending).remove(&(me.identity.public_key(), id.0)) else {
            return;
        };
        let reply = Reply::answer(&me.identity, &request, body).unwrap_or(Reply::Refused);
        self.inner.counters.requests_answered.fetch_add(1, Ordering::Relaxed);
        responder.send(reply);
    }

    pub(super) async fn broadcast_from(&self, me: &Hosted, swarm: &str, body: &[u8]) -> Result<(), SendError> {
        let e = self.envelope(me, EnvelopeKind::Broadcast, [0; 32], body)?;
        self.inner.counters.broadcasts.fetch_add(1, Ordering::Relaxed);
        // Local members first (a node does not receive its own broadcasts).
        self.deliver_broadcast(swarm, &e);
        self.inner
            .node
            .publish(&swarm_topic(swarm), wire::encode(&e))
            .await
            .map_err(|err| SendError::Network(std::sync::Arc::new(err)))?;
        Ok(())
    }

    /// Broadcasts `body` from hosted agent `from` to swarm `swarm`.
    pub async fn broadcast(&self, from: &AgentId, swarm: &str, body: &[u8]) -> Result<(), SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.broadcast_from(&me, swarm, body).await
    }

    pub(super) async fn join_swarm(&self, agent: AgentId, swarm: &str) -> Result<(), RuntimeError> {
        let first = {
            let mut s = lock(&self.inner.swarms);
            let members = s.entry(swarm.to_string()).or_default();
            let first = members.is_empty();
            if !members.contains(&agent) {
                members.push(agent);
            }
            first
        };
        if first {
            let sub = self.inner.node.subscribe(&swarm_topic(swarm)).await?;
            let rt = self.clone();
            let name = swarm.to_string();
            let t = tokio::spawn(async move { rt.swarm_reader(name, sub).await });
            lock(&self.inner.tasks).push(t);
        }
        Ok(())
    }

    pub(super) async fn swarm_reader(self, swarm: String, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let c = &self.inner.counters;
            let Ok(e) = wire::decode::<Envelope>(&payload) else {
                c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if e.kind != EnvelopeKind::Broadcast || e.to != [0; 32] {
                c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !e.verify() {
                c.drop_bad_signature.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(r) = self.fresh(&e) {
                drop(r);
                continue;
            }
            self.deliver_broadcast(&swarm, &e);
        }
    }

    pub(super) fn deliver_broadcast(&self, swarm: &str, e: &Envelope) {
        let members = lock(&self.inner.swarms).get(swarm).cloned().unwrap_or_default();
        for m in members {
            if m == e.from {
                continue;
            }
            if let Some(h) = self.hosted(&m) {
                let ev = Event::Broadcast { swarm: swarm.to_string(), from: e.from, body: e.body.to_vec() };
                if h.tx.try_send(ev).is_err() {
                    self.inner.counters.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.inner.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Checks an envelope's time and that it was not seen before (and remembers it).
    pub(super) fn fresh(&self, e: &Envelope) -> Result<(), Reply> {
        let now = unix_ms();
        let skew = ms(self.inner.cfg.max_skew);
        let c = &self.inner.counters;
        if e.time_ms.saturating_add(skew) < now || e.time_ms > now.saturating_add(skew) {
            c.drop_stale.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        let mut r = lock(&self.inner.replay);
        // Forget what is too old to be accepted anyway.
        while let Some(&(t, from, nonce)) = r.order.front() {
            if t.saturating_add(2 * skew) >= now {
                break;
            }
            r.order.pop_front();
            r.seen.remove(&(from, nonce));
        }
        if r.seen.contains_key(&(e.from, e.nonce)) {
            c.drop_replayed.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        if r.seen.len() >= self.inner.cfg.max_replay {
            c.drop_replay_full.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        r.seen.insert((e.from, e.nonce), e.time_ms);
        r.order.push_back((e.time_ms.max(now), e.from, e.nonce));
        Ok(())
    }

    pub(super) async fn receive(self, mut incoming: mpsc::Receiver<Direct>) {
        while let Some(d) = incoming.recv().await {
            let (from_node, data, responder) = match d {
                Direct::Message { from, data } => (from, data, None),
                Direct::Request { from, data, responder } => (from, data, Some(responder)),
            };
            let c = &self.inner.counters;
            let reject = |responder: Option<suprnova_node::Responder>| {
                if let Some(r) = responder {
                    r.respond(wire::encode(&Reply::Rejected));
                }
            };
            let envelope = match wire::unframe(&data) {
                None => {
                    let foreign = lock(&self.inner.foreign).clone();
                    match foreign {
                        Some(tx) => {
                            let d = match responder {
                                None => Direct::Message { from: from_node, data },
                                Some(responder) => Direct::Request { from: from_node, data, responder },
                            };
                            let _ = tx.try_send(d);
                        }
                        None => {
                            c.drop_not_agent_frame.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                Some(Err(_)) => {
                    c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                    reject(responder);
                    continue;
                }
                Some(Ok(e)) => e,
            };
            let expected = if responder.is_some() { EnvelopeKind::Request } else { EnvelopeKind::Message };
            if envelope.kind != expected {
                c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                reject(responder);
                continue;
            }
            if !envelope.verify() {
                c.drop_bad_signature.fetch_add(1, Ordering::Relaxed);
                reject(responder);
                continue;
            }
            if envelope.body.starts_with(wire::SYSTEM_TAG) {
                // Runtime-level requests (knowledge offers) are answered by the runtime.
                let Some(r) = responder else {
                    c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match self.fresh(&envelope) {
                    Ok(()) => {
                        let rt = self.clone();
                        tokio::spawn(async move { rt.system(from_node, envelope, r).await });
                    }
                    Err(reply) => r.respond(wire::encode(&reply)),
                }
                continue;
            }
            let _ = self.deliver(envelope, responder.map(LocalOrRemote::Remote));
        }
    }

    /// Puts a verified envelope in its recipient's mailbox.
    pub(super) fn deliver(&self, e: Envelope, responder: Option<LocalOrRemote>) -> Result<(), Reply> {
        let c = &self.inner.counters;
        let refuse = |responder: Option<LocalOrRemote>, reply: Reply| {
            if let Some(r) = responder {
                r.send(reply.clone());
            }
            Err(reply)
        };
        if let Err(reply) = self.fresh(&e) {
            return refuse(responder, reply);
        }
        let Some(h) = self.hosted(&e.to) else {
            c.drop_no_such_agent.fetch_add(1, Ordering::Relaxed);
            return refuse(responder, Reply::NoSuchAgent);
        };
        let ev = match responder {
            None => Event::Message { from: e.from, body: e.body.to_vec() },
            Some(r) => {
                let rid = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
                let mut pending = lock(&self.inner.pending);
                // Bound what unanswered requests hold: forget those older than a minute (at most
                // one sweep a second, so a flood at the cap costs no sweep per request).
                let now = unix_ms();
                if pending.len() >= MAX_PENDING && self.inner.last_sweep.swap(now, Ordering::Relaxed) + 1000 <= now {
                    let cutoff = unix_ms().saturating_sub(60_000);
                    pending.retain(|_, (_, _, t)| *t >= cutoff);
                }
                if pending.len() >= MAX_PENDING {
                    drop(pending);
                    c.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                    return refuse(Some(r), Reply::MailboxFull);
                }
                pending.insert((e.to, rid), (r, e.id(), unix_ms()));
                Event::Request { id: RequestId(rid), from: e.from, body: e.body.to_vec() }
            }
        };
        let is_request = matches!(ev, Event::Request { .. });
        let rid = if let Event::Request { id, .. } = &ev { Some(id.0) } else { None };
        match h.tx.try_send(ev) {
            Ok(()) => {
                c.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                c.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                if is_request
                    && let Some(rid) = rid
                    && let Some((resp, _, _)) = lock(&self.inner.pending).remove(&(e.to, rid))
                {
                    resp.send(Reply::MailboxFull);
                }
                Err(Reply::MailboxFull)
            }
        }
    }

    // ---- proposals and votes ------------------------------------------------------------------
}
