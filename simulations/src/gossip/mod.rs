//! Gossip on modelled QUIC connections: every simulated node runs the real topic core
//! (`suprnova_gossip::proto::topic::TopicCore`: HyParView + Plumtree, envelope checks, ordering,
//! membership through the DHT member set) — the same core the QUIC driver runs — in one topic.
//! The simulator only carries frames, fires the core's timers and answers its member-set work
//! from a model of the DHT set ([`members`]); a flooding baseline runs over the same overlay.
//!
//! The connection model stands in for QUIC as `suprnova-gossip::net` uses it: a frame to a peer
//! with an open connection takes the one-way delay; to a peer without one, a handshake round trip
//! first. Streams are reliable and ordered, so nothing is lost between live, reachable nodes.
//! Failure detection:
//! - a connection whose peer crashed (or is cut off by a partition) is closed by QUIC's idle
//!   timeout, `idle_timeout` after the last packet the peer sent; links carry a keep-alive every
//!   `keepalive`;
//! - a new connection to a dead or unreachable peer fails after `connect_timeout`;
//! - with `fast_detect` set, any frame to a dead peer is reported lost after that delay instead
//!   (the TCP-reset model of the HyParView and Plumtree papers).
//!
//! Frames on an open connection cut by a partition wait, as QUIC retransmits them, and go out
//! when the cut heals if the connection is still open then. The DHT's sign that a partition
//! healed (a former peer answering again) reaches each node `revival_delay` (at random, up to
//! it) after the heal.
//!
//! In `Flood` mode broadcasts skip Plumtree: every new message goes to every active neighbour of
//! the core's HyParView view but the sender, the baseline both papers compare against.

pub mod members;
mod track;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use suprnova_dht::{Identity, NodeId};
use suprnova_gossip::proto::Frame;
use suprnova_gossip::proto::plumtree::MessageId;
use suprnova_gossip::proto::topic::{Now, TopicCore, TopicEvent, TopicsConfig};
use suprnova_gossip::wire::TopicId;

pub use self::members::MemberSet;
pub use self::track::{GossipNetStats, Track};
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
    Frame(Frame),
    Flood { id: MessageId, round: u16 },
}

