//! HyParView + Plumtree (and a flooding baseline) on modelled QUIC connections.
//!
//! Every simulated node runs the real `suprnova_gossip::proto::hyparview::HyParView` and
//! `plumtree::Plumtree` cores with peer ids = node indices, exactly as the topic driver in
//! `suprnova-gossip::net` wires them: HyParView's `NeighborUp`/`NeighborDown` become Plumtree's,
//! both cores' timers are scheduled, and their messages travel between nodes.
//!
//! The connection model stands in for QUIC as `suprnova-gossip::net` uses it: a message to a peer
//! with an open connection takes the one-way delay; to a peer without one, a handshake round trip
//! first (the connection then stays open on both sides until HyParView drops it). Streams are
//! reliable and ordered, so nothing is lost between live, reachable nodes. Failure detection:
//! - a connection whose peer crashed (or is cut off by a partition) is closed by QUIC's idle
//!   timeout, `idle_timeout` after the last packet the peer sent; links carry a keep-alive every
//!   `keepalive`, so that is 25–30 s after the crash with the defaults (30 s, 5 s);
//! - a new connection to a dead or unreachable peer fails after `connect_timeout`;
//! - with `fast_detect` set, any message to a dead peer is reported lost after that delay instead
//!   (the TCP-reset model of the HyParView and Plumtree papers).
//!
//! Messages on an open connection cut by a partition wait, as QUIC retransmits them, and go out
//! when the cut heals if the connection is still open then.
//!
//! In `Flood` mode Plumtree is replaced by plain flooding over the same HyParView active views
//! (forward every new message to every active neighbour but the sender), the baseline both
//! papers compare against.

use std::collections::{BTreeMap, HashSet};

use rand_chacha::ChaCha8Rng;
use suprnova_gossip::proto::hyparview::{self, HyParView, PeerInfo};
use suprnova_gossip::proto::plumtree::{self, MessageId, Plumtree};

use crate::engine::{self, MS, Nanos, NetModel, Queue, SEC};

/// How messages are broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plumtree over HyParView (Suprnova's gossip).
    Plumtree,
    /// Flood over HyParView's active views (the papers' baseline).
    Flood,
}

/// What travels between two nodes.
#[derive(Clone, Debug)]
enum Wire {
    Hpv(hyparview::Message<u32>),
    Plum(plumtree::Message),
    Flood { id: MessageId, round: u16 },
}

enum Ev {
    Msg {
        from: u32,
        to: u32,
        wire: Wire,
    },
    Hpv {
        node: u32,
        timer: hyparview::Timer<u32>,
    },
    Plum {
        node: u32,
        timer: plumtree::Timer,
    },
    /// QUIC's idle timeout (or, with `fast_detect`, the papers' notice) for `node`'s link to `peer`.
    Lost {
        node: u32,
        peer: u32,
    },
    /// A connection attempt from `node` to `peer` timed out.
    ConnectFailed {
        node: u32,
        peer: u32,
    },
}

struct Node {
    hpv: HyParView<u32>,
    plum: Plumtree<u32>,
    /// Flood mode: ids seen.
    flooded: HashSet<MessageId>,
    /// Open connections, each with the arrival time of the last message sent on it: streams are
    /// ordered, so a message never overtakes the one before it.
    conns: BTreeMap<u32, Nanos>,
}

/// One broadcast's deliveries.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// Origin node.
    pub origin: u32,
    /// When it was sent.
    pub sent_at: Nanos,
    /// Nodes that delivered it (the origin included), with when and at which hop.
    pub delivered: BTreeMap<u32, (Nanos, u16)>,
    /// Payload messages (Plumtree `Gossip` or flood copies) sent for it.
    pub payload_msgs: u64,
}

impl Track {
    /// Relative message redundancy, m / (n − 1) − 1 (Leitão et al.), over `n` delivering nodes.
    pub fn rmr(&self) -> f64 {
        let n = self.delivered.len();
        if n < 2 {
            return 0.0;
        }
        self.payload_msgs as f64 / (n - 1) as f64 - 1.0
    }

    /// Last delivery hop: the largest hop count at which a node delivered.
    pub fn ldh(&self) -> u16 {
        self.delivered.values().map(|&(_, r)| r).max().unwrap_or(0)
    }

    /// Time from sending to the last delivery.
    pub fn last_delivery(&self) -> Nanos {
        self.delivered.values().map(|&(t, _)| t.saturating_sub(self.sent_at)).max().unwrap_or(0)
    }
}

