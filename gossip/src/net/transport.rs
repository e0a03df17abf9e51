//! The QUIC endpoint on the shared port: dials NodeIds, accepts peers, keeps one connection per
//! peer for reuse, and hands every stream a peer opens to the node's router by its kind byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream, ServerConfig, TransportConfig};
use suprnova_dht::{Identity, NodeId};
use tokio::sync::mpsc;

use super::socket::{DemuxStats, SharedSocket};
use super::tls::{SERVER_NAME, TlsConfigs, TlsSetupError, certificate_node_id};

/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the connection was not needed any more.
pub const CLOSE_IDLE: u32 = 1;

/// Stream kinds (the first byte of every stream; see wire-spec §12).
pub mod kind {
    /// Unidirectional, long-lived: gossip frames.
    pub const GOSSIP: u8 = 1;
    /// Unidirectional: one direct message.
    pub const MESSAGE: u8 = 2;
    /// Bidirectional: one request and its response.
    pub const REQUEST: u8 = 3;
    /// Bidirectional: one blob request and its response.
    pub const BLOB: u8 = 4;
}

/// Transport tunables.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// A connection with no traffic for this long is closed. Gossip links send a keep-alive
    /// every `TopicsConfig::keepalive`, so this is how long a dead or cut-off neighbour stays in
    /// a topic's active view: short enough that the topic repairs within seconds of a crash.
    pub idle_timeout: Duration,
    /// Streams a peer may have open towards us at once, per direction kind.
    pub max_streams: u32,
    /// Time allowed to connect (handshake included).
    pub connect_timeout: Duration,
    /// Incoming streams queued for the router at most.
    pub incoming_queue: usize,
    /// Bytes a peer may have in flight towards us on one connection (all streams together).
    pub receive_window: u32,
    /// Connections at most; further incoming ones are refused.
    pub max_connections: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            idle_timeout: Duration::from_secs(10),
            max_streams: 128,
            connect_timeout: Duration::from_secs(5),
            incoming_queue: 1024,
            receive_window: 8 * 1024 * 1024,
            max_connections: 2048,
        }
    }
}

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No usable address.
    #[error("no address for peer")]
    NoAddress,
    /// It is us.
    #[error("refusing to connect to ourselves")]
    SelfConnect,
    /// TLS could not be set up for this peer.
    #[error("connect failed: {0}")]
    Tls(#[source] TlsSetupError),
    /// quinn refused to start the connection.
    #[error("connect failed: {0}")]
    Dial(#[source] quinn::ConnectError),
    /// The handshake failed (a different key than the NodeId asked for ends here).
    #[error("connect failed: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    /// The peer proved another identity than the one dialled (or none).
    #[error("connect failed: the peer proved another id ({0:?})")]
    WrongPeer(Option<NodeId>),
    /// No answer in time.
    #[error("connect timed out")]
    Timeout,
    /// The endpoint is closed.
    #[error("endpoint closed")]
    Closed,
}

/// A stream a peer opened, with its kind byte already read.
#[derive(Debug)]
pub enum IncomingStream {
    /// Unidirectional.
    Uni {
        /// The peer.
        from: NodeId,
        /// The kind byte.
        kind: u8,
        /// The rest of the stream.
        recv: RecvStream,
    },
    /// Bidirectional.
    Bi {
        /// The peer.
        from: NodeId,
        /// The kind byte.
        kind: u8,
        /// Our side.
        send: SendStream,
        /// The rest of their side.
        recv: RecvStream,
    },
}

/// A connection came or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection to this peer was established (either direction).
    Up(NodeId),
    /// That connection closed.
    Down(NodeId),
}

/// Transport counters.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Connections established (both directions).
    pub connections: AtomicU64,
    /// Outgoing handshakes that failed (impostors included).
    pub connect_failures: AtomicU64,
    /// Incoming handshakes that failed.
    pub accept_failures: AtomicU64,
    /// Streams dropped because the router's queue was full.
    pub streams_dropped: AtomicU64,
    /// Streams with an unknown kind byte.
    pub unknown_stream_kind: AtomicU64,
}

struct Inner {
    endpoint: Endpoint,
    tls: TlsConfigs,
    me: NodeId,
    transport: Arc<TransportConfig>,
    opts: TransportOptions,
    conns: Mutex<HashMap<NodeId, Connection>>,
    dialing: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    incoming: mpsc::Sender<IncomingStream>,
    events: tokio::sync::broadcast::Sender<ConnectionEvent>,
    stats: TransportStats,
    demux: Arc<DemuxStats>,
    resolver: Mutex<Option<Arc<dyn Resolve>>>,
}

