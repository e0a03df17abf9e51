//! One UDP socket, two protocols: QUIC packets (first byte has bit 0x40 set, which every node
//! guarantees by turning QUIC bit greasing off) go to the quinn endpoint; everything else (the DHT
//! packets, whose type byte is below 0x40) is handed to the DHT task through a bounded queue.
//! Relayed frames (type 7, wire-spec §15.3) go through the data plane first: forwarded if this
//! node relays their circuit, else unwrapped and sorted the same way, with the leg's virtual
//! address as their source; sends to a virtual address leave wrapped for the relay.
//!
//! quinn owns the receive loop: it polls [`SharedSocket::poll_recv`], which reads datagrams until
//! it finds a QUIC one and forwards the rest. Segmentation offload (GSO/GRO) is off: a GRO batch
//! could mix both kinds, and one datagram per read keeps the split exact.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use suprnova_dht::pathio::{PathSocket, is_relayed};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The bit that tells a QUIC packet (set) from a DHT packet (clear) in the first byte.
pub const QUIC_BIT: u8 = 0x40;

/// DHT datagrams forwarded in a row before the reader yields (fairness towards other tasks).
const MAX_FORWARD_BURST: usize = 256;

/// Counters of the demultiplexer.
#[derive(Debug, Default)]
pub struct DemuxStats {
    /// Datagrams handed to QUIC.
    pub quic: AtomicU64,
    /// Datagrams handed to the DHT.
    pub dht: AtomicU64,
    /// DHT datagrams dropped because its queue was full.
    pub dht_queue_full: AtomicU64,
    /// Empty datagrams dropped.
    pub empty: AtomicU64,
    /// Datagrams the OS refused to send (unreachable network, forbidden address): dropped.
    pub send_errors: AtomicU64,
    /// Receive errors other than "try again" (skipped).
    pub recv_errors: AtomicU64,
}

/// The node's one UDP socket, shared by quinn (as its [`AsyncUdpSocket`]) and the DHT.
pub struct SharedSocket {
    io: Arc<UdpSocket>,
    path: PathSocket,
    dht: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    stats: Arc<DemuxStats>,
}

impl fmt::Debug for SharedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSocket").field("local", &self.io.local_addr().ok()).finish()
    }
}

impl SharedSocket {
    /// Wraps `path`; DHT datagrams go to `dht`.
    pub fn new(path: PathSocket, dht: mpsc::Sender<(SocketAddr, Vec<u8>)>) -> Self {
        SharedSocket { io: path.io().clone(), path, dht, stats: Arc::default() }
    }

    /// The demultiplexer's counters.
    pub fn stats(&self) -> Arc<DemuxStats> {
        self.stats.clone()
    }

    /// A relayed frame's inner datagram, moved to the front of `buf`, with the leg's virtual
    /// address as its source; `None` if the plane forwarded or dropped the frame. Other datagrams
    /// pass as they are.
    fn unwrap_relayed(&self, from: SocketAddr, buf: &mut [u8], n: usize) -> Option<(SocketAddr, usize)> {
        let d = buf.get_mut(..n)?;
        if !is_relayed(d) {
            return Some((from, n));
        }
        let u = self.path.take_in(from, d)?;
        d.copy_within(u.start.., 0);
        Some((u.src, n.saturating_sub(u.start)))
    }

    /// Sorts one received datagram: `true` if it is QUIC.
    fn sort(&self, from: SocketAddr, datagram: &[u8]) -> bool {
        match datagram.first() {
            None => {
                self.stats.empty.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(b) if b & QUIC_BIT != 0 => {
                self.stats.quic.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(_) => {
                if self.dht.try_send((from, datagram.to_vec())).is_ok() {
                    self.stats.dht.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.dht_queue_full.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
        }
    }
}

#[derive(Debug)]
struct Poller(Arc<UdpSocket>);

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        self.0.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for SharedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self.io.clone()))
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match self.path.try_send_to(transmit.contents, transmit.destination) {
            Ok(_) => Ok(()),
            // quinn waits for writability and retries.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            // Anything else (network down, a broadcast address someone gave us) is a lost
            // datagram, as on the wire: an error here would stop quinn's connection driver.
            Err(_) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        for _ in 0..MAX_FORWARD_BURST {
            ready!(self.io.poll_recv_ready(cx))?;
            match self.io.try_recv_from(buf) {
                Ok((n, from)) => {
                    let Some((from, n)) = self.unwrap_relayed(from, buf, n) else { continue };
                    if self.sort(from, buf.get(..n).unwrap_or(&[])) {
                        *m = RecvMeta { addr: from, len: n, stride: n, ecn: None, dst_ip: None };
                        return Poll::Ready(Ok(1));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // ICMP errors left by earlier sends (port unreachable) and transient failures are
                // not fatal: an error returned here would stop the endpoint, and the DHT with it.
                Err(_) => {
                    self.stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        // Linux sends UDP with don't-fragment by default (IP_PMTUDISC_WANT), so quinn may run path
        // MTU discovery: probes above the path MTU are lost and it stays at what got through.
        false
    }
}
