//! Requests this node sends: ids, sending with a record fetched first if needed, pings, and
//! what happens when a request fails or is answered.

use super::*;

impl Dht {
    pub(super) fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Sends `body` to `info` as a request and remembers what we wait for.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        info: &PeerInfo,
        body: Body,
        waiting: Waiting,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            return Err(RequestError::Busy);
        }
        let id = self.request_id();
        let bytes = Message { id, body }.encode().map_err(|_| RequestError::Send(SendError::TooLarge))?;
        let clean = self.channel.has_session(&info.id, now);
        self.channel.send(now, info, &bytes).map_err(RequestError::Send)?;
        self.resend_budget.earn();
        let rto = self.rto_of(&info.id);
        let resend = Some(resend::Resend { info: *info, bytes, next: now + rto, rto, resent: 0, clean });
        self.pending.insert(id, Pending { waiting, started: now, deadline: now + timeout, stall: None, resend });
        Ok(id)
    }

    pub(super) fn peer_info(rec: &NodeRecord, addr: Option<SocketAddr>) -> Result<PeerInfo, RequestError> {
        let addr =
            addr.or_else(|| rec.addr_for(false)).or_else(|| rec.addr_for(true)).ok_or(RequestError::NoAddress)?;
        Ok(PeerInfo { id: rec.id, noise_key: rec.noise_key, addr })
    }

    /// Pings `target`; the answer arrives as `DhtEvent::Pong` or `RequestFailed` with this id.
    pub fn ping(&mut self, now: Instant, target: Target) -> Result<u64, RequestError> {
        match target {
            Target::Record(rec) => {
                rec.verify().map_err(RequestError::BadRecord)?;
                self.remember(&rec);
                let info = Self::peer_info(&rec, None)?;
                let purpose = PingPurpose::User;
                self.send_request(
                    now,
                    &info,
                    Body::Ping,
                    Waiting::Pong { peer: rec.id, purpose },
                    self.cfg.request_timeout,
                )
            }
            Target::Addr { addr, expect } => {
                let addr = crate::channel::canonical(addr);
                if let Some(rec) = expect.and_then(|id| self.lookup_record(&id)) {
                    let info = Self::peer_info(&rec, Some(addr))?;
                    let w = Waiting::Pong { peer: rec.id, purpose: PingPurpose::User };
                    return self.send_request(now, &info, Body::Ping, w, self.cfg.request_timeout);
                }
                self.fetch_record(now, addr, expect, AfterRecord::UserPing)
            }
        }
    }

    pub(super) fn fetch_record(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expect: Option<NodeId>,
        then: AfterRecord,
    ) -> Result<u64, RequestError> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            return Err(RequestError::Busy);
        }
        self.channel.request_record(now, addr);
        self.fetching.insert(addr);
        let id = self.request_id();
        let deadline = now + self.cfg.request_timeout.min(self.cfg.channel.record_request_timeout);
        self.pending.insert(
            id,
            Pending {
                waiting: Waiting::Record { addr, expect, then },
                started: now,
                deadline,
                stall: None,
                resend: None,
            },
        );
        Ok(id)
    }

    pub(super) fn waiting_peer(w: &Waiting) -> Option<NodeId> {
        match w {
            Waiting::Pong { peer, .. }
            | Waiting::Lookup { peer, .. }
            | Waiting::StoreAck { peer, .. }
            | Waiting::Relay { peer, .. } => Some(*peer),
            Waiting::Record { .. } => None,
        }
    }

    /// An outstanding request failed.
    pub(super) fn fail_request(&mut self, now: Instant, id: u64, error: RequestError) {
        let Some(p) = self.pending.remove(&id) else { return };
        match p.waiting {
            Waiting::Record { addr, then, .. } => {
                self.fetching.remove(&addr);
                match then {
                    AfterRecord::UserPing => self.events.push_back(DhtEvent::RequestFailed { request: id, error }),
                    AfterRecord::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                    AfterRecord::Table => {}
                }
            }
            Waiting::Pong { peer, purpose } => match purpose {
                PingPurpose::User => self.events.push_back(DhtEvent::RequestFailed { request: id, error }),
                PingPurpose::Liveness => {
                    // Ping-before-evict: the old node is gone; its waiting candidate takes over.
                    if let Some(added) = self.table.on_failed(&peer) {
                        self.peer_added(now, added);
                    }
                    self.peer_removed(now, peer);
                }
                PingPurpose::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                // Still dormant; probed again in turn.
                PingPurpose::Dormant => {}
                PingPurpose::Neighbour => {
                    self.node_failed(now, p.started, &peer);
                    // Still listed (fewer than `max_failures` so far): ask again now rather than
                    // at the next check, so a dead neighbour is gone within a few timeouts.
                    self.ping_neighbour(now, peer);
                }
            },
            Waiting::Lookup { peer, query, nodes, parts, pages, .. } => {
                self.stats.rpcs_failed += 1;
                if parts > 0 || pages > 0 {
                    // A partial answer is still an answer.
                    self.lookup_answered(now, query, peer, nodes);
                } else {
                    self.node_failed(now, p.started, &peer);
                    self.lookup_failed(now, query, peer);
                }
            }
            Waiting::StoreAck { peer, query } => {
                self.stats.rpcs_failed += 1;
                self.node_failed(now, p.started, &peer);
                self.replica_done(now, query, peer, Err(error));
            }
            Waiting::Relay { peer, ask } => self.relay_failed(now, id, peer, ask, error),
        }
    }

    /// The pending request `id` if it was sent to `peer`.
    pub(super) fn take_from(&mut self, now: Instant, id: u64, peer: NodeId) -> Option<Pending> {
        let matches = self.pending.get(&id).is_some_and(|p| Self::waiting_peer(&p.waiting) == Some(peer));
        if matches {
            let p = self.pending.remove(&id);
            // Karn: only an answer to a request sent once, on a session, measures the round trip.
            if let Some(p) = &p
                && p.resend.as_ref().is_some_and(|r| r.resent == 0 && r.clean)
            {
                let rtt = now.saturating_duration_since(p.started);
                self.rtt.sample(rtt);
                if self.peer_rtt.len() >= self.cfg.max_known_records && !self.peer_rtt.contains_key(&peer) {
                    self.peer_rtt.clear();
                }
                self.peer_rtt.entry(peer).or_insert_with(resend::RttEstimate::new).sample(rtt);
            }
            p
        } else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            None
        }
    }

    pub(super) fn responder_alive(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        if let Some(rec) = self.lookup_record(&peer) {
            self.saw_alive(now, &rec, addr);
        }
    }
}
