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
        let Some((responder, request)) = lock(&self.inner.router).take(&me.identity.public_key(), id.0) else {
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
            if self.admit(&e, Transport::Broadcast).is_err() {
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

    /// The router's verdict on an envelope that arrived by `transport`, refusals counted.
    pub(super) fn admit(&self, e: &Envelope, transport: Transport) -> Result<Route, Refusal> {
        // The signature check runs outside the lock (the pending requests share it).
        let verdict = crate::router::check(e, transport)
            .and_then(|route| lock(&self.inner.router).fresh(unix_ms(), e).map(|()| route));
        if let Err(r) = verdict {
            self.count_refusal(r);
        }
        verdict
    }

    /// Checks a local envelope's time and that it was not seen before (and remembers it).
    pub(super) fn fresh(&self, e: &Envelope) -> Result<(), Reply> {
        let verdict = lock(&self.inner.router).fresh(unix_ms(), e);
        verdict.map_err(|r| {
            self.count_refusal(r);
            Reply::Rejected
        })
    }

    fn count_refusal(&self, r: Refusal) {
        let c = &self.inner.counters;
        let counter = match r {
            Refusal::WrongTransport => &c.drop_wrong_transport,
            Refusal::BadSignature => &c.drop_bad_signature,
            Refusal::Stale => &c.drop_stale,
            Refusal::Replayed => &c.drop_replayed,
            Refusal::ReplayFull => &c.drop_replay_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
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
            let transport = if responder.is_some() { Transport::Request } else { Transport::Message };
            match (self.admit(&envelope, transport), responder) {
                (Err(_), responder) => reject(responder),
                // Runtime-level requests (knowledge offers) are answered by the runtime.
                (Ok(Route::System), Some(r)) => {
                    let rt = self.clone();
                    tokio::spawn(async move { rt.system(from_node, envelope, r).await });
                }
                (Ok(Route::System), None) => {}
                (Ok(Route::Agent), responder) => {
                    let _ = self.deliver_admitted(envelope, responder.map(LocalOrRemote::Remote));
                }
            }
        }
    }

    /// Puts a local agent's envelope in its recipient's mailbox, once it passed the time and
    /// replay checks.
    pub(super) fn deliver(&self, e: Envelope, responder: Option<LocalOrRemote>) -> Result<(), Reply> {
        if let Err(reply) = self.fresh(&e) {
            if let Some(r) = responder {
                r.send(reply.clone());
            }
            return Err(reply);
        }
        self.deliver_admitted(e, responder)
    }

    /// Puts an admitted envelope in its recipient's mailbox.
    pub(super) fn deliver_admitted(&self, e: Envelope, responder: Option<LocalOrRemote>) -> Result<(), Reply> {
        let c = &self.inner.counters;
        let refuse = |responder: Option<LocalOrRemote>, reply: Reply| {
            if let Some(r) = responder {
                r.send(reply.clone());
            }
            Err(reply)
        };
        let Some(h) = self.hosted(&e.to) else {
            c.drop_no_such_agent.fetch_add(1, Ordering::Relaxed);
            return refuse(responder, Reply::NoSuchAgent);
        };
        let ev = match responder {
            None => Event::Message { from: e.from, body: e.body.to_vec() },
            Some(r) => {
                let rid = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
                let held = lock(&self.inner.router).hold(unix_ms(), e.to, rid, (r, e.id()));
                if let Err((r, _)) = held {
                    c.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                    return refuse(Some(r), Reply::MailboxFull);
                }
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
                    && let Some((resp, _)) = lock(&self.inner.router).take(&e.to, rid)
                {
                    resp.send(Reply::MailboxFull);
                }
                Err(Reply::MailboxFull)
            }
        }
    }

    // ---- proposals and votes ------------------------------------------------------------------
}