/// Counters of the message layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct GossipNetStats {
    /// HyParView messages sent.
    pub hpv_msgs: u64,
    /// Plumtree messages sent (all kinds).
    pub plum_msgs: u64,
    /// `IHave` messages sent.
    pub ihaves: u64,
    /// `Graft` messages sent.
    pub grafts: u64,
    /// `Prune` messages sent.
    pub prunes: u64,
    /// Connections opened.
    pub connects: u64,
    /// Messages that vanished (dead peer or partition).
    pub vanished: u64,
}

/// The simulated gossip overlay.
pub struct GossipSim {
    seed: u64,
    base: std::time::Instant,
    queue: Queue<Ev>,
    /// The network model.
    pub net: NetModel,
    rng: ChaCha8Rng,
    placement: ChaCha8Rng,
    nodes: Vec<Option<Node>>,
    /// HyParView tunables for new nodes.
    pub hpv_config: hyparview::Config,
    /// Plumtree tunables for new nodes.
    pub plum_config: plumtree::Config,
    /// Broadcast mode.
    pub mode: Mode,
    /// QUIC idle timeout.
    pub idle_timeout: Nanos,
    /// Keep-alive interval on links.
    pub keepalive: Nanos,
    /// Time after which a new connection to a silent peer fails.
    pub connect_timeout: Nanos,
    /// Papers' model: every message to a dead peer is reported lost after this.
    pub fast_detect: Option<Nanos>,
    /// Broadcasts being tracked, by id.
    pub tracks: BTreeMap<MessageId, Track>,
    /// Counters.
    pub stats: GossipNetStats,
    next_payload: u64,
    /// Messages on open connections across a cut, waiting for it to heal (bounded by what the
    /// cores send during a cut; released or dropped at `heal`).
    held: Vec<(u32, u32, Wire)>,
}

impl GossipSim {
    /// An empty overlay.
    pub fn new(seed: u64, net: NetModel, mode: Mode) -> Self {
        GossipSim {
            seed,
            base: std::time::Instant::now(),
            queue: Queue::default(),
            net,
            rng: engine::rng(seed, "gossip network"),
            placement: engine::rng(seed, "gossip placement"),
            nodes: Vec::new(),
            hpv_config: hyparview::Config::default(),
            plum_config: plumtree::Config::default(),
            mode,
            idle_timeout: 30 * SEC,
            keepalive: 5 * SEC,
            connect_timeout: 5 * SEC,
            fast_detect: None,
            tracks: BTreeMap::new(),
            stats: GossipNetStats::default(),
            next_payload: 0,
            held: Vec::new(),
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Nanos {
        self.queue.now()
    }

    /// Events processed.
    pub fn events_processed(&self) -> u64 {
        self.queue.processed
    }

    /// Nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(Option::is_some)
    }

    /// Indices of the nodes that are up.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// (active, passive) view sizes of node `i`.
    pub fn views(&self, i: usize) -> Option<(usize, usize)> {
        self.node(i).map(|n| n.hpv.view_sizes())
    }

    /// Active view of node `i`.
    pub fn active(&self, i: usize) -> Vec<u32> {
        self.node(i).map(|n| n.hpv.active().copied().collect()).unwrap_or_default()
    }

    /// Plumtree's eager peers of node `i`.
    pub fn eager(&self, i: usize) -> Vec<u32> {
        self.node(i).map(|n| n.plum.eager().copied().collect()).unwrap_or_default()
    }

    fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// Adds a node, which joins through `contact` (if any): returns its index.
    pub fn add_node(&mut self, contact: Option<usize>) -> usize {
        let i = self.nodes.len();
        self.net.place(&mut self.placement);
        let me = PeerInfo { id: i as u32, data: Vec::new() };
        let hpv = HyParView::new(me, self.hpv_config.clone(), engine::derive(self.seed, "hyparview", i as u64));
        let plum = Plumtree::new(self.plum_config.clone());
        self.nodes.push(Some(Node { hpv, plum, flooded: HashSet::new(), conns: BTreeMap::new() }));
        if let Some(c) = contact {
            self.hpv_input(i, hyparview::In::Join(PeerInfo { id: c as u32, data: Vec::new() }));
        }
        i
    }

    /// Crashes node `i`: its state is gone. Peers with a connection to it notice when QUIC's idle
    /// timeout closes that connection (or, with `fast_detect`, when they next send to it).
    pub fn kill(&mut self, i: usize) {
        let Some(slot) = self.nodes.get_mut(i) else { return };
        let conns = slot.take().map(|n| n.conns).unwrap_or_default();
        if self.fast_detect.is_none() {
            for p in conns.into_keys() {
                self.idle_close(p, i as u32);
            }
        }
    }

    /// Schedules the idle-timeout close of `node`'s connection to `peer`, whose last packet came
    /// at most one keep-alive interval ago.
    fn idle_close(&mut self, node: u32, peer: u32) {
        let since_last = (self.keepalive as f64 * engine::unit(&mut self.rng)) as Nanos;
        let after = self.idle_timeout.saturating_sub(since_last);
        self.queue.after(after, Ev::Lost { node, peer });
    }

    /// Splits the nodes into `groups` by position (see `NetModel::partition`); connections that
    /// cross the cut close by idle timeout.
    pub fn partition(&mut self, groups: u8) {
        self.net.partition(groups);
        let mut cut = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            for &p in n.conns.keys() {
                if !self.net.connected(i, p as usize) {
                    cut.push((i as u32, p));
                }
            }
        }
        for (a, b) in cut {
            if self.fast_detect.is_none() {
                self.idle_close(a, b);
            }
        }
    }

