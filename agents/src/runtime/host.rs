//! Hosting: each agent's task, and carrying out the actions its step returns.

use super::*;

impl Runtime {
    pub(super) async fn run_agent(
        self,
        me: Arc<Identity>,
        mut agent: Box<dyn Agent>,
        mut rx: mpsc::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
        tick: Option<Duration>,
    ) {
        let id = me.public_key();
        let mut next_ticket: Ticket = 0;
        let mut wake: Option<tokio::time::Instant> = tick.map(|t| tokio::time::Instant::now() + t);
        loop {
            let mut events = Vec::new();
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(e) => events.push(e),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or(far)) => events.push(Event::Tick),
                _ = stop.changed() => break,
            }
            while events.len() < 256 {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            let Some(hosted) = self.hosted(&id) else { break };
            let mut ctx = Ctx::new(me.clone(), unix_ms(), events, next_ticket);
            ctx.nonce = hosted.nonce.load(Ordering::Relaxed);
            ctx.mesh = lock(&self.inner.mesh).as_ref().map(|(m, _)| *m);
            agent.step(&mut ctx);
            next_ticket = ctx.next_ticket;
            hosted.nonce.store(ctx.nonce, Ordering::Relaxed);
            let actions = ctx.take_actions();
            for a in actions {
                self.execute(&hosted, a).await;
            }
            if ctx.stop {
                break;
            }
            wake = match (ctx.wake, tick) {
                (Some(w), Some(t)) => Some(tokio::time::Instant::now() + w.min(t)),
                (Some(w), None) => Some(tokio::time::Instant::now() + w),
                (None, Some(t)) => Some(tokio::time::Instant::now() + t),
                (None, None) => None,
            };
        }
        lock(&self.inner.agents).remove(&id);
        lock(&self.inner.router).forget_agent(&id);
    }

    pub(super) async fn execute(&self, me: &Arc<Hosted>, action: Action) {
        let rt = self.clone();
        let me = me.clone();
        match action {
            Action::Send { to, body } => {
                tokio::spawn(async move {
                    if let Err(error) = rt.send_from(&me, to, &body).await {
                        let _ = me.tx.try_send(Event::SendFailed { to: to.agent, error });
                    }
                });
            }
            Action::Request { ticket, to, body } => {
                tokio::spawn(async move {
                    let result = rt.request_from(&me, to, &body).await;
                    let _ = me.tx.send(Event::Response { ticket, result }).await;
                });
            }
            Action::Respond { id, body } => self.respond(&me, id, &body),
            Action::Broadcast { swarm, body } => {
                tokio::spawn(async move {
                    let _ = rt.broadcast_from(&me, &swarm, &body).await;
                });
            }
            Action::Discover { ticket, criteria } => {
                tokio::spawn(async move {
                    let result = rt.discover(&criteria).await.map(Arc::new).map_err(|e| DiscoveryFailed(Arc::new(e)));
                    let _ = me.tx.send(Event::Discovered { ticket, result }).await;
                });
            }
            Action::Propose(p) => self.propose(me.identity.public_key(), p).await,
            Action::Vote(v) => self.vote(v).await,
            Action::Announce(profile) => match normalise(profile) {
                Ok(p) => {
                    let old = std::mem::replace(&mut *lock(&me.profile), p.clone());
                    tokio::spawn(async move {
                        rt.withdraw_from(&me.identity, &old, &p).await;
                        rt.announce(&me.identity, &p).await
                    });
                }
                Err(e) => tracing::debug!(error = %e, "agent announced a bad profile"),
            },
            Action::MoveTo { position, info } => {
                lock(&me.profile).position = Some(position);
                let spatial = lock(&self.inner.spatial).clone();
                if let Some(s) = spatial {
                    tokio::spawn(async move {
                        if let Err(e) = s.announce_position(&me.identity, position, &info).await {
                            tracing::debug!(error = %e, "position not announced");
                        }
                    });
                }
            }
            Action::Share { ticket, peers, domain, items } => {
                tokio::spawn(async move {
                    let results = match rt.share_knowledge(&me.identity, &peers, &domain, items).await {
                        Ok(r) => r,
                        Err(e) => peers.iter().map(|p| (p.agent, Err(e.clone()))).collect(),
                    };
                    let _ = me.tx.send(Event::Shared { ticket, results }).await;
                });
            }
            Action::Sync { ticket, domain } => {
                tokio::spawn(async move {
                    let result = rt.sync_knowledge(&domain).await;
                    let _ = me.tx.send(Event::Synced { ticket, result }).await;
                });
            }
            Action::Submit(input) => {
                let submit = lock(&self.inner.mesh).as_ref().map(|(_, s)| s.clone());
                tokio::spawn(async move {
                    let error = match submit {
                        None => Some(SubmitError::NoMesh),
                        Some(s) => s(input).await.err().map(SubmitError::Refused),
                    };
                    match error {
                        None => {
                            rt.inner.counters.submits.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(error) => {
                            let _ = me.tx.try_send(Event::SubmitFailed { error });
                        }
                    }
                });
            }
        }
    }

    // ---- announcements ------------------------------------------------------------------------
}
