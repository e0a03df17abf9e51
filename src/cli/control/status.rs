//! `GET /v1/status`: the node's state as one JSON object (the `status` subcommand prints it).

use serde_json::{Value, json};

use super::{Answer, State, ok};

/// The status answer: identity, routing table, rejoining, topics, traffic, drops and limits.
pub(super) async fn status(st: &State) -> Answer {
    let m = st.node.metrics().await?;
    let names: Vec<String> = st.topics.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default();
    let mut topics = Vec::new();
    for name in names {
        if let Some(info) = st.node.topic_info(&name).await {
            topics.push(json!({
                "name": name,
                "active": info.active.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "passive": info.passive,
                "eager": info.eager,
                "lazy": info.lazy,
            }));
        }
    }
    let drops: serde_json::Map<String, Value> =
        m.dht.channel.drops.nonzero().into_iter().map(|(r, n)| (r.name().to_string(), json!(n))).collect();
    let limits: serde_json::Map<String, Value> = m
        .dht
        .limits
        .iter()
        .map(|l| {
            let v = json!({
                "per_s": l.rate.map(|r| r.per_s),
                "burst": l.rate.map(|r| r.burst),
                "tracked": l.tracked,
                "refused": l.refused,
            });
            (l.name.to_string(), v)
        })
        .collect();
    let r = &m.dht.rejoin;
    ok(json!({
        "id": st.node.id().to_string(),
        "public_key": hex::encode(st.node.record().public_key),
        "version": env!("CARGO_PKG_VERSION"),
        "listen": st.node.local_addr().to_string(),
        "contact": st.node.contact_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "uptime_s": st.started.elapsed().as_secs(),
        "peers": m.dht.table,
        "rejoin": {
            "rejoining": r.rejoining,
            "attempts": r.attempts,
            "seeds": r.seeds,
            "dormant": r.dormant,
        },
        "replication": m.dht.replication,
        "buckets": m.dht.buckets.iter().map(|(b, n)| json!({ "bucket": b, "peers": n })).collect::<Vec<_>>(),
        "sessions": m.dht.sessions,
        "records": m.dht.records,
        "connections": m.connections,
        "topics": topics,
        "blobs": m.blobs,
        "traffic": {
            "dht_packets_in": m.dht.channel.packets_in,
            "dht_packets_out": m.dht.channel.packets_out,
            "quic_datagrams_in": m.demux.0,
            "quic_connections_opened": m.connections_opened,
            "gossip_delivered": m.topics.delivered,
            "gossip_duplicates": m.topics.duplicates,
            "direct_received": m.direct_received,
            "blob_bytes_served": m.blob_bytes_served,
            "blob_bytes_fetched": m.blob_bytes_fetched,
            "dht_retransmits": m.dht.dht.retransmits,
            "dht_answers_repeated": m.dht.dht.answers_repeated,
            "dht_resends_skipped": m.dht.dht.resends_skipped,
        },
        "gossip_drops": {
            "late": m.topics.late,
            "skipped": m.topics.skipped,
            "not_neighbor": m.topics.not_neighbor,
            "hold_full": m.topics.hold_full,
            "peer_queue_full": m.topics.peer_queue_full,
            "subscriber_lagged": m.topics.subscriber_lagged,
            "bad_signature": m.topics.bad_signature,
            "bad_time": m.topics.bad_time,
            "links_lost": m.topics.links_lost,
        },
        "lookups": m.dht.dht.lookups,
        "drops": drops,
        "channel_peers": m.dht.channel_peers,
        "limits": limits,
        "reach": reach_json(&m.dht.reach),
    }))
}

/// Reachability, the relays held, the relay served, and this node's relayed paths (spec §15).
fn reach_json(r: &suprnova_dht::net::ReachStats) -> Value {
    use suprnova_dht::proto::Reachability;
    let now = std::time::Instant::now();
    let p = &r.plane;
    let drops: serde_json::Map<String, Value> =
        p.drops.iter().filter(|(_, n)| **n > 0).map(|(d, n)| (d.name().to_string(), json!(n))).collect();
    json!({
        "state": match r.state { Reachability::Public => "public", Reachability::Private => "private" },
        "relays": r.held.iter().map(|h| json!({
            "id": h.relay.id.to_string(),
            "addr": h.addr.to_string(),
            "reserved": h.until.is_some(),
            "expires_in_s": h.until.map(|u| u.saturating_duration_since(now).as_secs()),
        })).collect::<Vec<_>>(),
        "paths": r.legs.iter().map(|l| json!({
            "peer": l.peer.map(|p| p.to_string()),
            "via": "relay",
            "relay_addr": l.relay.to_string(),
            "path": l.path.to_string(),
            "bytes_in": l.bytes_in,
            "bytes_out": l.bytes_out,
        })).collect::<Vec<_>>(),
        "relay": {
            "reservations": r.reservations,
            "circuits": r.circuits,
            "reservations_granted": r.relay.reservations_granted,
            "reservations_refused": r.relay.reservations_refused,
            "circuits_opened": r.relay.circuits_opened,
            "connects_refused": r.relay.connects_refused + r.relay.connects_no_reservation,
            "frames_forwarded": p.relayed_frames,
            "bytes_forwarded": p.relayed_bytes,
        },
        "relayed_bytes_in": p.local_bytes_in,
        "relayed_bytes_out": p.local_bytes_out,
        "drops": drops,
    })
}
