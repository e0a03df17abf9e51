//! The sans-IO `Dht` state machine (wire-spec §6, §7): Kademlia over the secure channel.
//!
//! It owns the channel, the routing table, the record store and the queries in flight. Local
//! commands (`ping`, `bootstrap`, `find_node`, `get`, `put`) return ids; results arrive as
//! `DhtEvent`s carrying those ids. Peers' requests are answered in `serve`; lookups, gets, puts and
//! bootstraps are driven in `query`. Like the channel below it, it is fed `(now, input)` and polled.

mod config;
mod query;
mod rejoin;
mod repair;
mod resend;
mod serve;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use config::{DhtConfig, DhtStats};
pub use query::{GetMode, PutOutcome};
pub use rejoin::{MAX_DORMANT, MAX_SEEDS, RejoinStatus};
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

/// Whom to ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A node whose signed record we hold.
    Record(NodeRecord),
    /// An address; the node's record is fetched first and, if `expect` is set, must carry that id.
    Addr {
        /// Where.
        addr: SocketAddr,
        /// The id the node must have.
        expect: Option<NodeId>,
    },
}

/// Why a request or query of ours failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// The handshake with the peer was abandoned.
    #[error("handshake failed (no response; wrong key or unreachable)")]
    HandshakeFailed,
    /// The node at the address is not the one expected.
    #[error("node at address has id {0}, not the one expected")]
    IdentityMismatch(NodeId),
    /// The peer's record is invalid.
    #[error("invalid node record: {0}")]
    BadRecord(RecordError),
    /// The peer answered with an error code.
    #[error("peer refused the request (code {0})")]
    Refused(u16),
    /// The request could not be sent.
    #[error("cannot send: {0}")]
    Send(SendError),
    /// Too many requests or queries in flight.
    #[error("too many requests in flight")]
    Busy,
    /// The record has no address we can use.
    #[error("no usable address in record")]
    NoAddress,
    /// The record is refused locally before anything is sent.
    #[error("record refused: {0}")]
    Invalid(StoreError),
    /// No node returned a valid value.
    #[error("not found")]
    NotFound,
    /// The routing table is empty: nobody to ask.
    #[error("no known peers (bootstrap first)")]
    NoPeers,
}

/// Query ids, returned by `bootstrap`, `find_node`, `get` and `put`.
pub type QueryId = u64;

/// What the `Dht` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// A user ping was answered.
    Pong {
        /// Request id returned by `ping`.
        request: u64,
        /// Who answered.
        peer: NodeId,
        /// From where.
        addr: SocketAddr,
        /// Time from sending (including any record fetch and handshake) to the pong.
        rtt: Duration,
        /// Our address as the peer saw it.
        observed: WireAddr,
        /// The peer's record sequence number.
        record_seq: u64,
    },
    /// A user ping failed.
    RequestFailed {
        /// Request id.
        request: u64,
        /// Why.
        error: RequestError,
    },
    /// A session with a peer was confirmed.
    PeerConnected {
        /// Peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
    },
    /// A node entered the routing table.
    PeerAdded {
        /// The node.
        peer: NodeId,
    },
    /// A node left the routing table.
    PeerRemoved {
        /// The node.
        peer: NodeId,
    },
    /// The table holds fewer than `min_peers` nodes: the node bootstraps again through its
    /// seeds and dormant peers (§7.6).
    Rejoining {
        /// Routing-table size now.
        peers: usize,
        /// Attempts since the table was last large enough (1 for the first).
        attempt: u32,
        /// Seeds and dormant peers asked.
        targets: usize,
    },
    /// A bootstrap finished; the routing table holds `peers` nodes.
    Bootstrapped {
        /// Query id.
        query: QueryId,
        /// Routing-table size.
        peers: usize,
    },
    /// A `find_node` finished.
    FoundNodes {
        /// Query id.
        query: QueryId,
        /// The closest nodes that answered, closest first.
        nodes: Vec<Found>,
        /// Hops to the closest node.
        hops: u32,
        /// Requests sent.
        queries: usize,
    },
    /// A valid record for a `get` arrived (the first one, and for `GetMode::All` each new one).
    GotRecord {
        /// Query id.
        query: QueryId,
        /// The record, validated against the key.
        record: Record,
        /// Who served it (this node's own id for a local hit).
        from: NodeId,
        /// Hop of the node that served it (0 = local).
        hop: u32,
    },
    /// A `get` finished; `found` records were reported (`Err(NotFound)` if none).
    GetDone {
        /// Query id.
        query: QueryId,
        /// Records reported, or why none.
        result: Result<usize, RequestError>,
        /// Requests sent.
        queries: usize,
    },
    /// One replica of a `put` answered.
    PutReplica {
        /// Query id.
        query: QueryId,
        /// The replica (this node's own id when stored locally).
        node: NodeId,
        /// Stored, or the error code it answered with.
        result: Result<(), RequestError>,
    },
    /// A `put` finished.
    PutDone {
        /// Query id.
        query: QueryId,
        /// Replicas that stored it, or why none could.
        result: Result<PutOutcome, RequestError>,
    },
    /// A peer stored a record on this node.
    RecordStored {
        /// The key.
        key: Key,
        /// The peer.
        from: NodeId,
    },
}

