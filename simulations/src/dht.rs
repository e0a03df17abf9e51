//! Many real `Dht` cores on virtual time.
//!
//! Each simulated node is a `suprnova_dht::proto::Dht`: the Kademlia logic, the routing table,
//! the record store and the Noise channel underneath, exchanging the same encrypted datagrams as
//! on a real network. The simulator delivers each datagram after the network model's delay (or
//! loses it), fires each node's timer when `poll_timeout` says, and collects the events the
//! scenarios read. Public-key operations use the insecure stand-ins of
//! `suprnova_dht::simcrypto` (see there why); everything else is the production code.
//!
//! Node `i` lives at 11.x.y.1:4000 with `x.y` from `i`, one /24 per node, so the routing table's
//! subnet-diversity limits see distinct networks as they would on the internet.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use suprnova_dht::channel::Transmit;
use suprnova_dht::identity::{Identity, NodeId, NodeRecord};
use suprnova_dht::proto::{Dht, DhtConfig, DhtEvent};
use suprnova_dht::testing::Adversary;
use suprnova_dht::wire::WireAddr;

use crate::engine::{self, MS, Nanos, NetModel, Queue};

/// First octet of simulated addresses.
const FIRST_OCTET: u32 = 11;
/// Port of every simulated node.
const PORT: u16 = 4000;
/// Unix time at the start of every run (fixed: records and handshakes carry timestamps).
pub const UNIX_START_NS: u64 = 1_800_000_000_000_000_000;

/// The address of node `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let ip = ((FIRST_OCTET + (i >> 16)) << 24) | ((i & 0xffff) << 8) | 1;
    SocketAddr::from((Ipv4Addr::from(ip), PORT))
}

/// The node at `addr`, if it is a simulated one.
pub fn index_of(addr: SocketAddr) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else { return None };
    if v4.port() != PORT {
        return None;
    }
    let ip = u32::from(*v4.ip());
    let hi = (ip >> 24).checked_sub(FIRST_OCTET)?;
    usize::try_from((hi << 16) | ((ip >> 8) & 0xffff)).ok()
}

/// How a node behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the protocol as written.
    Honest,
    /// Receives nothing and answers nothing, yet other nodes may have it in their tables.
    Blackhole,
    /// Runs the core with an `Adversary` set (lies in its answers).
    Liar,
}

struct Slot {
    dht: Option<Box<Dht>>,
    /// The wake-up currently scheduled (`u64::MAX`: none).
    wake: Nanos,
    role: Role,
}

enum Ev {
    Packet { from: u32, to: u32, data: Vec<u8> },
    Wake { node: u32, at: Nanos },
}

/// Datagram counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by nodes.
    pub sent: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Lost to the loss model.
    pub lost: u64,
    /// Not delivered: the receiver was down or a black hole.
    pub to_dead: u64,
    /// Not delivered: across a partition.
    pub partitioned: u64,
    /// Sent to an address that is no simulated node.
    pub unroutable: u64,
}

/// What a scenario learns from the nodes: query results with the virtual time they arrived.
#[derive(Clone, Debug)]
pub struct Reported {
    /// When.
    pub at: Nanos,
    /// Which node.
    pub node: u32,
    /// The event.
    pub event: DhtEvent,
}

/// The simulated DHT network.
pub struct DhtSim {
    seed: u64,
    base: Instant,
    queue: Queue<Ev>,
    /// The network model (partitions are set here).
    pub net: NetModel,
    rng: ChaCha8Rng,
    nodes: Vec<Slot>,
    ids: Vec<NodeId>,
    records: Vec<Option<NodeRecord>>,
    /// Config for nodes added from now on.
    pub config: DhtConfig,
    /// Events of interest, in order.
    pub reported: Vec<Reported>,
    /// Whether peer events (connected, added, removed, stored) are reported too.
    pub report_peer_events: bool,
    /// Datagram counters.
    pub stats: NetStats,
    placement: ChaCha8Rng,
}

