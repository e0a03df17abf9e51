//! Time: the next deadline, timers firing, and neighbour liveness pings.

use super::*;

impl Dht {
    /// Earliest time `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let req = self
            .pending
            .values()
            .map(|p| {
                let t = p.stall.map_or(p.deadline, |s| s.min(p.deadline));
                p.resend.as_ref().map_or(t, |r| r.next.min(t))
            })
            .min();
        let queries = self.queries.values().map(|q| q.deadline).min();
        let publish = self.published.values().map(|p| p.next).min();
        let repair = self.repair.next_timeout();
        let check = self.cfg.neighbour_check;
        let neighbours = (!self.table.is_empty() && !check.is_zero())
            .then(|| self.last_neighbour_check.checked_add(check))
            .flatten();
        let timers = [
            self.store.next_expiry(),
            self.channel.poll_timeout(),
            self.next_refresh(),
            repair,
            neighbours,
            self.rejoin_timeout(),
            self.reach.next_timeout(),
        ];
        [req, queries, publish].into_iter().chain(timers).flatten().min()
    }

    /// Runs due timers: channel timers, request and query timeouts, record expiry, republishing,
    /// bucket refresh, the neighbour check, replica repair.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.channel.handle_timeout(now);
        self.drain_channel(now);
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| now >= p.deadline).map(|(id, _)| *id).collect();
        for id in expired {
            self.fail_request(now, id, RequestError::Timeout);
        }
        self.resend_due(now);
        let stalled: Vec<(QueryId, NodeId)> = self
            .pending
            .values_mut()
            .filter(|p| p.stall.is_some_and(|s| now >= s))
            .filter_map(|p| {
                p.stall = None;
                match p.waiting {
                    Waiting::Lookup { peer, query, .. } => Some((query, peer)),
                    _ => None,
                }
            })
            .collect();
        for (q, peer) in stalled {
            self.lookup_stalled(now, q, peer);
        }
        self.stats.records_expired += self.store.expire(now) as u64;
        self.query_timeouts(now);
        self.republish_due(now);
        self.refresh_due(now);
        self.neighbours_due(now);
        self.repair_due(now);
        self.rejoin_due(now);
        self.reach_due(now);
    }

    /// The neighbour check (see `DhtConfig::neighbour_check`).
    pub(super) fn neighbours_due(&mut self, now: Instant) {
        let every = self.cfg.neighbour_check;
        if every.is_zero() || self.last_neighbour_check.checked_add(every).is_none_or(|due| now < due) {
            return;
        }
        self.last_neighbour_check = now;
        let me = self.id();
        let asking: BTreeSet<NodeId> = self
            .pending
            .values()
            .filter_map(|p| match p.waiting {
                Waiting::Pong { peer, purpose: PingPurpose::Neighbour } => Some(peer),
                _ => None,
            })
            .collect();
        for id in self.table.closest_ids(&me, self.cfg.neighbours) {
            let Some(e) = self.table.get(&id) else { continue };
            if asking.contains(&id) || now.saturating_duration_since(e.last_seen) < every {
                continue;
            }
            self.ping_neighbour(now, id);
        }
    }

    pub(super) fn ping_neighbour(&mut self, now: Instant, id: NodeId) {
        let Some(e) = self.table.get(&id) else { return };
        let info = PeerInfo { id, noise_key: e.record.noise_key, addr: e.addr };
        let w = Waiting::Pong { peer: id, purpose: PingPurpose::Neighbour };
        if self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout).is_err() {
            self.node_failed(now, now, &id);
        }
    }
}
