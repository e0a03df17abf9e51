//! Time: the next deadline and what happens when timers fire (retransmission, expiry, rekey).

use super::*;

impl Channel {
    /// Whether the timer bound is at or before every real deadline (fuzzing and test invariant).
    #[doc(hidden)]
    pub fn timer_bound_holds(&self) -> bool {
        match (self.timer, self.exact_timeout()) {
            (_, None) => true,
            (Some(bound), Some(exact)) => bound <= exact,
            (None, Some(_)) => false,
        }
    }

    /// The earliest deadline, by walking every peer.
    pub(super) fn exact_timeout(&self) -> Option<Instant> {
        let reject = self.cfg.reject_after;
        let idle = self.cfg.peer_idle_timeout;
        let peers = self.peers.values().flat_map(|p| {
            let slots = [&p.current, &p.previous, &p.next].into_iter().flatten().map(move |s| s.created + reject);
            let idle_at = p.idle().then_some(p.last_active + idle);
            slots.chain(p.pending.as_ref().map(|h| h.next_retry)).chain(idle_at)
        });
        let records = self.record_requests.front().map(|r| r.deadline);
        peers.chain(records).min()
    }

    /// Runs due timers: handshake retransmission and abandonment, session expiry, forgetting idle
    /// peers, expiring record requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_none_or(|t| now < t) {
            // Nothing can be due before the bound.
            return;
        }
        let reject = self.cfg.reject_after;
        let idle = self.cfg.peer_idle_timeout;
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        let mut forget = Vec::new();
        let mut dead_indices = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            for slot in [&mut p.current, &mut p.previous, &mut p.next] {
                if slot.as_ref().is_some_and(|s| now >= s.created + reject)
                    && let Some(s) = slot.take()
                {
                    dead_indices.push(s.session.local_index);
                }
            }
            if let Some(h) = p.pending.as_mut()
                && now >= h.next_retry
            {
                if h.attempts >= self.cfg.handshake_attempts {
                    failed.push(*id);
                } else {
                    h.attempts += 1;
                    let backoff = self.cfg.handshake_retry * 2u32.saturating_pow(h.attempts - 1);
                    h.next_retry = now + backoff;
                    resend.push((p.addr, h.packet.clone()));
                }
            }
            if p.idle() && now >= p.last_active + idle {
                forget.push(*id);
            }
        }
        for i in dead_indices {
            self.indices.remove(&i);
        }
        for id in failed {
            self.fail_handshake(id);
        }
        for (addr, bytes) in resend {
            self.transmit(addr, bytes);
        }
        for id in forget {
            self.peers.remove(&id);
        }
        while self.record_requests.front().is_some_and(|r| now >= r.deadline) {
            self.record_requests.pop_front();
        }
        self.timer = self.exact_timeout();
    }

    /// Number of index-table entries (sessions + handshakes); for invariant checks.
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }
}
