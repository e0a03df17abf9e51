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
mod error;
mod lan;
mod messaging;
mod prom;
mod records;
mod router;
#[cfg(feature = "testing")]
pub mod testing;
mod topics;
mod transfer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use suprnova_dht::net::{self as dht_net, NodeHandle, NodeOptions};
use suprnova_dht::proto::DhtConfig;
use suprnova_gossip::net::{TopicInfo, TopicStats, Topics, TopicsConfig, Transport, TransportOptions};
use suprnova_gossip::wire::TopicId;
use tokio::net::UdpSocket;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio::task::JoinHandle;

pub use blobs::{BlobError, BlobHash, BlobProgress, FetchReport, Manifest};
pub use direct::{Direct, Responder};
pub use error::{NodeError, StreamError};
pub use records::ReplicaAnswer;
pub use suprnova_dht::net::{FindResult, GotRecord, NodeStats as DhtNodeStats, PingReply};
pub use suprnova_dht::proto::{PutOutcome, Restored, Target};
pub use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
pub use suprnova_dht::{Identity, NodeId, NodeRecord};
pub use suprnova_gossip::net::{ConnectionEvent, TopicEvent};
pub use suprnova_gossip::proto::plumtree::MessageId;

use blobs::BlobStore;

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
    /// Rewrites the blob chunks this node serves (`None`: served as stored). Tests make a
    /// provider lie or go away with it (see `testing`, feature `testing`); a deployment leaves
    /// it `None`.
    pub chunk_filter: Option<std::sync::Arc<dyn ChunkFilter>>,
    /// Find nodes on the same LAN with no bootstrap address (a signed multicast beacon, wire-spec
    /// §15.6), when bound to a private, link-local or wildcard address.
    pub lan_discovery: bool,
}

/// A rewrite of the blob chunks a node serves.
pub trait ChunkFilter: Send + Sync + std::fmt::Debug {
    /// The bytes to serve for chunk `index` of blob `hash` instead of `chunk`; `None` refuses
    /// the request.
    fn chunk(&self, hash: &BlobHash, index: usize, chunk: Vec<u8>) -> Option<Vec<u8>>;
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
            chunk_filter: None,
            lan_discovery: true,
        }
    }
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

/// The address this host's traffic leaves from by default: the source a connected UDP socket
/// gets towards a documentation address (nothing is sent).
async fn outgoing_ip(ipv6: bool) -> Option<std::net::IpAddr> {
    let (bind, to) = if ipv6 { ("[::]:0", "[2001:db8::1]:9") } else { ("0.0.0.0:0", "192.0.2.1:9") };
    let s = UdpSocket::bind(bind).await.ok()?;
    s.connect(to).await.ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Lets the transport reach peers behind NAT through relays (a weak link: no cycle).
fn node_resolver(inner: &Arc<Inner>) {
    inner.transport.set_resolver(Arc::new(messaging::RelayResolver(Arc::downgrade(inner))));
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Node {
    /// Binds `cfg.listen` and starts the DHT, the QUIC endpoint and the topic driver on it.
    pub async fn spawn(cfg: NodeConfig) -> Result<Node, NodeError> {
        let identity = Identity::from_seed(cfg.identity_seed);
        let mut cfg = cfg;
        if cfg.listen.ip().is_unspecified() && cfg.dht.reach.local_ip.is_none() {
            cfg.dht.reach.local_ip = outgoing_ip(cfg.listen.is_ipv6()).await;
        }
        let socket = Arc::new(UdpSocket::bind(cfg.listen).await.map_err(NodeError::Bind)?);
        let local = socket.local_addr().map_err(NodeError::Bind)?;
        if let Err(e) = socket2::SockRef::from(&*socket).set_recv_buffer_size(cfg.socket_recv_buffer) {
            tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer");
        }
        let (dht_tx, dht_rx) = mpsc::channel(8192);
        let path = suprnova_dht::pathio::PathSocket::new(socket, suprnova_dht::path::PlaneConfig::default());
        let (transport, streams) =
            Transport::new(&identity, path.clone(), dht_tx, cfg.transport.clone()).map_err(NodeError::Transport)?;
        let opts = NodeOptions { database: cfg.database.clone(), ..NodeOptions::default() };
        let (dht, dht_task) =
            dht_net::spawn_shared(Identity::from_seed(cfg.identity_seed), path, dht_rx, cfg.dht.clone(), opts)
                .map_err(NodeError::DhtStart)?;
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
        node_resolver(&inner);
        let node = Node { inner };
        lan::start(&node);
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

    /// The node's current signed record.
    pub fn record(&self) -> NodeRecord {
        self.inner.dht.record()
    }

    /// How others reach this node: its signed record as a bootstrap target.
    pub fn target(&self) -> Target {
        Target::Record(self.record())
    }

    /// The addresses this node gives others to dial it.
    pub fn contact_addrs(&self) -> Vec<SocketAddr> {
        if self.inner.cfg.advertise.is_empty() { vec![self.local_addr()] } else { self.inner.cfg.advertise.clone() }
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
