//! Datagrams other than initiations: responses, cookie replies, transport packets, and the
//! record exchange before a handshake.

use super::*;

impl Channel {
    pub(super) fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        resp: &Response,
    ) -> Result<(), DropReason> {
        if !handshake::mac1_ok(data, RESPONSE_MAC1, &self.identity.noise_public()) {
            return Err(DropReason::BadMac1);
        }
        let id = *self.indices.get(&resp.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let Some(pending) = peer.pending.as_mut().filter(|p| p.local_index == resp.receiver_index) else {
            return Err(DropReason::UnknownIndex);
        };
        let Some(state) = pending.state.clone() else {
            return Err(DropReason::UnknownIndex);
        };
        let (keys, _) = handshake::consume_response(state, &self.identity, resp).map_err(|e| match e {
            HandshakeError::LowOrder => DropReason::LowOrderKey,
            _ => DropReason::HandshakeDecrypt,
        })?;
        let local_index = pending.local_index;
        peer.pending = None;
        let slot = Box::new(Slot { session: Session::new(local_index, resp.sender_index, &keys), created: now });
        self.stats.handshakes_completed += 1;
        self.install_current(now, id, from, slot, true);
        Ok(())
    }

    /// Makes `slot` the sending session for `id`, keeps the old one for receiving, flushes the queue.
    pub(super) fn install_current(
        &mut self,
        now: Instant,
        id: NodeId,
        from: SocketAddr,
        slot: Box<Slot>,
        initiator: bool,
    ) {
        self.note_deadline(slot.created + self.cfg.reject_after);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if let Some(old) = peer.previous.take() {
            self.indices.remove(&old.session.local_index);
        }
        peer.previous = peer.current.replace(slot);
        peer.addr = from;
        peer.last_active = now;
        let queued: Vec<Vec<u8>> = peer.queue.drain(..).collect();
        let mut out = Vec::new();
        let send_keepalive = initiator && queued.is_empty();
        for data in queued.iter().map(Vec::as_slice).chain(send_keepalive.then_some(&[][..])) {
            let mut pkt = Vec::with_capacity(data.len() + 32);
            if let Some(cur) = peer.current.as_mut()
                && cur.session.seal_into(data, &mut pkt).is_ok()
            {
                out.push(pkt);
            }
        }
        for pkt in out {
            self.transmit(from, pkt);
        }
        self.stats.sessions_established += 1;
        self.event(ChannelEvent::Established { peer: id, addr: from, initiator });
    }

    pub(super) fn on_cookie_reply(&mut self, now: Instant, c: &packet::CookieReply) -> Result<(), DropReason> {
        let id = *self.indices.get(&c.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let noise_key = peer.noise_key;
        let addr = peer.addr;
        let Some(pending) = peer.pending.as_mut().filter(|p| p.local_index == c.receiver_index) else {
            return Err(DropReason::UnexpectedCookie);
        };
        if pending.got_cookie {
            return Err(DropReason::UnexpectedCookie);
        }
        let mut mac1 = [0u8; 16];
        mac1.copy_from_slice(pending.packet.get(INITIATION_MAC1..INITIATION_MAC1 + 16).ok_or(DropReason::BadCookie)?);
        let cookie_value = cookie::open_cookie(&cookie::cookie_reply_key(&noise_key), &c.nonce, &mac1, &c.enc_cookie)
            .ok_or(DropReason::BadCookie)?;
        pending.got_cookie = true;
        handshake::set_mac2(&mut pending.packet, INITIATION_MAC1, Some(&cookie_value));
        let bytes = pending.packet.clone();
        peer.cookie = Some((now, cookie_value));
        self.transmit(addr, bytes);
        Ok(())
    }

    pub(super) fn on_transport(&mut self, now: Instant, from: SocketAddr, t: &Transport<'_>) -> Result<(), DropReason> {
        let id = *self.indices.get(&t.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let reject_after = self.cfg.reject_after;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let kind =
            [(SlotKind::Current, &peer.current), (SlotKind::Previous, &peer.previous), (SlotKind::Next, &peer.next)]
                .into_iter()
                .find(|(_, s)| s.as_ref().is_some_and(|s| s.session.local_index == t.receiver_index))
                .map(|(k, _)| k)
                .ok_or(DropReason::UnknownIndex)?;
        let slot = match kind {
            SlotKind::Current => peer.current.as_mut(),
            SlotKind::Previous => peer.previous.as_mut(),
            SlotKind::Next => peer.next.as_mut(),
        }
        .ok_or(DropReason::UnknownIndex)?;
        if now >= slot.created + reject_after {
            return Err(DropReason::SessionExpired);
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let opened = slot.session.open_into(t.counter, t.ciphertext, &mut buf);
        if let Err(e) = opened {
            self.scratch = buf;
            return Err(match e {
                SessionError::Replay(ReplayError::Duplicate) => DropReason::Replay,
                SessionError::Replay(ReplayError::TooOld) => DropReason::TooOld,
                SessionError::Exhausted => DropReason::SessionExpired,
                _ => DropReason::Decrypt,
            });
        }
        peer.addr = from;
        peer.last_active = now;
        if kind == SlotKind::Next
            && let Some(slot) = peer.next.take()
        {
            self.install_current(now, id, from, slot, false);
        }
        if buf.is_empty() {
            self.stats.keepalives_in += 1;
            self.scratch = buf;
        } else {
            self.event(ChannelEvent::Received { peer: id, addr: from, data: buf.clone() });
            buf.clear();
            self.scratch = buf;
        }
        Ok(())
    }

    pub(super) fn on_record_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nonce: [u8; 8],
    ) -> Result<(), DropReason> {
        if self.local_record.is_none() {
            return Err(DropReason::NoRecord);
        }
        if self.record_request_load.count(now) > self.cfg.record_requests_load_per_s
            && !self.record_requests_per_ip.allow(now, ip_key(from.ip()))
        {
            return Err(DropReason::RateLimitedRecordRequest);
        }
        let rec = self.local_record.as_ref().ok_or(DropReason::NoRecord)?;
        let reply = packet::record_reply(nonce, rec).ok_or(DropReason::NoRecord)?;
        self.stats.records_served += 1;
        self.transmit(from, reply);
        Ok(())
    }

    pub(super) fn on_record_reply(&mut self, from: SocketAddr, nonce: [u8; 8], rec: &[u8]) -> Result<(), DropReason> {
        let pos = self
            .record_requests
            .iter()
            .position(|r| r.addr == from && ct_eq(&r.nonce, &nonce))
            .ok_or(DropReason::UnsolicitedRecord)?;
        self.record_requests.remove(pos);
        let record = NodeRecord::decode_verified(rec).map_err(|_| DropReason::BadRecord)?;
        self.event(ChannelEvent::Record { from, record });
        Ok(())
    }
}