/// Finds a relayed path to a peer that direct dials do not reach (wire-spec §15.5): the node
/// layer reads the peer's reach record and opens a relay circuit.
pub trait Resolve: Send + Sync {
    /// A virtual address that reaches `peer` through a relay, if it has one.
    fn relayed(&self, peer: NodeId) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<SocketAddr>> + Send>>;
}

/// The QUIC side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// The NodeId proven by a connection's TLS handshake.
pub fn peer_id(conn: &Connection) -> Option<NodeId> {
    let certs = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    certs.first().and_then(certificate_node_id)
}

impl Transport {
    /// Starts a QUIC endpoint on `socket`, whose non-QUIC datagrams go to `dht`. Streams opened by
    /// peers arrive on the returned receiver.
    pub fn new(
        identity: &Identity,
        socket: suprnova_dht::pathio::PathSocket,
        dht: mpsc::Sender<(SocketAddr, Vec<u8>)>,
        opts: TransportOptions,
    ) -> Result<(Transport, mpsc::Receiver<IncomingStream>), TlsSetupError> {
        let tls = TlsConfigs::new(identity)?;
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(quinn::IdleTimeout::try_from(opts.idle_timeout).ok())
            .max_concurrent_bidi_streams(opts.max_streams.into())
            .max_concurrent_uni_streams(opts.max_streams.into())
            .receive_window(opts.receive_window.into());
        let transport = Arc::new(transport);
        let mut server = ServerConfig::with_crypto(Arc::new(tls.server()?));
        server.transport_config(transport.clone());
        let mut endpoint_cfg = EndpointConfig::default();
        // Every QUIC packet must keep bit 0x40 set: the shared socket sorts on it.
        endpoint_cfg.grease_quic_bit(false);
        let shared = SharedSocket::new(socket, dht);
        let demux = shared.stats();
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_cfg,
            Some(server),
            Arc::new(shared),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(TlsSetupError::Endpoint)?;
        let (tx, rx) = mpsc::channel(opts.incoming_queue);
        let inner = Arc::new(Inner {
            endpoint,
            tls,
            me: identity.id(),
            transport,
            opts,
            conns: Mutex::default(),
            dialing: Mutex::default(),
            incoming: tx,
            events: tokio::sync::broadcast::channel(1024).0,
            stats: TransportStats::default(),
            demux,
            resolver: Mutex::new(None),
        });
        let t = Transport { inner };
        tokio::spawn(t.clone().accept_loop());
        Ok((t, rx))
    }

    /// Our NodeId.
    pub fn id(&self) -> NodeId {
        self.inner.me
    }

    /// Counters.
    pub fn stats(&self) -> &TransportStats {
        &self.inner.stats
    }

    /// The demultiplexer's counters.
    pub fn demux_stats(&self) -> &DemuxStats {
        &self.inner.demux
    }

