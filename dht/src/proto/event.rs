//! The core's vocabulary towards its driver: what a request targets, why it failed, and the
//! events the core reports.

use super::*;

/// Whom to ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A node whose signed record we hold.
    Record(NodeRecord),
    /// An address; the node's record is fetched first and, if `expect` is set, must carry that id.
    Addr {
        /// Where.
        addr: SocketAddr,
        /// The id the node must have.
        expect: Option<NodeId>,
    },
}

/// Why a request or query of ours failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// The handshake with the peer was abandoned.
    #[error("handshake failed (no response; wrong key or unreachable)")]
    HandshakeFailed,
    /// The node at the address is not the one expected.
    #[error("node at address has id {0}, not the one expected")]
    IdentityMismatch(NodeId),
    /// The peer's record is invalid.
    #[error("invalid node record: {0}")]
    BadRecord(RecordError),
    /// The peer answered with an error code.
    #[error("peer refused the request (code {0})")]
    Refused(u16),
    /// The request could not be sent.
    #[error("cannot send: {0}")]
    Send(SendError),
    /// Too many requests or queries in flight.
    #[error("too many requests in flight")]
    Busy,
    /// The record has no address we can use.
    #[error("no usable address in record")]
    NoAddress,
    /// The record is refused locally before anything is sent.
    #[error("record refused: {0}")]
    Invalid(StoreError),
    /// No node returned a valid value.
    #[error("not found")]
    NotFound,
    /// The routing table is empty: nobody to ask.
    #[error("no known peers (bootstrap first)")]
    NoPeers,
}

/// Query ids, returned by `bootstrap`, `find_node`, `get` and `put`.
pub type QueryId = u64;

/// What the `Dht` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// A user ping was answered.
    Pong {
        /// Request id returned by `ping`.
        request: u64,
        /// Who answered.
        peer: NodeId,
        /// From where.
        addr: SocketAddr,
        /// Time from sending (including any record fetch and handshake) to the pong.
        rtt: Duration,
        /// Our address as the peer saw it.
        observed: WireAddr,
        /// The peer's record sequence number.
        record_seq: u64,
    },
    /// A user ping failed.
    RequestFailed {
        /// Request id.
        request: u64,
        /// Why.
        error: RequestError,
    },
    /// A session with a peer was confirmed.
    PeerConnected {
        /// Peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
    },
    /// A node entered the routing table.
    PeerAdded {
        /// The node.
        peer: NodeId,
    },
    /// A node left the routing table.
    PeerRemoved {
        /// The node.
        peer: NodeId,
    },
    /// The table holds fewer than `min_peers` nodes: the node bootstraps again through its
    /// seeds and dormant peers (§7.6).
    Rejoining {
        /// Routing-table size now.
        peers: usize,
        /// Attempts since the table was last large enough (1 for the first).
        attempt: u32,
        /// Seeds and dormant peers asked.
        targets: usize,
    },
    /// A bootstrap finished; the routing table holds `peers` nodes.
    Bootstrapped {
        /// Query id.
        query: QueryId,
        /// Routing-table size.
        peers: usize,
    },
    /// A `find_node` finished.
    FoundNodes {
        /// Query id.
        query: QueryId,
        /// The closest nodes that answered, closest first.
        nodes: Vec<Found>,
        /// Hops to the closest node.
        hops: u32,
        /// Requests sent.
        queries: usize,
    },
    /// A valid record for a `get` arrived (the first one, and for `GetMode::All` each new one).
    GotRecord {
        /// Query id.
        query: QueryId,
        /// The record, validated against the key.
        record: Record,
        /// Who served it (this node's own id for a local hit).
        from: NodeId,
        /// Hop of the node that served it (0 = local).
        hop: u32,
    },
    /// A `get` finished; `found` records were reported (`Err(NotFound)` if none).
    GetDone {
        /// Query id.
        query: QueryId,
        /// Records reported, or why none.
        result: Result<usize, RequestError>,
        /// Requests sent.
        queries: usize,
    },
    /// One replica of a `put` answered.
    PutReplica {
        /// Query id.
        query: QueryId,
        /// The replica (this node's own id when stored locally).
        node: NodeId,
        /// Stored, or the error code it answered with.
        result: Result<(), RequestError>,
    },
    /// A `put` finished.
    PutDone {
        /// Query id.
        query: QueryId,
        /// Replicas that stored it, or why none could.
        result: Result<PutOutcome, RequestError>,
    },
    /// The data plane must do this (the driver applies it).
    Plane(crate::path::PlaneOp),
    /// A circuit asked for with `connect_via` is open: `peer` is reachable at `path`.
    CircuitOpened {
        /// Request id returned by `connect_via`.
        request: u64,
        /// The node reached.
        peer: NodeId,
        /// The relay.
        relay: NodeId,
        /// The virtual address of our leg: send to it to reach `peer`.
        path: SocketAddr,
    },
    /// A peer stored a record on this node.
    RecordStored {
        /// The key.
        key: Key,
        /// The peer.
        from: NodeId,
    },
}
