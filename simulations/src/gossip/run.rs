//! The gossip simulation's event loop: frames in flight, the cores' timers and outputs, the
//! member-set work, and the connection model.

use suprnova_gossip::proto::Frame;
use suprnova_gossip::proto::plumtree::{self, MessageId};
use suprnova_gossip::proto::topic::Out;

use super::track::TrustSigned;
use super::{Ev, GossipSim, Wire, addr, counter_of, topic};
use crate::engine;

impl GossipSim {
    pub(super) fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Msg { from, to, wire } => self.receive(from as usize, to as usize, wire),
            Ev::Wake { node } => {
                let now = self.now();
                let now_at = self.now_at();
                let Some(Some(n)) = self.nodes.get_mut(node as usize) else { return };
                if n.wake != Some(now) {
                    return;
                }
                n.wake = None;
                n.core.handle_timeout(now_at);
                self.pump(node as usize);
            }
            Ev::Lost { node, peer } => {
                let i = node as usize;
                if self.fast_detect.is_none() {
                    if self.is_up(peer as usize) && self.net.connected(i, peer as usize) {
                        // The cut healed before the idle timeout: packets flow again, the
                        // connection survives.
                        return;
                    }
                    if !self.node(i).is_some_and(|n| n.conns.contains_key(&peer)) {
                        // Already closed (the core released the peer): nothing to notice.
                        return;
                    }
                }
                self.connection_lost(i, peer);
            }
            Ev::ConnectFailed { node, peer } => self.connection_lost(node as usize, peer),
            Ev::Announce { node } => {
                if self.is_up(node as usize) {
                    let side = self.net.is_partitioned().then(|| self.net.group_of(node as usize));
                    let ttl = engine::nanos(self.config.membership.entry_ttl);
                    self.members.write(node, self.now(), ttl, side);
                    self.stats.member_writes += 1;
                }
            }
            Ev::Read { node } => self.answer_read(node as usize),
            Ev::Revived { node } => {
                if let Some(Some(n)) = self.nodes.get_mut(node as usize) {
                    n.core.revived();
                }
            }
        }
    }

    fn connection_lost(&mut self, i: usize, peer: u32) {
        let now = self.now_at();
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        n.conns.remove(&peer);
        if let Some(&id) = self.ids.get(peer as usize) {
            n.core.link_lost(now, id);
        }
        self.pump(i);
    }

    /// The member set as node `i` reads it now (its side's copy during a cut).
    fn answer_read(&mut self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let side = self.net.is_partitioned().then(|| self.net.group_of(i));
        let members: Vec<_> = self
            .members
            .read(self.now(), side)
            .into_iter()
            .filter_map(|m| self.ids.get(m as usize).map(|id| (*id, vec![addr(m as usize)])))
            .collect();
        self.stats.member_reads += 1;
        let now = self.now_at();
        if let Some(Some(n)) = self.nodes.get_mut(i) {
            n.core.members_read(now, topic(), members);
        }
        self.pump(i);
    }

    fn receive(&mut self, from: usize, to: usize, wire: Wire) {
        if !self.is_up(to) {
            self.stats.vanished += 1;
            return;
        }
        if !self.net.connected(from, to) {
            // Cut while in flight: QUIC keeps it for retransmission when the path returns.
            self.held.push((from as u32, to as u32, wire));
            return;
        }
        match wire {
            Wire::Frame(frame) => {
                if let Frame::Broadcast { msg: plumtree::Message::Gossip { id, round, .. }, .. } = &frame
                    && let Some(t) = self.tracks.get_mut(id)
                {
                    t.first_round.entry(to as u32).or_insert(*round);
                }
                let now = self.now_at();
                let Some(&sender) = self.ids.get(from) else { return };
                if let Some(Some(n)) = self.nodes.get_mut(to) {
                    n.core.frames(now, vec![(sender, frame)], &mut TrustSigned);
                }
                self.pump(to);
            }
            Wire::Flood { id, round } => self.flood(to, id, round, Some(from as u32)),
        }
    }

    /// Sends `wire` from `a` to `b` over the modelled connection.
    pub(super) fn send(&mut self, a: usize, b: usize, wire: Wire) {
        let (a32, b32) = (a as u32, b as u32);
        let open = self.node(a).is_some_and(|n| n.conns.contains_key(&b32));
        if !self.is_up(b) || !self.net.connected(a, b) {
            match self.fast_detect {
                Some(d) => {
                    self.stats.vanished += 1;
                    self.queue.after(d, Ev::Lost { node: a32, peer: b32 });
                }
                // On an open connection to a live peer behind a cut, QUIC keeps retransmitting:
                // the frame arrives when the cut heals, unless the idle timeout (scheduled at
                // the cut) closes the connection first.
                None if open && self.is_up(b) => self.held.push((a32, b32, wire)),
                // To a crashed peer it is lost; the idle timeout was scheduled at the crash.
                None if open => self.stats.vanished += 1,
                // A new connection to a silent peer fails after the connect timeout.
                None => {
                    self.stats.vanished += 1;
                    if let Some(Some(n)) = self.nodes.get_mut(a) {
                        n.conns.insert(b32, 0);
                    }
                    self.queue.after(self.connect_timeout, Ev::ConnectFailed { node: a32, peer: b32 });
                }
            }
            return;
        }
        let mut delay = self.net.one_way(&mut self.rng, a, b);
        if !open {
            // QUIC's 1-RTT handshake, then the data; both ends now hold the connection.
            delay += self.net.rtt(a, b);
            self.stats.connects += 1;
            if let Some(Some(n)) = self.nodes.get_mut(b) {
                n.conns.entry(a32).or_insert(0);
            }
        }
        let now = self.now();
        let Some(Some(n)) = self.nodes.get_mut(a) else { return };
        let last = n.conns.entry(b32).or_insert(0);
        let at = (now + delay).max(*last + 1);
        *last = at;
        self.queue.at(at, Ev::Msg { from: a32, to: b32, wire });
    }

    /// Carries out node `i`'s outputs, then makes sure its next timer will fire.
    pub(super) fn pump(&mut self, i: usize) {
        for _ in 0..1_000_000 {
            let Some(Some(n)) = self.nodes.get_mut(i) else { return };
            let Some(out) = n.core.poll() else { break };
            self.output(i, out);
        }
        let now = self.now();
        let base = self.base;
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        let Some(due) = n.core.poll_timeout() else { return };
        let at = engine::nanos(due.saturating_duration_since(base)).max(now);
        if n.wake.is_none_or(|w| at < w) {
            n.wake = Some(at);
            self.queue.at(at, Ev::Wake { node: i as u32 });
        }
    }

    fn output(&mut self, i: usize, out: Out) {
        match out {
            Out::Send { to, frame } => {
                let Some(&b) = self.index.get(&to) else { return };
                match &frame {
                    Frame::Membership { .. } => self.stats.hpv_msgs += 1,
                    Frame::Broadcast { msg, .. } => {
                        self.stats.plum_msgs += 1;
                        match msg {
                            plumtree::Message::Gossip { id, .. } => {
                                if let Some(t) = self.tracks.get_mut(id) {
                                    t.payload_msgs += 1;
                                }
                            }
                            plumtree::Message::IHave(_) => self.stats.ihaves += 1,
                            plumtree::Message::Graft { .. } => self.stats.grafts += 1,
                            plumtree::Message::Prune => self.stats.prunes += 1,
                        }
                    }
                    Frame::KeepAlive => {}
                }
                self.send(i, b as usize, Wire::Frame(frame));
            }
            Out::Release(p) => {
                let Some(&b) = self.index.get(&p) else { return };
                if let Some(Some(n)) = self.nodes.get_mut(i) {
                    n.conns.remove(&b);
                }
                if let Some(Some(peer)) = self.nodes.get_mut(b as usize) {
                    peer.conns.remove(&(i as u32));
                }
            }
            Out::Event { event, .. } => {
                if let Some(c) = counter_of(&event)
                    && let Some(id) = self.by_counter.get(&c).copied()
                {
                    self.delivered(i as u32, id);
                }
            }
            Out::Closed(_) => {}
            Out::Announce(_) => self.queue.after(super::DHT_OP, Ev::Announce { node: i as u32 }),
            Out::ReadMembers(_) => self.queue.after(super::DHT_OP, Ev::Read { node: i as u32 }),
        }
    }

    fn delivered(&mut self, node: u32, id: MessageId) {
        let now = self.now();
        if let Some(t) = self.tracks.get_mut(&id) {
            let round = t.first_round.get(&node).copied().unwrap_or(0);
            t.delivered.entry(node).or_insert((now, round));
        }
    }

    /// Flood mode: deliver a new message and forward it to every active neighbour but `from`.
    pub(super) fn flood(&mut self, i: usize, id: MessageId, round: u16, from: Option<u32>) {
        let targets: Vec<u32> = self.active(i).into_iter().filter(|p| Some(*p) != from).collect();
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        if !n.flooded.insert(id) {
            return;
        }
        if let Some(t) = self.tracks.get_mut(&id) {
            t.delivered.entry(i as u32).or_insert((self.queue.now(), round));
        }
        for p in targets {
            if let Some(t) = self.tracks.get_mut(&id) {
                t.payload_msgs += 1;
            }
            self.send(i, p as usize, Wire::Flood { id, round: round.saturating_add(1) });
        }
    }
}
