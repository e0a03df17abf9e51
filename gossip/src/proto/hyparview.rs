//! HyParView membership (Leitão, Pereira, Rodrigues: "HyParView: a membership protocol for
//! reliable gossip-based broadcast", DSN 2007), one instance per topic.
//!
//! The active view holds the few peers we keep connections to (broadcast goes over these); the
//! passive view holds backups learnt through random walks (`ForwardJoin`) and periodic `Shuffle`s.
//! When an active peer fails, a passive one is promoted with a `Neighbor` request (high priority
//! when we would otherwise be isolated).
//!
//! Sans-IO: `handle(now, In)` then drain `poll()`. Every peer comes with opaque `PeerData` (the
//! driver puts the signed node record there) so that whoever learns a peer can also reach it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::PeerId;

/// Opaque addressing data of a peer (e.g. its signed node record), at most `max_peer_data` bytes.
pub type PeerData = Vec<u8>;

/// Tunables; defaults are the paper's for networks of about 10,000 nodes.
#[derive(Clone, Debug)]
pub struct Config {
    /// Active view size (paper: log(n) + 1 = 5).
    pub active_view_capacity: usize,
    /// Passive view size (paper: k · (log(n) + 1) = 30).
    pub passive_view_capacity: usize,
    /// Active random walk length (ARWL).
    pub active_random_walk_length: u16,
    /// Passive random walk length (PRWL): a `ForwardJoin` at this TTL also adds to the passive view.
    pub passive_random_walk_length: u16,
    /// Shuffle walk length.
    pub shuffle_random_walk_length: u16,
    /// Active peers sent in a shuffle (ka).
    pub shuffle_active_view_count: usize,
    /// Passive peers sent in a shuffle (kp).
    pub shuffle_passive_view_count: usize,
    /// Time between shuffles.
    pub shuffle_interval: Duration,
    /// A `Neighbor` request without an answer fails after this.
    pub neighbor_request_timeout: Duration,
    /// Largest `PeerData` accepted.
    pub max_peer_data: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_view_capacity: 5,
            passive_view_capacity: 30,
            active_random_walk_length: 6,
            passive_random_walk_length: 3,
            shuffle_random_walk_length: 6,
            shuffle_active_view_count: 3,
            shuffle_passive_view_count: 4,
            shuffle_interval: Duration::from_secs(60),
            // A request to a peer we hold no connection to costs a QUIC handshake plus the
            // request's round trip: up to ~600 ms between distant hosts. At 500 ms (the old value)
            // the simulator showed live, merely distant peers being dropped from passive views
            // until some nodes were left in small islands.
            neighbor_request_timeout: Duration::from_secs(2),
            max_peer_data: 512,
        }
    }
}

/// A peer and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo<P> {
    /// Identity.
    pub id: P,
    /// Addressing data.
    pub data: PeerData,
}

/// Messages between peers of one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P> {
    /// A new node asks its contact to bring it into the overlay.
    Join(PeerData),
    /// A random walk announcing a joining node.
    ForwardJoin {
        /// The joining node.
        peer: PeerInfo<P>,
        /// Remaining hops.
        ttl: u16,
    },
    /// Asks to become an active neighbour; `high` when the sender has no active peer left.
    Neighbor {
        /// Priority.
        high: bool,
        /// The sender's data.
        data: PeerData,
    },
    /// "You are in my active view": the receiver adds the sender to its own.
    NeighborAccept {
        /// The sender's data.
        data: PeerData,
    },
    /// A low-priority `Neighbor` was refused (active view full).
    NeighborReject,
    /// The sender drops us from its active view; `alive` means it keeps us as a passive peer.
    Disconnect {
        /// Whether the sender stays up.
        alive: bool,
    },
    /// A random walk carrying a sample of the origin's views.
    Shuffle {
        /// Who started it.
        origin: PeerInfo<P>,
        /// Remaining hops.
        ttl: u16,
        /// The sample.
        nodes: Vec<PeerInfo<P>>,
    },
    /// The answer to a shuffle: a sample of the passive view of the node where the walk ended.
    ShuffleReply {
        /// The sample.
        nodes: Vec<PeerInfo<P>>,
    },
}