impl DhtSim {
    /// An empty network; nodes get `config` (with their own RNG seeds) when added.
    pub fn new(seed: u64, net: NetModel, config: DhtConfig) -> Self {
        // Identities and checks all use the default provider: refused only if another was
        // installed first, which then serves throughout.
        let _ = suprnova_dht::simcrypto::enable_insecure_simulation_crypto();
        DhtSim {
            seed,
            base: Instant::now(),
            queue: Queue::default(),
            net,
            rng: engine::rng(seed, "dht network"),
            nodes: Vec::new(),
            ids: Vec::new(),
            records: Vec::new(),
            config,
            reported: Vec::new(),
            report_peer_events: false,
            stats: NetStats::default(),
            placement: engine::rng(seed, "placement"),
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Nanos {
        self.queue.now()
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.queue.processed
    }

    /// Most events ever queued at once.
    pub fn peak_queue(&self) -> usize {
        self.queue.peak_len
    }

    fn instant(&self, t: Nanos) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    /// The `Instant` the cores see at virtual time `t`.
    pub fn instant_at(&self, t: Nanos) -> Instant {
        self.instant(t)
    }

    /// Adds a node (down until `start`): returns its index.
    pub fn add_node(&mut self, role: Role) -> usize {
        let i = self.nodes.len();
        self.net.place(&mut self.placement);
        let id = Identity::from_seed(engine::derive(self.seed, "identity", i as u64));
        let mut cfg = self.config.clone();
        cfg.channel.rng_seed = engine::derive(self.seed, "node rng", i as u64);
        cfg.channel.unix_time_ns_at_start = UNIX_START_NS + self.now();
        // Loopback is never used here; the diversity limits apply as on the internet.
        cfg.routing.exempt_local = false;
        let now = self.instant(self.now());
        let dht = Dht::new(id, &[WireAddr::from(addr_of(i))], cfg, now).ok().map(Box::new);
        self.ids.push(dht.as_ref().map_or(NodeId([0; 32]), |d| d.id()));
        self.records.push(dht.as_ref().map(|d| d.record().clone()));
        self.nodes.push(Slot { dht, wake: u64::MAX, role });
        i
    }

    /// Nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.ids.get(i).copied().unwrap_or(NodeId([0; 32]))
    }

    /// The signed record of node `i` (as created).
    pub fn record(&self, i: usize) -> Option<&NodeRecord> {
        self.records.get(i).and_then(Option::as_ref)
    }

    /// The role of node `i`.
    pub fn role(&self, i: usize) -> Role {
        self.nodes.get(i).map_or(Role::Honest, |s| s.role.clone())
    }

    /// Whether node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|s| s.dht.is_some())
    }

    /// The core of node `i` (read-only), if up.
    pub fn node(&self, i: usize) -> Option<&Dht> {
        self.nodes.get(i).and_then(|s| s.dht.as_deref())
    }

    /// Makes node `i` lie.
    pub fn set_adversary(&mut self, i: usize, a: Adversary) {
        if let Some(s) = self.nodes.get_mut(i) {
            s.role = Role::Liar;
            if let Some(d) = s.dht.as_mut() {
                d.set_answer_filter(Some(std::sync::Arc::new(a)));
            }
        }
    }

    /// Stops node `i` for good: its state is dropped (a crash or a leave without goodbye).
    pub fn kill(&mut self, i: usize) {
        if let Some(s) = self.nodes.get_mut(i) {
            s.dht = None;
            s.wake = u64::MAX;
        }
    }