enum Ev {
    Msg {
        from: u32,
        to: u32,
        wire: Wire,
    },
    /// The node's core has a timer due.
    Wake {
        node: u32,
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
    /// A member-set write lands.
    Announce {
        node: u32,
    },
    /// A member-set read comes back.
    Read {
        node: u32,
    },
    /// The DHT tells the node a former peer answered again.
    Revived {
        node: u32,
    },
}

struct Node {
    core: TopicCore,
    /// Flood mode: ids seen.
    flooded: HashSet<MessageId>,
    /// Open connections, each with the arrival time of the last frame sent on it: streams are
    /// ordered, so a frame never overtakes the one before it.
    conns: BTreeMap<u32, Nanos>,
    /// When a `Wake` is scheduled (the earliest one that counts).
    wake: Option<Nanos>,
}

/// The one topic every simulated node is in.
fn topic() -> TopicId {
    TopicId::from_name("suprnova-sim")
}

/// A wall clock for the envelopes' timestamps: an arbitrary fixed date plus virtual time.
const UNIX_BASE_MS: u64 = 1_800_000_000_000;

/// A modelled DHT operation (a lookup then a store or a read).
const DHT_OP: Nanos = 150 * MS;

/// The simulated gossip overlay.
pub struct GossipSim {
    seed: u64,
    base: Instant,
    queue: Queue<Ev>,
    /// The network model.
    pub net: NetModel,
    rng: ChaCha8Rng,
    placement: ChaCha8Rng,
    nodes: Vec<Option<Node>>,
    ids: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    /// Topic tunables for new nodes.
    pub config: TopicsConfig,
    /// Broadcast mode.
    pub mode: Mode,
    /// QUIC idle timeout.
    pub idle_timeout: Nanos,
    /// Keep-alive interval on links.
    pub keepalive: Nanos,
    /// Time after which a new connection to a silent peer fails.
    pub connect_timeout: Nanos,
    /// Papers' model: every frame to a dead peer is reported lost after this.
    pub fast_detect: Option<Nanos>,
    /// The DHT's revival signal reaches each node within this of a heal (`None`: never).
    pub revival_delay: Option<Nanos>,
    /// The topic's member set in the DHT.
    pub members: MemberSet,
    /// Broadcasts being tracked, by id.
    pub tracks: BTreeMap<MessageId, Track>,
    by_counter: HashMap<u64, MessageId>,
    /// Counters.
    pub stats: GossipNetStats,
    next_payload: u64,
    /// Frames on open connections across a cut, waiting for it to heal (bounded by what the
    /// cores send during a cut; released or dropped at `heal`).
    held: Vec<(u32, u32, Wire)>,
}

impl GossipSim {
    /// An empty overlay.
    pub fn new(seed: u64, net: NetModel, mode: Mode) -> Self {
        GossipSim {
            seed,
            base: Instant::now(),
            queue: Queue::default(),
            net,
            rng: engine::rng(seed, "gossip network"),
            placement: engine::rng(seed, "gossip placement"),
            nodes: Vec::new(),
            ids: Vec::new(),
            index: HashMap::new(),
            config: TopicsConfig::default(),
            mode,
            idle_timeout: 10 * SEC,
            keepalive: 2 * SEC,
            connect_timeout: 5 * SEC,
            fast_detect: None,
            revival_delay: Some(5 * SEC),
            members: MemberSet::default(),
            tracks: BTreeMap::new(),
            by_counter: HashMap::new(),
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
        self.node(i).and_then(|n| n.core.info(&topic())).map(|t| (t.active.len(), t.passive))
    }

    /// Active view of node `i`.
    pub fn active(&self, i: usize) -> Vec<u32> {
        let info = self.node(i).and_then(|n| n.core.info(&topic()));
        info.map(|t| t.active.iter().filter_map(|p| self.index.get(p).copied()).collect()).unwrap_or_default()
    }

    fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    fn now_at(&self) -> Now {
        let now = self.now();
        Now { at: self.base + Duration::from_nanos(now), unix_ms: UNIX_BASE_MS + now / MS }
    }

    /// Adds a node and subscribes it to the topic: it announces itself in the member set and
    /// joins through members read there, or through `contact` if one is given. Returns its index.
    pub fn add_node(&mut self, contact: Option<usize>) -> usize {
        let i = self.nodes.len();
        self.net.place(&mut self.placement);
        let identity = Identity::from_seed(engine::derive(self.seed, "gossip identity", i as u64));
        let id = identity.id();
        let now = self.now_at();
        let seed = engine::derive(self.seed, "topic core", i as u64);
        let mut core = TopicCore::new(&identity, &[addr(i)], self.config.clone(), seed, now);
        let _ = core.subscribe(now, topic());
        self.ids.push(id);
        self.index.insert(id, i as u32);
        self.nodes.push(Some(Node { core, flooded: HashSet::new(), conns: BTreeMap::new(), wake: None }));
        if let Some(c) = contact
            && let Some(&cid) = self.ids.get(c)
        {
            let now = self.now_at();
            if let Some(Some(n)) = self.nodes.get_mut(i) {
                n.core.join(now, topic(), vec![(cid, vec![addr(c)])]);
            }
        }
        self.pump(i);
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

    /// Heals the partition: frames held on connections that survived go out again, the member
    /// set's copies merge, and the DHT's revival signal is on its way to every node.
    pub fn heal(&mut self) {
        self.net.heal();
        self.members.merge();
        for (a, b, wire) in std::mem::take(&mut self.held) {
            let survived = self.node(a as usize).is_some_and(|n| n.conns.contains_key(&b));
            if survived && self.is_up(b as usize) {
                self.send(a as usize, b as usize, wire);
            } else {
                self.stats.vanished += 1;
            }
        }
        if let Some(d) = self.revival_delay {
            for i in self.up() {
                let after = (d as f64 * engine::unit(&mut self.rng)) as Nanos;
                self.queue.after(after, Ev::Revived { node: i as u32 });
            }
        }
    }

    /// Broadcasts a fresh payload from node `i`; returns its id.
    pub fn broadcast(&mut self, i: usize) -> Option<MessageId> {
        if !self.is_up(i) {
            return None;
        }
        self.next_payload += 1;
        let counter = self.next_payload;
        let mut payload = b"suprnova-sim broadcast ".to_vec();
        payload.extend_from_slice(&self.seed.to_le_bytes());
        payload.extend_from_slice(&counter.to_le_bytes());
        let now = self.now_at();
        let id = match self.mode {
            Mode::Plumtree => {
                let Some(Some(n)) = self.nodes.get_mut(i) else { return None };
                n.core.publish(now, topic(), payload).ok()?
            }
            Mode::Flood => *blake3::hash(&payload).as_bytes(),
        };
        let sent_at = self.now();
        let mut track = Track { origin: i as u32, sent_at, ..Track::default() };
        track.delivered.insert(i as u32, (sent_at, 0));
        self.tracks.insert(id, track);
        self.by_counter.insert(counter, id);
        match self.mode {
            Mode::Plumtree => self.pump(i),
            Mode::Flood => self.flood(i, id, 0, None),
        }
        Some(id)
    }

    /// Runs events until virtual time `until`.
    pub fn run_until(&mut self, until: Nanos) {
        while let Some(ev) = self.queue.pop_until(until) {
            self.event(ev);
        }
    }

    /// Runs events for `d`.
    pub fn run_for(&mut self, d: Nanos) {
        self.run_until(self.now().saturating_add(d));
    }
}

/// A made-up address for node `i` (the cores only carry it).
fn addr(i: usize) -> SocketAddr {
    let b = (i as u32).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, b[1], b[2], b[3]), 4433))
}

/// Whether a topic event is a delivered broadcast, and which (by the simulator's counter).
fn counter_of(event: &TopicEvent) -> Option<u64> {
    let TopicEvent::Message { payload, .. } = event else { return None };
    let tail = payload.get(payload.len().checked_sub(8)?..)?;
    Some(u64::from_le_bytes(tail.try_into().ok()?))
}

mod run;