/// Inputs.
#[derive(Clone, Debug)]
pub enum In<P> {
    /// Join the overlay through `contact`.
    Join(PeerInfo<P>),
    /// A message from `from`.
    Message {
        /// Sender.
        from: P,
        /// The message.
        msg: Message<P>,
    },
    /// The connection to a peer was lost (failure detection by the transport).
    ConnectionLost(P),
    /// Members of the topic learned outside the overlay (the DHT member set). Those in neither
    /// view enter the passive view; then, if some were unknown or `mix` is set, one member that
    /// is not an active neighbour (an unknown one first) is asked with high priority to become
    /// one. A topic split by a partition has active views full of its own side and a passive
    /// view drained of the other: this is how the halves find each other after the heal.
    Members {
        /// The members (at most `passive_view_capacity` are looked at).
        peers: Vec<PeerInfo<P>>,
        /// Ask a member to become a neighbour even if every member is known (the driver sets it
        /// when it has a sign that the network healed, and now and then to mix the overlay).
        mix: bool,
    },
    /// A timer scheduled earlier fired.
    Timer(Timer<P>),
}

/// Timers the driver schedules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer<P> {
    /// Time for a shuffle.
    Shuffle,
    /// A `Neighbor` request to this peer went unanswered.
    NeighborTimeout(P),
}

/// Outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out<P> {
    /// Send `msg` to `to` (`data` says how to reach it).
    Send {
        /// Recipient.
        to: P,
        /// How to reach it.
        data: PeerData,
        /// The message.
        msg: Message<P>,
    },
    /// `peer` became an active neighbour: broadcast may use it.
    NeighborUp(P),
    /// `peer` is no longer an active neighbour.
    NeighborDown(P),
    /// The topic no longer needs the connection to `peer` (close it if nothing else uses it).
    Disconnect(P),
    /// Call back with `In::Timer(timer)` after `after`.
    ScheduleTimer {
        /// Delay.
        after: Duration,
        /// Which timer.
        timer: Timer<P>,
    },
}

/// HyParView state of one topic.
#[derive(Debug)]
pub struct HyParView<P: PeerId> {
    cfg: Config,
    me: PeerInfo<P>,
    active: BTreeMap<P, PeerData>,
    passive: BTreeMap<P, PeerData>,
    pending: BTreeSet<P>,
    /// The peer we joined through: asked again when both views are empty (an isolated node has
    /// nobody else to ask; found by the simulator, where ~0.1 % of 10,000 joiners ended so).
    contact: Option<PeerInfo<P>>,
    rng: ChaCha20Rng,
    out: VecDeque<Out<P>>,
    shuffle_scheduled: bool,
}

impl<P: PeerId> HyParView<P> {
    /// A node `me` with seeded randomness.
    pub fn new(me: PeerInfo<P>, cfg: Config, seed: [u8; 32]) -> Self {
        HyParView {
            cfg,
            me,
            active: BTreeMap::new(),
            passive: BTreeMap::new(),
            pending: BTreeSet::new(),
            contact: None,
            rng: ChaCha20Rng::from_seed(seed),
            out: VecDeque::new(),
            shuffle_scheduled: false,
        }
    }

    /// Active neighbours.
    pub fn active(&self) -> impl Iterator<Item = &P> {
        self.active.keys()
    }

    /// Passive view.
    pub fn passive(&self) -> impl Iterator<Item = &P> {
        self.passive.keys()
    }

    /// Sizes of (active, passive).
    pub fn view_sizes(&self) -> (usize, usize) {
        (self.active.len(), self.passive.len())
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<Out<P>> {
        self.out.pop_front()
    }

    fn send(&mut self, to: &P, data: PeerData, msg: Message<P>) {
        self.out.push_back(Out::Send { to: to.clone(), data, msg });
    }

    fn pick<'a, T>(rng: &mut ChaCha20Rng, items: impl ExactSizeIterator<Item = &'a T>) -> Option<&'a T>
    where
        T: 'a,
    {
        let n = items.len();
        if n == 0 {
            return None;
        }
        let i = (rng.next_u64() % n as u64) as usize;
        items.into_iter().nth(i)
    }

    fn random_active_except(&mut self, except: &P) -> Option<P> {
        let candidates: Vec<&P> = self.active.keys().filter(|p| *p != except).collect();
        Self::pick(&mut self.rng, candidates.into_iter()).cloned()
    }