    /// Connection events from now on (a receiver that falls behind skips the oldest).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    /// Sets what finds relayed paths to peers that direct dials do not reach.
    pub fn set_resolver(&self, r: Arc<dyn Resolve>) {
        if let Ok(mut g) = self.inner.resolver.lock() {
            *g = Some(r);
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The open connection to `peer`, if any.
    pub fn connection(&self, peer: &NodeId) -> Option<Connection> {
        let conns = self.inner.conns.lock().ok()?;
        conns.get(peer).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// A connection to `peer`: the open one, or a new one dialled at `addrs` in order. The peer
    /// must prove it holds the key of `peer`, or the handshake fails.
    pub async fn connect(&self, peer: NodeId, addrs: &[SocketAddr]) -> Result<Connection, ConnectError> {
        if peer == self.inner.me {
            return Err(ConnectError::SelfConnect);
        }
        if let Some(c) = self.connection(&peer) {
            return Ok(c);
        }
        // One dial per peer at a time; a second caller waits and reuses its result.
        let lock = {
            let mut dialing = self.inner.dialing.lock().map_err(|_| ConnectError::Closed)?;
            dialing.entry(peer).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(c) = self.connection(&peer) {
            return Ok(c);
        }
        let mut result = self.dial(peer, addrs).await;
        // No address worked (or none was known): through a relay, if the peer has one.
        let resolver = self.inner.resolver.lock().ok().and_then(|g| g.clone());
        let relayed_already = addrs.iter().any(suprnova_dht::path::is_virtual);
        if result.is_err()
            && !relayed_already
            && let Some(r) = resolver
            && let Ok(Some(path)) = tokio::time::timeout(self.inner.opts.connect_timeout, r.relayed(peer)).await
        {
            result = self.dial(peer, &[path]).await;
        }
        if let Ok(mut dialing) = self.inner.dialing.lock() {
            dialing.remove(&peer);
        }
        result
    }

    async fn dial(&self, peer: NodeId, addrs: &[SocketAddr]) -> Result<Connection, ConnectError> {
        if addrs.is_empty() {
            return Err(ConnectError::NoAddress);
        }
        let crypto = self.inner.tls.client(peer).map_err(ConnectError::Tls)?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(self.inner.transport.clone());
        let mut last = ConnectError::NoAddress;
        for addr in addrs {
            let connecting = match self.inner.endpoint.connect_with(cfg.clone(), *addr, SERVER_NAME) {
                Ok(c) => c,
                Err(quinn::ConnectError::EndpointStopping) => return Err(ConnectError::Closed),
                Err(e) => {
                    last = ConnectError::Dial(e);
                    continue;
                }
            };
            match tokio::time::timeout(self.inner.opts.connect_timeout, connecting).await {
                Ok(Ok(conn)) => {
                    // The verifier already checked the key; this cannot differ, but be exact.
                    let proved = peer_id(&conn);
                    if proved != Some(peer) {
                        conn.close(CLOSE_NORMAL.into(), b"wrong peer");
                        last = ConnectError::WrongPeer(proved);
                        continue;
                    }
                    self.register(peer, conn.clone());
                    return Ok(conn);
                }
                Ok(Err(e)) => last = ConnectError::Handshake(e),
                Err(_) => last = ConnectError::Timeout,
            }
        }
        self.inner.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        Err(last)
    }

    /// Keeps `conn` as the connection to `peer` and starts handing its streams to the router.
    fn register(&self, peer: NodeId, conn: Connection) {
        self.inner.stats.connections.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.insert(peer, conn.clone());
        }
        let _ = self.inner.events.send(ConnectionEvent::Up(peer));
        let t = self.clone();
        tokio::spawn(async move {
            t.streams(peer, conn.clone()).await;
            let mut still_connected = false;
            if let Ok(mut conns) = t.inner.conns.lock() {
                if conns.get(&peer).is_some_and(|c| c.stable_id() == conn.stable_id()) {
                    conns.remove(&peer);
                }
                still_connected = conns.contains_key(&peer);
            }
            // Two connections to one peer (both dialled at once): only the last one's end is news.
            if !still_connected {
                let _ = t.inner.events.send(ConnectionEvent::Down(peer));
            }
        });
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            if self.connection_count() >= self.inner.opts.max_connections {
                self.inner.stats.accept_failures.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            }
            let t = self.clone();
            tokio::spawn(async move {
                let conn = match tokio::time::timeout(t.inner.opts.connect_timeout, async { incoming.await }).await {
                    Ok(Ok(c)) => c,
                    _ => {
                        t.inner.stats.accept_failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                match peer_id(&conn) {
                    Some(peer) if peer != t.inner.me => t.register(peer, conn),
                    _ => {
                        t.inner.stats.accept_failures.fetch_add(1, Ordering::Relaxed);
                        conn.close(CLOSE_NORMAL.into(), b"bad identity");
                    }
                }
            });
        }
    }

    /// Hands every stream `peer` opens to the router once its kind byte has arrived.
    async fn streams(&self, peer: NodeId, conn: Connection) {
        loop {
            let t = self.clone();
            tokio::select! {
                r = conn.accept_uni() => match r {
                    Ok(mut recv) => drop(tokio::spawn(async move {
                        if let Some(kind) = read_kind(&mut recv).await {
                            t.route(IncomingStream::Uni { from: peer, kind, recv });
                        }
                    })),
                    Err(_) => return,
                },
                r = conn.accept_bi() => match r {
                    Ok((send, mut recv)) => drop(tokio::spawn(async move {
                        if let Some(kind) = read_kind(&mut recv).await {
                            t.route(IncomingStream::Bi { from: peer, kind, send, recv });
                        }
                    })),
                    Err(_) => return,
                },
            }
        }
    }

    fn route(&self, stream: IncomingStream) {
        let k = match &stream {
            IncomingStream::Uni { kind, .. } | IncomingStream::Bi { kind, .. } => *kind,
        };
        if !(kind::GOSSIP..=kind::BLOB).contains(&k) {
            self.inner.stats.unknown_stream_kind.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.inner.incoming.try_send(stream).is_err() {
            self.inner.stats.streams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every connection and the endpoint, and waits briefly for the close to be sent.
    pub async fn close(&self) {
        self.inner.endpoint.close(CLOSE_NORMAL.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }
}

/// Reads a stream's kind byte (with a short timeout: a peer that opens and stalls is dropped).
async fn read_kind(recv: &mut RecvStream) -> Option<u8> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut b)).await {
        Ok(Ok(())) => {
            let [k] = b;
            Some(k)
        }
        _ => None,
    }
}
