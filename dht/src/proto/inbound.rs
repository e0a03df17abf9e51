//! What arrives: datagrams through the channel, peers' records, and their messages (answers to
//! our requests, and requests to serve).

use super::*;

impl Dht {
    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.channel.handle_datagram(now, from, data);
        self.drain_channel(now);
    }

    pub(super) fn drain_channel(&mut self, now: Instant) {
        while let Some(ev) = self.channel.poll_event() {
            match ev {
                ChannelEvent::Received { peer, addr, data } => self.on_message(now, peer, addr, &data),
                ChannelEvent::Established { peer, addr, .. } => {
                    self.events.push_back(DhtEvent::PeerConnected { peer, addr })
                }
                ChannelEvent::HandshakeFailed { peer, .. } => {
                    let ids: Vec<u64> = self
                        .pending
                        .iter()
                        .filter(|(_, p)| Self::waiting_peer(&p.waiting) == Some(peer))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.fail_request(now, id, RequestError::HandshakeFailed);
                    }
                }
                ChannelEvent::Record { from, record } => self.on_record(now, from, record),
            }
        }
    }

    pub(super) fn on_record(&mut self, now: Instant, from: SocketAddr, record: NodeRecord) {
        self.fetching.remove(&from);
        let waiting: Vec<(u64, Option<NodeId>, AfterRecord, Instant)> = self
            .pending
            .iter()
            .filter_map(|(id, p)| match p.waiting {
                Waiting::Record { addr, expect, then } if addr == from => Some((*id, expect, then, p.started)),
                _ => None,
            })
            .collect();
        for (request, expect, then, started) in waiting {
            self.pending.remove(&request);
            if expect.is_some_and(|e| e != record.id) {
                self.channel.count_drop(DropReason::IdentityMismatch);
                match then {
                    AfterRecord::UserPing => self.events.push_back(DhtEvent::RequestFailed {
                        request,
                        error: RequestError::IdentityMismatch(record.id),
                    }),
                    AfterRecord::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                    AfterRecord::Table => {}
                }
                continue;
            }
            self.remember(&record);
            let info = PeerInfo { id: record.id, noise_key: record.noise_key, addr: from };
            match then {
                AfterRecord::UserPing => {
                    // Keep the user's request id: the pong answers the same request.
                    let w = Waiting::Pong { peer: record.id, purpose: PingPurpose::User };
                    let sent = Message { id: request, body: Body::Ping }
                        .encode()
                        .map_err(|_| SendError::TooLarge)
                        .and_then(|m| self.channel.send(now, &info, &m));
                    match sent {
                        Ok(()) => {
                            let deadline = started + self.cfg.request_timeout;
                            self.pending
                                .insert(request, Pending { waiting: w, started, deadline, stall: None, resend: None });
                        }
                        Err(e) => {
                            self.events.push_back(DhtEvent::RequestFailed { request, error: RequestError::Send(e) })
                        }
                    }
                }
                AfterRecord::Bootstrap(q) => {
                    let w = Waiting::Pong { peer: record.id, purpose: PingPurpose::Bootstrap(q) };
                    if self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout).is_err() {
                        self.bootstrap_seed_done(now, q);
                    }
                }
                AfterRecord::Table => self.saw_alive(now, &record, from),
            }
        }
    }

    /// An authenticated message from `peer` at `addr`: it is alive. Its record is fetched if we
    /// have none, or if it speaks from an address its record does not list (it moved and re-signed).
    pub(super) fn peer_active(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        let rec = self.lookup_record(&peer);
        if let Some(rec) = &rec {
            self.saw_alive(now, rec, addr);
        }
        let stale = rec.as_ref().is_none_or(|r| !r.addrs.contains(&WireAddr::from(addr)));
        if stale {
            self.refresh_record(now, peer, addr, false);
        }
    }

    /// Fetches `peer`'s current record from `addr` unless a fetch is under way or one was made
    /// in the last minute (a node behind NAT never speaks from the address its record lists).
    /// `certain` (a pong announced a newer seq) skips the cooldown.
    pub(super) fn refresh_record(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, certain: bool) {
        const COOLDOWN: Duration = Duration::from_secs(60);
        if !certain && self.refreshed.get(&peer).is_some_and(|t| now.saturating_duration_since(*t) < COOLDOWN) {
            return;
        }
        if self.fetching.contains(&addr) || self.pending.len() >= self.cfg.max_pending_requests / 2 {
            return;
        }
        if self.refreshed.len() >= self.cfg.max_known_records {
            self.refreshed.clear();
        }
        self.refreshed.insert(peer, now);
        let _ = self.fetch_record(now, addr, Some(peer), AfterRecord::Table);
    }

    pub(super) fn on_message(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, data: &[u8]) {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(_) => {
                if !self.limits.request(now, peer, addr) {
                    return self.channel.count_drop(DropReason::RateLimitedRequest);
                }
                self.channel.count_drop(DropReason::MalformedMessage);
                if let Some(id) = Message::peek_id(data) {
                    self.reply(
                        now,
                        peer,
                        id,
                        serve::error(crate::wire::message::error_code::UNSUPPORTED, "unknown or malformed message"),
                    );
                }
                return;
            }
        };
        match msg.body {
            Body::Ping
            | Body::FindNode { .. }
            | Body::FindValue { .. }
            | Body::FindSet { .. }
            | Body::Store { .. }
            | Body::Reserve { .. }
            | Body::Connect { .. } => {
                let request = resend::digest(data);
                if self.answer_again(now, peer, msg.id, &request) {
                    return;
                }
                self.serving = Some((peer, msg.id, request));
                self.serve_request(now, peer, addr, msg);
                self.serving = None;
            }
            Body::Pong { .. }
            | Body::Nodes { .. }
            | Body::Value { .. }
            | Body::SetPage { .. }
            | Body::StoreAck { .. }
                if self
                    .pending
                    .get(&msg.id)
                    .is_some_and(|p| matches!(p.waiting, Waiting::Relay { peer: p, .. } if p == peer)) =>
            {
                // A relay answered a relay request with something else: it fails, now.
                self.channel.count_drop(DropReason::UnexpectedResponse);
                self.fail_request(now, msg.id, RequestError::Refused(crate::wire::message::error_code::MALFORMED));
            }
            Body::Pong { observed, record_seq } => self.on_pong(now, peer, addr, msg.id, observed, record_seq),
            Body::Nodes { total, nodes } => self.on_nodes(now, peer, addr, msg.id, total, nodes.into_inner()),
            Body::Value { key, records } => self.on_value(now, peer, addr, msg.id, key, records.into_inner()),
            Body::SetPage { key, entries, more } => {
                self.on_set_page(now, peer, addr, msg.id, key, entries.into_inner(), more)
            }
            Body::StoreAck { .. } => self.on_store_ack(now, peer, addr, msg.id, Ok(())),
            Body::Error { code, .. } => self.on_error(now, peer, addr, msg.id, code),
            body @ (Body::Reserved { .. } | Body::Connected { .. }) => {
                self.on_relay_answer(now, peer, addr, msg.id, body)
            }
        }
    }

    /// A request from `peer`, past the answer cache: rate limits, then `serve`.
    pub(super) fn serve_request(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, msg: Message) {
        if !self.limits.request(now, peer, addr) {
            // Answered (cheaply), so that an honest peer over the limit sees us alive and busy
            // rather than failing us after its timeout.
            self.channel.count_drop(DropReason::RateLimitedRequest);
            let code = crate::wire::message::error_code::RATE_LIMITED;
            return self.reply(now, peer, msg.id, serve::error(code, "request rate limit"));
        }
        if matches!(msg.body, Body::Store { .. }) && !self.limits.store(now, peer, addr) {
            self.channel.count_drop(DropReason::RateLimitedStore);
            let code = crate::wire::message::error_code::RATE_LIMITED;
            return self.reply(now, peer, msg.id, serve::error(code, "store rate limit"));
        }
        self.peer_active(now, peer, addr);
        self.serve(now, peer, addr, msg);
    }

    pub(super) fn on_pong(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        id: u64,
        observed: WireAddr,
        record_seq: u64,
    ) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        self.note_observed(now, peer, observed);
        // A newer record than ours: fetch it (the node re-signed, e.g. after moving).
        if self.lookup_record(&peer).is_some_and(|r| r.seq < record_seq) {
            self.refresh_record(now, peer, addr, true);
        }
        let Waiting::Pong { purpose, .. } = p.waiting else { return };
        match purpose {
            PingPurpose::User => {
                let rtt = now.saturating_duration_since(p.started);
                self.events.push_back(DhtEvent::Pong { request: id, peer, addr, rtt, observed, record_seq });
                self.responder_alive(now, peer, addr);
            }
            PingPurpose::Liveness => self.table.on_alive(now, &peer),
            PingPurpose::Neighbour => self.responder_alive(now, peer, addr),
            PingPurpose::Dormant => self.dormant_answered(now, peer, addr),
            PingPurpose::Bootstrap(q) => {
                self.responder_alive(now, peer, addr);
                self.bootstrap_seed_done(now, q);
            }
        }
    }

    /// Peers tell us the address they see us at; when two agree on a usable address we do not
    /// advertise, our record is re-signed with it (a node behind NAT learns its public address).
    pub(super) fn note_observed(&mut self, now: Instant, peer: NodeId, observed: WireAddr) {
        let through_relay = crate::path::is_virtual(&observed.to_socket_addr());
        if !observed.is_usable() || through_relay || self.record.addrs.contains(&observed) {
            return;
        }
        if self.observed.len() >= 64 {
            self.observed.clear();
        }
        self.observed.insert(peer, observed);
        // Two peers see us at a public IP we were not given: behind NAT (whatever the ports:
        // a symmetric NAT shows each peer another one).
        let ours = |a: &WireAddr| self.record.addrs.iter().any(|r| r.to_socket_addr().ip() == a.to_socket_addr().ip());
        let elsewhere =
            self.observed.values().filter(|a| !super::is_private_ip(a.to_socket_addr().ip()) && !ours(a)).count();
        if elsewhere >= 2 {
            self.observed_elsewhere(now);
        }
        let agreeing = self.observed.values().filter(|a| **a == observed).count();
        // A private node lists no address a stranger could dial (§15.1): its NAT's is not one.
        if agreeing >= 2 && self.reachability() == super::Reachability::Public {
            let mut addrs: Vec<WireAddr> = self
                .record
                .addrs
                .iter()
                .copied()
                .filter(|a| a.to_socket_addr().is_ipv6() != observed.to_socket_addr().is_ipv6())
                .collect();
            addrs.insert(0, observed);
            addrs.truncate(crate::wire::limits::MAX_RECORD_ADDRS);
            if self.set_addrs(&addrs).is_ok() {
                self.observed.clear();
            }
        }
    }

    pub(super) fn on_error(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, id: u64, code: u16) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        let busy = code == crate::wire::message::error_code::RATE_LIMITED;
        match p.waiting {
            Waiting::Pong { purpose: PingPurpose::User, .. } => {
                self.events.push_back(DhtEvent::RequestFailed { request: id, error: RequestError::Refused(code) });
            }
            // Over a rate limit is alive and answering, only busy: never a failure against its
            // place in the table.
            Waiting::Pong { purpose, .. } if busy => match purpose {
                PingPurpose::Liveness => self.table.on_alive(now, &peer),
                PingPurpose::Bootstrap(q) => {
                    self.responder_alive(now, peer, addr);
                    self.bootstrap_seed_done(now, q);
                }
                PingPurpose::Neighbour | PingPurpose::User => self.responder_alive(now, peer, addr),
                PingPurpose::Dormant => self.dormant_answered(now, peer, addr),
            },
            Waiting::StoreAck { query, .. } => {
                self.responder_alive(now, peer, addr);
                self.replica_done(now, query, peer, Err(RequestError::Refused(code)));
            }
            Waiting::Lookup { query, nodes, .. } => {
                // An old node that does not serve lookups: alive, but no help.
                self.lookup_answered(now, query, peer, nodes);
            }
            other => {
                self.pending.insert(
                    id,
                    Pending { waiting: other, started: p.started, deadline: p.deadline, stall: p.stall, resend: None },
                );
                self.fail_request(now, id, RequestError::Refused(code));
            }
        }
    }

    pub(super) fn on_nodes(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        id: u64,
        total: u8,
        nodes: Vec<NodeRecord>,
    ) {
        let Some(mut p) = self.take_from(now, id, peer) else { return };
        let Waiting::Lookup { query, parts, total: want, nodes: mut got, .. } = p.waiting else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            return;
        };
        let total = total.min(MAX_NODES_PARTS);
        if want.is_some_and(|w| w != total) {
            self.channel.count_drop(DropReason::MalformedMessage);
        }
        // A retransmitted request is answered with every part again: a part whose records we all
        // hold already is a copy, not one more part.
        let fresh = nodes.is_empty() || nodes.iter().any(|r| !got.iter().any(|g| g.id == r.id));
        for rec in nodes {
            // A record byte-identical to one already verified needs no second signature check
            // (answers repeat the same records over and over; verifying costs ~35 µs each).
            let verified = if self.record_ref(&rec.id) == Some(&rec) { Ok(()) } else { rec.verify() };
            match verified {
                Ok(()) if rec.id != self.id() => {
                    // Kept so that the node enters the routing table once it answers us.
                    self.remember(&rec);
                    if !got.iter().any(|r| r.id == rec.id) {
                        got.push(rec);
                    }
                }
                Ok(()) => {}
                // A lying answer: the record does not verify or its id is not its key's.
                Err(_) => self.channel.count_drop(DropReason::BadRecord),
            }
        }
        let parts = parts + u8::from(fresh);
        if parts >= total {
            self.responder_alive(now, peer, addr);
            self.lookup_answered(now, query, peer, got);
        } else {
            p.waiting = Waiting::Lookup { peer, query, parts, total: Some(total), nodes: got, pages: 0, after: None };
            self.pending.insert(id, p);
        }
    }

    /// Answers a request from `peer` with `body`.
    pub(super) fn reply(&mut self, now: Instant, peer: NodeId, id: u64, body: Body) {
        if let Ok(bytes) = (Message { id, body }).encode() {
            // A full queue toward a peer only loses this answer; the peer retransmits and gets it
            // from the cache.
            let _ = self.channel.send_known(now, peer, &bytes);
            if let Some((p, i, request)) = self.serving
                && (p, i) == (peer, id)
            {
                self.answers.keep(now, peer, id, request, &bytes);
            }
        }
    }
}
