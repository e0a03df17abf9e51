//! Paths to peers that cannot be dialled directly (wire-spec §15): the data plane that sits between
//! the UDP socket and both protocols above it (the Noise channel and QUIC), and the relay's
//! admission rules.
//!
//! A peer reached through a relay circuit gets a **virtual address** in `240.0.0.0/4`, a range no
//! one routes. The channel and QUIC only ever see that address; the data plane wraps what they
//! send to it in relayed frames to the relay, and gives the inner datagrams of frames arriving on
//! the circuit that address as their source. Both are sans-IO: the drivers feed them `(now, bytes)`.

pub mod plane;
pub mod relay;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use plane::{DataPlane, Inbound, PlaneConfig, PlaneDrop, PlaneEvent, PlaneOp, PlaneStats};
pub use relay::{RelayConfig, RelayServer, RelayStats};

/// Whether `a` is a virtual address (`240.0.0.0/4`): a leg of a relay circuit, never a real peer.
pub fn is_virtual(a: &SocketAddr) -> bool {
    match a.ip() {
        IpAddr::V4(v4) => v4.octets()[0] >= 240,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] >= 240),
    }
}

/// The virtual address of the leg `(relay, circuit)`: derived from both, so the DHT core (which
/// opens legs) and the data plane (which creates legs on frames from relays it holds a
/// reservation on) name a leg alike without talking. 44 bits of a hash: a collision among a
/// node's few legs is refused by the plane, not silently merged.
pub fn virtual_addr(relay: SocketAddr, circuit: u64) -> SocketAddr {
    let mut h = blake3::Hasher::new();
    h.update(b"suprnova virtual leg v1");
    h.update(relay.to_string().as_bytes());
    h.update(&circuit.to_le_bytes());
    let d = h.finalize();
    let b = d.as_bytes();
    // 240..=254: never 255.255.255.255.
    let first = 240 + b[0] % 15;
    let ip = Ipv4Addr::new(first, b[1], b[2], b[3]);
    let port = u16::from_le_bytes([b[4], b[5]]) | 1;
    SocketAddr::new(IpAddr::V4(ip), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_are_virtual_and_differ_per_leg() {
        let r: SocketAddr = "198.18.0.2:4433".parse().unwrap_or_else(|_| unreachable!());
        let a = virtual_addr(r, 1);
        assert!(is_virtual(&a));
        assert_ne!(a, virtual_addr(r, 2));
        assert_eq!(a, virtual_addr(r, 1));
        assert_ne!(a.port(), 0);
        assert!(!is_virtual(&r));
        let mapped: SocketAddr = "[::ffff:241.1.2.3]:5".parse().unwrap_or_else(|_| unreachable!());
        assert!(is_virtual(&mapped));
    }
}
