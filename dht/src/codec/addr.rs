//! Socket addresses on the wire (wire-spec §6.3): an explicit enum, independent of serde's std impls.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 address and port. Encoded as tag (varint 0 / 1), raw address bytes, port varint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub enum WireAddr {
    /// IPv4 address octets and port.
    V4([u8; 4], u16),
    /// IPv6 address octets and port (no flow label or scope).
    V6([u8; 16], u16),
}

impl WireAddr {
    /// The std socket address.
    pub fn to_socket_addr(&self) -> SocketAddr {
        match *self {
            WireAddr::V4(ip, port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
            WireAddr::V6(ip, port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port),
        }
    }

    /// Port is non-zero; the IP is not unspecified, multicast or IPv4 broadcast; an IPv6 address is
    /// not IPv4-mapped (such a peer is written as `V4`).
    pub fn is_usable(&self) -> bool {
        match *self {
            WireAddr::V4(ip, port) => {
                let ip = Ipv4Addr::from(ip);
                port != 0 && !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast()
            }
            WireAddr::V6(ip, port) => {
                let ip = Ipv6Addr::from(ip);
                port != 0 && !ip.is_unspecified() && !ip.is_multicast() && ip.to_ipv4_mapped().is_none()
            }
        }
    }

    /// Address bytes followed by the port, big-endian: the input of the cookie MAC (§5.6).
    pub fn cookie_bytes(&self) -> Vec<u8> {
        let (mut v, port) = match *self {
            WireAddr::V4(ip, port) => (ip.to_vec(), port),
            WireAddr::V6(ip, port) => (ip.to_vec(), port),
        };
        v.extend_from_slice(&port.to_be_bytes());
        v
    }
}

impl From<SocketAddr> for WireAddr {
    fn from(sa: SocketAddr) -> Self {
        match sa.ip() {
            // An IPv4-mapped IPv6 source (dual-stack socket) is the IPv4 peer it stands for.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => WireAddr::V4(v4.octets(), sa.port()),
                None => WireAddr::V6(v6.octets(), sa.port()),
            },
            IpAddr::V4(v4) => WireAddr::V4(v4.octets(), sa.port()),
        }
    }
}

impl std::fmt::Display for WireAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_socket_addr().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usability() {
        assert!(WireAddr::V4([127, 0, 0, 1], 1).is_usable());
        assert!(!WireAddr::V4([127, 0, 0, 1], 0).is_usable());
        assert!(!WireAddr::V4([0, 0, 0, 0], 1).is_usable());
        assert!(!WireAddr::V4([255, 255, 255, 255], 1).is_usable());
        assert!(!WireAddr::V4([224, 0, 0, 1], 1).is_usable());
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        assert!(!WireAddr::V6(mapped, 1).is_usable());
        assert!(WireAddr::V6(Ipv6Addr::LOCALHOST.octets(), 1).is_usable());
        // A mapped source address is recorded as the IPv4 peer it is.
        let sa = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()), 7);
        assert_eq!(WireAddr::from(sa), WireAddr::V4([10, 1, 2, 3], 7));
    }
}
