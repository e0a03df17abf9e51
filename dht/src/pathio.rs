//! The node's UDP socket seen through the data plane (feature `net`): sends to virtual addresses
//! leave wrapped for their relay, relayed frames that arrive are forwarded (as a relay) or
//! unwrapped (as an endpoint). Shared by the DHT driver and the QUIC socket on the same port; the
//! plane's lock is held only for its map work, never across a send.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::path::{self, DataPlane, Inbound, PlaneConfig};
use crate::wire::packet::PacketType;

/// The socket and the data plane. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PathSocket {
    io: Arc<UdpSocket>,
    plane: Arc<Mutex<DataPlane>>,
    ipv6: bool,
}

/// A relayed frame's inner datagram, unwrapped in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unwrapped {
    /// The leg's virtual address: the datagram's source from now on.
    pub src: SocketAddr,
    /// Where the inner datagram starts in the buffer.
    pub start: usize,
}

/// Whether a datagram is a relayed frame (type 7).
pub fn is_relayed(datagram: &[u8]) -> bool {
    datagram.first() == Some(&(PacketType::Relayed as u8))
}

impl PathSocket {
    /// Wraps `io` with a fresh data plane.
    pub fn new(io: Arc<UdpSocket>, cfg: PlaneConfig) -> Self {
        let ipv6 = io.local_addr().is_ok_and(|a| a.is_ipv6());
        PathSocket { io, plane: Arc::new(Mutex::new(DataPlane::new(cfg, Instant::now()))), ipv6 }
    }

    /// The socket.
    pub fn io(&self) -> &Arc<UdpSocket> {
        &self.io
    }

    /// The data plane, locked.
    pub fn plane(&self) -> MutexGuard<'_, DataPlane> {
        self.plane.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A dual-stack IPv6 socket needs IPv4 destinations IPv4-mapped.
    fn os_dst(&self, dst: SocketAddr) -> SocketAddr {
        match dst.ip() {
            std::net::IpAddr::V4(v4) if self.ipv6 => {
                SocketAddr::new(std::net::IpAddr::V6(v4.to_ipv6_mapped()), dst.port())
            }
            _ => dst,
        }
    }

    /// Where `payload` for `dst` really goes, and the bytes: itself, or wrapped for the relay.
    /// `None`: a virtual address with no leg (counted by the plane).
    fn route<'a>(&self, dst: SocketAddr, payload: &'a [u8]) -> Option<(SocketAddr, std::borrow::Cow<'a, [u8]>)> {
        if !path::is_virtual(&dst) {
            return Some((self.os_dst(dst), std::borrow::Cow::Borrowed(payload)));
        }
        let (relay, header) = self.plane().outbound(Instant::now(), dst, payload.len()).ok()?;
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        Some((self.os_dst(relay), std::borrow::Cow::Owned(frame)))
    }

    /// Sends `payload` to `dst` (a real or a virtual address). A datagram the plane has no route
    /// for is dropped (and counted there), as the network would.
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        let Some((to, bytes)) = self.route(dst, payload) else { return Ok(()) };
        self.io.send_to(&bytes, to).await.map(|_| ())
    }

    /// Like `send_to`, without waiting: `WouldBlock` if the socket is full.
    pub fn try_send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        let Some((to, bytes)) = self.route(dst, payload) else { return Ok(()) };
        self.io.try_send_to(&bytes, to).map(|_| ())
    }

    /// A relayed frame arrived from `from` in `buf`: forwarded here if this node relays its
    /// circuit, unwrapped if it is ours (`Some`), else dropped (counted by the plane).
    pub fn take_in(&self, from: SocketAddr, buf: &mut [u8]) -> Option<Unwrapped> {
        let from = crate::channel::canonical(from);
        let verdict = self.plane().inbound(Instant::now(), from, buf);
        match verdict {
            Inbound::Local { src, start } => Some(Unwrapped { src, start }),
            Inbound::Forward { to } => {
                // A full socket loses the frame, as a congested link would.
                let _ = self.io.try_send_to(buf, self.os_dst(to));
                None
            }
            Inbound::Consumed | Inbound::Drop(_) => None,
        }
    }
}
