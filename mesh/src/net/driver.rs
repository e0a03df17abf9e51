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
    pub(super) caught_up: u64,
}

impl<W: World> Driver<W> {
    pub(super) async fn run(mut self, mut sub: suprnova_node::Subscription, mut cmds: mpsc::Receiver<Cmd<W::State>>) {
        loop {
            self.flush().await;
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
                        let round = match r {
                            Ok(f) => Some((f.round, f.state, f.proposal, f.certificate)),
                            Err(e) => {
                                tracing::debug!(error = %e, "mesh: catch-up read failed");
                                None
                            }
                        };
                        let at = round.as_ref().map(|r| r.0);
                        if self.core.fetched(Instant::now(), round) {
                            self.caught_up += 1;
                            tracing::info!(round = at, "mesh: caught up from the DHT");
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
        }
    }

    /// Reads the newest certified state from the DHT (the core asks for one at a time); the
    /// result comes back as `Cmd::Fetched`.
    fn fetch_state(&self) {
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
                MeshOut::Send(m) => self.publish(&Wire::Agreement(m)).await,
                MeshOut::Fetch => self.fetch_state(),
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
                    // Reported once per equivocator (one proof convicts it); members publish it.
                    tracing::warn!(signer = e.signer, height = e.height, "mesh: a member equivocated");
                    if self.member {
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
