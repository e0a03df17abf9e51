//! The channel's tunables and its vocabulary towards the DHT core: peers, datagrams to send,
//! events, and why a send failed.

use super::*;

/// Tunables of the channel. Defaults are the values of wire-spec §8.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Start a new handshake when sending on a session older than this.
    pub rekey_after: Duration,
    /// Never send or accept on a session older than this.
    pub reject_after: Duration,
    /// Start a new handshake after sending this many packets on a session.
    pub rekey_after_messages: u64,
    /// First handshake retransmission delay; doubles per attempt.
    pub handshake_retry: Duration,
    /// Initiation attempts before a handshake is abandoned.
    pub handshake_attempts: u32,
    /// Initiations per second (passing mac1) above which a valid mac2 (cookie) is demanded.
    pub cookie_threshold_per_s: u32,
    /// Peers with any state (sessions, handshakes, queues).
    pub max_peers: usize,
    /// Plaintexts queued per peer while its handshake runs.
    pub max_queued_per_peer: usize,
    /// Datagrams and events waiting to be polled.
    pub max_outbox: usize,
    /// Responses kept to answer retransmitted initiations byte-identically.
    pub response_cache: usize,
    /// How long a cached response is kept.
    pub response_cache_ttl: Duration,
    /// Outstanding record requests.
    pub max_record_requests: usize,
    /// How long a record request waits for its reply.
    pub record_request_timeout: Duration,
    /// A peer with no session, handshake or queue is forgotten after this.
    pub peer_idle_timeout: Duration,
    /// Seed of the channel's RNG (ephemerals, indices, cookie secrets, nonces).
    pub rng_seed: [u8; 32],
    /// Unix time (ns) that corresponds to the `now` given to `Channel::new`; initiation timestamps.
    pub unix_time_ns_at_start: u64,
    /// Initiations (passing mac1, not answered from the cache) per source address (IP and
    /// port); `None` turns the limit off. Initiations with a valid mac2 (a proven source) have
    /// buckets of their own. wire-spec §8.1.
    pub handshakes_per_addr: Option<Rate>,
    /// Initiations per source IP (IPv6: per /64), whatever the port; proven and unproven apart.
    pub handshakes_per_ip: Option<Rate>,
    /// Record requests answered per source IP (IPv6: per /64), applied only while record
    /// requests from everywhere exceed `record_requests_load_per_s` (a source address cannot be
    /// proven here, so a forged one must not be able to use up a real one's bucket otherwise).
    pub record_requests_per_ip: Option<Rate>,
    /// Record requests per second, from all sources, above which `record_requests_per_ip` applies.
    pub record_requests_load_per_s: u32,
    /// Sources each of these limiters tracks at most (beyond that, newcomers share one bucket).
    pub limit_tracked: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            handshake_retry: Duration::from_millis(250),
            handshake_attempts: 5,
            cookie_threshold_per_s: 1000,
            max_peers: 4096,
            max_queued_per_peer: 32,
            max_outbox: 8192,
            response_cache: 1024,
            response_cache_ttl: Duration::from_secs(10),
            max_record_requests: 256,
            record_request_timeout: Duration::from_secs(5),
            peer_idle_timeout: Duration::from_secs(600),
            rng_seed: [0; 32],
            unix_time_ns_at_start: 0,
            handshakes_per_addr: Some(Rate::new(5, 20)),
            handshakes_per_ip: Some(Rate::new(200, 1000)),
            record_requests_per_ip: Some(Rate::new(100, 1000)),
            record_requests_load_per_s: 1000,
            limit_tracked: 4096,
        }
    }
}

/// What the channel needs to reach a peer: taken from its verified node record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// Node id.
    pub id: NodeId,
    /// X25519 static key (from the signed record).
    pub noise_key: [u8; 32],
    /// Where to send.
    pub addr: SocketAddr,
}

impl PeerInfo {
    /// From a record that has already been verified; picks an address of the given family.
    pub fn from_record(rec: &NodeRecord, ipv6: bool) -> Option<PeerInfo> {
        Some(PeerInfo { id: rec.id, noise_key: rec.noise_key, addr: rec.addr_for(ipv6)? })
    }
}

/// A datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// Something the layer above should know.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChannelEvent {
    /// A session with `peer` is confirmed and usable in both directions.
    Established {
        /// Peer id.
        peer: NodeId,
        /// Its authenticated address.
        addr: SocketAddr,
        /// Whether we initiated.
        initiator: bool,
    },
    /// An authenticated, decrypted, non-empty plaintext from `peer`.
    Received {
        /// Peer id.
        peer: NodeId,
        /// Source address of the packet.
        addr: SocketAddr,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// A handshake to `peer` was abandoned; `dropped` queued plaintexts were discarded.
    HandshakeFailed {
        /// Peer id.
        peer: NodeId,
        /// Plaintexts discarded.
        dropped: usize,
    },
    /// A verified node record answering `request_record`.
    Record {
        /// Address asked.
        from: SocketAddr,
        /// The record.
        record: NodeRecord,
    },
}

/// Why a local send was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SendError {
    /// No room for another peer.
    #[error("peer table full")]
    TableFull,
    /// Too many plaintexts already queued for this peer.
    #[error("send queue full")]
    QueueFull,
    /// Too many datagrams waiting to be polled.
    #[error("outbox full")]
    Backpressure,
    /// Plaintext larger than one transport packet can carry.
    #[error("message too large")]
    TooLarge,
    /// The destination is this node.
    #[error("cannot send to self")]
    SelfSend,
}
