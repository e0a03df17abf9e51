//! The node's counters in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;

use suprnova_dht::stats::{DropReason, Histogram, LATENCY_BOUNDS_MS};

use crate::Metrics;

/// Appends one metric family: its help line, type line and samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP suprnova_{name} {help}");
        let _ = writeln!(self.0, "# TYPE suprnova_{name} {kind}");
    }

    /// `{k="v",…}` with values escaped, or nothing.
    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(self.0, "{k}=\"{v}\"");
        }
        self.0.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.0.push_str("suprnova_");
        self.0.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BOUNDS_MS.iter().zip(h.buckets.iter()) {
            cumulative += n;
            let le = format!("{}", *bound as f64 / 1000.0);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count);
        // The sum is in seconds; written with microsecond precision.
        let _ = write!(self.0, "suprnova_{name}_sum");
        self.labels(labels);
        let _ = writeln!(self.0, " {}", h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

impl Metrics {
    /// The counters in Prometheus text format; every name starts with `suprnova_`.
    pub fn to_prometheus(&self) -> String {
        let mut o = Out(String::with_capacity(8192));
        dht_metrics(&mut o, self);
        dht_channel_metrics(&mut o, self);
        gossip_metrics(&mut o, self);
        rate_limit_metrics(&mut o, self);
        node_metrics(&mut o, self);
        reach_metrics(&mut o, self);
        o.0
    }
}

/// The DHT's routing table, records, lookups, stores and repair.
fn dht_metrics(o: &mut Out, m: &Metrics) {
    let d = &m.dht;
    o.one("routing_table_peers", "gauge", "Nodes in the routing table.", d.table as u64);
    o.family(
        "routing_bucket_peers",
        "gauge",
        "Nodes per non-empty k-bucket (bucket i holds XOR distances in [2^i, 2^(i+1))).",
    );
    for (b, n) in &d.buckets {
        o.sample("routing_bucket_peers", &[("bucket", &b.to_string())], *n as u64);
    }
    o.one("dht_sessions", "gauge", "Peers with a confirmed encrypted session.", d.sessions as u64);
    o.one("dht_records", "gauge", "Records held (set entries counted one by one).", d.records as u64);
    o.one("dht_lookups_total", "counter", "Iterative lookups started.", d.dht.lookups);
    o.family("dht_query_duration_seconds", "histogram", "Duration of finished DHT queries by kind.");
    for (kind, h) in &d.dht.query_latency {
        o.histogram("dht_query_duration_seconds", &[("kind", kind)], h);
    }
    o.one("dht_rpcs_sent_total", "counter", "Lookup and store requests sent.", d.dht.rpcs_sent);
    o.one("dht_rpcs_failed_total", "counter", "Lookup and store requests failed or timed out.", d.dht.rpcs_failed);
    o.one("dht_stores_accepted_total", "counter", "Stores from peers accepted.", d.dht.stores_accepted);
    o.family("dht_stores_refused_total", "counter", "Stores from peers refused, by reason.");
    for (reason, n) in &d.dht.stores_refused {
        o.sample("dht_stores_refused_total", &[("reason", reason)], *n);
    }
    o.one("dht_records_expired_total", "counter", "Records expired.", d.dht.records_expired);
    o.one("dht_republished_total", "counter", "Records republished by this node.", d.dht.republished);
    o.one("dht_retransmits_total", "counter", "Requests sent again after their RTO.", d.dht.retransmits);
    o.one(
        "dht_resends_skipped_total",
        "counter",
        "Resends put off because the retransmission budget was spent.",
        d.dht.resends_skipped,
    );
    o.one(
        "dht_answers_repeated_total",
        "counter",
        "Retransmitted requests answered again from the answer cache.",
        d.dht.answers_repeated,
    );
    o.one("dht_repair_stores_total", "counter", "Stores sent to restore a record's replicas.", d.dht.repair_stores);
    o.one(
        "dht_repair_waits_total",
        "counter",
        "Repair steps deferred because the window of repair stores in flight was full.",
        d.dht.repair_waits,
    );
}

/// The DHT channel: datagrams, handshakes, cookies and drops.
fn dht_channel_metrics(o: &mut Out, m: &Metrics) {
    let d = &m.dht;
    let c = &d.channel;
    o.one("dht_packets_in_total", "counter", "DHT datagrams received.", c.packets_in);
    o.one("dht_packets_out_total", "counter", "DHT datagrams sent.", c.packets_out);
    o.one("dht_send_errors_total", "counter", "DHT datagrams the socket refused.", d.send_errors);
    o.one("dht_handshakes_initiated_total", "counter", "Handshakes started.", c.handshakes_initiated);
    o.one("dht_handshakes_completed_total", "counter", "Handshakes completed as initiator.", c.handshakes_completed);
    o.one("dht_handshakes_answered_total", "counter", "Handshake initiations answered.", c.handshakes_answered);
    o.one("dht_handshakes_failed_total", "counter", "Handshakes abandoned after all retries.", c.handshakes_failed);
    o.one("dht_cookies_sent_total", "counter", "Cookie replies sent under load (rate limit).", c.cookies_sent);
    o.family("dht_drops_total", "counter", "DHT packets and messages dropped, by reason (wire-spec section 9).");
    for r in DropReason::ALL {
        o.sample("dht_drops_total", &[("reason", r.name())], c.drops.get(*r));
    }
}

/// Behind NAT and relaying (wire-spec section 15): state, relays held, what this node relays, its
/// own relayed traffic and the data plane's drops.
fn reach_metrics(o: &mut Out, m: &Metrics) {
    let r = &m.dht.reach;
    let private = u64::from(r.state == suprnova_dht::proto::Reachability::Private);
    o.one("reach_private", "gauge", "1 if this node is behind NAT (reached through relays), else 0.", private);
    let held = r.held.iter().filter(|h| h.until.is_some()).count() as u64;
    o.one("reach_relays_reserved", "gauge", "Relays holding a reservation for this node.", held);
    o.one("relay_reservations", "gauge", "Reservations this node holds as a relay.", r.reservations as u64);
    o.one("relay_circuits", "gauge", "Circuits this node relays.", r.circuits as u64);
    o.one(
        "relay_reservations_refused_total",
        "counter",
        "Reservations refused at a limit.",
        r.relay.reservations_refused,
    );
    let refused = r.relay.connects_refused + r.relay.connects_no_reservation;
    o.one("relay_connects_refused_total", "counter", "Circuits refused (no reservation, or a limit).", refused);
    o.one("relay_forwarded_bytes_total", "counter", "Bytes of relayed frames forwarded.", r.plane.relayed_bytes);
    o.one(
        "relayed_bytes_in_total",
        "counter",
        "Bytes this node received on its own relay legs.",
        r.plane.local_bytes_in,
    );
    o.one("relayed_bytes_out_total", "counter", "Bytes this node sent on its own relay legs.", r.plane.local_bytes_out);
    o.family("relay_drops_total", "counter", "Relayed frames and sends the data plane dropped, by reason.");
    for d in suprnova_dht::path::PlaneDrop::ALL {
        o.sample("relay_drops_total", &[("reason", d.name())], r.plane.drops.get(&d).copied().unwrap_or(0));
    }
}

/// Gossip: deliveries, duplicates, grafts, prunes and drops.
fn gossip_metrics(o: &mut Out, m: &Metrics) {
    let t = &m.topics;
    o.one("gossip_delivered_total", "counter", "Broadcasts delivered to subscribers.", t.delivered);
    o.one("gossip_received_total", "counter", "Gossip messages received, duplicates included.", t.gossip_received);
    o.one("gossip_duplicates_total", "counter", "Duplicate gossip messages received.", t.duplicates);
    o.one("gossip_grafts_total", "counter", "Plumtree grafts sent.", t.grafts);
    o.one("gossip_prunes_total", "counter", "Plumtree prunes sent.", t.prunes);
    o.one("gossip_skipped_total", "counter", "Sequence numbers skipped after waiting for a gap.", t.skipped);
    o.family("gossip_drops_total", "counter", "Gossip frames and broadcasts dropped, by reason.");
    for (reason, n) in [
        ("bad_frame", t.bad_frames),
        ("bad_signature", t.bad_signature),
        ("bad_time", t.bad_time),
        ("malformed", t.malformed),
        ("rate_limited", t.rate_limited),
        ("peer_queue_full", t.peer_queue_full),
        ("late", t.late),
        ("subscriber_lagged", t.subscriber_lagged),
        ("unknown_topic", t.unknown_topic),
        ("not_neighbor", t.not_neighbor),
        ("hold_full", t.hold_full),
    ] {
        o.sample("gossip_drops_total", &[("reason", reason)], n);
    }
}

/// Rate limits: hits by layer, and each DHT limit's rate, burst and tracked sources.
fn rate_limit_metrics(o: &mut Out, m: &Metrics) {
    let d = &m.dht;
    let c = &d.channel;
    let t = &m.topics;
    o.family("rate_limit_hits_total", "counter", "Inputs refused or slowed by a rate limit, by layer.");
    o.sample("rate_limit_hits_total", &[("layer", "gossip")], t.rate_limited);
    o.sample("rate_limit_hits_total", &[("layer", "dht_handshake")], c.drops.get(DropReason::CookieRequired));
    for l in &d.limits {
        o.sample("rate_limit_hits_total", &[("layer", l.name)], l.refused);
    }
    o.family(
        "rate_limit_per_second",
        "gauge",
        "Configured sustained rate of each DHT rate limit (wire-spec 8.1); absent when off.",
    );
    for l in &d.limits {
        if let Some(r) = l.rate {
            o.sample("rate_limit_per_second", &[("limit", l.name)], u64::from(r.per_s));
        }
    }
    o.family("rate_limit_burst", "gauge", "Configured burst of each DHT rate limit.");
    for l in &d.limits {
        if let Some(r) = l.rate {
            o.sample("rate_limit_burst", &[("limit", l.name)], u64::from(r.burst));
        }
    }
    o.family("rate_limit_tracked", "gauge", "Sources each DHT rate limit tracks now (bounded).");
    for l in &d.limits {
        o.sample("rate_limit_tracked", &[("limit", l.name)], l.tracked as u64);
    }
}

/// The node: channel peers, lost links, QUIC, the shared socket, direct messages and blobs.
fn node_metrics(o: &mut Out, m: &Metrics) {
    let d = &m.dht;
    let t = &m.topics;
    o.one(
        "dht_channel_peers",
        "gauge",
        "Peers with any DHT channel state (bounded by max_peers).",
        d.channel_peers as u64,
    );
    o.one("gossip_links_lost_total", "counter", "Gossip links that failed or closed.", t.links_lost);
    o.one("quic_connections", "gauge", "Open QUIC connections.", m.connections as u64);
    o.one("quic_connections_opened_total", "counter", "QUIC connections established.", m.connections_opened);
    o.one("quic_connect_failures_total", "counter", "Outgoing QUIC handshakes failed.", m.connect_failures);
    o.one("quic_accept_failures_total", "counter", "Incoming QUIC handshakes failed.", m.accept_failures);
    o.family("udp_datagrams_in_total", "counter", "Datagrams read from the shared socket, by protocol.");
    o.sample("udp_datagrams_in_total", &[("protocol", "quic")], m.demux.0);
    o.sample("udp_datagrams_in_total", &[("protocol", "dht")], m.demux.1);
    o.one("udp_dht_queue_full_total", "counter", "DHT datagrams dropped on a full queue.", m.demux.2);
    o.one("direct_received_total", "counter", "Direct messages and requests received.", m.direct_received);
    o.one("direct_dropped_total", "counter", "Direct messages and requests dropped.", m.direct_dropped);
    o.one("blob_bytes_served_total", "counter", "Blob bytes served to peers.", m.blob_bytes_served);
    o.one("blob_bytes_fetched_total", "counter", "Blob bytes fetched and verified.", m.blob_bytes_fetched);
    o.one("blobs", "gauge", "Complete blobs held.", m.blobs as u64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn histogram_is_cumulative_and_ends_with_the_count() {
        let mut h = Histogram::default();
        for ms in [0, 3, 3, 40, 100_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut o = Out(String::new());
        o.histogram("q", &[("kind", "get")], &h);
        let s = o.0;
        assert!(s.contains("suprnova_q_bucket{kind=\"get\",le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("suprnova_q_bucket{kind=\"get\",le=\"0.005\"} 3\n"), "{s}");
        assert!(s.contains("suprnova_q_bucket{kind=\"get\",le=\"0.05\"} 4\n"), "{s}");
        assert!(s.contains("suprnova_q_bucket{kind=\"get\",le=\"30\"} 4\n"), "{s}");
        assert!(s.contains("suprnova_q_bucket{kind=\"get\",le=\"+Inf\"} 5\n"), "{s}");
        assert!(s.contains("suprnova_q_sum{kind=\"get\"} 100.046\n"), "{s}");
        assert!(s.contains("suprnova_q_count{kind=\"get\"} 5\n"), "{s}");
    }
}
