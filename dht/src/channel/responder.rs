//! The responder side of a handshake, and its defences: load, cookies (mac2), the cached answer
//! to a repeated initiation.

use super::*;

impl Channel {
    pub(super) fn under_load(&mut self, now: Instant) -> bool {
        self.initiations.count(now) > self.cfg.cookie_threshold_per_s
    }

    /// Rotates the cookie secret lazily (it is only used under load): after one lifetime the
    /// current secret becomes the previous one; after two, both are replaced, so no cookie is
    /// accepted for more than two lifetimes after its secret was made.
    pub(super) fn rotate_cookie_secret(&mut self, now: Instant) {
        let life = Duration::from_secs(cookie::COOKIE_SECRET_LIFETIME_S);
        let age = now.saturating_duration_since(self.cookie_secret_born);
        if age >= 2 * life {
            self.cookie_secret_prev = self.random::<32>();
            self.cookie_secret = self.random::<32>();
            self.cookie_secret_born = now;
        } else if age >= life {
            self.cookie_secret_prev = self.cookie_secret;
            self.cookie_secret = self.random::<32>();
            self.cookie_secret_born = now;
        }
    }

    pub(super) fn mac2_ok(&self, data: &[u8], from: &WireAddr) -> bool {
        let (Some(body), Some(got)) =
            (data.get(..INITIATION_MAC1 + 16), data.get(INITIATION_MAC1 + 16..INITIATION_MAC1 + 32))
        else {
            return false;
        };
        [&self.cookie_secret, &self.cookie_secret_prev]
            .iter()
            .any(|s| ct_eq(&cookie::mac(&cookie::make_cookie(s, from), body), got))
    }

    pub(super) fn send_cookie_reply(&mut self, to: SocketAddr, init: &Initiation, source: &WireAddr) {
        let nonce = self.random::<24>();
        let reply =
            handshake::build_cookie_reply(&self.identity.noise_public(), &self.cookie_secret, nonce, init, source);
        self.stats.cookies_sent += 1;
        self.transmit(to, reply);
    }

    pub(super) fn cached_response(&mut self, now: Instant, mac1: &[u8; 16]) -> Option<Vec<u8>> {
        while let Some((k, at)) = self.response_order.front() {
            if now.saturating_duration_since(*at) < self.cfg.response_cache_ttl {
                break;
            }
            self.responses.remove(k);
            self.response_order.pop_front();
        }
        self.responses.get(mac1).cloned()
    }

    pub(super) fn cache_response(&mut self, now: Instant, mac1: [u8; 16], bytes: Vec<u8>) {
        if self.cfg.response_cache == 0 {
            return;
        }
        while self.response_order.len() >= self.cfg.response_cache {
            if let Some((k, _)) = self.response_order.pop_front() {
                self.responses.remove(&k);
            }
        }
        self.responses.insert(mac1, bytes);
        self.response_order.push_back((mac1, now));
    }

    pub(super) fn on_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        init: &Initiation,
    ) -> Result<(), DropReason> {
        if !handshake::mac1_ok(data, INITIATION_MAC1, &self.identity.noise_public()) {
            return Err(DropReason::BadMac1);
        }
        let source = WireAddr::from(from);
        let loaded = self.under_load(now);
        if loaded {
            self.rotate_cookie_secret(now);
            if !self.mac2_ok(data, &source) {
                self.send_cookie_reply(from, init, &source);
                return Err(DropReason::CookieRequired);
            }
        }
        if let Some(resp) = self.cached_response(now, &init.mac1) {
            self.stats.responses_replayed += 1;
            self.transmit(from, resp);
            return Ok(());
        }
        // Before any Diffie-Hellman: one source (or one IP on many ports) gets a bounded share.
        // A source proven by a valid mac2 has buckets of its own, so forged initiations can use
        // up only the unproven ones; an unproven initiation over its limit gets a cookie reply,
        // with which an honest initiator proves its address at once (§8.1).
        // (An all-zero mac2, what an initiator without a cookie sends, is never valid: no hashing.)
        let mac2_zero = data.get(INITIATION_MAC1 + 16..INITIATION_MAC1 + 32).is_none_or(|m| m.iter().all(|b| *b == 0));
        let proven = loaded
            || (!mac2_zero && {
                self.rotate_cookie_secret(now);
                self.mac2_ok(data, &source)
            });
        let (per_addr, per_ip) = (&mut self.handshakes_per_addr, &mut self.handshakes_per_ip);
        if !allow_both(now, per_addr, (proven, from), per_ip, (proven, ip_key(from.ip()))) {
            if !proven {
                self.send_cookie_reply(from, init, &source);
            }
            return Err(DropReason::RateLimitedHandshake);
        }
        let (st, payload) = handshake::consume_initiation(&self.identity, init, false).map_err(|e| match e {
            HandshakeError::Decrypt => DropReason::HandshakeDecrypt,
            HandshakeError::LowOrder => DropReason::LowOrderKey,
            HandshakeError::BadBinding => DropReason::BadBinding,
        })?;
        let id = payload.node_id();
        if id == self.identity.id() {
            return Err(DropReason::IdentityMismatch);
        }
        if let Some(p) = self.peers.get(&id) {
            if payload.timestamp <= p.last_timestamp {
                return Err(DropReason::StaleTimestamp);
            }
        } else if !self.make_room() {
            return Err(DropReason::TableFull);
        }
        let local_index = self.fresh_index();
        let eph = self.random::<32>();
        let rs = st.rs;
        let (bytes, keys, _) =
            handshake::build_response(st, eph, local_index, init.sender_index).map_err(|_| DropReason::LowOrderKey)?;
        self.note_deadline(now + self.cfg.peer_idle_timeout.min(self.cfg.reject_after));
        let peer = self.peers.entry(id).or_insert_with(|| Peer::new(rs, from, now));
        peer.noise_key = rs;
        peer.addr = from;
        peer.last_timestamp = payload.timestamp;
        peer.last_active = now;
        let old = peer
            .next
            .replace(Box::new(Slot { session: Session::new(local_index, init.sender_index, &keys), created: now }));
        if let Some(old) = old {
            self.indices.remove(&old.session.local_index);
        }
        self.indices.insert(local_index, id);
        self.stats.handshakes_answered += 1;
        self.cache_response(now, init.mac1, bytes.clone());
        self.transmit(from, bytes);
        Ok(())
    }
}