    fn ensure_shuffle_timer(&mut self) {
        if !self.shuffle_scheduled {
            self.shuffle_scheduled = true;
            self.out.push_back(Out::ScheduleTimer { after: self.cfg.shuffle_interval, timer: Timer::Shuffle });
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: In<P>) {
        match input {
            In::Join(contact) => {
                if contact.id == self.me.id || contact.data.len() > self.cfg.max_peer_data {
                    return;
                }
                let data = self.me.data.clone();
                self.send(&contact.id, contact.data.clone(), Message::Join(data));
                self.contact = Some(contact);
                self.ensure_shuffle_timer();
            }
            In::Message { from, msg } => self.on_message(from, msg),
            In::ConnectionLost(p) => self.on_peer_gone(&p),
            In::Members { peers, mix } => self.on_members(peers, mix),
            In::Timer(Timer::Shuffle) => {
                self.shuffle_scheduled = false;
                self.shuffle();
                self.ensure_shuffle_timer();
            }
            In::Timer(Timer::NeighborTimeout(p)) => {
                if self.pending.remove(&p) {
                    self.passive.remove(&p);
                    self.refill();
                }
            }
        }
    }

    fn on_message(&mut self, from: P, msg: Message<P>) {
        if from == self.me.id {
            return;
        }
        match msg {
            Message::Join(data) => {
                if data.len() > self.cfg.max_peer_data {
                    return;
                }
                self.add_active(from.clone(), data.clone());
                // Tell the joiner it is in our active view, so the link is symmetric.
                let mine = self.me.data.clone();
                self.send(&from, data.clone(), Message::NeighborAccept { data: mine });
                let walk = PeerInfo { id: from.clone(), data };
                let others: Vec<(P, PeerData)> =
                    self.active.iter().filter(|(p, _)| **p != from).map(|(p, d)| (p.clone(), d.clone())).collect();
                for (p, d) in others {
                    let msg = Message::ForwardJoin { peer: walk.clone(), ttl: self.cfg.active_random_walk_length };
                    self.send(&p, d, msg);
                }
            }
            Message::ForwardJoin { peer, ttl } => {
                if peer.id == self.me.id || peer.data.len() > self.cfg.max_peer_data {
                    return;
                }
                if ttl == 0 || self.active.len() <= 1 {
                    if !self.active.contains_key(&peer.id) {
                        self.add_active(peer.id.clone(), peer.data.clone());
                        let data = self.me.data.clone();
                        self.send(&peer.id, peer.data, Message::NeighborAccept { data });
                    }
                    return;
                }
                if ttl == self.cfg.passive_random_walk_length {
                    self.add_passive(peer.id.clone(), peer.data.clone());
                }
                match self.random_active_except(&from) {
                    Some(next) => {
                        let d = self.active.get(&next).cloned().unwrap_or_default();
                        self.send(&next, d, Message::ForwardJoin { peer, ttl: ttl - 1 });
                    }
                    None => {
                        self.add_active(peer.id.clone(), peer.data.clone());
                        let data = self.me.data.clone();
                        self.send(&peer.id, peer.data, Message::NeighborAccept { data });
                    }
                }
            }
            Message::Neighbor { high, data } => {
                if data.len() > self.cfg.max_peer_data {
                    return;
                }
                if high || self.active.len() < self.cfg.active_view_capacity {
                    self.add_active(from.clone(), data.clone());
                    let mine = self.me.data.clone();
                    self.send(&from, data, Message::NeighborAccept { data: mine });
                } else {
                    self.add_passive(from.clone(), data.clone());
                    self.send(&from, data, Message::NeighborReject);
                }
            }
            Message::NeighborAccept { data } => {
                if data.len() > self.cfg.max_peer_data {
                    return;
                }
                self.pending.remove(&from);
                self.add_active(from, data);
            }
            Message::NeighborReject => {
                self.pending.remove(&from);
                self.refill();
            }
            Message::Disconnect { alive } => {
                if let Some(data) = self.active.remove(&from) {
                    self.out.push_back(Out::NeighborDown(from.clone()));
                    self.out.push_back(Out::Disconnect(from.clone()));
                    if alive {
                        self.add_passive(from, data);
                    }
                    self.refill();
                }
            }
            Message::Shuffle { origin, ttl, nodes } => self.on_shuffle(from, origin, ttl, nodes),
            Message::ShuffleReply { nodes } => {
                for n in nodes.into_iter().take(self.cfg.passive_view_capacity) {
                    self.add_passive(n.id, n.data);
                }
            }
        }
    }

    fn on_shuffle(&mut self, from: P, origin: PeerInfo<P>, ttl: u16, nodes: Vec<PeerInfo<P>>) {
        if origin.id == self.me.id || origin.data.len() > self.cfg.max_peer_data {
            return;
        }
        let cap = self.cfg.shuffle_active_view_count + self.cfg.shuffle_passive_view_count + 1;
        let nodes: Vec<PeerInfo<P>> = nodes.into_iter().take(cap).collect();
        if ttl > 0
            && self.active.len() > 1
            && let Some(next) = self.random_active_except(&from)
        {
            let d = self.active.get(&next).cloned().unwrap_or_default();
            self.send(&next, d, Message::Shuffle { origin, ttl: ttl - 1, nodes });
            return;
        }
        // The walk ends here: answer with a passive sample of the same size, then keep theirs.
        let mut sample: Vec<PeerInfo<P>> =
            self.passive.iter().map(|(p, d)| PeerInfo { id: p.clone(), data: d.clone() }).collect();
        while sample.len() > nodes.len() {
            let i = (self.rng.next_u64() % sample.len() as u64) as usize;
            sample.swap_remove(i);
        }
        self.send(&origin.id, origin.data.clone(), Message::ShuffleReply { nodes: sample });
        self.add_passive(origin.id, origin.data);
        for n in nodes {
            self.add_passive(n.id, n.data);
        }
    }

    fn shuffle(&mut self) {
        let Some(target) = Self::pick(&mut self.rng, self.active.keys()).cloned() else {
            self.refill();
            if self.pending.is_empty()
                && self.passive.is_empty()
                && let Some(contact) = self.contact.clone()
            {
                // Isolated: join again through the contact (once per shuffle interval).
                let data = self.me.data.clone();
                self.send(&contact.id, contact.data, Message::Join(data));
            }
            return;
        };
        let mut nodes = vec![self.me.clone()];
        let take = |from: &BTreeMap<P, PeerData>, n: usize, rng: &mut ChaCha20Rng, except: &P| {
            let mut v: Vec<PeerInfo<P>> = from
                .iter()
                .filter(|(p, _)| *p != except)
                .map(|(p, d)| PeerInfo { id: p.clone(), data: d.clone() })
                .collect();
            while v.len() > n {
                let i = (rng.next_u64() % v.len() as u64) as usize;
                v.swap_remove(i);
            }
            v
        };
        nodes.extend(take(&self.active, self.cfg.shuffle_active_view_count, &mut self.rng, &target));
        nodes.extend(take(&self.passive, self.cfg.shuffle_passive_view_count, &mut self.rng, &target));
        let d = self.active.get(&target).cloned().unwrap_or_default();
        let msg = Message::Shuffle { origin: self.me.clone(), ttl: self.cfg.shuffle_random_walk_length, nodes };
        self.send(&target, d, msg);
    }

    /// Adds `p` to the active view, dropping a random active peer to the passive view if full.
    fn add_active(&mut self, p: P, data: PeerData) {
        if p == self.me.id || self.active.contains_key(&p) {
            return;
        }
        self.passive.remove(&p);
        if self.active.len() >= self.cfg.active_view_capacity
            && let Some(victim) = Self::pick(&mut self.rng, self.active.keys()).cloned()
            && let Some(vdata) = self.active.remove(&victim)
        {
            self.send(&victim, vdata.clone(), Message::Disconnect { alive: true });
            self.out.push_back(Out::NeighborDown(victim.clone()));
            self.out.push_back(Out::Disconnect(victim.clone()));
            self.add_passive(victim, vdata);
        }
        self.active.insert(p.clone(), data);
        self.out.push_back(Out::NeighborUp(p));
        self.ensure_shuffle_timer();
    }

    /// Adds `p` to the passive view (if it is not us or active), dropping a random one if full.
    fn add_passive(&mut self, p: P, data: PeerData) {
        if p == self.me.id || self.active.contains_key(&p) || data.len() > self.cfg.max_peer_data {
            return;
        }
        if !self.passive.contains_key(&p)
            && self.passive.len() >= self.cfg.passive_view_capacity
            && let Some(victim) = Self::pick(&mut self.rng, self.passive.keys()).cloned()
        {
            self.passive.remove(&victim);
        }
        self.passive.insert(p, data);
    }

    fn on_peer_gone(&mut self, p: &P) {
        self.pending.remove(p);
        self.passive.remove(p);
        if self.active.remove(p).is_some() {
            self.out.push_back(Out::NeighborDown(p.clone()));
            self.refill();
        }
    }

    fn on_members(&mut self, peers: Vec<PeerInfo<P>>, mix: bool) {
        let cap = self.cfg.passive_view_capacity;
        let (mut unknown, mut known) = (Vec::new(), Vec::new());
        for p in peers.into_iter().take(cap) {
            if p.id == self.me.id || p.data.len() > self.cfg.max_peer_data || self.active.contains_key(&p.id) {
                continue;
            }
            if self.passive.contains_key(&p.id) || self.pending.contains(&p.id) {
                known.push(p);
            } else {
                unknown.push(p);
            }
        }
        for p in &unknown {
            self.add_passive(p.id.clone(), p.data.clone());
        }
        let pool = if unknown.is_empty() && mix { &known } else { &unknown };
        let Some(q) = Self::pick(&mut self.rng, pool.iter()).cloned() else { return };
        if self.pending.contains(&q.id) {
            return;
        }
        self.pending.insert(q.id.clone());
        let mine = self.me.data.clone();
        self.send(&q.id, q.data, Message::Neighbor { high: true, data: mine });
        self.out.push_back(Out::ScheduleTimer {
            after: self.cfg.neighbor_request_timeout,
            timer: Timer::NeighborTimeout(q.id),
        });
    }

    /// Below capacity: ask a random passive peer to become a neighbour (one request at a time).
    fn refill(&mut self) {
        if self.active.len() >= self.cfg.active_view_capacity || !self.pending.is_empty() {
            return;
        }
        let candidates: Vec<&P> = self.passive.keys().filter(|p| !self.pending.contains(*p)).collect();
        let Some(q) = Self::pick(&mut self.rng, candidates.into_iter()).cloned() else { return };
        let data = self.passive.get(&q).cloned().unwrap_or_default();
        self.pending.insert(q.clone());
        let high = self.active.is_empty();
        let mine = self.me.data.clone();
        self.send(&q, data, Message::Neighbor { high, data: mine });
        self.out.push_back(Out::ScheduleTimer {
            after: self.cfg.neighbor_request_timeout,
            timer: Timer::NeighborTimeout(q),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn peer(id: u32) -> PeerInfo<u32> {
        PeerInfo { id, data: vec![1] }
    }

    fn neighbour_requests(h: &mut HyParView<u32>) -> Vec<u32> {
        let mut to = Vec::new();
        while let Some(o) = h.poll() {
            if let Out::Send { to: p, msg: Message::Neighbor { .. }, .. } = o {
                to.push(p);
            }
        }
        to
    }

    /// A node with a full active view (1..=5) and 10..=14 passive, no request outstanding.
    fn settled() -> HyParView<u32> {
        let mut h = HyParView::new(peer(0), Config::default(), [7; 32]);
        for p in 1..=5 {
            h.handle(In::Message { from: p, msg: Message::Join(vec![1]) });
        }
        h.handle(In::Members { peers: (10..=14).map(peer).collect(), mix: false });
        // The member asked (they were unknown) refuses: it stays a passive peer.
        for p in neighbour_requests(&mut h) {
            h.handle(In::Message { from: p, msg: Message::NeighborReject });
        }
        while h.poll().is_some() {}
        assert_eq!(h.view_sizes(), (5, 5));
        h
    }

    #[test]
    fn known_members_cause_no_request_unless_asked_to_mix() {
        let mut h = settled();
        let known: Vec<PeerInfo<u32>> = h.active().chain(h.passive()).map(|&id| peer(id)).collect();
        h.handle(In::Members { peers: known.clone(), mix: false });
        assert_eq!(neighbour_requests(&mut h), Vec::<u32>::new(), "every member known: nobody is asked");
        h.handle(In::Members { peers: known, mix: true });
        let asked = neighbour_requests(&mut h);
        assert_eq!(asked.len(), 1, "mixing asks one member");
        assert!(!h.active().any(|a| asked.contains(a)), "not one that is already a neighbour");
    }

    #[test]
    fn an_unknown_member_is_asked_first() {
        let mut h = settled();
        let mut members: Vec<PeerInfo<u32>> = h.passive().map(|&id| peer(id)).collect();
        members.push(peer(99));
        h.handle(In::Members { peers: members, mix: true });
        assert_eq!(neighbour_requests(&mut h), vec![99]);
    }
}
