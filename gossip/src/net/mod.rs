//! The QUIC driver (feature `net`): the shared UDP socket, TLS bound to node identities, the
//! endpoint with its connection pool, and the topic driver that runs the sans-IO cores.

pub mod socket;
pub mod tls;
pub mod topics;
pub mod transport;

pub use topics::{MemberWork, MembershipConfig, TopicError, TopicEvent, TopicInfo, TopicStats, Topics, TopicsConfig};
pub use transport::{
    ConnectError, ConnectionEvent, IncomingStream, Resolve, Transport, TransportOptions, TransportStats, kind, peer_id,
};