/// Misbehaviour for tests and the simulator: how this node lies when it answers. Never set in a
/// real node; it exists so that the honest nodes' defences run against the same core.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct Adversary {
    /// Node records to add to every `Nodes` answer (forged or colluding).
    pub extra_nodes: Vec<NodeRecord>,
    /// Answer `FindNode` with `extra_nodes` only.
    pub only_extra_nodes: bool,
    /// Answer every `FindValue` with these records, whatever the key, and every `FindSet` with
    /// their set entries as one page that always claims more.
    pub values: Option<Vec<Record>>,
    /// Colluding nodes: every `FindNode` (and every `FindValue` or `FindSet` not answered with
    /// `values`) is answered with the k of these closest to the target, so lookups are steered
    /// into the colluders (the adversary of S/Kademlia, Baumgart & Mies 2007). Shared, as many
    /// liars hold the same list.
    pub colluders: Option<std::sync::Arc<Vec<NodeRecord>>>,
}

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
    adversary: Option<Adversary>,
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
        let record = identity.make_record(seq, cfg.capabilities, addrs)?;
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
            adversary: None,
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
        let rec = self.channel.identity().make_record(self.record.seq + 1, self.cfg.capabilities, addrs)?;
        self.channel.set_local_record(&rec);
        self.record = rec;
        Ok(())
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

    /// Makes this node lie (tests and simulation only).
    #[doc(hidden)]
    pub fn set_adversary(&mut self, a: Option<Adversary>) {
        self.adversary = a;
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

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Sends `body` to `info` as a request and remembers what we wait for.
    fn send_request(
        &mut self,
        now: Instant,
        info: &PeerInfo,
        body: Body,
        waiting: Waiting,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            return Err(RequestError::Busy);
        }
        let id = self.request_id();
        let bytes = Message { id, body }.encode().map_err(|_| RequestError::Send(SendError::TooLarge))?;
        let clean = self.channel.has_session(&info.id, now);
        self.channel.send(now, info, &bytes).map_err(RequestError::Send)?;
        self.resend_budget.earn();
        let rto = self.rto_of(&info.id);
        let resend = Some(resend::Resend { info: *info, bytes, next: now + rto, rto, resent: 0, clean });
        self.pending.insert(id, Pending { waiting, started: now, deadline: now + timeout, stall: None, resend });
        Ok(id)
    }

    fn peer_info(rec: &NodeRecord, addr: Option<SocketAddr>) -> Result<PeerInfo, RequestError> {
        let addr =
            addr.or_else(|| rec.addr_for(false)).or_else(|| rec.addr_for(true)).ok_or(RequestError::NoAddress)?;
        Ok(PeerInfo { id: rec.id, noise_key: rec.noise_key, addr })
    }

    /// Pings `target`; the answer arrives as `DhtEvent::Pong` or `RequestFailed` with this id.
    pub fn ping(&mut self, now: Instant, target: Target) -> Result<u64, RequestError> {
        match target {
            Target::Record(rec) => {
                rec.verify().map_err(RequestError::BadRecord)?;
                self.remember(&rec);
                let info = Self::peer_info(&rec, None)?;
                let purpose = PingPurpose::User;
                self.send_request(
                    now,
                    &info,
                    Body::Ping,
                    Waiting::Pong { peer: rec.id, purpose },
                    self.cfg.request_timeout,
                )
            }
            Target::Addr { addr, expect } => {
                let addr = crate::channel::canonical(addr);
                if let Some(rec) = expect.and_then(|id| self.lookup_record(&id)) {
                    let info = Self::peer_info(&rec, Some(addr))?;
                    let w = Waiting::Pong { peer: rec.id, purpose: PingPurpose::User };
                    return self.send_request(now, &info, Body::Ping, w, self.cfg.request_timeout);
                }
                self.fetch_record(now, addr, expect, AfterRecord::UserPing)
            }
        }
    }

    fn fetch_record(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expect: Option<NodeId>,
        then: AfterRecord,
    ) -> Result<u64, RequestError> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            return Err(RequestError::Busy);
        }
        self.channel.request_record(now, addr);
        self.fetching.insert(addr);
        let id = self.request_id();
        let deadline = now + self.cfg.request_timeout.min(self.cfg.channel.record_request_timeout);
        self.pending.insert(
            id,
            Pending {
                waiting: Waiting::Record { addr, expect, then },
                started: now,
                deadline,
                stall: None,
                resend: None,
            },
        );
        Ok(id)
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

    /// A node proved alive at `addr`: offer it to the routing table.
    fn saw_alive(&mut self, now: Instant, rec: &NodeRecord, addr: SocketAddr) {
        self.remember(rec);
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

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.channel.handle_datagram(now, from, data);
        self.drain_channel(now);
    }

    fn drain_channel(&mut self, now: Instant) {
        while let Some(ev) = self.channel.poll_event() {
            match ev {
                ChannelEvent::Received { peer, addr, data } => self.on_message(now, peer, addr, &data),
                ChannelEvent::Established { peer, addr, .. } => {
                    self.events.push_back(DhtEvent::PeerConnected { peer, addr })
                }
                ChannelEvent::HandshakeFailed { peer, .. } => {
                    let ids: Vec<u64> = self
                        .pending
                        .iter()
                        .filter(|(_, p)| Self::waiting_peer(&p.waiting) == Some(peer))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.fail_request(now, id, RequestError::HandshakeFailed);
                    }
                }
                ChannelEvent::Record { from, record } => self.on_record(now, from, record),
            }
        }
    }

    fn waiting_peer(w: &Waiting) -> Option<NodeId> {
        match w {
            Waiting::Pong { peer, .. } | Waiting::Lookup { peer, .. } | Waiting::StoreAck { peer, .. } => Some(*peer),
            Waiting::Record { .. } => None,
        }
    }

    /// An outstanding request failed.
    fn fail_request(&mut self, now: Instant, id: u64, error: RequestError) {
        let Some(p) = self.pending.remove(&id) else { return };
        match p.waiting {
            Waiting::Record { addr, then, .. } => {
                self.fetching.remove(&addr);
                match then {
                    AfterRecord::UserPing => self.events.push_back(DhtEvent::RequestFailed { request: id, error }),
                    AfterRecord::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                    AfterRecord::Table => {}
                }
            }
            Waiting::Pong { peer, purpose } => match purpose {
                PingPurpose::User => self.events.push_back(DhtEvent::RequestFailed { request: id, error }),
                PingPurpose::Liveness => {
                    // Ping-before-evict: the old node is gone; its waiting candidate takes over.
                    if let Some(added) = self.table.on_failed(&peer) {
                        self.peer_added(now, added);
                    }
                    self.peer_removed(now, peer);
                }
                PingPurpose::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                // Still dormant; probed again in turn.
                PingPurpose::Dormant => {}
                PingPurpose::Neighbour => {
                    self.node_failed(now, p.started, &peer);
                    // Still listed (fewer than `max_failures` so far): ask again now rather than
                    // at the next check, so a dead neighbour is gone within a few timeouts.
                    self.ping_neighbour(now, peer);
                }
            },
            Waiting::Lookup { peer, query, nodes, parts, pages, .. } => {
                self.stats.rpcs_failed += 1;
                if parts > 0 || pages > 0 {
                    // A partial answer is still an answer.
                    self.lookup_answered(now, query, peer, nodes);
                } else {
                    self.node_failed(now, p.started, &peer);
                    self.lookup_failed(now, query, peer);
                }
            }
            Waiting::StoreAck { peer, query } => {
                self.stats.rpcs_failed += 1;
                self.node_failed(now, p.started, &peer);
                self.replica_done(now, query, peer, Err(error));
            }
        }
    }

    fn on_record(&mut self, now: Instant, from: SocketAddr, record: NodeRecord) {
        self.fetching.remove(&from);
        let waiting: Vec<(u64, Option<NodeId>, AfterRecord, Instant)> = self
            .pending
            .iter()
            .filter_map(|(id, p)| match p.waiting {
                Waiting::Record { addr, expect, then } if addr == from => Some((*id, expect, then, p.started)),
                _ => None,
            })
            .collect();
        for (request, expect, then, started) in waiting {
            self.pending.remove(&request);
            if expect.is_some_and(|e| e != record.id) {
                self.channel.count_drop(DropReason::IdentityMismatch);
                match then {
                    AfterRecord::UserPing => self.events.push_back(DhtEvent::RequestFailed {
                        request,
                        error: RequestError::IdentityMismatch(record.id),
                    }),
                    AfterRecord::Bootstrap(q) => self.bootstrap_seed_done(now, q),
                    AfterRecord::Table => {}
                }
                continue;
            }
            self.remember(&record);
            let info = PeerInfo { id: record.id, noise_key: record.noise_key, addr: from };
            match then {
                AfterRecord::UserPing => {
                    // Keep the user's request id: the pong answers the same request.
                    let w = Waiting::Pong { peer: record.id, purpose: PingPurpose::User };
                    let sent = Message { id: request, body: Body::Ping }
                        .encode()
                        .map_err(|_| SendError::TooLarge)
                        .and_then(|m| self.channel.send(now, &info, &m));
                    match sent {
                        Ok(()) => {
                            let deadline = started + self.cfg.request_timeout;
                            self.pending
                                .insert(request, Pending { waiting: w, started, deadline, stall: None, resend: None });
                        }
                        Err(e) => {
                            self.events.push_back(DhtEvent::RequestFailed { request, error: RequestError::Send(e) })
                        }
                    }
                }
                AfterRecord::Bootstrap(q) => {
                    let w = Waiting::Pong { peer: record.id, purpose: PingPurpose::Bootstrap(q) };
                    if self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout).is_err() {
                        self.bootstrap_seed_done(now, q);
                    }
                }
                AfterRecord::Table => self.saw_alive(now, &record, from),
            }
        }
    }

    /// An authenticated message from `peer` at `addr`: it is alive. Its record is fetched if we
    /// have none, or if it speaks from an address its record does not list (it moved and re-signed).
    fn peer_active(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        let rec = self.lookup_record(&peer);
        if let Some(rec) = &rec {
            self.saw_alive(now, rec, addr);
        }
        let stale = rec.as_ref().is_none_or(|r| !r.addrs.contains(&WireAddr::from(addr)));
        if stale {
            self.refresh_record(now, peer, addr, false);
        }
    }

    /// Fetches `peer`'s current record from `addr` unless a fetch is under way or one was made
    /// in the last minute (a node behind NAT never speaks from the address its record lists).
    /// `certain` (a pong announced a newer seq) skips the cooldown.
    fn refresh_record(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, certain: bool) {
        const COOLDOWN: Duration = Duration::from_secs(60);
        if !certain && self.refreshed.get(&peer).is_some_and(|t| now.saturating_duration_since(*t) < COOLDOWN) {
            return;
        }
        if self.fetching.contains(&addr) || self.pending.len() >= self.cfg.max_pending_requests / 2 {
            return;
        }
        if self.refreshed.len() >= self.cfg.max_known_records {
            self.refreshed.clear();
        }
        self.refreshed.insert(peer, now);
        let _ = self.fetch_record(now, addr, Some(peer), AfterRecord::Table);
    }

    fn on_message(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, data: &[u8]) {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(_) => {
                if !self.limits.request(now, peer, addr) {
                    return self.channel.count_drop(DropReason::RateLimitedRequest);
                }
                self.channel.count_drop(DropReason::MalformedMessage);
                if let Some(id) = Message::peek_id(data) {
                    self.reply(
                        now,
                        peer,
                        id,
                        serve::error(crate::wire::message::error_code::UNSUPPORTED, "unknown or malformed message"),
                    );
                }
                return;
            }
        };
        match msg.body {
            Body::Ping | Body::FindNode { .. } | Body::FindValue { .. } | Body::FindSet { .. } | Body::Store { .. } => {
                let request = resend::digest(data);
                if self.answer_again(now, peer, msg.id, &request) {
                    return;
                }
                self.serving = Some((peer, msg.id, request));
                self.serve_request(now, peer, addr, msg);
                self.serving = None;
            }
            Body::Pong { observed, record_seq } => self.on_pong(now, peer, addr, msg.id, observed, record_seq),
            Body::Nodes { total, nodes } => self.on_nodes(now, peer, addr, msg.id, total, nodes.into_inner()),
            Body::Value { key, records } => self.on_value(now, peer, addr, msg.id, key, records.into_inner()),
            Body::SetPage { key, entries, more } => {
                self.on_set_page(now, peer, addr, msg.id, key, entries.into_inner(), more)
            }
            Body::StoreAck { .. } => self.on_store_ack(now, peer, addr, msg.id, Ok(())),
            Body::Error { code, .. } => self.on_error(now, peer, addr, msg.id, code),
        }
    }

    /// A request from `peer`, past the answer cache: rate limits, then `serve`.
    fn serve_request(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, msg: Message) {
        if !self.limits.request(now, peer, addr) {
            // Answered (cheaply), so that an honest peer over the limit sees us alive and busy
            // rather than failing us after its timeout.
            self.channel.count_drop(DropReason::RateLimitedRequest);
            let code = crate::wire::message::error_code::RATE_LIMITED;
            return self.reply(now, peer, msg.id, serve::error(code, "request rate limit"));
        }
        if matches!(msg.body, Body::Store { .. }) && !self.limits.store(now, peer, addr) {
            self.channel.count_drop(DropReason::RateLimitedStore);
            let code = crate::wire::message::error_code::RATE_LIMITED;
            return self.reply(now, peer, msg.id, serve::error(code, "store rate limit"));
        }
        self.peer_active(now, peer, addr);
        self.serve(now, peer, addr, msg);
    }

    /// The pending request `id` if it was sent to `peer`.
    fn take_from(&mut self, now: Instant, id: u64, peer: NodeId) -> Option<Pending> {
        let matches = self.pending.get(&id).is_some_and(|p| Self::waiting_peer(&p.waiting) == Some(peer));
        if matches {
            let p = self.pending.remove(&id);
            // Karn: only an answer to a request sent once, on a session, measures the round trip.
            if let Some(p) = &p
                && p.resend.as_ref().is_some_and(|r| r.resent == 0 && r.clean)
            {
                let rtt = now.saturating_duration_since(p.started);
                self.rtt.sample(rtt);
                if self.peer_rtt.len() >= self.cfg.max_known_records && !self.peer_rtt.contains_key(&peer) {
                    self.peer_rtt.clear();
                }
                self.peer_rtt.entry(peer).or_insert_with(resend::RttEstimate::new).sample(rtt);
            }
            p
        } else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            None
        }
    }

    fn responder_alive(&mut self, now: Instant, peer: NodeId, addr: SocketAddr) {
        if let Some(rec) = self.lookup_record(&peer) {
            self.saw_alive(now, &rec, addr);
        }
    }

    fn on_pong(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, id: u64, observed: WireAddr, record_seq: u64) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        self.note_observed(peer, observed);
        // A newer record than ours: fetch it (the node re-signed, e.g. after moving).
        if self.lookup_record(&peer).is_some_and(|r| r.seq < record_seq) {
            self.refresh_record(now, peer, addr, true);
        }
        let Waiting::Pong { purpose, .. } = p.waiting else { return };
        match purpose {
            PingPurpose::User => {
                let rtt = now.saturating_duration_since(p.started);
                self.events.push_back(DhtEvent::Pong { request: id, peer, addr, rtt, observed, record_seq });
                self.responder_alive(now, peer, addr);
            }
            PingPurpose::Liveness => self.table.on_alive(now, &peer),
            PingPurpose::Neighbour => self.responder_alive(now, peer, addr),
            PingPurpose::Dormant => self.dormant_answered(now, peer, addr),
            PingPurpose::Bootstrap(q) => {
                self.responder_alive(now, peer, addr);
                self.bootstrap_seed_done(now, q);
            }
        }
    }

    /// Peers tell us the address they see us at; when two agree on a usable address we do not
    /// advertise, our record is re-signed with it (a node behind NAT learns its public address).
    fn note_observed(&mut self, peer: NodeId, observed: WireAddr) {
        if !observed.is_usable() || self.record.addrs.contains(&observed) {
            return;
        }
        if self.observed.len() >= 64 {
            self.observed.clear();
        }
        self.observed.insert(peer, observed);
        let agreeing = self.observed.values().filter(|a| **a == observed).count();
        if agreeing >= 2 {
            let mut addrs: Vec<WireAddr> = self
                .record
                .addrs
                .iter()
                .copied()
                .filter(|a| a.to_socket_addr().is_ipv6() != observed.to_socket_addr().is_ipv6())
                .collect();
            addrs.insert(0, observed);
            addrs.truncate(crate::wire::limits::MAX_RECORD_ADDRS);
            if self.set_addrs(&addrs).is_ok() {
                self.observed.clear();
            }
        }
    }

    fn on_error(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, id: u64, code: u16) {
        let Some(p) = self.take_from(now, id, peer) else { return };
        let busy = code == crate::wire::message::error_code::RATE_LIMITED;
        match p.waiting {
            Waiting::Pong { purpose: PingPurpose::User, .. } => {
                self.events.push_back(DhtEvent::RequestFailed { request: id, error: RequestError::Refused(code) });
            }
            // Over a rate limit is alive and answering, only busy: never a failure against its
            // place in the table.
            Waiting::Pong { purpose, .. } if busy => match purpose {
                PingPurpose::Liveness => self.table.on_alive(now, &peer),
                PingPurpose::Bootstrap(q) => {
                    self.responder_alive(now, peer, addr);
                    self.bootstrap_seed_done(now, q);
                }
                PingPurpose::Neighbour | PingPurpose::User => self.responder_alive(now, peer, addr),
                PingPurpose::Dormant => self.dormant_answered(now, peer, addr),
            },
            Waiting::StoreAck { query, .. } => {
                self.responder_alive(now, peer, addr);
                self.replica_done(now, query, peer, Err(RequestError::Refused(code)));
            }
            Waiting::Lookup { query, nodes, .. } => {
                // An old node that does not serve lookups: alive, but no help.
                self.lookup_answered(now, query, peer, nodes);
            }
            other => {
                self.pending.insert(
                    id,
                    Pending { waiting: other, started: p.started, deadline: p.deadline, stall: p.stall, resend: None },
                );
                self.fail_request(now, id, RequestError::Refused(code));
            }
        }
    }

    fn on_nodes(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, id: u64, total: u8, nodes: Vec<NodeRecord>) {
        let Some(mut p) = self.take_from(now, id, peer) else { return };
        let Waiting::Lookup { query, parts, total: want, nodes: mut got, .. } = p.waiting else {
            self.channel.count_drop(DropReason::UnexpectedResponse);
            return;
        };
        let total = total.min(MAX_NODES_PARTS);
        if want.is_some_and(|w| w != total) {
            self.channel.count_drop(DropReason::MalformedMessage);
        }
        // A retransmitted request is answered with every part again: a part whose records we all
        // hold already is a copy, not one more part.
        let fresh = nodes.is_empty() || nodes.iter().any(|r| !got.iter().any(|g| g.id == r.id));
        for rec in nodes {
            // A record byte-identical to one already verified needs no second signature check
            // (answers repeat the same records over and over; verifying costs ~35 µs each).
            let verified = if self.record_ref(&rec.id) == Some(&rec) { Ok(()) } else { rec.verify() };
            match verified {
                Ok(()) if rec.id != self.id() => {
                    // Kept so that the node enters the routing table once it answers us.
                    self.remember(&rec);
                    if !got.iter().any(|r| r.id == rec.id) {
                        got.push(rec);
                    }
                }
                Ok(()) => {}
                // A lying answer: the record does not verify or its id is not its key's.
                Err(_) => self.channel.count_drop(DropReason::BadRecord),
            }
        }
        let parts = parts + u8::from(fresh);
        if parts >= total {
            self.responder_alive(now, peer, addr);
            self.lookup_answered(now, query, peer, got);
        } else {
            p.waiting = Waiting::Lookup { peer, query, parts, total: Some(total), nodes: got, pages: 0, after: None };
            self.pending.insert(id, p);
        }
    }

    /// Answers a request from `peer` with `body`.
    fn reply(&mut self, now: Instant, peer: NodeId, id: u64, body: Body) {
        if let Ok(bytes) = (Message { id, body }).encode() {
            // A full queue toward a peer only loses this answer; the peer retransmits and gets it
            // from the cache.
            let _ = self.channel.send_known(now, peer, &bytes);
            if let Some((p, i, request)) = self.serving
                && (p, i) == (peer, id)
            {
                self.answers.keep(now, peer, id, request, &bytes);
            }
        }
    }

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
    }

    /// The neighbour check (see `DhtConfig::neighbour_check`).
    fn neighbours_due(&mut self, now: Instant) {
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

    fn ping_neighbour(&mut self, now: Instant, id: NodeId) {
        let Some(e) = self.table.get(&id) else { return };
        let info = PeerInfo { id, noise_key: e.record.noise_key, addr: e.addr };
        let w = Waiting::Pong { peer: id, purpose: PingPurpose::Neighbour };
        if self.send_request(now, &info, Body::Ping, w, self.cfg.rpc_timeout).is_err() {
            self.node_failed(now, now, &id);
        }
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
