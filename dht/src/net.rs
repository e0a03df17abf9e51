//! The tokio driver (feature `net`): binds a `UdpSocket`, feeds the sans-IO [`Dht`] with datagrams,
//! commands and timer ticks, and sends what it asks. All protocol logic stays in the core.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::identity::{Identity, NodeId, NodeRecord};
use crate::proto::{Dht, DhtConfig, DhtEvent, RequestError, Target};
use crate::stats::ChannelStats;
use crate::wire::WireAddr;
use crate::wire::limits::MAX_DATAGRAM;

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

enum Command {
    Ping(Box<Target>, oneshot::Sender<Result<PingReply, RequestError>>),
    Stats(oneshot::Sender<NodeStats>),
    Shutdown,
}

/// A snapshot of a running node's counters.
#[derive(Clone, Debug)]
pub struct NodeStats {
    /// Channel counters and drops.
    pub channel: ChannelStats,
    /// Peers with a confirmed session.
    pub sessions: usize,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
}

/// Handle to a node running on a tokio task. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    id: NodeId,
    addr: SocketAddr,
    record: NodeRecord,
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

/// Fills `cfg`'s seed and clock fields from the OS, binds `bind`, and starts the node task.
pub async fn spawn(
    identity: Identity,
    bind: SocketAddr,
    mut cfg: DhtConfig,
) -> io::Result<(NodeHandle, JoinHandle<()>)> {
    let socket = UdpSocket::bind(bind).await?;
    let addr = socket.local_addr()?;
    getrandom::fill(&mut cfg.channel.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    cfg.channel.unix_time_ns_at_start = unix_now_ns();
    let addrs: Vec<WireAddr> = [WireAddr::from(addr)].into_iter().filter(WireAddr::is_usable).collect();
    let dht = Dht::new(identity, &addrs, cfg, Instant::now()).map_err(|e| io::Error::other(e.to_string()))?;
    let (tx, rx) = mpsc::channel(1024);
    let handle = NodeHandle { tx, id: dht.id(), addr, record: dht.record().clone() };
    let task = tokio::spawn(run(socket, dht, rx));
    Ok((handle, task))
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
    /// The signed record the node started with.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Pings a node and waits for the answer or the request timeout.
    pub async fn ping(&self, target: Target) -> Result<PingReply, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Ping(Box::new(target), tx)).await.map_err(|_| NodeError::Stopped)?;
        Ok(rx.await.map_err(|_| NodeError::Stopped)??)
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Stats(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Asks the node task to stop.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

type Waiters = HashMap<u64, oneshot::Sender<Result<PingReply, RequestError>>>;

async fn run(socket: UdpSocket, mut dht: Dht, mut rx: mpsc::Receiver<Command>) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut waiters: Waiters = HashMap::new();
    let mut send_errors = 0u64;
    let ipv6_socket = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    loop {
        while let Some(t) = dht.poll_transmit() {
            if socket.send_to(&t.payload, socket_dst(t.dst, ipv6_socket)).await.is_err() {
                send_errors += 1;
            }
        }
        while let Some(ev) = dht.poll_event() {
            dispatch(ev, &mut waiters);
        }
        let deadline = dht.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                if let Ok((n, from)) = r {
                    dht.handle_datagram(now, from, buf.get(..n).unwrap_or(&[]));
                }
                // Drain what else is queued before flushing (fewer wakeups under load).
                for _ in 0..64 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => dht.handle_datagram(now, from, buf.get(..n).unwrap_or(&[])),
                        Err(_) => break,
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Command::Ping(target, reply)) => match dht.ping(Instant::now(), *target) {
                    Ok(id) => { waiters.insert(id, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
                Some(Command::Stats(reply)) => {
                    let _ = reply.send(NodeStats { channel: dht.stats().clone(), sessions: dht.channel().session_count(), send_errors });
                }
                Some(Command::Shutdown) | None => return,
            },
            () = sleep => {}
        }
        let now = Instant::now();
        if dht.poll_timeout().is_some_and(|d| d <= now) {
            dht.handle_timeout(now);
        }
    }
}

/// The core speaks plain IPv4 addresses; a dual-stack IPv6 socket needs them IPv4-mapped.
fn socket_dst(dst: SocketAddr, ipv6_socket: bool) -> SocketAddr {
    match dst.ip() {
        std::net::IpAddr::V4(v4) if ipv6_socket => {
            SocketAddr::new(std::net::IpAddr::V6(v4.to_ipv6_mapped()), dst.port())
        }
        _ => dst,
    }
}

fn dispatch(ev: DhtEvent, waiters: &mut Waiters) {
    match ev {
        DhtEvent::Pong { request, peer, addr, rtt, observed, .. } => {
            if let Some(w) = waiters.remove(&request) {
                let _ = w.send(Ok(PingReply { peer, addr, rtt, observed }));
            }
        }
        DhtEvent::RequestFailed { request, error } => {
            if let Some(w) = waiters.remove(&request) {
                let _ = w.send(Err(error));
            }
        }
        DhtEvent::PeerConnected { peer, addr } => {
            tracing::debug!(peer = %peer.short(), %addr, "session established");
        }
    }
}
