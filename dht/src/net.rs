//! The tokio driver (feature `net`): binds a `UdpSocket`, feeds the sans-IO [`Dht`] with datagrams,
//! commands and timer ticks, and sends what it asks. All protocol logic stays in the core.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::identity::{Identity, NodeId, NodeRecord};
use crate::lookup::Found;
use crate::path::{PlaneConfig, PlaneStats, RelayStats};
use crate::pathio::{PathSocket, is_relayed};
use crate::persist::Persist;
use crate::proto::{
    Dht, DhtConfig, DhtEvent, DhtStats, GetMode, HeldRelay, PutOutcome, QueryId, Reachability, RequestError, Restored,
    Target,
};
use crate::stats::ChannelStats;
use crate::wire::{Key, Record, RelayRef, WireAddr};

/// A successful ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// Who answered.
    pub peer: NodeId,
    /// From where.
    pub addr: SocketAddr,
    /// Round trip, including the handshake if one was needed.
    pub rtt: Duration,
    /// Our address as the peer saw it.
    pub observed: WireAddr,
}

/// The answer to `find_node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindResult {
    /// Closest nodes that answered, closest first.
    pub nodes: Vec<Found>,
    /// Hops to the closest.
    pub hops: u32,
    /// Requests sent.
    pub queries: usize,
}

/// A record a `get` returned, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GotRecord {
    /// The validated record.
    pub record: Record,
    /// The node that served it (our own id for a local hit).
    pub from: NodeId,
    /// Hop of that node in the lookup (0 = local).
    pub hop: u32,
}

/// One replica's answer to a `put`, reported as it arrives.
pub type ReplicaReport = (NodeId, Result<(), RequestError>);

type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

enum Command {
    Ping(Box<Target>, Reply<PingReply>),
    Bootstrap(Vec<Target>, Reply<usize>),
    FindNode(NodeId, Reply<FindResult>),
    Get(Key, GetMode, Reply<Vec<GotRecord>>),
    Put(
        Box<(Key, Record, Duration, Option<u64>, bool)>,
        Reply<PutOutcome>,
        Option<mpsc::UnboundedSender<ReplicaReport>>,
    ),
    Stats(oneshot::Sender<NodeStats>),
    Holds(Vec<Key>, oneshot::Sender<Vec<bool>>),
    ConnectVia(Box<RelayRef>, NodeId, Reply<SocketAddr>),
    Shutdown,
}

/// A snapshot of a running node's counters.
#[derive(Clone, Debug)]
pub struct NodeStats {
    /// Channel counters and drops.
    pub channel: ChannelStats,
    /// DHT counters.
    pub dht: DhtStats,
    /// Peers with a confirmed session.
    pub sessions: usize,
    /// Nodes in the routing table.
    pub table: usize,
    /// (bucket index, nodes) for every non-empty bucket.
    pub buckets: Vec<(usize, usize)>,
    /// Records held (set entries counted one by one).
    pub records: usize,
    /// Peers with any channel state (sessions, handshakes, queues): bounded by `max_peers`.
    pub channel_peers: usize,
    /// Every rate limiter: its configuration, sources tracked and refusals (wire-spec §8.1).
    pub limits: Vec<crate::ratelimit::LimitStat>,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Rejoining and dormant peers (wire-spec §7.6).
    pub rejoin: crate::proto::RejoinStatus,
    /// Replicas per record (r) this node stores with.
    pub replication: usize,
    /// Reachability, relays held, relaying (wire-spec §15).
    pub reach: ReachStats,
}

/// Where a node stands behind NAT, and what it relays.
#[derive(Clone, Debug)]
pub struct ReachStats {
    /// Whether it can be dialled unsolicited.
    pub state: Reachability,
    /// Relays it holds (or asks for) reservations on.
    pub held: Vec<HeldRelay>,
    /// Its relay's decisions.
    pub relay: RelayStats,
    /// Reservations and circuits it holds as a relay.
    pub reservations: usize,
    /// Circuits it relays.
    pub circuits: usize,
    /// The data plane's counters.
    pub plane: PlaneStats,
    /// Its own legs: virtual address, relay, peer, bytes in and out.
    pub legs: Vec<LegStat>,
}

