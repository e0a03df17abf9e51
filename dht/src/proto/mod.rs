//! The sans-IO `Dht` state machine (wire-spec §6, §7): Kademlia over the secure channel.
//!
//! It owns the channel, the routing table, the record store and the queries in flight. Local
//! commands (`ping`, `bootstrap`, `find_node`, `get`, `put`) return ids; results arrive as
//! `DhtEvent`s carrying those ids. Peers' requests are answered in `serve`; lookups, gets, puts and
//! bootstraps are driven in `query`. Like the channel below it, it is fed `(now, input)` and polled.

mod config;
mod event;
mod inbound;
mod query;
mod reach;
mod rejoin;
mod repair;
mod requests;
mod resend;
pub(crate) mod serve;
mod snapshot;
mod timers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use config::{DhtConfig, DhtStats};
pub use event::{DhtEvent, QueryId, RequestError, Target};
pub use query::{GetMode, PutOutcome};
pub use reach::{HeldRelay, ReachConfig, ReachMode, Reachability, is_private_ip};
pub use rejoin::{MAX_DORMANT, MAX_SEEDS, RejoinStatus};
pub use serve::AnswerFilter;
pub use snapshot::{Restored, SavedPeer, SavedRecord, Snapshot};

use crate::channel::{Channel, ChannelEvent, PeerInfo, SendError, Transmit};
use crate::identity::{Identity, NodeId, NodeRecord, RecordError};
use crate::lookup::Found;
use crate::ratelimit::{LimitStat, Limiter, allow_both, ip_key};
use crate::routing::{Entry, Insert, RoutingTable};
use crate::stats::{ChannelStats, DropReason};
use crate::store::{RecordStore, StoreError};
use crate::wire::{Body, Key, Message, Record, WireAddr};