    /// Heals the partition: messages held on connections that survived go out again.
    pub fn heal(&mut self) {
        self.net.heal();
        for (a, b, wire) in std::mem::take(&mut self.held) {
            let survived = self.node(a as usize).is_some_and(|n| n.conns.contains_key(&b));
            if survived && self.is_up(b as usize) {
                self.send(a as usize, b as usize, wire);
            } else {
                self.stats.vanished += 1;
            }
        }
    }

    /// Broadcasts a fresh payload from node `i`; returns its id.
    pub fn broadcast(&mut self, i: usize) -> Option<MessageId> {
        if !self.is_up(i) {
            return None;
        }
        self.next_payload += 1;
        let mut payload = b"suprnova-sim broadcast ".to_vec();
        payload.extend_from_slice(&self.seed.to_le_bytes());
        payload.extend_from_slice(&self.next_payload.to_le_bytes());
        let id = *blake3::hash(&payload).as_bytes();
        let now = self.now();
        self.tracks.insert(id, Track { origin: i as u32, sent_at: now, ..Track::default() });
        match self.mode {
            Mode::Plumtree => self.plum_input(i, plumtree::In::Broadcast(payload)),
            Mode::Flood => self.flood(i, id, 0, None),
        }
        Some(id)
    }

    /// Runs events until virtual time `until`.
    pub fn run_until(&mut self, until: Nanos) {
        while let Some(ev) = self.queue.pop_until(until) {
            match ev {
                Ev::Msg { from, to, wire } => self.receive(from as usize, to as usize, wire),
                Ev::Hpv { node, timer } => self.hpv_input(node as usize, hyparview::In::Timer(timer)),
                Ev::Plum { node, timer } => self.plum_input(node as usize, plumtree::In::Timer(timer)),
                Ev::Lost { node, peer } => {
                    let i = node as usize;
                    if self.fast_detect.is_none() {
                        if self.is_up(peer as usize) && self.net.connected(i, peer as usize) {
                            // The cut healed before the idle timeout: packets flow again, the
                            // connection survives.
                            continue;
                        }
                        if !self.node(i).is_some_and(|n| n.conns.contains_key(&peer)) {
                            // Already closed (HyParView dropped the peer): nothing to notice.
                            continue;
                        }
                    }
                    if let Some(Some(n)) = self.nodes.get_mut(i) {
                        n.conns.remove(&peer);
                    }
                    self.hpv_input(i, hyparview::In::ConnectionLost(peer));
                }
                Ev::ConnectFailed { node, peer } => {
                    let i = node as usize;
                    if let Some(Some(n)) = self.nodes.get_mut(i) {
                        n.conns.remove(&peer);
                    }
                    self.hpv_input(i, hyparview::In::ConnectionLost(peer));
                }
            }
        }
    }

    /// Runs events for `d`.
    pub fn run_for(&mut self, d: Nanos) {
        self.run_until(self.now().saturating_add(d));
    }