/// One of this node's relay legs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegStat {
    /// The leg's virtual address.
    pub path: SocketAddr,
    /// The relay.
    pub relay: SocketAddr,
    /// The peer at the other end, if we opened the leg.
    pub peer: Option<NodeId>,
    /// Inner bytes received.
    pub bytes_in: u64,
    /// Inner bytes sent.
    pub bytes_out: u64,
}

/// Handle to a node running on a tokio task. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    id: NodeId,
    addr: SocketAddr,
    record: watch::Receiver<NodeRecord>,
    restored: Option<Restored>,
}

/// Why the node task could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node task has stopped.
    #[error("node stopped")]
    Stopped,
    /// The request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
}

fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// How a node task keeps state on disk.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node database (routing table and records); `None` keeps everything in memory.
    pub database: Option<PathBuf>,
    /// How often a changed record store is written. A changed routing table is written within
    /// [`TABLE_SAVE_DELAY`], so that a node killed soon after joining restarts with its peers.
    pub snapshot_every: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions { database: None, snapshot_every: Duration::from_secs(5) }
    }
}

/// A routing table that changed is saved within this (the store waits for `snapshot_every`).
pub const TABLE_SAVE_DELAY: Duration = Duration::from_secs(1);

/// A node with no state on disk (`spawn_with` with default options).
pub async fn spawn(identity: Identity, bind: SocketAddr, cfg: DhtConfig) -> io::Result<(NodeHandle, JoinHandle<()>)> {
    spawn_with(identity, bind, cfg, NodeOptions::default()).await
}

/// Fills `cfg`'s seed and clock fields from the OS, binds `bind`, restores the saved routing
/// table and records if a database is given, and starts the node task.
pub async fn spawn_with(
    identity: Identity,
    bind: SocketAddr,
    cfg: DhtConfig,
    opts: NodeOptions,
) -> io::Result<(NodeHandle, JoinHandle<()>)> {
    let socket = Arc::new(UdpSocket::bind(bind).await?);
    start(identity, PathSocket::new(socket, PlaneConfig::default()), None, cfg, opts)
}

/// A datagram handed to the DHT by whoever owns the receive side of a shared socket.
pub type Inbound = (SocketAddr, Vec<u8>);

/// Like [`spawn_with`] on a socket whose receive side belongs to someone else (the QUIC endpoint
/// on the shared port): DHT datagrams arrive on `inbox` (relayed ones already unwrapped), and the
/// node sends through `socket` and its data plane.
pub fn spawn_shared(
    identity: Identity,
    socket: PathSocket,
    inbox: mpsc::Receiver<Inbound>,
    cfg: DhtConfig,
    opts: NodeOptions,
) -> io::Result<(NodeHandle, JoinHandle<()>)> {
    start(identity, socket, Some(inbox), cfg, opts)
}

