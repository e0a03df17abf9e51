//! The topic core's vocabulary: its tunables, what subscribers see, its counters and errors.

use std::time::{Duration, Instant};

use suprnova_dht::NodeId;

use crate::proto::{hyparview, plumtree};
use crate::wire::SigCheck;

/// The time a core is fed: a monotonic instant for its timers and the wall clock (ms since the
/// Unix epoch) for the envelope timestamps it signs and checks. The driver reads both clocks;
/// the simulator makes both up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub at: Instant,
    /// Wall-clock time, ms since the Unix epoch.
    pub unix_ms: u64,
}

/// Signature checks the core asks of its driver (batched: two or more go through Ed25519 batch
/// verification). The driver passes one in; the simulator may pass one that trusts every
/// signature, since its messages are signed by cores that cannot lie.
pub trait Verifier {
    /// Verdicts (true = valid), in order.
    fn verify(&mut self, checks: &[SigCheck<'_>]) -> Vec<bool>;
}

/// The production verifier: Ed25519 with decompressed keys cached (`wire::verify_many`).
#[derive(Default)]
pub struct Ed25519Verifier {
    keys: crate::wire::KeyCache,
}

impl Verifier for Ed25519Verifier {
    fn verify(&mut self, checks: &[SigCheck<'_>]) -> Vec<bool> {
        crate::wire::verify_many(checks, &mut self.keys)
    }
}

/// How a node keeps its place in each topic's DHT member set and finds the topic's members there.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Lifetime of our entry in a topic's member set; it is written again every third of it.
    pub entry_ttl: Duration,
    /// Interval of the membership tick.
    pub tick: Duration,
    /// Ticks between two reads of the member set (each topic at its own random phase).
    pub members_every: u64,
    /// Ticks after a sign that the network healed during which the set is read, and a member
    /// asked to become a neighbour, every tick.
    pub after_revival: u64,
    /// One read in this many asks a member to become a neighbour even if every member is known
    /// (mixes the overlay, so that two halves whose passive views still list each other meet).
    pub mix_one_in: u64,
    /// Members tried at once when a topic has no neighbour at all.
    pub rejoin_contacts: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            entry_ttl: Duration::from_secs(300),
            tick: Duration::from_secs(2),
            members_every: 5,
            after_revival: 2,
            mix_one_in: 4,
            rejoin_contacts: 2,
        }
    }
}

/// Tunables of the topic layer.
#[derive(Clone, Debug)]
pub struct TopicsConfig {
    /// HyParView per topic.
    pub hyparview: hyparview::Config,
    /// Plumtree per topic.
    pub plumtree: plumtree::Config,
    /// Topic membership through the DHT member set.
    pub membership: MembershipConfig,
    /// Lifetime of a broadcast (older ones are refused).
    pub ttl: Duration,
    /// Frames queued per peer link before the peer counts as slow.
    pub peer_queue: usize,
    /// Events queued per subscriber before it misses messages.
    pub subscriber_queue: usize,
    /// How long the first message seen from an origin run is held when its seq is not 0, so that
    /// earlier ones overtaken on the way can still be delivered first.
    pub first_message_wait: Duration,
    /// How long a gap in an origin's sequence is waited for before it is skipped. A missing
    /// message is normally grafted within a few hundred milliseconds; under overload paths differ
    /// by seconds. The default is Plumtree's payload cache lifetime: after it nobody can serve a
    /// graft any more, so waiting longer is pointless.
    pub reorder_timeout: Duration,
    /// Out-of-order messages held per origin at most.
    pub max_pending_per_origin: usize,
    /// Origins remembered per topic at most.
    pub max_origins: usize,
    /// Keep-alive interval on neighbour links.
    pub keepalive: Duration,
    /// Frames per second accepted from one peer's gossip stream (burst: twice that).
    pub peer_frame_rate: u32,
    /// Topics at most.
    pub max_topics: usize,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            hyparview: hyparview::Config::default(),
            // Plumtree sees whole envelopes: room for the largest payload plus the envelope fields.
            plumtree: plumtree::Config { max_message_size: ENVELOPE_MAX, ..plumtree::Config::default() },
            membership: MembershipConfig::default(),
            ttl: Duration::from_secs(300),
            peer_queue: 4096,
            subscriber_queue: 8192,
            first_message_wait: Duration::from_millis(500),
            reorder_timeout: Duration::from_secs(30),
            max_pending_per_origin: 16_384,
            max_origins: 10_000,
            // A fifth of the transport's idle timeout: four keep-alives in a row may be lost
            // before a live link is taken for dead.
            keepalive: Duration::from_secs(2),
            peer_frame_rate: 20_000,
            max_topics: 256,
        }
    }
}

/// Largest encoded envelope: the largest payload plus origin, varints, length and signature.
const ENVELOPE_MAX: usize = crate::wire::MAX_BROADCAST_PAYLOAD + 32 + 3 * 10 + 5 + 64;

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicEvent {
    /// A broadcast, in order per origin.
    Message {
        /// Who signed it.
        origin: NodeId,
        /// Its position in the origin's run.
        seq: u64,
        /// The application bytes.
        payload: Vec<u8>,
    },
    /// A neighbour joined our active view of the topic.
    NeighborUp(NodeId),
    /// A neighbour left it.
    NeighborDown(NodeId),
}

/// Counters of the topic layer (sums over topics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Broadcasts handed to subscribers.
    pub delivered: u64,
    /// `Gossip` messages received (duplicates included).
    pub gossip_received: u64,
    /// Duplicates among them.
    pub duplicates: u64,
    /// Grafts sent.
    pub grafts: u64,
    /// Prunes sent.
    pub prunes: u64,
    /// Frames that did not decode.
    pub bad_frames: u64,
    /// Broadcasts with a bad signature.
    pub bad_signature: u64,
    /// Broadcasts refused as expired or from the future.
    pub bad_time: u64,
    /// Broadcasts refused as malformed or too large.
    pub malformed: u64,
    /// Frames over a peer's rate limit.
    pub rate_limited: u64,
    /// Frames not queued because a peer's link was full.
    pub peer_queue_full: u64,
    /// Broadcasts older than what an origin's order had reached.
    pub late: u64,
    /// Sequence numbers skipped after waiting for a gap.
    pub skipped: u64,
    /// Events a full subscriber queue missed.
    pub subscriber_lagged: u64,
    /// Frames for topics we are not in.
    pub unknown_topic: u64,
    /// Links that failed or closed.
    pub links_lost: u64,
    /// Broadcast frames from peers that are not neighbours in the topic.
    pub not_neighbor: u64,
    /// Out-of-order broadcasts dropped because the topic's hold buffer was full.
    pub hold_full: u64,
    /// Reads of topic member sets asked for.
    pub member_reads: u64,
    /// Rejoins: a topic with no neighbour joined again through members read from its set.
    pub rejoins: u64,
}

/// Why a topic operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    /// Not subscribed to that topic.
    #[error("not subscribed to the topic")]
    NotSubscribed,
    /// Payload over the limit.
    #[error("payload too large ({0} bytes, at most {max})", max = crate::wire::MAX_BROADCAST_PAYLOAD)]
    TooLarge(usize),
    /// Topic limit reached.
    #[error("too many topics")]
    TooManyTopics,
    /// The driver stopped.
    #[error("topic driver stopped")]
    Stopped,
}

/// Topic neighbours and view sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicInfo {
    /// Active view.
    pub active: Vec<NodeId>,
    /// Passive view size.
    pub passive: usize,
    /// Eager (tree) peers.
    pub eager: usize,
    /// Lazy peers.
    pub lazy: usize,
}