/// Lifetime of a record put without a reason to choose another (ephemeral records, §7.4).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Why an outstanding request was sent, and what to do with its answer.
#[derive(Clone, Debug)]
enum Waiting {
    /// Waiting for the record of `addr`.
    Record { addr: SocketAddr, expect: Option<NodeId>, then: AfterRecord },
    /// Ping sent to `peer`.
    Pong { peer: NodeId, purpose: PingPurpose },
    /// FindNode, FindValue or FindSet sent to `peer` for a query; Nodes may come in several
    /// parts; a set comes in pages (`pages` received so far, the last ending at `after`).
    Lookup {
        peer: NodeId,
        query: QueryId,
        parts: u8,
        total: Option<u8>,
        nodes: Vec<NodeRecord>,
        pages: u8,
        after: Option<[u8; 32]>,
    },
    /// Store sent to `peer` for a put.
    StoreAck { peer: NodeId, query: QueryId },
    /// `Reserve` or `Connect` sent to the relay `peer` (§15).
    Relay { peer: NodeId, ask: reach::RelayAsk },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterRecord {
    /// A user ping: ping the node once its record is known.
    UserPing,
    /// A bootstrap seed: add it to the table (by pinging it).
    Bootstrap(QueryId),
    /// An inbound peer we had no record for: add it to the table.
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PingPurpose {
    /// A user's ping: report the pong.
    User,
    /// Ping-before-evict of the least-recently-seen node in a full bucket.
    Liveness,
    /// A bootstrap seed.
    Bootstrap(QueryId),
    /// The neighbour check: a failure counts against the node's place in the table.
    Neighbour,
    /// A probe of a dormant peer (§7.6): an answer puts it back in the table.
    Dormant,
}

#[derive(Debug)]
struct Pending {
    waiting: Waiting,
    started: Instant,
    deadline: Instant,
    /// For lookup requests: when the lookup stops waiting for this one (see `lookup_stall`).
    stall: Option<Instant>,
    /// The request's copy for retransmission (§6.7); `None` once it must not be sent again.
    resend: Option<resend::Resend>,
}

/// Most parts a `Nodes` answer may come in (20 records need at most 5).
const MAX_NODES_PARTS: u8 = 8;

/// The DHT protocol core. See the module docs.
pub struct Dht {
    cfg: DhtConfig,
    channel: Channel,
    record: NodeRecord,
    table: RoutingTable,
    store: RecordStore,
    next_request: u64,
    pending: BTreeMap<u64, Pending>,
    queries: BTreeMap<QueryId, query::Query>,
    /// Queries waiting for a turn (`max_active_queries`), oldest first, and how many run.
    query_queue: std::collections::VecDeque<QueryId>,
    active_queries: usize,
    admitting: bool,
    next_query: QueryId,
    known: BTreeMap<NodeId, NodeRecord>,
    fetching: BTreeSet<SocketAddr>,
    published: BTreeMap<(Key, [u8; 32]), query::Published>,
    observed: BTreeMap<NodeId, WireAddr>,
    events: VecDeque<DhtEvent>,
    stats: DhtStats,
    rng: rand_chacha::ChaCha20Rng,
    last_refresh_check: Instant,
    answer_filter: Option<std::sync::Arc<dyn AnswerFilter>>,
    refreshed: BTreeMap<NodeId, Instant>,
    repair: repair::Repair,
    last_neighbour_check: Instant,
    limits: Limits,
    rtt: resend::RttEstimate,
    /// Round trips per peer (a network's RTTs differ by 30x: a global estimate alone would resend
    /// to far peers too early); at most `max_known_records`, cleared when full.
    peer_rtt: BTreeMap<NodeId, resend::RttEstimate>,
    /// Retransmissions allowed (first transmissions earn them).
    resend_budget: resend::ResendBudget,
    answers: resend::AnswerCache,
    rejoin: rejoin::Rejoin,
    /// The request being served (peer, id, digest of its bytes): its answers go to the cache.
    serving: Option<(NodeId, u64, resend::RequestDigest)>,
    /// Nodes added to or removed from the table so far (see `snapshot_generation`).
    table_changes: u64,
    /// Relaying, and being reached behind NAT (§15).
    reach: reach::Reach,
}

/// The DHT layer's rate limiters (the channel has its own).
struct Limits {
    requests_per_peer: Limiter<NodeId>,
    requests_per_ip: Limiter<IpAddr>,
    stores_per_peer: Limiter<NodeId>,
    stores_per_ip: Limiter<IpAddr>,
}

impl Limits {
    fn new(cfg: &DhtConfig) -> Self {
        let n = cfg.channel.limit_tracked;
        Limits {
            requests_per_peer: Limiter::new("requests_per_peer", cfg.requests_per_peer, n),
            requests_per_ip: Limiter::new("requests_per_ip", cfg.requests_per_ip, n),
            stores_per_peer: Limiter::new("stores_per_peer", cfg.stores_per_peer, n),
            stores_per_ip: Limiter::new("stores_per_ip", cfg.stores_per_ip, n),
        }
    }

    /// Whether a request from `peer` at `addr` is served (and charged).
    fn request(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> bool {
        let ip = ip_key(addr.ip());
        allow_both(now, &mut self.requests_per_peer, peer, &mut self.requests_per_ip, ip)
    }

    /// Whether a store from `peer` at `addr` is checked (and charged).
    fn store(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) -> bool {
        let ip = ip_key(addr.ip());
        allow_both(now, &mut self.stores_per_peer, peer, &mut self.stores_per_ip, ip)
    }
}

impl Dht {
    /// A DHT node for `identity` advertising `addrs`, starting at `now`.
    pub fn new(identity: Identity, addrs: &[WireAddr], cfg: DhtConfig, now: Instant) -> Result<Self, RecordError> {
        use rand_core::SeedableRng;
        if addrs.iter().any(|a| !a.is_usable()) {
            return Err(RecordError::BadAddr);
        }
        // Milliseconds since the epoch as the first seq: a restarted node's record supersedes the
        // one it had before (unless it re-signed more than once per millisecond it ran).
        let seq = cfg.channel.unix_time_ns_at_start / 1_000_000;
        let reach = reach::Reach::new(cfg.reach.clone(), addrs, seq, now);
        let record = identity.make_record(seq, cfg.capabilities | reach.capabilities(), addrs)?;
        // The DHT's own randomness (refresh targets) comes from a seed derived from the channel's.
        let rng = rand_chacha::ChaCha20Rng::from_seed(blake3::derive_key("suprnova v1 dht rng", &cfg.channel.rng_seed));
        let mut channel = Channel::new(identity, cfg.channel.clone(), now);
        channel.set_local_record(&record);
        let table = RoutingTable::new(record.id, cfg.routing.clone());
        let store = RecordStore::new(cfg.store.clone());
        Ok(Dht {
            limits: Limits::new(&cfg),
            cfg,
            channel,
            record,
            table,
            store,
            next_request: 1,
            pending: BTreeMap::new(),
            queries: BTreeMap::new(),
            query_queue: std::collections::VecDeque::new(),
            active_queries: 0,
            admitting: false,
            next_query: 1,
            known: BTreeMap::new(),
            fetching: BTreeSet::new(),
            published: BTreeMap::new(),
            observed: BTreeMap::new(),
            events: VecDeque::new(),
            stats: DhtStats::default(),
            rng,
            last_refresh_check: now,
            answer_filter: None,
            refreshed: BTreeMap::new(),
            repair: repair::Repair::default(),
            last_neighbour_check: now,
            rtt: resend::RttEstimate::new(),
            peer_rtt: BTreeMap::new(),
            resend_budget: resend::ResendBudget::new(),
            answers: resend::AnswerCache::default(),
            rejoin: rejoin::Rejoin::default(),
            serving: None,
            table_changes: 0,
            reach,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DhtConfig {
        &self.cfg
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.channel.identity().id()
    }

    /// Our current signed record.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Re-signs our record with new addresses and a higher sequence number.
    pub fn set_addrs(&mut self, addrs: &[WireAddr]) -> Result<(), RecordError> {
        if addrs.iter().any(|a| !a.is_usable()) {
            return Err(RecordError::BadAddr);
        }
        self.resign(addrs)
    }

    /// Channel counters, including drops by reason.
    pub fn stats(&self) -> &ChannelStats {
        self.channel.stats()
    }

    /// Every rate limiter of this node, the channel's first: configuration, sources tracked
    /// (memory), refusals.
    pub fn limits(&self) -> Vec<LimitStat> {
        let l = &self.limits;
        let mut v = self.channel.limits();
        v.extend([
            l.requests_per_peer.stat(),
            l.requests_per_ip.stat(),
            l.stores_per_peer.stat(),
            l.stores_per_ip.stat(),
        ]);
        v
    }

    /// DHT counters.
    pub fn dht_stats(&self) -> &DhtStats {
        &self.stats
    }

    /// The secure channel (read-only).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The routing table (read-only).
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store (read-only).
    pub fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Rewrites this node's answers before they are sent (tests and the simulator make a node
    /// lie with it; see [`AnswerFilter`]). `None`: honest answers.
    pub fn set_answer_filter(&mut self, f: Option<std::sync::Arc<dyn AnswerFilter>>) {
        self.answer_filter = f;
    }

    /// Sends raw plaintext to a peer over the secure channel (tests only: crafted messages).
    #[doc(hidden)]
    pub fn send_raw(&mut self, now: Instant, to: &PeerInfo, plaintext: &[u8]) -> Result<(), SendError> {
        self.channel.send(now, to, plaintext)
    }

    /// Node records remembered outside the routing table (bounded by `max_known_records`).
    pub fn known_records(&self) -> usize {
        self.known.len()
    }

    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Queries in flight.
    pub fn pending_queries(&self) -> usize {
        self.queries.len()
    }

    /// The record we hold for `id`, borrowed.
    fn record_ref(&self, id: &NodeId) -> Option<&NodeRecord> {
        self.table.get(id).map(|e| &e.record).or_else(|| self.known.get(id))
    }

    fn lookup_record(&self, id: &NodeId) -> Option<NodeRecord> {
        self.table.get(id).map(|e| e.record.clone()).or_else(|| self.known.get(id).cloned())
    }

    fn remember(&mut self, rec: &NodeRecord) {
        if let Some(held) = self.known.get(&rec.id) {
            if rec.supersedes(held).is_err() {
                return;
            }
        } else if self.known.len() >= self.cfg.max_known_records {
            // Forget an arbitrary (the smallest-id) record: this cache only saves record fetches.
            if let Some(first) = self.known.keys().next().copied() {
                self.known.remove(&first);
            }
        }
        self.known.insert(rec.id, rec.clone());
    }

    /// A node proved alive at `addr`: offer it to the routing table. A private node (§15.1), or
    /// one that speaks through a relay, is remembered but stays out (and leaves it if it was in).
    fn saw_alive(&mut self, now: Instant, rec: &NodeRecord, addr: SocketAddr) {
        self.remember(rec);
        if rec.capabilities & crate::identity::capability::PRIVATE != 0 || crate::path::is_virtual(&addr) {
            if rec.capabilities & crate::identity::capability::PRIVATE != 0 && self.table.get(&rec.id).is_some() {
                self.table.remove(&rec.id);
                self.peer_removed(now, rec.id);
            }
            return;
        }
        let entry = Entry { record: rec.clone(), addr, last_seen: now, failures: 0, failed_at: None };
        match self.table.insert(now, entry) {
            Insert::Added => self.peer_added(now, rec.id),
            Insert::PingFirst { ping } => {
                if let Some(e) = self.table.get(&ping).cloned() {
                    let info = PeerInfo { id: ping, noise_key: e.record.noise_key, addr: e.addr };
                    let w = Waiting::Pong { peer: ping, purpose: PingPurpose::Liveness };
                    if self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout).is_err() {
                        self.node_failed(now, now, &ping);
                    }
                }
            }
            Insert::Updated | Insert::Cached | Insert::Refused(_) => {}
        }
    }

    /// A request to `peer` sent at `sent` failed: count it against the node's place in the table
    /// (`RoutingTable::record_failure`: not if it spoke since, and a burst of timeouts once).
    fn node_failed(&mut self, now: Instant, sent: Instant, peer: &NodeId) {
        let spacing = self.cfg.rpc_timeout / 2;
        if self.table.record_failure(now, sent, peer, self.cfg.max_failures, spacing) {
            self.peer_removed(now, *peer);
        }
    }

    fn peer_added(&mut self, now: Instant, peer: NodeId) {
        self.table_changes += 1;
        self.note_back(now, peer);
        self.repair_trigger(now, peer, true);
        self.events.push_back(DhtEvent::PeerAdded { peer });
    }

    fn peer_removed(&mut self, now: Instant, peer: NodeId) {
        self.table_changes += 1;
        self.note_dormant(now, peer);
        self.repair_trigger(now, peer, false);
        self.events.push_back(DhtEvent::PeerRemoved { peer });
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.channel.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }
}
