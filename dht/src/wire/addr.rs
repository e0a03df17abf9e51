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

    /// Port is non-zero and IP is neither unspecified nor multicast.
    pub fn is_usable(&self) -> bool {
        let sa = self.to_socket_addr();
        sa.port() != 0 && !sa.ip().is_unspecified() && !sa.ip().is_multicast()
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
