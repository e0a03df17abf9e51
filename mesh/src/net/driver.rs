//! The task that runs a mesh's core: topic messages in, outputs carried out, certified rounds
//! handed to the store worker, catch-up when behind.

use super::*;

pub(super) type Latest<S> = Option<Arc<Certified<S>>>;

pub(super) struct Driver<W: World> {
    pub(super) node: Node,
    pub(super) topic: String,
    pub(super) core: MeshCore<W>,
    pub(super) rounds: broadcast::Sender<Arc<Certified<W::State>>>,
    pub(super) undecodable: u64,
    /// The newest certified round with its own certificate, for the store worker.
    pub(super) latest: watch::Sender<Latest<W::State>>,
    pub(super) counters: Arc<StoreCounters>,
    pub(super) member: bool,
    /// For catch-up reads to report back.
    pub(super) cmd: mpsc::Sender<Cmd<W::State>>,
    pub(super) guard_file: Option<std::path::PathBuf>,
    /// The test-only fault switch, with the key an equivocator signs with.
    pub(super) fault: Option<(crate::core::Fault, Identity)>,
    pub(super) fetching: bool,
    /// Members whose equivocation was logged already.
    pub(super) warned: std::collections::BTreeSet<u16>,
    pub(super) last_fetch: Option<Instant>,
    pub(super) caught_up: u64,
}

impl<W: World> Driver<W> {
    pub(super) async fn run(mut self, mut sub: suprnova_node::Subscription, mut cmds: mpsc::Receiver<Cmd<W::State>>) {
        // A restarted member, or one that joins a running mesh, starts from the newest state in
        // the DHT (if there is one yet).
        self.fetch_state();
        loop {
            let wake = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = sub.recv() => match ev {
                    Some(TopicEvent::Message { payload, .. }) => self.on_wire(&payload),
                    Some(_) => {}
                    None => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Submit(input, reply)) => {
                        let r = self.core.submit(input.clone());
                        if r.is_ok() {
                            self.publish(&Wire::Input(input)).await;
                        }
                        let _ = reply.send(r);
                    }
                    Some(Cmd::Fetched(r)) => {
                        self.fetching = false;
                        match r {
                            Ok(f) => {
                                let p = f.proposal.clone();
                                if self.core.catch_up(Instant::now(), f.round, f.state, p, f.certificate) {
                                    self.caught_up += 1;
                                    tracing::info!(round = f.round, "mesh: caught up from the DHT");
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "mesh: catch-up read failed"),
                        }
                    }
                    Some(Cmd::Status(reply)) => {
                        let _ = reply.send(MeshStatus {
                            mesh_id: self.core.mesh_id(),
                            round: self.core.final_round(),
                            pool: self.core.pool_len(),
                            stats: self.core.stats().clone(),
                            agreement: self.core.agreement_stats(),
                            undecodable: self.undecodable,
                            stored: self.counters.stored.load(Ordering::Relaxed),
                            store_skipped: self.counters.skipped.load(Ordering::Relaxed),
                            store_failed: self.counters.failed.load(Ordering::Relaxed),
                            last_store_error: self.counters.last_error.lock().ok().and_then(|e| e.clone()),
                            caught_up: self.caught_up,
                            spatial: None,
                        });
                    }
                    None => return,
                },
                () = sleep => self.core.handle_timeout(Instant::now()),
            }
            self.flush().await;
            if self.core.behind() {
                self.fetch_state();
            }
        }
    }

    /// Starts one read of the newest certified state from the DHT (at most one at a time, at
    /// most one every 500 ms); the result comes back as `Cmd::Fetched`.
    fn fetch_state(&mut self) {
        let now = Instant::now();
        if self.fetching
            || self.last_fetch.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(500))
        {
            return;
        }
        self.fetching = true;
        self.last_fetch = Some(now);
        let (node, mesh, tx) = (self.node.clone(), self.core.mesh_id(), self.cmd.clone());
        tokio::spawn(async move {
            let r = get_state::<W>(&node, mesh).await.map_err(|e| e.to_string());
            let _ = tx.send(Cmd::Fetched(r)).await;
        });
    }

    fn on_wire(&mut self, payload: &[u8]) {
        match postcard::from_bytes::<Wire>(payload) {
            Ok(Wire::Agreement(m)) => self.core.handle_message(Instant::now(), m),
            Ok(Wire::Input(i)) => {
                // Refusals are counted by the core; a duplicate is the usual case.
                let _ = self.core.submit(i);
            }
            Ok(Wire::Evidence(_)) => {}
            Err(_) => self.undecodable += 1,
        }
    }

    async fn publish(&self, w: &Wire) {
        let Ok(bytes) = postcard::to_allocvec(w) else { return };
        if let Err(e) = self.node.publish(&self.topic, bytes).await {
            tracing::debug!(error = %e, "mesh: publish failed");
        }
    }

    async fn flush(&mut self) {
        while let Some(o) = self.core.poll() {
            match o {
                // An observer has nothing to say: members send every vote and block.
                MeshOut::Send(_) if !self.member => {}
                MeshOut::Send(m) => match &self.fault {
                    None => self.publish(&Wire::Agreement(m)).await,
                    Some((crate::core::Fault::Silent, _)) => {}
                    Some((crate::core::Fault::Equivocate, id)) => {
                        let twin = match &m {
                            Message::Vote { height, choice: Some(d), signer, .. } => {
                                let mut other = *d;
                                other[0] ^= 0xff;
                                let bytes = simplex::vote_message(&self.core.mesh_id(), *height, &Some(other));
                                Some(Message::Vote {
                                    height: *height,
                                    choice: Some(other),
                                    signer: *signer,
                                    sig: simplex::Sig(id.sign(&bytes)),
                                })
                            }
                            _ => None,
                        };
                        self.publish(&Wire::Agreement(m)).await;
                        if let Some(t) = twin {
                            self.publish(&Wire::Agreement(t)).await;
                        }
                    }
                },
                MeshOut::Certified(c) => {
                    let c = Arc::new(c);
                    if self.member && c.certificate.is_some() {
                        let replaced = self.latest.send_replace(Some(c.clone()));
                        if replaced.is_some() {
                            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = self.rounds.send(c);
                }
                MeshOut::Evidence(e) => {
                    // Counted by the agreement each time; logged and published by members once
                    // per equivocator (one proof convicts it; a copy per height from every node
                    // would be a flood).
                    if self.member && self.warned.insert(e.signer) {
                        tracing::warn!(signer = e.signer, height = e.height, "mesh: a member equivocated");
                        self.publish(&Wire::Evidence(e)).await;
                    }
                }
                MeshOut::Gap { from, to } => tracing::debug!(from, to, "mesh: final blocks missed; catching up"),
                MeshOut::Reserve { up_to } => match self.guard_file.as_deref().map(|p| write_guard(p, up_to)) {
                    Some(Ok(())) => self.core.reserved(up_to),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "mesh: cannot record the signing guard; not signing past it")
                    }
                    None => self.core.reserved(up_to),
                },
            }
        }
    }
}