fn start(
    identity: Identity,
    socket: PathSocket,
    inbox: Option<mpsc::Receiver<Inbound>>,
    mut cfg: DhtConfig,
    opts: NodeOptions,
) -> io::Result<(NodeHandle, JoinHandle<()>)> {
    let persist = match &opts.database {
        Some(p) => Some(Persist::open(p).map_err(|e| io::Error::other(e.to_string()))?),
        None => None,
    };
    let addr = socket.io().local_addr()?;
    getrandom::fill(&mut cfg.channel.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    cfg.channel.unix_time_ns_at_start = unix_now_ns();
    let addrs: Vec<WireAddr> = [WireAddr::from(addr)].into_iter().filter(WireAddr::is_usable).collect();
    let now = Instant::now();
    let mut dht = Dht::new(identity, &addrs, cfg, now).map_err(|e| io::Error::other(e.to_string()))?;
    let mut restored = None;
    if let Some(p) = &persist {
        let (snap, report) = p.load().map_err(|e| io::Error::other(e.to_string()))?;
        let r = dht.restore(now, unix_now_ms(), snap);
        tracing::info!(
            peers = r.peers,
            records = r.records,
            skipped = r.skipped,
            corrupt = report.corrupt,
            "restored node state"
        );
        restored = Some(r);
    }
    let (tx, rx) = mpsc::channel(1024);
    let (record_tx, record) = watch::channel(dht.record().clone());
    let handle = NodeHandle { tx, id: dht.id(), addr, record, restored };
    let io = Io { path: socket, inbox, record: record_tx };
    let task = tokio::spawn(run(io, dht, rx, persist, opts.snapshot_every));
    Ok((handle, task))
}

fn unix_now_ms() -> u64 {
    unix_now_ns() / 1_000_000
}

/// What was saved last, to decide whether to save again.
struct Saved {
    generation: (u64, u64),
    at: Instant,
}

/// Writes a snapshot if the routing table changed since `last`, or if the store changed and
/// `store_every` passed (`force`: whenever anything changed, as on shutdown).
fn save_if_changed(dht: &Dht, persist: Option<&Persist>, last: &mut Saved, store_every: Duration, force: bool) {
    let Some(p) = persist else { return };
    let (table, store) = dht.snapshot_generation();
    let table_changed = table != last.generation.0;
    let store_due = store != last.generation.1 && (force || last.at.elapsed() >= store_every);
    if !table_changed && !store_due {
        return;
    }
    match p.save(&dht.snapshot(Instant::now(), unix_now_ms())) {
        Ok(()) => *last = Saved { generation: (table, store), at: Instant::now() },
        Err(e) => tracing::warn!(error = %e, "cannot save node state"),
    }
}

impl NodeHandle {
    /// Node id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// The node's current signed record (re-signed when its addresses or reachability change).
    pub fn record(&self) -> NodeRecord {
        self.record.borrow().clone()
    }

    /// A watch on the node's signed record.
    pub fn record_watch(&self) -> watch::Receiver<NodeRecord> {
        self.record.clone()
    }

    /// Opens a relay circuit to `target` through `relay`: the virtual address that reaches it.
    pub async fn connect_via(&self, relay: RelayRef, target: NodeId) -> Result<SocketAddr, NodeError> {
        self.ask(|r| Command::ConnectVia(Box::new(relay), target, r)).await
    }

    /// What was restored from the database at start, if the node has one.
    pub fn restored(&self) -> Option<Restored> {
        self.restored
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
        Ok(rx.await.map_err(|_| NodeError::Stopped)??)
    }

    /// Pings a node and waits for the answer or the request timeout.
    pub async fn ping(&self, target: Target) -> Result<PingReply, NodeError> {
        self.ask(|r| Command::Ping(Box::new(target), r)).await
    }

    /// Joins through `seeds` (none: rejoin from the routing table); returns the table size.
    pub async fn bootstrap(&self, seeds: Vec<Target>) -> Result<usize, NodeError> {
        self.ask(|r| Command::Bootstrap(seeds, r)).await
    }

    /// The k closest nodes to `target` that answered.
    pub async fn find_node(&self, target: NodeId) -> Result<FindResult, NodeError> {
        self.ask(|r| Command::FindNode(target, r)).await
    }

    /// The first valid record under `key`, as soon as one arrives.
    pub async fn get(&self, key: Key) -> Result<GotRecord, NodeError> {
        let mut v = self.ask(|r| Command::Get(key, GetMode::First, r)).await?;
        v.pop().ok_or(NodeError::Request(RequestError::NotFound))
    }

    /// Every distinct valid record under `key` found by a full lookup.
    pub async fn get_all(&self, key: Key) -> Result<Vec<GotRecord>, NodeError> {
        self.ask(|r| Command::Get(key, GetMode::All, r)).await
    }

    /// Every distinct valid entry of the multi-writer set under `key` found by a full lookup,
    /// each replica read page by page (FindSet).
    pub async fn get_set(&self, key: Key) -> Result<Vec<GotRecord>, NodeError> {
        self.ask(|r| Command::Get(key, GetMode::Set, r)).await
    }

    /// Stores `record` under `key` on the r closest nodes; `cas` is the expected current seq of a
    /// mutable record.
    pub async fn put(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
    ) -> Result<PutOutcome, NodeError> {
        self.ask(|r| Command::Put(Box::new((key, record, ttl, cas, true)), r, None)).await
    }

    /// Stores `record` under `key` on the r closest nodes without republishing it (see
    /// `Dht::put_once`), reporting each replica's answer on `progress` if given.
    pub async fn put_once(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        progress: Option<mpsc::UnboundedSender<ReplicaReport>>,
    ) -> Result<PutOutcome, NodeError> {
        self.ask(|r| Command::Put(Box::new((key, record, ttl, None, false)), r, progress)).await
    }

    /// Like `put`, reporting each replica's answer on `progress` as it arrives.
    pub async fn put_with_progress(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
        progress: mpsc::UnboundedSender<ReplicaReport>,
    ) -> Result<PutOutcome, NodeError> {
        self.ask(|r| Command::Put(Box::new((key, record, ttl, cas, true)), r, Some(progress))).await
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Stats(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// For each key, whether this node stores an unexpired record under it (its own replica, not
    /// a lookup). For tests and the devnet's replica counts.
    pub async fn holds(&self, keys: Vec<Key>) -> Result<Vec<bool>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Holds(keys, tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Asks the node task to stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

/// A get's mode, what it collected so far, and who waits for it.
type GetWaiter = (GetMode, Vec<GotRecord>, Reply<Vec<GotRecord>>);

/// Who waits for what.
#[derive(Default)]
struct Waiters {
    pings: HashMap<u64, Reply<PingReply>>,
    boots: HashMap<QueryId, Reply<usize>>,
    finds: HashMap<QueryId, Reply<FindResult>>,
    gets: HashMap<QueryId, GetWaiter>,
    puts: HashMap<QueryId, (Reply<PutOutcome>, Option<mpsc::UnboundedSender<ReplicaReport>>)>,
    circuits: HashMap<u64, Reply<SocketAddr>>,
}

fn command(dht: &mut Dht, path: &PathSocket, cmd: Command, w: &mut Waiters, send_errors: u64) -> bool {
    let now = Instant::now();
    match cmd {
        Command::Ping(target, reply) => match dht.ping(now, *target) {
            Ok(id) => drop(w.pings.insert(id, reply)),
            Err(e) => drop(reply.send(Err(e))),
        },
        Command::Bootstrap(seeds, reply) => match dht.bootstrap(now, seeds) {
            Ok(q) => drop(w.boots.insert(q, reply)),
            Err(e) => drop(reply.send(Err(e))),
        },
        Command::FindNode(target, reply) => match dht.find_node(now, target) {
            Ok(q) => drop(w.finds.insert(q, reply)),
            Err(e) => drop(reply.send(Err(e))),
        },
        Command::Get(key, mode, reply) => match dht.get(now, key, mode) {
            Ok(q) => drop(w.gets.insert(q, (mode, Vec::new(), reply))),
            Err(e) => drop(reply.send(Err(e))),
        },
        Command::Put(args, reply, progress) => {
            let (key, record, ttl, cas, republish) = *args;
            let started =
                if republish { dht.put(now, key, record, ttl, cas) } else { dht.put_once(now, key, record, ttl) };
            match started {
                Ok(q) => drop(w.puts.insert(q, (reply, progress))),
                Err(e) => drop(reply.send(Err(e))),
            }
        }
        Command::Stats(reply) => {
            let _ = reply.send(NodeStats {
                channel: dht.stats().clone(),
                dht: dht.dht_stats().clone(),
                sessions: dht.channel().session_count(),
                table: dht.table().len(),
                buckets: dht.table().bucket_sizes(),
                records: dht.store().len(),
                channel_peers: dht.channel().peer_count(),
                limits: dht.limits(),
                send_errors,
                rejoin: dht.rejoin_status(),
                replication: dht.config().replication,
                reach: reach_stats(dht, path),
            });
        }
        Command::ConnectVia(relay, target, reply) => match dht.connect_via(now, &relay, target) {
            Ok(id) => drop(w.circuits.insert(id, reply)),
            Err(e) => drop(reply.send(Err(e))),
        },
        Command::Holds(keys, reply) => {
            let _ = reply.send(keys.iter().map(|k| !dht.store().get(now, k).is_empty()).collect());
        }
        Command::Shutdown => return false,
    }
    true
}

/// Receives the next datagram into `buf`: from the socket, or from the demultiplexer's inbox.
async fn recv(path: &PathSocket, inbox: &mut Option<mpsc::Receiver<Inbound>>, buf: &mut [u8]) -> Option<Inbound> {
    let nothing = || Some((SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new()));
    match inbox {
        Some(rx) => rx.recv().await,
        None => match path.io().recv_from(buf).await {
            // A frame forwarded or dropped by the plane reads as nothing for the core.
            Ok((n, from)) => own_datagram(path, from, buf, n).or_else(nothing),
            // ICMP errors from earlier sends surface here; they say nothing about this read.
            Err(_) => nothing(),
        },
    }
}

/// What the node task reads from and writes to.
struct Io {
    path: PathSocket,
    inbox: Option<mpsc::Receiver<Inbound>>,
    record: watch::Sender<NodeRecord>,
}

/// Sends what the core queued, applies its plane instructions, answers waiters, and passes the
/// plane's reports back to the core.
async fn flush(dht: &mut Dht, io: &Io, waiters: &mut Waiters, send_errors: &mut u64) {
    loop {
        let mut any = false;
        // Plane instructions first: a `Connected` answer must not leave before its circuit exists.
        while let Some(ev) = dht.poll_event() {
            any = true;
            match ev {
                DhtEvent::Plane(op) => io.path.plane().apply(Instant::now(), op),
                ev => dispatch(ev, waiters),
            }
        }
        let reports = io.path.plane().take_events();
        for ev in reports {
            any = true;
            dht.plane_event(Instant::now(), ev);
        }
        while let Some(t) = dht.poll_transmit() {
            any = true;
            if io.path.send_to(&t.payload, t.dst).await.is_err() {
                *send_errors += 1;
            }
        }
        if !any {
            break;
        }
    }
    if io.record.borrow().seq != dht.record().seq {
        io.record.send_replace(dht.record().clone());
    }
}

async fn run(
    mut io: Io,
    mut dht: Dht,
    mut rx: mpsc::Receiver<Command>,
    persist: Option<Persist>,
    snapshot_every: Duration,
) {
    let mut saved = Saved { generation: dht.snapshot_generation(), at: Instant::now() };
    let mut snapshot = tokio::time::interval(TABLE_SAVE_DELAY.min(snapshot_every));
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; crate::wire::packet::MAX_RELAYED_LEN + 1];
    let mut waiters = Waiters::default();
    let mut send_errors = 0u64;
    loop {
        flush(&mut dht, &io, &mut waiters, &mut send_errors).await;
        let deadline = dht.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = recv(&io.path, &mut io.inbox, &mut buf) => {
                let now = Instant::now();
                let Some((from, datagram)) = r else {
                    // The demultiplexer is gone: the endpoint shut down, and so do we.
                    save_if_changed(&dht, persist.as_ref(), &mut saved, snapshot_every, true);
                    return;
                };
                if !datagram.is_empty() {
                    dht.handle_datagram(now, from, &datagram);
                }
                // Drain what else is queued before flushing (fewer wakeups under load).
                for _ in 0..64 {
                    let next = match &mut io.inbox {
                        Some(rx) => rx.try_recv().ok(),
                        None => io.path.io().try_recv_from(&mut buf).ok().and_then(|(n, from)| own_datagram(&io.path, from, &mut buf, n)),
                    };
                    match next {
                        Some((from, d)) => dht.handle_datagram(now, from, &d),
                        None => break,
                    }
                }
            }
            cmd = rx.recv() => {
                let go_on = match cmd {
                    Some(cmd) => command(&mut dht, &io.path, cmd, &mut waiters, send_errors),
                    None => false,
                };
                if !go_on {
                    // Shutdown: flush what is queued, then keep the state for the next start.
                    while let Some(t) = dht.poll_transmit() {
                        let _ = io.path.send_to(&t.payload, t.dst).await;
                    }
                    save_if_changed(&dht, persist.as_ref(), &mut saved, snapshot_every, true);
                    return;
                }
            }
            _ = snapshot.tick() => save_if_changed(&dht, persist.as_ref(), &mut saved, snapshot_every, false),
            () = sleep => {}
        }
        let now = Instant::now();
        if dht.poll_timeout().is_some_and(|d| d <= now) {
            dht.handle_timeout(now);
        }
    }
}

/// A datagram read from our own socket (no QUIC endpoint shares it): relayed frames go through
/// the data plane, and only a DHT datagram inside one comes back.
fn own_datagram(path: &PathSocket, from: SocketAddr, buf: &mut [u8], n: usize) -> Option<Inbound> {
    let d = buf.get_mut(..n)?;
    if !is_relayed(d) {
        return Some((from, d.to_vec()));
    }
    let u = path.take_in(from, d)?;
    let inner = d.get(u.start..)?;
    // No QUIC endpoint here: a QUIC packet inside a frame has nowhere to go.
    (inner.first().is_some_and(|b| b & 0x40 == 0)).then(|| (u.src, inner.to_vec()))
}

/// What a node reports about its reachability and relaying.
fn reach_stats(dht: &Dht, path: &PathSocket) -> ReachStats {
    let plane = path.plane();
    ReachStats {
        state: dht.reachability(),
        held: dht.held_relays().to_vec(),
        relay: dht.relay().stats().clone(),
        reservations: dht.relay().reservations(),
        circuits: dht.relay().circuits(),
        plane: plane.stats().clone(),
        legs: plane
            .legs()
            .map(|(v, l)| LegStat {
                path: *v,
                relay: l.relay,
                peer: l.peer,
                bytes_in: l.bytes_in,
                bytes_out: l.bytes_out,
            })
            .collect(),
    }
}

fn dispatch(ev: DhtEvent, w: &mut Waiters) {
    match ev {
        DhtEvent::Pong { request, peer, addr, rtt, observed, .. } => {
            if let Some(r) = w.pings.remove(&request) {
                let _ = r.send(Ok(PingReply { peer, addr, rtt, observed }));
            }
        }
        DhtEvent::RequestFailed { request, error } => {
            if let Some(r) = w.pings.remove(&request) {
                let _ = r.send(Err(error));
            } else if let Some(r) = w.circuits.remove(&request) {
                let _ = r.send(Err(error));
            }
        }
        DhtEvent::CircuitOpened { request, path, .. } => {
            if let Some(r) = w.circuits.remove(&request) {
                let _ = r.send(Ok(path));
            }
        }
        // Applied by `flush` before dispatching.
        DhtEvent::Plane(_) => {}
        DhtEvent::Bootstrapped { query, peers } => {
            if let Some(r) = w.boots.remove(&query) {
                let _ = r.send(Ok(peers));
            }
        }
        DhtEvent::FoundNodes { query, nodes, hops, queries } => {
            if let Some(r) = w.finds.remove(&query) {
                let _ = r.send(Ok(FindResult { nodes, hops, queries }));
            }
        }
        DhtEvent::GotRecord { query, record, from, hop } => {
            if let Some((mode, got, _)) = w.gets.get_mut(&query) {
                got.push(GotRecord { record, from, hop });
                if *mode == GetMode::First
                    && let Some((_, got, r)) = w.gets.remove(&query)
                {
                    // Latency first: answer now, whatever the rest of the lookup brings.
                    let _ = r.send(Ok(got));
                }
            }
        }
        DhtEvent::GetDone { query, result, .. } => {
            if let Some((_, got, r)) = w.gets.remove(&query) {
                let _ = r.send(result.map(|_| got));
            }
        }
        DhtEvent::PutReplica { query, node, result } => {
            if let Some((_, Some(progress))) = w.puts.get(&query) {
                let _ = progress.send((node, result));
            }
        }
        DhtEvent::PutDone { query, result } => {
            if let Some((r, _)) = w.puts.remove(&query) {
                let _ = r.send(result);
            }
        }
        DhtEvent::PeerConnected { peer, addr } => tracing::debug!(peer = %peer.short(), %addr, "session established"),
        DhtEvent::PeerAdded { peer } => tracing::debug!(peer = %peer.short(), "routing table: added"),
        DhtEvent::PeerRemoved { peer } => tracing::debug!(peer = %peer.short(), "routing table: removed"),
        DhtEvent::Rejoining { peers, attempt, targets } => tracing::warn!(
            peers,
            attempt,
            targets,
            "routing table below its floor: rejoining through the bootstrap nodes and former peers"
        ),
        DhtEvent::RecordStored { key, from } => {
            tracing::trace!(key = %hex::encode(key.0), from = %from.short(), "stored")
        }
    }
}
