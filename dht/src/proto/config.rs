//! The `Dht`'s settings and counters.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::channel::ChannelConfig;
use crate::lookup::LookupConfig;
use crate::ratelimit::Rate;
use crate::routing::RoutingConfig;
use crate::stats::Histogram;
use crate::store::StoreConfig;

/// Tunables of the `Dht`.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// The secure channel.
    pub channel: ChannelConfig,
    /// The routing table.
    pub routing: RoutingConfig,
    /// Lookups (α, k, disjoint paths).
    pub lookup: LookupConfig,
    /// The record store.
    pub store: StoreConfig,
    /// User pings fail after this (covers fetching the record and the handshake).
    pub request_timeout: Duration,
    /// One lookup or store request fails after this (covers a handshake if one is needed).
    pub rpc_timeout: Duration,
    /// A lookup request unanswered after this stops counting against α: the lookup asks the
    /// next candidate instead of waiting for `rpc_timeout`, and does not wait for it to finish
    /// (a late answer is still used; it is retransmitted meanwhile, §6.7). Dead nodes in routing
    /// tables then cost a lookup this much, not `rpc_timeout`.
    pub lookup_stall: Duration,
    /// A whole query gives up after this.
    pub query_timeout: Duration,
    /// Smallest retransmission timeout of a request (§6.7): an unanswered request is sent again
    /// after the RTO (smoothed RTT + 4 deviations, at least this), doubling each time, until its
    /// timeout. A LAN's sub-millisecond RTT would otherwise resend on every scheduling hiccup; a
    /// needless resend costs the responder only a cached answer.
    pub rto_min: Duration,
    /// Largest retransmission timeout.
    pub rto_max: Duration,
    /// Replicas per record (r).
    pub replication: usize,
    /// Requests of our own in flight.
    pub max_pending_requests: usize,
    /// Queries in flight, running or waiting their turn.
    pub max_queries: usize,
    /// Queries whose lookups run at once; the others wait their turn, first come first served
    /// (§7.1). Bounds the requests a node has out, so a burst of queries from the application
    /// queues here rather than in every peer's socket buffer, where it would time out.
    pub max_active_queries: usize,
    /// Node records remembered outside the routing table.
    pub max_known_records: usize,
    /// Consecutive failed requests after which a node leaves the routing table.
    pub max_failures: u32,
    /// Records we published that we keep republishing.
    pub max_published: usize,
    /// Capability flags advertised in our record.
    pub capabilities: u64,
    /// Every this often, our `neighbours` closest nodes not heard from for this long are pinged,
    /// so that a replica that died is noticed (and its records repaired, §7.5) without waiting
    /// for a lookup to stumble on it. Zero turns the check off.
    pub neighbour_check: Duration,
    /// How many of our closest nodes the neighbour check watches.
    pub neighbours: usize,
    /// A table with fewer nodes than this makes the node rejoin through its seeds and dormant
    /// peers, with backoff, until it has them again (§7.6). The default, 1, means an empty table:
    /// a node with one peer in a two-node network is not alone, and partitions heal through the
    /// dormant-peer probes whatever the table's size.
    pub min_peers: usize,
    /// Longest wait between two rejoin attempts (the wait doubles from 1 s up to this).
    pub rejoin_backoff_max: Duration,
    /// Every this often one dormant peer (removed from the table for failing) is pinged, so
    /// that the table heals after a partition (§7.6). Zero turns probing off.
    pub dormant_probe: Duration,
    /// How long a dormant peer is probed before it is forgotten.
    pub dormant_keep: Duration,
    /// Requests (Ping, FindNode, FindValue, FindSet, Store, and malformed messages) served per
    /// peer; over it they are answered `Error` RATE_LIMITED. `None` turns a limit off. wire-spec §8.1.
    pub requests_per_peer: Option<Rate>,
    /// Requests served per source IP (IPv6: per /64), whatever the peer: many identities on one
    /// host share it.
    pub requests_per_ip: Option<Rate>,
    /// Stores accepted for checking per peer; over it they are answered `Error` RATE_LIMITED.
    pub stores_per_peer: Option<Rate>,
    /// Stores per source IP (IPv6: per /64).
    pub stores_per_ip: Option<Rate>,
    /// Being reached behind NAT, and relaying for nodes that are (wire-spec §15).
    pub reach: super::reach::ReachConfig,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            channel: ChannelConfig::default(),
            routing: RoutingConfig::default(),
            lookup: LookupConfig::default(),
            store: StoreConfig::default(),
            request_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(2),
            lookup_stall: Duration::from_millis(400),
            query_timeout: Duration::from_secs(30),
            rto_min: Duration::from_millis(15),
            rto_max: Duration::from_secs(1),
            replication: 3,
            max_pending_requests: 4096,
            max_queries: 256,
            max_active_queries: 16,
            max_known_records: 4096,
            max_failures: 2,
            max_published: 10_000,
            capabilities: 0,
            neighbour_check: Duration::from_secs(10),
            neighbours: 8,
            min_peers: 1,
            rejoin_backoff_max: Duration::from_secs(30),
            dormant_probe: Duration::from_secs(2),
            dormant_keep: Duration::from_secs(3600),
            requests_per_peer: Some(Rate::new(1000, 2000)),
            requests_per_ip: Some(Rate::new(5000, 10_000)),
            stores_per_peer: Some(Rate::new(100, 1000)),
            stores_per_ip: Some(Rate::new(1000, 5000)),
            reach: super::reach::ReachConfig::default(),
        }
    }
}

/// Counters of the DHT layer (the channel has its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Lookups started (find_node, get, put, bootstrap, refresh).
    pub lookups: u64,
    /// Lookup and store requests sent.
    pub rpcs_sent: u64,
    /// Lookup and store requests that failed or timed out.
    pub rpcs_failed: u64,
    /// Stores from peers accepted.
    pub stores_accepted: u64,
    /// Stores from peers refused, by reason.
    pub stores_refused: BTreeMap<&'static str, u64>,
    /// Records expired.
    pub records_expired: u64,
    /// Records republished by us.
    pub republished: u64,
    /// Replica-repair sweeps over the store (a node left or joined near keys we hold).
    pub repair_sweeps: u64,
    /// Stores sent to repair a key's replica set.
    pub repair_stores: u64,
    /// Sweep steps that stopped early because `REPAIR_WINDOW` repair stores were in flight.
    pub repair_waits: u64,
    /// Requests sent again because no answer came within the retransmission timeout (§6.7).
    pub retransmits: u64,
    /// Resends put off because the retransmission budget was spent (§6.7).
    pub resends_skipped: u64,
    /// Queries that waited for a turn because `max_active_queries` were running.
    pub queries_queued: u64,
    /// Retransmitted requests from peers answered from the answer cache (§6.7).
    pub answers_repeated: u64,
    /// Duration of finished queries by kind (`find_node`, `get`, `put`, `bootstrap`, `refresh`).
    pub query_latency: BTreeMap<&'static str, Histogram>,
}