    fn instant(&self) -> std::time::Instant {
        self.base + std::time::Duration::from_nanos(self.now())
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
            Wire::Hpv(msg) => self.hpv_input(to, hyparview::In::Message { from: from as u32, msg }),
            Wire::Plum(msg) => self.plum_input(to, plumtree::In::Message { from: from as u32, msg }),
            Wire::Flood { id, round } => self.flood(to, id, round, Some(from as u32)),
        }
    }

    /// Sends `wire` from `a` to `b` over the modelled connection.
    fn send(&mut self, a: usize, b: usize, wire: Wire) {
        let (a32, b32) = (a as u32, b as u32);
        let open = self.node(a).is_some_and(|n| n.conns.contains_key(&b32));
        if !self.is_up(b) || !self.net.connected(a, b) {
            match self.fast_detect {
                Some(d) => {
                    self.stats.vanished += 1;
                    self.queue.after(d, Ev::Lost { node: a32, peer: b32 });
                }
                // On an open connection to a live peer behind a cut, QUIC keeps retransmitting:
                // the message arrives when the cut heals, unless the idle timeout (scheduled at
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

    fn hpv_input(&mut self, i: usize, input: hyparview::In<u32>) {
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        n.hpv.handle(input);
        self.drain(i);
    }

    fn plum_input(&mut self, i: usize, input: plumtree::In<u32>) {
        let now = self.instant();
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        n.plum.handle(now, input);
        self.drain(i);
    }

    /// Carries out both cores' outputs until neither has any.
    fn drain(&mut self, i: usize) {
        let me = i as u32;
        for _ in 0..1_000_000 {
            let now = self.instant();
            let Some(Some(n)) = self.nodes.get_mut(i) else { return };
            if let Some(out) = n.hpv.poll() {
                match out {
                    hyparview::Out::Send { to, msg, .. } => {
                        self.stats.hpv_msgs += 1;
                        self.send(i, to as usize, Wire::Hpv(msg));
                    }
                    hyparview::Out::NeighborUp(p) => {
                        if self.mode == Mode::Plumtree {
                            n.plum.handle(now, plumtree::In::NeighborUp(p));
                        }
                    }
                    hyparview::Out::NeighborDown(p) => {
                        if self.mode == Mode::Plumtree {
                            n.plum.handle(now, plumtree::In::NeighborDown(p));
                        }
                    }
                    hyparview::Out::Disconnect(p) => {
                        n.conns.remove(&p);
                        if let Some(Some(peer)) = self.nodes.get_mut(p as usize) {
                            peer.conns.remove(&me);
                        }
                    }
                    hyparview::Out::ScheduleTimer { after, timer } => {
                        self.queue.after(engine::nanos(after), Ev::Hpv { node: me, timer });
                    }
                }
                continue;
            }
            if let Some(out) = n.plum.poll() {
                match out {
                    plumtree::Out::Send { to, msg } => {
                        self.stats.plum_msgs += 1;
                        match &msg {
                            plumtree::Message::Gossip { id, .. } => {
                                if let Some(t) = self.tracks.get_mut(id) {
                                    t.payload_msgs += 1;
                                }
                            }
                            plumtree::Message::IHave(_) => self.stats.ihaves += 1,
                            plumtree::Message::Graft { .. } => self.stats.grafts += 1,
                            plumtree::Message::Prune => self.stats.prunes += 1,
                        }
                        self.send(i, to as usize, Wire::Plum(msg));
                    }
                    plumtree::Out::Deliver { id, round, .. } => self.delivered(me, id, round),
                    plumtree::Out::ScheduleTimer { after, timer } => {
                        self.queue.after(engine::nanos(after).max(1), Ev::Plum { node: me, timer });
                    }
                }
                continue;
            }
            return;
        }
    }

    fn delivered(&mut self, node: u32, id: MessageId, round: u16) {
        let now = self.now();
        if let Some(t) = self.tracks.get_mut(&id) {
            t.delivered.entry(node).or_insert((now, round));
        }
    }

    /// Flood mode: deliver a new message and forward it to every active neighbour but `from`.
    fn flood(&mut self, i: usize, id: MessageId, round: u16, from: Option<u32>) {
        let Some(Some(n)) = self.nodes.get_mut(i) else { return };
        if !n.flooded.insert(id) {
            return;
        }
        let targets: Vec<u32> = n.hpv.active().copied().filter(|p| Some(*p) != from).collect();
        self.delivered(i as u32, id, round);
        for p in targets {
            if let Some(t) = self.tracks.get_mut(&id) {
                t.payload_msgs += 1;
            }
            self.send(i, p as usize, Wire::Flood { id, round: round.saturating_add(1) });
        }
    }
}

/// Default spacing of joins.
pub const JOIN_GAP: Nanos = MS;
