//! `NodeError`: one flat, typed error for everything a [`Node`](crate::Node) does, so the layers
//! above match what went wrong (`NotFound`, `Quota`, `Timeout`, …) without reaching into the DHT,
//! the topic driver or QUIC. Where a lower error explains the failure it is kept as the source.

use suprnova_dht::NodeId;
use suprnova_dht::identity::RecordError;
use suprnova_dht::net::NodeError as DhtError;
use suprnova_dht::proto::RequestError;
use suprnova_dht::store::StoreError;
use suprnova_dht::wire::message::error_code;
use suprnova_gossip::net::tls::TlsSetupError;
use suprnova_gossip::net::{ConnectError, TopicError};

use crate::BlobError;

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The UDP socket could not be bound (or its address read).
    #[error("cannot bind the UDP socket: {0}")]
    Bind(#[source] std::io::Error),
    /// QUIC and TLS could not be set up on the socket.
    #[error("cannot set up QUIC: {0}")]
    Transport(#[source] TlsSetupError),
    /// The DHT could not start (its database, its saved state).
    #[error("cannot start the DHT: {0}")]
    DhtStart(#[source] std::io::Error),
    /// No node returned a valid value (or this node does not hold what was asked for).
    #[error("not found")]
    NotFound,
    /// The routing table is empty: nobody to ask.
    #[error("no known peers (bootstrap first)")]
    NoPeers,
    /// A storing node's quota for us (or the set's room for writers) is exhausted.
    #[error("refused: storage quota exceeded")]
    Quota,
    /// Not newer than the record held.
    #[error("refused: not newer than the record held")]
    Stale,
    /// A compare-and-swap found another sequence number (`held`, if known).
    #[error("refused: compare-and-swap failed (held seq {held:?})")]
    CasMismatch {
        /// The seq held.
        held: Option<u64>,
    },
    /// Over a storing node's rate limit.
    #[error("refused: rate limited")]
    RateLimited,
    /// The record is invalid (refused locally with the reason, or by a peer).
    #[error("refused: invalid record{}", .0.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    InvalidRecord(Option<StoreError>),
    /// A peer refused, with the protocol's error code if it gave one.
    #[error("refused by the peer{}", .code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Refused {
        /// The DHT error code (wire-spec §6.2), if any.
        code: Option<u16>,
    },
    /// A record was not the kind asked for.
    #[error("unexpected record kind")]
    WrongRecord,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The peer could not be reached.
    #[error("peer unreachable{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Unreachable {
        /// Why, when the QUIC connection attempt says.
        #[source]
        source: Option<ConnectError>,
    },
    /// No address for this node id could be found.
    #[error("peer {} not found", .0.short())]
    UnknownPeer(NodeId),
    /// The peer is behind NAT and none of the relays its reach record names opened a circuit.
    #[error("peer {} is behind NAT and none of its {tried} relay(s) opened a circuit", .peer.short())]
    NoRelayPath {
        /// The peer.
        peer: NodeId,
        /// Relays asked.
        tried: usize,
    },
    /// The node at the address proved another identity.
    #[error("the node at that address is {}, not the one expected", .0.short())]
    WrongPeer(NodeId),
    /// The peer's signed record is invalid.
    #[error("invalid peer record: {0}")]
    BadPeerRecord(#[source] RecordError),
    /// The peer was too busy to take the request.
    #[error("peer busy")]
    Busy,
    /// This node has too much in flight to take the operation now.
    #[error("this node is overloaded (too much in flight)")]
    Overloaded,
    /// Over a size limit.
    #[error("too large: {size} bytes, at most {max}")]
    TooLarge {
        /// The size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A QUIC stream failed.
    #[error("stream: {0}")]
    Stream(#[source] StreamError),
    /// Not subscribed to the topic.
    #[error("not subscribed to the topic")]
    NotSubscribed,
    /// Topic limit reached.
    #[error("too many topics")]
    TooManyTopics,
    /// The target is this node.
    #[error("the target is this node")]
    SelfTarget,
    /// A blob operation failed.
    #[error("blob: {0}")]
    Blob(#[source] BlobError),
    /// The node has stopped.
    #[error("node stopped")]
    Stopped,
}

/// How a QUIC stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection failed.
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing failed.
    #[error("{0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error("{0}")]
    Closed(#[from] quinn::ClosedStream),
    /// Reading failed.
    #[error("{0}")]
    Read(#[from] quinn::ReadExactError),
    /// The answer ended before its announced length.
    #[error("response cut short")]
    CutShort,
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
}

impl NodeError {
    /// A size over `max`.
    pub(crate) fn too_large(size: usize, max: usize) -> NodeError {
        NodeError::TooLarge { size: size as u64, max: max as u64 }
    }
}

impl From<StreamError> for NodeError {
    fn from(e: StreamError) -> NodeError {
        NodeError::Stream(e)
    }
}

macro_rules! stream_from {
    ($($t:ty),*) => {$(
        impl From<$t> for NodeError {
            fn from(e: $t) -> NodeError {
                NodeError::Stream(e.into())
            }
        }
    )*};
}
stream_from!(quinn::ConnectionError, quinn::WriteError, quinn::ClosedStream, quinn::ReadExactError, postcard::Error);

impl From<RequestError> for NodeError {
    fn from(e: RequestError) -> NodeError {
        match e {
            RequestError::Timeout => NodeError::Timeout,
            RequestError::HandshakeFailed | RequestError::NoAddress => NodeError::Unreachable { source: None },
            RequestError::IdentityMismatch(id) => NodeError::WrongPeer(id),
            RequestError::BadRecord(r) => NodeError::BadPeerRecord(r),
            RequestError::Refused(code) => refused(code),
            RequestError::Send(suprnova_dht::channel::SendError::TooLarge) => {
                NodeError::TooLarge { size: 0, max: suprnova_dht::wire::limits::MAX_VALUE_LEN as u64 }
            }
            RequestError::Send(suprnova_dht::channel::SendError::SelfSend) => NodeError::SelfTarget,
            RequestError::Send(_) | RequestError::Busy => NodeError::Overloaded,
            RequestError::Invalid(s) => match s {
                StoreError::Quota | StoreError::SetFull => NodeError::Quota,
                StoreError::Stale => NodeError::Stale,
                StoreError::CasMismatch { held } => NodeError::CasMismatch { held: Some(held) },
                other => NodeError::InvalidRecord(Some(other)),
            },
            RequestError::NotFound => NodeError::NotFound,
            RequestError::NoPeers => NodeError::NoPeers,
        }
    }
}

/// A peer's refusal code, as the flat error.
pub(crate) fn refused(code: u16) -> NodeError {
    match code {
        error_code::QUOTA => NodeError::Quota,
        error_code::STALE => NodeError::Stale,
        error_code::CAS_MISMATCH => NodeError::CasMismatch { held: None },
        error_code::RATE_LIMITED => NodeError::RateLimited,
        error_code::INVALID_RECORD => NodeError::InvalidRecord(None),
        other => NodeError::Refused { code: Some(other) },
    }
}

impl From<DhtError> for NodeError {
    fn from(e: DhtError) -> NodeError {
        match e {
            DhtError::Stopped => NodeError::Stopped,
            DhtError::Request(r) => r.into(),
        }
    }
}

impl From<TopicError> for NodeError {
    fn from(e: TopicError) -> NodeError {
        match e {
            TopicError::NotSubscribed => NodeError::NotSubscribed,
            TopicError::TooLarge(n) => NodeError::too_large(n, suprnova_gossip::wire::MAX_BROADCAST_PAYLOAD),
            TopicError::TooManyTopics => NodeError::TooManyTopics,
            TopicError::Stopped => NodeError::Stopped,
        }
    }
}

impl From<ConnectError> for NodeError {
    fn from(e: ConnectError) -> NodeError {
        match e {
            ConnectError::Timeout => NodeError::Timeout,
            ConnectError::SelfConnect => NodeError::SelfTarget,
            ConnectError::Closed => NodeError::Stopped,
            ConnectError::WrongPeer(Some(id)) => NodeError::WrongPeer(id),
            other => NodeError::Unreachable { source: Some(other) },
        }
    }
}

impl From<BlobError> for NodeError {
    fn from(e: BlobError) -> NodeError {
        NodeError::Blob(e)
    }
}