    /// Runs `f` on node `i` at the current virtual time, then sends what it produced.
    pub fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut Dht, Instant) -> R) -> Option<R> {
        let now = self.instant(self.now());
        let r = f(self.nodes.get_mut(i)?.dht.as_deref_mut()?, now);
        self.flush(i);
        Some(r)
    }

    /// Moves node `i`'s datagrams onto the network, collects its events, schedules its timer.
    fn flush(&mut self, i: usize) {
        let now = self.now();
        let report_peers = self.report_peer_events;
        let Some(slot) = self.nodes.get_mut(i) else { return };
        let Some(dht) = slot.dht.as_deref_mut() else { return };
        let from = u32::try_from(i).unwrap_or(u32::MAX);
        while let Some(Transmit { dst, payload }) = dht.poll_transmit() {
            self.stats.sent += 1;
            self.stats.bytes += payload.len() as u64;
            let Some(to) = index_of(dst) else {
                self.stats.unroutable += 1;
                continue;
            };
            if !self.net.connected(i, to) {
                self.stats.partitioned += 1;
                continue;
            }
            match self.net.datagram(&mut self.rng, i, to) {
                Some(delay) => {
                    let to = u32::try_from(to).unwrap_or(u32::MAX);
                    self.queue.after(delay, Ev::Packet { from, to, data: payload });
                }
                None => self.stats.lost += 1,
            }
        }
        while let Some(event) = dht.poll_event() {
            let keep = report_peers
                || !matches!(
                    event,
                    DhtEvent::PeerConnected { .. }
                        | DhtEvent::PeerAdded { .. }
                        | DhtEvent::PeerRemoved { .. }
                        | DhtEvent::RecordStored { .. }
                        | DhtEvent::PutReplica { .. }
                );
            if keep {
                self.reported.push(Reported { at: now, node: from, event });
            }
        }
        if let Some(t) = dht.poll_timeout() {
            let t = engine::nanos(t.saturating_duration_since(self.base)).max(now);
            if t < slot.wake || slot.wake < now {
                slot.wake = t;
                self.queue.at(t, Ev::Wake { node: from, at: t });
            }
        }
    }

    /// Runs events until virtual time `until` (inclusive).
    pub fn run_until(&mut self, until: Nanos) {
        while let Some(ev) = self.queue.pop_until(until) {
            self.dispatch(ev);
        }
    }

    /// Runs events for `d` of virtual time.
    pub fn run_for(&mut self, d: Nanos) {
        self.run_until(self.now().saturating_add(d));
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Packet { from, to, data } => {
                let (from, to) = (from as usize, to as usize);
                let now = self.instant(self.now());
                let Some(slot) = self.nodes.get_mut(to) else { return };
                let Some(dht) = slot.dht.as_deref_mut() else {
                    self.stats.to_dead += 1;
                    return;
                };
                if slot.role == Role::Blackhole {
                    self.stats.to_dead += 1;
                    return;
                }
                if !self.net.connected(from, to) {
                    // A cut made while the datagram was in flight.
                    self.stats.partitioned += 1;
                    return;
                }
                dht.handle_datagram(now, addr_of(from), &data);
                self.flush(to);
            }
            Ev::Wake { node, at } => {
                let i = node as usize;
                let now = self.instant(at);
                let Some(slot) = self.nodes.get_mut(i) else { return };
                if slot.wake != at {
                    return;
                }
                slot.wake = u64::MAX;
                if let Some(dht) = slot.dht.as_deref_mut() {
                    dht.handle_timeout(now);
                }
                self.flush(i);
            }
        }
    }

    /// Takes the reported events.
    pub fn take_reported(&mut self) -> Vec<Reported> {
        std::mem::take(&mut self.reported)
    }

    /// Fills the routing tables of `nodes` as a converged network would have them: for each of
    /// node x's buckets (ids sharing exactly b leading bits with x), up to k nodes drawn at random
    /// from `nodes` in that range. The tables go in through `Dht::restore`, the path a restarting
    /// node takes; no datagram is sent and no session exists yet. Returns the entries restored.
    pub fn warm_start(&mut self, nodes: &[usize], rng: &mut ChaCha8Rng) -> usize {
        let k = self.config.routing.k;
        let mut sorted: Vec<(NodeId, usize)> = nodes.iter().map(|&i| (self.id(i), i)).collect();
        sorted.sort_unstable();
        let ids: Vec<[u8; 32]> = sorted.iter().map(|(id, _)| id.0).collect();
        let mut total = 0;
        for &x in nodes {
            let me = self.id(x).0;
            let mut peers = Vec::new();
            for b in 0..256 {
                let (lo, hi) = bucket_range(&me, b);
                let start = ids.partition_point(|id| *id < lo);
                let end = ids.partition_point(|id| *id <= hi);
                let span = end.saturating_sub(start);
                let mut picked: Vec<usize> = if span <= k {
                    (start..end).collect()
                } else {
                    let mut v = Vec::with_capacity(k);
                    while v.len() < k {
                        let j = start + engine::below(rng, span);
                        if !v.contains(&j) {
                            v.push(j);
                        }
                    }
                    v
                };
                picked.sort_unstable();
                for j in picked {
                    if let Some(rec) = sorted.get(j).and_then(|&(_, i)| self.record(i)) {
                        let addr = WireAddr::from(addr_of(sorted.get(j).map_or(0, |p| p.1)));
                        peers.push(suprnova_dht::proto::SavedPeer { record: rec.clone(), addr });
                    }
                }
                // Beyond the deepest bucket nobody shares more bits with x.
                let (nlo, nhi) = prefix_range(&me, b + 1);
                if ids.partition_point(|id| *id <= nhi) - ids.partition_point(|id| *id < nlo) <= 1 {
                    break;
                }
            }
            let snap = suprnova_dht::proto::Snapshot { peers, records: Vec::new() };
            let now = self.instant(self.now());
            let unix_ms = (UNIX_START_NS + self.now()) / 1_000_000;
            if let Some(r) = self.call(x, |d, _| d.restore(now, unix_ms, snap)) {
                total += r.peers;
            }
        }
        total
    }

    /// The modelled RTT between two nodes.
    pub fn rtt(&self, a: usize, b: usize) -> Nanos {
        self.net.rtt(a, b)
    }

    /// Ids of the `n` up nodes closest to `target` among `candidates` (by XOR distance).
    pub fn true_closest(&self, target: &NodeId, candidates: &[usize], n: usize) -> Vec<usize> {
        let mut v: Vec<(suprnova_dht::identity::Distance, usize)> =
            candidates.iter().map(|&i| (self.id(i).distance(target), i)).collect();
        let n = n.min(v.len());
        if n == 0 {
            return Vec::new();
        }
        v.select_nth_unstable(n - 1);
        v.truncate(n);
        v.sort();
        v.into_iter().map(|(_, i)| i).collect()
    }
}

/// Ids that share exactly `b` leading bits with `x` (bit `b` differs): the bounds, inclusive.
fn bucket_range(x: &[u8; 32], b: usize) -> ([u8; 32], [u8; 32]) {
    let (mut lo, mut hi) = (*x, *x);
    for bit in b..256 {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let (Some(l), Some(h)) = (lo.get_mut(byte), hi.get_mut(byte)) else { break };
        if bit == b {
            let flipped = (x.get(byte).copied().unwrap_or(0) & mask) ^ mask;
            *l = (*l & !mask) | flipped;
            *h = (*h & !mask) | flipped;
        } else {
            *l &= !mask;
            *h |= mask;
        }
    }
    (lo, hi)
}

/// Ids that share at least `b` leading bits with `x`: the bounds, inclusive.
fn prefix_range(x: &[u8; 32], b: usize) -> ([u8; 32], [u8; 32]) {
    let (mut lo, mut hi) = (*x, *x);
    for bit in b..256 {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let (Some(l), Some(h)) = (lo.get_mut(byte), hi.get_mut(byte)) else { break };
        *l &= !mask;
        *h |= mask;
    }
    (lo, hi)
}

/// The default one-way delay unit for scenario pacing.
pub const TICK: Nanos = 10 * MS;
