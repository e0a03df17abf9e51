//! # suprnova-node
//!
//! [`Node`] is the one narrow handle the layers above (mesh, agents) use. A node runs, on one UDP
//! port, the Kademlia DHT (our Noise-encrypted datagrams) and a QUIC endpoint (datagrams with bit
//! 0x40 set) carrying topic broadcast (HyParView + Plumtree), direct messages and blob transfers.
//!
//! ```no_run
//! use suprnova_node::{Node, NodeConfig};
//!
//! # async fn demo() -> Result<(), suprnova_node::NodeError> {
//! let a = Node::spawn(NodeConfig::ephemeral("127.0.0.1:0".parse().unwrap())).await?;
//! let b = Node::spawn(NodeConfig::ephemeral("127.0.0.1:0".parse().unwrap())).await?;
//! b.bootstrap(vec![a.target()]).await?;
//!
//! // Topics: subscribe on both, publish on one.
//! let mut sub = a.subscribe("weather").await?;
//! let _ = b.subscribe("weather").await?;
//! b.publish("weather", b"sunny".to_vec()).await?;
//! if let Some(suprnova_node::TopicEvent::Message { origin, payload, .. }) = sub.recv().await {
//!     assert_eq!((origin, payload), (b.id(), b"sunny".to_vec()));
//! }
//!
//! // Records, direct requests, blobs.
//! let key = a.put_immutable(b"hello".to_vec()).await?;
//! assert_eq!(b.get_immutable(key).await?, b"hello".to_vec());
//! let hash = a.add_blob(vec![7u8; 1 << 20]);
//! let (bytes, _report) = b.fetch_blob(hash, &[a.id()], None).await?;
//! assert_eq!(bytes.len(), 1 << 20);
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod blobs;
pub mod direct;
mod prom;
mod topics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use suprnova_dht::net::{self as dht_net, NodeHandle, NodeOptions, NodeStats as DhtNodeStats};
use suprnova_dht::proto::{DhtConfig, PutOutcome, Target};
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
use suprnova_dht::{Identity, NodeId, NodeRecord};
use suprnova_gossip::net::topics::{decode_contact, encode_contact};
use suprnova_gossip::net::{
    ConnectError, IncomingStream, TopicError, TopicInfo, TopicStats, Topics, TopicsConfig, Transport, TransportOptions,
    kind,
};
use suprnova_gossip::wire::TopicId;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use blobs::{BlobError, BlobHash, BlobProgress, FetchReport, Manifest};
pub use direct::{Direct, Responder};
pub use suprnova_dht::net::{FindResult, GotRecord};
pub use suprnova_gossip::net::{ConnectionEvent, TopicEvent};
pub use suprnova_gossip::proto::plumtree::MessageId;

use blobs::{BlobRequest, BlobStore, FetchState, Partial};
use direct::{read_sized, status, write_response, write_sized};

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The ed25519 seed of the node's identity.
    pub identity_seed: [u8; 32],
    /// The UDP address for everything.
    pub listen: SocketAddr,
    /// Addresses others should dial (topic member entries, HyParView contact data). Empty: the
    /// bound address, which is only useful when it is not a wildcard (`0.0.0.0`, `[::]`).
    pub advertise: Vec<SocketAddr>,
    /// Routing table and records kept here (`None`: memory only).
    pub database: Option<PathBuf>,
    /// DHT tunables.
    pub dht: DhtConfig,
    /// Topic tunables.
    pub topics: TopicsConfig,
    /// QUIC tunables.
    pub transport: TransportOptions,
    /// Default timeout of a request.
    pub request_timeout: Duration,
    /// Largest direct message or request accepted.
    pub max_message_size: usize,
    /// Direct messages and requests queued for the application at most.
    pub incoming_queue: usize,
    /// Chunk size of blobs this node adds.
    pub blob_chunk_size: u32,
    /// Chunk requests in flight per provider during a fetch.
    pub blob_parallel_per_provider: usize,
    /// Bytes of partial downloads held at most.
    pub max_partial_bytes: u64,
    /// Lifetime of this node's entry in a topic's member set.
    pub topic_entry_ttl: Duration,
    /// Receive buffer asked of the OS for the shared socket (capped by `net.core.rmem_max`). QUIC
    /// bursts fill the default one, and a DHT reply lost in the overflow costs a 2 s timeout.
    pub socket_recv_buffer: usize,
    /// Test hook: serve every blob chunk with one byte flipped.
    #[doc(hidden)]
    pub testing_corrupt_blobs: bool,
    /// Test hook: refuse every chunk request after this many were served (a provider going away).
    #[doc(hidden)]
    pub testing_serve_chunk_limit: Option<u64>,
}

impl NodeConfig {
    /// A configuration with a fresh random identity and defaults everywhere.
    pub fn ephemeral(listen: SocketAddr) -> NodeConfig {
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        NodeConfig::with_seed(seed, listen)
    }

