//! LAN discovery's driver (wire-spec §15.6): the multicast socket, and a task that feeds the
//! sans-IO [`LanBeacon`] and dials the nodes it finds. It runs for a node bound to a private,
//! link-local or wildcard address unless `NodeConfig::lan_discovery` is off.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Weak;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use suprnova_dht::lan::{LAN_GROUP, LAN_PORT, LanBeacon, LanConfig};
use suprnova_dht::proto::Target;
use tokio::net::UdpSocket;

use crate::{Inner, Node};

/// The multicast socket: bound to the group's port (shared with other nodes on the host),
/// joined on the interface of `local` (any interface for a wildcard bind), TTL 1, loopback on.
fn socket(local: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LAN_PORT)).into())?;
    s.join_multicast_v4(&LAN_GROUP, &local)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_multicast_loop_v4(true)?;
    if !local.is_unspecified() {
        s.set_multicast_if_v4(&local)?;
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Starts LAN discovery for `node` if it makes sense where it is bound.
pub(crate) fn start(node: &Node) {
    let local = node.local_addr();
    let IpAddr::V4(ip) = local.ip() else { return };
    if !node.inner.cfg.lan_discovery || !suprnova_dht::lan::on_lan(local.ip()) {
        return;
    }
    let sock = match socket(ip) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "LAN discovery off: cannot open the multicast socket");
            return;
        }
    };
    let beacon = LanBeacon::new(LanConfig::default(), &node.record(), local.port(), Instant::now());
    let task = tokio::spawn(run(std::sync::Arc::downgrade(&node.inner), sock, beacon));
    if let Ok(mut t) = node.inner.tasks.lock() {
        t.push(task);
    }
}

async fn run(inner: Weak<Inner>, sock: UdpSocket, mut beacon: LanBeacon) {
    let group = SocketAddr::V4(SocketAddrV4::new(LAN_GROUP, LAN_PORT));
    let mut buf = vec![0u8; 2048];
    loop {
        let Some(node) = inner.upgrade().map(|inner| Node { inner }) else { return };
        beacon.set_record(&node.record());
        while let Some(a) = beacon.poll_announce(Instant::now()) {
            let _ = sock.send_to(&a, group).await;
        }
        let wake = tokio::time::Instant::from_std(beacon.poll_timeout());
        drop(node);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let Some(found) = beacon.handle(Instant::now(), from, buf.get(..n).unwrap_or(&[])) else { continue };
                let Some(inner) = inner.upgrade() else { return };
                tracing::info!(peer = %found.record.id.short(), addr = %found.addr, "found on the LAN");
                let target = Target::Addr { addr: found.addr, expect: Some(found.record.id) };
                // Dialled from its own task: a slow answer must not hold up the beacon.
                tokio::spawn(async move {
                    let _ = inner.dht.bootstrap(vec![target]).await;
                });
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