    /// A configuration for the identity `seed`, with defaults everywhere (the routing table's
    /// per-subnet limits exempt local peers: loopback, private, link-local and ULA addresses).
    pub fn with_seed(seed: [u8; 32], listen: SocketAddr) -> NodeConfig {
        let dht = DhtConfig::default();
        NodeConfig {
            identity_seed: seed,
            listen,
            advertise: Vec::new(),
            database: None,
            dht,
            topics: TopicsConfig::default(),
            transport: TransportOptions::default(),
            request_timeout: Duration::from_secs(10),
            max_message_size: 1024 * 1024,
            incoming_queue: 1024,
            blob_chunk_size: blobs::DEFAULT_CHUNK_SIZE,
            blob_parallel_per_provider: 4,
            max_partial_bytes: 1 << 30,
            topic_entry_ttl: Duration::from_secs(300),
            socket_recv_buffer: 4 << 20,
            testing_corrupt_blobs: false,
            testing_serve_chunk_limit: None,
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node could not start.
    #[error("cannot start node: {0}")]
    Start(String),
    /// The DHT refused or failed.
    #[error("dht: {0}")]
    Dht(#[from] dht_net::NodeError),
    /// A topic operation failed.
    #[error("topic: {0}")]
    Topic(#[from] TopicError),
    /// A peer could not be reached.
    #[error("connect: {0}")]
    Connect(#[from] ConnectError),
    /// No address for a NodeId could be found.
    #[error("peer {0} not found")]
    UnknownPeer(String),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// A stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// Over a size limit.
    #[error("too large: {0} bytes, at most {1}")]
    TooLarge(usize, usize),
    /// The peer refused the request (no handler, or it dropped it).
    #[error("refused by peer")]
    Refused,
    /// The peer was too busy to queue the request.
    #[error("peer busy")]
    Busy,
    /// A blob fetch failed.
    #[error("blob: {0}")]
    Blob(#[from] BlobError),
    /// A record was not what was asked for.
    #[error("unexpected record kind")]
    WrongRecord,
    /// The node has stopped.
    #[error("node stopped")]
    Stopped,
}

/// A node reachable from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: NodeId,
    /// Where it answered.
    pub addr: SocketAddr,
}

/// Counters of a running node.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// DHT (channel, routing, store).
    pub dht: DhtNodeStats,
    /// Topics.
    pub topics: TopicStats,
    /// Open QUIC connections.
    pub connections: usize,
    /// QUIC connections established since start.
    pub connections_opened: u64,
    /// Outgoing QUIC handshakes that failed.
    pub connect_failures: u64,
    /// Incoming QUIC handshakes that failed.
    pub accept_failures: u64,
    /// Datagrams the shared socket gave QUIC / the DHT, and DHT datagrams dropped on a full queue.
    pub demux: (u64, u64, u64),
    /// Direct messages and requests received.
    pub direct_received: u64,
    /// Direct messages and requests dropped (queue full, too large).
    pub direct_dropped: u64,
    /// Blob bytes served.
    pub blob_bytes_served: u64,
    /// Blob bytes fetched and verified.
    pub blob_bytes_fetched: u64,
    /// Blobs held.
    pub blobs: usize,
}

/// A subscription to a topic: broadcasts in order per origin, and neighbour changes.
pub struct Subscription {
    topic: TopicId,
    name: String,
    rx: mpsc::Receiver<TopicEvent>,
}

impl Subscription {
    /// The next event; `None` once we left the topic or the node stopped.
    pub async fn recv(&mut self) -> Option<TopicEvent> {
        self.rx.recv().await
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's id.
    pub fn id(&self) -> TopicId {
        self.topic
    }
}

#[derive(Default)]
struct Counters {
    direct_received: AtomicU64,
    direct_dropped: AtomicU64,
    blob_served: AtomicU64,
    chunks_served: AtomicU64,
    blob_fetched: AtomicU64,
}

struct Inner {
    identity: Identity,
    cfg: NodeConfig,
    dht: NodeHandle,
    transport: Transport,
    topics: Topics,
    blobs: BlobStore,
    addrs: Mutex<HashMap<NodeId, Vec<SocketAddr>>>,
    incoming: AsyncMutex<Option<mpsc::Receiver<Direct>>>,
    /// Provider announcements kept fresh, per blob.
    providing: Mutex<HashMap<BlobHash, JoinHandle<()>>>,
    counters: Counters,
    dht_task: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set when shutdown begins: no new requests or blob reads are served.
    stopping: std::sync::atomic::AtomicBool,
    /// The seq of our last set entry: each new one is max(now in ms, last + 1), so two entries
    /// written within one millisecond still replace each other in order.
    set_seq: AtomicU64,
}

/// A running node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Node {
    /// Binds `cfg.listen` and starts the DHT, the QUIC endpoint and the topic driver on it.
    pub async fn spawn(cfg: NodeConfig) -> Result<Node, NodeError> {
        let identity = Identity::from_seed(cfg.identity_seed);
        let socket = Arc::new(UdpSocket::bind(cfg.listen).await.map_err(|e| NodeError::Start(e.to_string()))?);
        let local = socket.local_addr().map_err(|e| NodeError::Start(e.to_string()))?;
        if let Err(e) = socket2::SockRef::from(&*socket).set_recv_buffer_size(cfg.socket_recv_buffer) {
            tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer");
        }
        let (dht_tx, dht_rx) = mpsc::channel(8192);
        let (transport, streams) = Transport::new(&identity, socket.clone(), dht_tx, cfg.transport.clone())
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let opts = NodeOptions { database: cfg.database.clone(), ..NodeOptions::default() };
        let (dht, dht_task) =
            dht_net::spawn_shared(Identity::from_seed(cfg.identity_seed), socket, dht_rx, cfg.dht.clone(), opts)
                .map_err(|e| NodeError::Start(e.to_string()))?;
        let contact = if cfg.advertise.is_empty() { vec![local] } else { cfg.advertise.clone() };
        let mut topics_cfg = cfg.topics.clone();
        topics_cfg.membership.entry_ttl = cfg.topic_entry_ttl;
        let (topics, member_work) = Topics::spawn(&identity, &contact, transport.clone(), topics_cfg);
        let (in_tx, in_rx) = mpsc::channel(cfg.incoming_queue.max(1));
        let inner = Arc::new(Inner {
            identity,
            cfg,
            dht,
            transport,
            topics,
            blobs: BlobStore::default(),
            addrs: Mutex::default(),
            incoming: AsyncMutex::new(Some(in_rx)),
            providing: Mutex::default(),
            counters: Counters::default(),
            dht_task: Mutex::new(Some(dht_task)),
            tasks: Mutex::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            set_seq: AtomicU64::new(0),
        });
        let node = Node { inner };
        let router = tokio::spawn(node.clone().route(streams, in_tx));
        let members = tokio::spawn(node.clone().member_work(member_work));
        if let Ok(mut t) = node.inner.tasks.lock() {
            t.push(router);
            t.push(members);
        }
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.identity.id()
    }

    /// The bound address (DHT and QUIC).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.dht.local_addr()
    }

    /// The node's signed record.
    pub fn record(&self) -> &NodeRecord {
        self.inner.dht.record()
    }

    /// How others reach this node: its signed record as a bootstrap target.
    pub fn target(&self) -> Target {
        Target::Record(self.record().clone())
    }

    /// The addresses this node gives others to dial it.
    pub fn contact_addrs(&self) -> Vec<SocketAddr> {
        if self.inner.cfg.advertise.is_empty() { vec![self.local_addr()] } else { self.inner.cfg.advertise.clone() }
    }

    /// The underlying DHT handle (for pings and DHT statistics).
    pub fn dht(&self) -> &NodeHandle {
        &self.inner.dht
    }

    /// Joins the network through `seeds` (none: rejoin from the saved routing table); returns the
    /// routing-table size.
    pub async fn bootstrap(&self, seeds: Vec<Target>) -> Result<usize, NodeError> {
        for s in &seeds {
            if let Target::Record(r) = s {
                self.learn(r.id, r.addrs.iter().map(|a| a.to_socket_addr()).collect());
            }
        }
        Ok(self.inner.dht.bootstrap(seeds).await?)
    }

    /// Remembers where `id` can be dialled, so direct messages, requests and blob fetches reach it
    /// without a DHT lookup (a wrong address only costs a failed dial: TLS checks the id).
    pub fn add_address(&self, id: NodeId, addrs: Vec<SocketAddr>) {
        self.learn(id, addrs);
    }

    fn learn(&self, id: NodeId, addrs: Vec<SocketAddr>) {
        if addrs.is_empty() || id == self.id() {
            return;
        }
        if let Ok(mut m) = self.inner.addrs.lock() {
            if m.len() >= 100_000 {
                m.clear();
            }
            m.insert(id, addrs);
        }
    }

    // ---- records ------------------------------------------------------------------------------

    /// Stores `record` under `key` on the closest nodes (`cas`: expected seq of a mutable record).
    pub async fn put(
        &self,
        key: Key,
        record: Record,
        ttl: Duration,
        cas: Option<u64>,
    ) -> Result<PutOutcome, NodeError> {
        Ok(self.inner.dht.put(key, record, ttl, cas).await?)
    }

    /// Stores an immutable value; returns its key (BLAKE3 of the value).
    pub async fn put_immutable(&self, value: Vec<u8>) -> Result<Key, NodeError> {
        Ok(self.store_immutable(value).await?.0)
    }

    /// Like [`Node::put_immutable`], with how many replicas took it.
    pub async fn store_immutable(&self, value: Vec<u8>) -> Result<(Key, PutOutcome), NodeError> {
        let key = Key::for_immutable(&value);
        let len = value.len();
        let value = suprnova_dht::wire::bounded::BoundedBytes::try_from(value.as_slice())
            .map_err(|_| NodeError::TooLarge(len, suprnova_dht::wire::limits::MAX_VALUE_LEN))?;
        let out = self.put(key, Record::Immutable { value }, dht_net_ttl(), None).await?;
        Ok((key, out))
    }

    /// The immutable value under `key`.
    pub async fn get_immutable(&self, key: Key) -> Result<Vec<u8>, NodeError> {
        match self.inner.dht.get(key).await?.record {
            Record::Immutable { value } => Ok(value.to_vec()),
            _ => Err(NodeError::WrongRecord),
        }
    }

    /// Signs and stores a mutable record of ours under `salt` with `seq`; returns its key.
    pub async fn put_mutable(&self, salt: &[u8], seq: u64, value: &[u8], cas: Option<u64>) -> Result<Key, NodeError> {
        Ok(self.store_mutable(salt, seq, value, cas).await?.0)
    }

    /// Like [`Node::put_mutable`], with how many replicas took it.
    pub async fn store_mutable(
        &self,
        salt: &[u8],
        seq: u64,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<(Key, PutOutcome), NodeError> {
        let m = MutableRecord::sign(&self.inner.identity, salt, seq, value)
            .map_err(|_| NodeError::TooLarge(value.len(), suprnova_dht::wire::limits::MAX_VALUE_LEN))?;
        let key = m.key();
        let out = self.put(key, Record::Mutable(m), dht_net_ttl(), cas).await?;
        Ok((key, out))
    }

    /// The newest mutable record under `key` found by a full lookup.
    pub async fn get_mutable(&self, key: Key) -> Result<MutableRecord, NodeError> {
        let all = self.inner.dht.get_all(key).await?;
        all.into_iter()
            .filter_map(|g| match g.record {
                Record::Mutable(m) => Some(m),
                _ => None,
            })
            .max_by_key(|m| m.seq)
            .ok_or(NodeError::Dht(dht_net::NodeError::Request(suprnova_dht::proto::RequestError::NotFound)))
    }

    /// Adds our signed entry to the multi-writer set under `key` (republished by the DHT while
    /// the node runs).
    pub async fn put_set_entry(&self, key: Key, value: &[u8], ttl: Duration) -> Result<PutOutcome, NodeError> {
        let e = self.sign_set_entry(&key, value, ttl)?;
        self.put(key, Record::SetEntry(e), ttl, None).await
    }

    /// Like [`Node::put_set_entry`], but not republished: the entry lapses after `ttl` unless
    /// the caller writes it again (for entries the caller refreshes itself, and stops).
    pub async fn put_set_entry_once(&self, key: Key, value: &[u8], ttl: Duration) -> Result<PutOutcome, NodeError> {
        let e = self.sign_set_entry(&key, value, ttl)?;
        Ok(self.inner.dht.put_once(key, Record::SetEntry(e), ttl, None).await?)
    }

    /// Our entry for the set under `key`, with a seq above every one we signed before.
    fn sign_set_entry(&self, key: &Key, value: &[u8], ttl: Duration) -> Result<SetEntry, NodeError> {
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let now = unix_ms();
        let prev =
            self.inner.set_seq.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)));
        let seq = now.max(prev.unwrap_or(0) + 1);
        SetEntry::sign(&self.inner.identity, key, seq, ttl_s, value)
            .map_err(|_| NodeError::TooLarge(value.len(), suprnova_dht::wire::limits::MAX_SET_VALUE_LEN))
    }

    /// The entries of the set under `key` found by a full lookup (one per writer, newest).
    pub async fn get_set(&self, key: Key) -> Result<Vec<SetEntry>, NodeError> {
        let all = self.inner.dht.get_set(key).await?;
        let mut best: HashMap<[u8; 32], SetEntry> = HashMap::new();
        for g in all {
            if let Record::SetEntry(e) = g.record {
                match best.get(&e.public_key) {
                    Some(old) if old.seq >= e.seq => {}
                    _ => drop(best.insert(e.public_key, e)),
                }
            }
        }
        Ok(best.into_values().collect())
    }

    /// Any record under `key`, as soon as one arrives.
    pub async fn get(&self, key: Key) -> Result<GotRecord, NodeError> {
        Ok(self.inner.dht.get(key).await?)
    }

    /// The nodes closest to `target` that answered, closest first.
    pub async fn find_peers(&self, target: NodeId) -> Result<Vec<Peer>, NodeError> {
        let r = self.inner.dht.find_node(target).await?;
        Ok(r.nodes
            .into_iter()
            .map(|f| {
                self.learn(f.record.id, vec![f.addr]);
                Peer { id: f.record.id, addr: f.addr }
            })
            .collect())
    }

    /// Addresses of `peer`: known, or found with a DHT lookup.
    async fn resolve(&self, peer: NodeId) -> Result<Vec<SocketAddr>, NodeError> {
        if let Some(a) = self.inner.addrs.lock().ok().and_then(|m| m.get(&peer).cloned()) {
            return Ok(a);
        }
        let found = self.find_peers(peer).await?;
        found
            .into_iter()
            .find(|p| p.id == peer)
            .map(|p| vec![p.addr])
            .ok_or_else(|| NodeError::UnknownPeer(peer.short()))
    }

    async fn connect(&self, peer: NodeId) -> Result<quinn::Connection, NodeError> {
        if let Some(c) = self.inner.transport.connection(&peer) {
            return Ok(c);
        }
        let addrs = self.resolve(peer).await?;
        match self.inner.transport.connect(peer, &addrs).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // The address may be stale: forget it so the next attempt looks the peer up.
                if let Ok(mut m) = self.inner.addrs.lock() {
                    m.remove(&peer);
                }
                Err(e.into())
            }
        }
    }

    /// Connection events (a QUIC connection to a peer came up or went down) from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.inner.transport.events()
    }

    // ---- direct messages ----------------------------------------------------------------------

    /// Takes the stream of direct messages and requests sent to this node (once; later calls get
    /// `None`). Until it is taken, requests are answered as refused once the queue is full.
    pub async fn incoming(&self) -> Option<mpsc::Receiver<Direct>> {
        self.inner.incoming.lock().await.take()
    }

    /// Sends `data` to `peer` on a new one-way stream (the connection is reused).
    pub async fn send(&self, peer: NodeId, data: &[u8]) -> Result<(), NodeError> {
        let max = self.inner.cfg.max_message_size;
        if data.len() > max {
            return Err(NodeError::TooLarge(data.len(), max));
        }
        let conn = self.connect(peer).await?;
        let mut s = conn.open_uni().await.map_err(|e| NodeError::Stream(e.to_string()))?;
        s.write_all(&[kind::MESSAGE]).await.map_err(|e| NodeError::Stream(e.to_string()))?;
        write_sized(&mut s, data).await.map_err(|e| NodeError::Stream(e.to_string()))?;
        s.finish().map_err(|e| NodeError::Stream(e.to_string()))?;
        Ok(())
    }

    /// Sends a request to `peer` and waits for its answer (at most `request_timeout`).
    pub async fn request(&self, peer: NodeId, data: &[u8]) -> Result<Vec<u8>, NodeError> {
        let t = self.inner.cfg.request_timeout;
        tokio::time::timeout(t, self.request_inner(peer, data)).await.map_err(|_| NodeError::Timeout)?
    }

    async fn request_inner(&self, peer: NodeId, data: &[u8]) -> Result<Vec<u8>, NodeError> {
        let max = self.inner.cfg.max_message_size;
        if data.len() > max {
            return Err(NodeError::TooLarge(data.len(), max));
        }
        let (st, body) = self.exchange(peer, kind::REQUEST, data, max).await?;
        match st {
            status::OK => Ok(body),
            status::BUSY => Err(NodeError::Busy),
            status::TOO_LARGE => Err(NodeError::TooLarge(data.len(), max)),
            _ => Err(NodeError::Refused),
        }
    }

    /// One bidirectional exchange with `peer` (wire-spec §12.3): kind byte, sized body, FIN; then
    /// the status byte and a sized response of at most `max` bytes.
    async fn exchange(
        &self,
        peer: NodeId,
        stream_kind: u8,
        body: &[u8],
        max: usize,
    ) -> Result<(u8, Vec<u8>), NodeError> {
        let stream_err = |e: &dyn std::fmt::Display| NodeError::Stream(e.to_string());
        let conn = self.connect(peer).await?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
        s.write_all(&[stream_kind]).await.map_err(|e| stream_err(&e))?;
        write_sized(&mut s, body).await.map_err(|e| stream_err(&e))?;
        s.finish().map_err(|e| stream_err(&e))?;
        let mut st = [0u8; 1];
        r.read_exact(&mut st).await.map_err(|e| stream_err(&e))?;
        let data = read_sized(&mut r, max).await.map_err(|big| {
            if big { NodeError::TooLarge(max + 1, max) } else { NodeError::Stream("response cut short".into()) }
        })?;
        let [st] = st;
        Ok((st, data))
    }

    // ---- blobs --------------------------------------------------------------------------------

    /// Serves `data` under its hash from now on.
    pub fn add_blob(&self, data: Vec<u8>) -> BlobHash {
        self.inner.blobs.add(data, self.inner.cfg.blob_chunk_size)
    }

    /// Announces in the DHT that this node serves blob `hash` (which it must hold): a signed entry
    /// with our contact data in the set under [`BlobHash::providers_key`], refreshed while the
    /// node runs. Returns how many nodes stored the first announcement.
    pub async fn provide_blob(&self, hash: BlobHash) -> Result<usize, NodeError> {
        if self.inner.blobs.get(&hash).is_none() {
            return Err(BlobError::NotFound.into());
        }
        let ttl = self.inner.cfg.topic_entry_ttl;
        let contact = encode_contact(&self.contact_addrs());
        let outcome = self.put_set_entry_once(hash.providers_key(), &contact, ttl).await?;
        let fresh = self.inner.providing.lock().map(|p| !p.contains_key(&hash)).unwrap_or(false);
        if fresh {
            let node = self.clone();
            let task = tokio::spawn(async move {
                let mut interval = tokio::time::interval(ttl / 3);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await;
                loop {
                    interval.tick().await;
                    let contact = encode_contact(&node.contact_addrs());
                    let _ = node.put_set_entry_once(hash.providers_key(), &contact, ttl).await;
                }
            });
            if let Ok(mut p) = self.inner.providing.lock() {
                p.insert(hash, task);
            }
        }
        Ok(outcome.stored)
    }

    /// Stops serving blob `hash`: drops it from memory and stops refreshing our provider entry,
    /// which lapses within its lifetime. Returns whether it was held.
    pub fn remove_blob(&self, hash: &BlobHash) -> bool {
        if let Some(task) = self.inner.providing.lock().ok().and_then(|mut p| p.remove(hash)) {
            task.abort();
        }
        self.inner.blobs.remove(hash)
    }

    /// Providers of blob `hash` announced in the DHT (other than this node). Their contact data
    /// is remembered, so [`Node::fetch_blob`] dials them without another lookup.
    pub async fn find_blob_providers(&self, hash: BlobHash) -> Result<Vec<NodeId>, NodeError> {
        let entries = match self.get_set(hash.providers_key()).await {
            Ok(e) => e,
            Err(NodeError::Dht(dht_net::NodeError::Request(suprnova_dht::proto::RequestError::NotFound))) => Vec::new(),
            Err(e) => return Err(e),
        };
        let me = self.id();
        let mut out = Vec::new();
        for e in entries {
            let id = NodeId::from_public_key(&e.public_key);
            let addrs = decode_contact(&e.value);
            if id == me || addrs.is_empty() || out.contains(&id) {
                continue;
            }
            if let Ok(mut m) = self.inner.addrs.lock() {
                m.entry(id).or_insert(addrs);
            }
            out.push(id);
        }
        Ok(out)
    }

    /// The blob under `hash`, if this node holds it complete.
    pub fn blob(&self, hash: &BlobHash) -> Option<Arc<Vec<u8>>> {
        self.inner.blobs.get(hash).map(|s| s.data.clone())
    }

    /// Fetches the blob `hash` from `providers` in verified chunks, reporting on `progress`. The
    /// blob is kept and served afterwards. After a failure, verified chunks are kept and a new
    /// call resumes from them.
    pub async fn fetch_blob(
        &self,
        hash: BlobHash,
        providers: &[NodeId],
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) -> Result<(Arc<Vec<u8>>, FetchReport), NodeError> {
        self.fetch_blob_at_most(hash, providers, u64::MAX, progress).await
    }

    /// [`Node::fetch_blob`], refusing the blob with `BlobError::TooLarge` as soon as its verified
    /// manifest announces more than `max` bytes, before any chunk is asked for (a blob already
    /// held is returned whatever its size).
    pub async fn fetch_blob_at_most(
        &self,
        hash: BlobHash,
        providers: &[NodeId],
        max: u64,
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) -> Result<(Arc<Vec<u8>>, FetchReport), NodeError> {
        if let Some(s) = self.inner.blobs.get(&hash) {
            let report = FetchReport {
                size: s.manifest.size,
                per_provider: vec![],
                corrupt: vec![],
                resumed: s.manifest.chunks.len(),
            };
            return Ok((s.data.clone(), report));
        }
        let providers: Vec<NodeId> = providers.iter().copied().filter(|p| *p != self.id()).collect();
        if providers.is_empty() {
            return Err(BlobError::NoProvider.into());
        }
        let report_progress = |p: BlobProgress| {
            if let Some(tx) = &progress {
                let _ = tx.send(p);
            }
        };
        // The manifest: from a resumed download, or the first provider that serves a good one.
        let held = self
            .inner
            .blobs
            .partial
            .lock()
            .ok()
            .and_then(|p| p.get(&hash).map(|x| (x.manifest.clone(), x.manifest_bytes.clone(), x.chunks.clone())));
        let (manifest, manifest_bytes, chunks) = match held {
            Some(h) => h,
            None => {
                let mut got = None;
                for p in &providers {
                    match self.blob_call(*p, &BlobRequest::Manifest(hash), blobs::MAX_MANIFEST).await {
                        Ok(bytes) => {
                            if let Some(m) = Manifest::decode_verified(&bytes, &hash) {
                                got = Some((m, bytes));
                                break;
                            }
                            report_progress(BlobProgress::Corrupt { provider: *p, index: usize::MAX });
                        }
                        Err(e) => report_progress(BlobProgress::ProviderFailed { provider: *p, reason: e.to_string() }),
                    }
                }
                let (m, bytes) = got.ok_or(BlobError::NoManifest)?;
                if self.inner.blobs.partial_bytes().saturating_add(m.size) > self.inner.cfg.max_partial_bytes {
                    return Err(BlobError::NoSpace.into());
                }
                let n = m.chunks.len();
                (m, bytes, vec![None; n])
            }
        };
        if manifest.size > max {
            return Err(BlobError::TooLarge { size: manifest.size, max }.into());
        }
        let resumed = chunks.iter().filter(|c| c.is_some()).count();
        report_progress(BlobProgress::Started { size: manifest.size, chunks: manifest.chunks.len(), held: resumed });
        let done_bytes: u64 = chunks.iter().flatten().map(|c| c.len() as u64).sum();
        let queue = chunks.iter().enumerate().filter(|(_, c)| c.is_none()).map(|(i, _)| i).collect();
        let state = Arc::new(Mutex::new(FetchState {
            queue,
            chunks,
            done_bytes,
            per_provider: HashMap::new(),
            corrupt: Vec::new(),
            in_flight: 0,
            failures: HashMap::new(),
        }));
        let manifest = Arc::new(manifest);
        let mut workers = Vec::new();
        for p in &providers {
            for _ in 0..self.inner.cfg.blob_parallel_per_provider.max(1) {
                let node = self.clone();
                let (st, m, pr, p) = (state.clone(), manifest.clone(), progress.clone(), *p);
                workers.push(tokio::spawn(async move { node.chunk_worker(hash, p, m, st, pr).await }));
            }
        }
        for w in workers {
            let _ = w.await;
        }
        let mut st = state.lock().map_err(|_| NodeError::Stopped)?;
        let missing = st.chunks.iter().filter(|c| c.is_none()).count();
        if missing > 0 {
            // Keep what verified, for a resume.
            let chunks = std::mem::take(&mut st.chunks);
            if let Ok(mut p) = self.inner.blobs.partial.lock() {
                p.insert(hash, Partial { manifest: (*manifest).clone(), manifest_bytes, chunks });
            }
            return Err(BlobError::Incomplete { missing }.into());
        }
        let mut data = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        for c in st.chunks.iter().flatten() {
            data.extend_from_slice(c);
        }
        let report = FetchReport {
            size: manifest.size,
            per_provider: st.per_provider.iter().map(|(k, v)| (*k, *v)).collect(),
            corrupt: st.corrupt.clone(),
            resumed,
        };
        drop(st);
        if let Ok(mut p) = self.inner.blobs.partial.lock() {
            p.remove(&hash);
        }
        let data = Arc::new(data);
        if let Ok(mut c) = self.inner.blobs.complete.lock() {
            c.insert(
                hash,
                Arc::new(blobs::Stored { manifest_bytes, manifest: (*manifest).clone(), data: data.clone() }),
            );
        }
        Ok((data, report))
    }

    async fn chunk_worker(
        &self,
        hash: BlobHash,
        provider: NodeId,
        manifest: Arc<Manifest>,
        state: Arc<Mutex<FetchState>>,
        progress: Option<mpsc::UnboundedSender<BlobProgress>>,
    ) {
        let say = |p: BlobProgress| {
            if let Some(tx) = &progress {
                let _ = tx.send(p);
            }
        };
        loop {
            let next = {
                let Ok(mut st) = state.lock() else { return };
                if st.corrupt.contains(&provider) || st.failures.get(&provider).is_some_and(|f| *f >= 3) {
                    return;
                }
                match st.queue.pop_front() {
                    Some(i) => {
                        st.in_flight += 1;
                        Some(i)
                    }
                    // Others still have chunks in flight: one may fail and come back.
                    None if st.in_flight > 0 => None,
                    None => return,
                }
            };
            let Some(next) = next else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(index) = u32::try_from(next) else { return };
            let want = manifest.chunks.get(next).copied();
            let len = manifest.chunk_len(next);
            let r = self.blob_call(provider, &BlobRequest::Chunk(hash, index), len).await;
            let Ok(mut st) = state.lock() else { return };
            st.in_flight -= 1;
            match r {
                Ok(bytes) if bytes.len() == len && want == Some(*blake3::hash(&bytes).as_bytes()) => {
                    // A success resets the count, unless the provider was already given up on
                    // (an answer still in flight when the third failure came).
                    if st.failures.get(&provider).is_some_and(|f| *f < 3) {
                        st.failures.remove(&provider);
                    }
                    st.done_bytes += bytes.len() as u64;
                    self.inner.counters.blob_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    *st.per_provider.entry(provider).or_default() += 1;
                    if let Some(slot) = st.chunks.get_mut(next) {
                        *slot = Some(bytes);
                    }
                    say(BlobProgress::Chunk { index: next, from: provider, done: st.done_bytes });
                }
                Ok(_) => {
                    st.queue.push_front(next);
                    if !st.corrupt.contains(&provider) {
                        st.corrupt.push(provider);
                        say(BlobProgress::Corrupt { provider, index: next });
                    }
                    return;
                }
                Err(e) => {
                    st.queue.push_front(next);
                    let failures = st.failures.entry(provider).or_default();
                    *failures += 1;
                    // Three failures in a row, counted per provider over all its workers.
                    if *failures == 3 {
                        say(BlobProgress::ProviderFailed { provider, reason: e.to_string() });
                    }
                    if *failures >= 3 {
                        return;
                    }
                }
            }
        }
    }

    /// One blob request to `peer`: the response body, at most `max` bytes.
    async fn blob_call(&self, peer: NodeId, req: &BlobRequest, max: usize) -> Result<Vec<u8>, NodeError> {
        let t = self.inner.cfg.request_timeout;
        let body = postcard::to_allocvec(req).map_err(|e| NodeError::Stream(e.to_string()))?;
        match tokio::time::timeout(t, self.exchange(peer, kind::BLOB, &body, max)).await {
            Err(_) => Err(NodeError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status::OK, data))) => Ok(data),
            Ok(Ok(_)) => Err(NodeError::Refused),
        }
    }

    // ---- the router of incoming streams -------------------------------------------------------

    async fn route(self, mut streams: mpsc::Receiver<IncomingStream>, incoming: mpsc::Sender<Direct>) {
        while let Some(s) = streams.recv().await {
            let node = self.clone();
            let incoming = incoming.clone();
            match s {
                IncomingStream::Uni { from, kind: kind::GOSSIP, recv } => {
                    let topics = self.inner.topics.clone();
                    tokio::spawn(async move { topics.read_stream(from, recv).await });
                }
                IncomingStream::Uni { from, kind: kind::MESSAGE, mut recv } => {
                    tokio::spawn(async move {
                        let max = node.inner.cfg.max_message_size;
                        let deadline = node.inner.cfg.request_timeout;
                        let c = &node.inner.counters;
                        let read = tokio::time::timeout(deadline, read_sized(&mut recv, max)).await;
                        match read.unwrap_or(Err(false)) {
                            Ok(data) => {
                                c.direct_received.fetch_add(1, Ordering::Relaxed);
                                if incoming.try_send(Direct::Message { from, data }).is_err() {
                                    c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => drop(c.direct_dropped.fetch_add(1, Ordering::Relaxed)),
                        }
                    });
                }
                IncomingStream::Bi { from, kind: kind::REQUEST, mut send, mut recv } => {
                    tokio::spawn(async move {
                        let max = node.inner.cfg.max_message_size;
                        let deadline = node.inner.cfg.request_timeout;
                        let c = &node.inner.counters;
                        let read = tokio::time::timeout(deadline, read_sized(&mut recv, max)).await;
                        let data = match read.unwrap_or(Err(false)) {
                            Ok(d) => d,
                            Err(big) => {
                                c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                                if big {
                                    let _ = write_response(&mut send, status::TOO_LARGE, &[]).await;
                                    let _ = send.finish();
                                }
                                return;
                            }
                        };
                        c.direct_received.fetch_add(1, Ordering::Relaxed);
                        if node.inner.stopping.load(Ordering::Relaxed) {
                            let _ = write_response(&mut send, status::REFUSED, &[]).await;
                            let _ = send.finish();
                            return;
                        }
                        let (tx, rx) = oneshot::channel();
                        let responder = Responder { tx };
                        if incoming.try_send(Direct::Request { from, data, responder }).is_err() {
                            c.direct_dropped.fetch_add(1, Ordering::Relaxed);
                            let _ = write_response(&mut send, status::BUSY, &[]).await;
                            let _ = send.finish();
                            return;
                        }
                        let timeout = node.inner.cfg.request_timeout;
                        let (st, body) = match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(body)) if body.len() <= max => (status::OK, body),
                            Ok(Ok(_)) => (status::TOO_LARGE, Vec::new()),
                            _ => (status::REFUSED, Vec::new()),
                        };
                        let _ = tokio::time::timeout(deadline, write_response(&mut send, st, &body)).await;
                        let _ = send.finish();
                    });
                }
                IncomingStream::Bi { kind: kind::BLOB, mut send, mut recv, .. } => {
                    tokio::spawn(async move {
                        // A reader that stalls does not hold the chunk for ever.
                        let deadline = node.inner.cfg.request_timeout;
                        let _ = tokio::time::timeout(deadline, node.serve_blob(&mut send, &mut recv)).await;
                    });
                }
                _ => {}
            }
        }
    }

    async fn serve_blob(&self, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
        if self.inner.stopping.load(Ordering::Relaxed) {
            let _ = write_response(send, status::REFUSED, &[]).await;
            let _ = send.finish();
            return;
        }
        let Ok(body) = read_sized(recv, 128).await else { return };
        let Some(req) = suprnova_gossip::wire::decode_canonical::<BlobRequest>(&body) else { return };
        let (hash, chunk) = match req {
            BlobRequest::Manifest(h) => (h, None),
            BlobRequest::Chunk(h, i) => (h, Some(i as usize)),
        };
        let Some(stored) = self.inner.blobs.get(&hash) else {
            let _ = write_response(send, status::REFUSED, &[]).await;
            let _ = send.finish();
            return;
        };
        let over_limit = chunk.is_some()
            && self
                .inner
                .cfg
                .testing_serve_chunk_limit
                .is_some_and(|limit| self.inner.counters.chunks_served.fetch_add(1, Ordering::Relaxed) >= limit);
        let reply: Option<Vec<u8>> = match chunk {
            _ if over_limit => None,
            None => Some(stored.manifest_bytes.clone()),
            Some(i) => {
                let cs = stored.manifest.chunk_size as usize;
                let start = i.saturating_mul(cs);
                let end = start.saturating_add(cs).min(stored.data.len());
                stored.data.get(start..end).filter(|s| !s.is_empty() || stored.data.is_empty()).map(|s| {
                    let mut v = s.to_vec();
                    if self.inner.cfg.testing_corrupt_blobs
                        && let Some(b) = v.first_mut()
                    {
                        *b ^= 0xff;
                    }
                    v
                })
            }
        };
        match reply {
            Some(bytes) => {
                self.inner.counters.blob_served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let _ = write_response(send, status::OK, &bytes).await;
            }
            None => {
                let _ = write_response(send, status::REFUSED, &[]).await;
            }
        }
        let _ = send.finish();
    }

    // ---- state --------------------------------------------------------------------------------

    /// A snapshot of the node's counters.
    pub async fn metrics(&self) -> Result<Metrics, NodeError> {
        let dht = self.inner.dht.stats().await?;
        let topics = self.inner.topics.stats().await?;
        let t = self.inner.transport.stats();
        let d = self.inner.transport.demux_stats();
        let c = &self.inner.counters;
        Ok(Metrics {
            dht,
            topics,
            connections: self.inner.transport.connection_count(),
            connections_opened: t.connections.load(Ordering::Relaxed),
            connect_failures: t.connect_failures.load(Ordering::Relaxed),
            accept_failures: t.accept_failures.load(Ordering::Relaxed),
            demux: (
                d.quic.load(Ordering::Relaxed),
                d.dht.load(Ordering::Relaxed),
                d.dht_queue_full.load(Ordering::Relaxed),
            ),
            direct_received: c.direct_received.load(Ordering::Relaxed),
            direct_dropped: c.direct_dropped.load(Ordering::Relaxed),
            blob_bytes_served: c.blob_served.load(Ordering::Relaxed),
            blob_bytes_fetched: c.blob_fetched.load(Ordering::Relaxed),
            blobs: self.inner.blobs.complete.lock().map(|b| b.len()).unwrap_or(0),
        })
    }

    /// Stops the node: leaves every topic (neighbours are told), saves DHT state, closes every
    /// connection and the socket.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        let tasks: Vec<JoinHandle<()>> =
            self.inner.providing.lock().map(|mut m| m.drain().map(|(_, t)| t).collect()).unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        self.inner.topics.shutdown().await;
        // Let the goodbyes leave before the connections close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.dht.shutdown().await;
        if let Some(t) = self.inner.dht_task.lock().ok().and_then(|mut t| t.take()) {
            // The DHT task saves its state on the way out.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.inner.transport.close().await;
        let tasks: Vec<JoinHandle<()>> = self.inner.tasks.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
        for t in tasks {
            t.abort();
        }
    }
}

/// Lifetime of records put through the convenience methods.
fn dht_net_ttl() -> Duration {
    suprnova_dht::proto::DEFAULT_TTL
}
