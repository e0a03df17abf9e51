//! Gossip and blob figures on 127.0.0.1, phase for phase like the libp2p baseline harness
//! (`../shared/baselines/libp2p-bench`): N nodes in one process, one topic, a flood of 256-byte
//! messages from one publisher, a paced phase, then 10 MiB blob transfers and peak RSS.
//!
//! `cargo run --release -p suprnova-node --example bench -- --nodes 100`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use suprnova_node::{Node, NodeConfig, TopicEvent};
use tokio::sync::mpsc;

struct Args {
    nodes: usize,
    msgs: u64,
    size: usize,
    paced: u64,
    paced_rate: u64,
    blob: usize,
}

fn args() -> Args {
    let mut a = Args { nodes: 100, msgs: 2000, size: 256, paced: 100, paced_rate: 20, blob: 10 << 20 };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < v.len() {
        let n: u64 = v[i + 1].parse().unwrap_or(0);
        match v[i].as_str() {
            "--nodes" => a.nodes = n as usize,
            "--msgs" => a.msgs = n,
            "--size" => a.size = n as usize,
            "--paced" => a.paced = n,
            "--paced-rate" => a.paced_rate = n.max(1),
            "--blob" => a.blob = n as usize,
            _ => {}
        }
        i += 2;
    }
    a
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

const TOPIC: &str = "bench";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let base_rss = rss_kb("VmRSS:");
    let t0 = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..a.nodes {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let mut cfg = NodeConfig::with_seed(seed, "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_local = true;
        let n = Node::spawn(cfg).await.unwrap();
        if let Some(first) = nodes.first() {
            n.bootstrap(vec![first.target()]).await.unwrap();
        }
        nodes.push(n);
    }
    eprintln!("{} nodes up in {:.2} s", a.nodes, t0.elapsed().as_secs_f64());

    let clock = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, u64, Duration)>();
    for (i, n) in nodes.iter().enumerate() {
        let mut sub = n.subscribe(TOPIC).await.unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                if let TopicEvent::Message { payload, .. } = ev {
                    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
                    let sent = Duration::from_nanos(u64::from_le_bytes(payload[8..16].try_into().unwrap()));
                    let _ = tx.send((i, seq, clock.elapsed().saturating_sub(sent)));
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let publisher = 1.min(a.nodes - 1);
    let receivers = a.nodes - 1;
    let before = gossip_counts(&nodes).await;

    // Flood.
    let start = Instant::now();
    for seq in 0..a.msgs {
        let mut p = seq.to_le_bytes().to_vec();
        p.extend_from_slice(&(clock.elapsed().as_nanos() as u64).to_le_bytes());
        p.resize(a.size.max(16), 0x5a);
        nodes[publisher].publish(TOPIC, p).await.unwrap();
    }
    let publish_s = start.elapsed().as_secs_f64();
    let want = a.msgs * receivers as u64;
    let mut last_at: HashMap<usize, Instant> = HashMap::new();
    let mut count: HashMap<usize, u64> = HashMap::new();
    let mut seen: HashMap<(usize, u64), u32> = HashMap::new();
    let mut lat = Vec::new();
    let mut total = 0u64;
    while total < want {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some((i, seq, l))) => {
                total += 1;
                *count.entry(i).or_default() += 1;
                *seen.entry((i, seq)).or_default() += 1;
                last_at.insert(i, Instant::now());
                lat.push(l.as_secs_f64() * 1e3);
            }
            _ => break,
        }
    }
    let all_after = start.elapsed().as_secs_f64();
    let slowest = count
        .iter()
        .map(|(i, c)| *c as f64 / last_at[i].duration_since(start).as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let app_dups = seen.values().filter(|c| **c > 1).count();
    let after = gossip_counts(&nodes).await;
    let received = after.0 - before.0;
    let delivered = after.1 - before.1;
    let flood_p50 = pct(&mut lat, 0.5);
    let flood_p99 = pct(&mut lat, 0.99);

    // Paced.
    let mut plat = Vec::new();
    let pstart = Instant::now();
    for k in 0..a.paced {
        let seq = a.msgs + k;
        let mut p = seq.to_le_bytes().to_vec();
        p.extend_from_slice(&(clock.elapsed().as_nanos() as u64).to_le_bytes());
        p.resize(a.size.max(16), 0x5b);
        nodes[publisher].publish(TOPIC, p).await.unwrap();
        let next = pstart + Duration::from_millis((k + 1) * 1000 / a.paced_rate);
        tokio::time::sleep_until(next.into()).await;
    }
    let pwant = a.paced * receivers as u64;
    let mut ptotal = 0;
    while ptotal < pwant {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((_, seq, l))) if seq >= a.msgs => {
                ptotal += 1;
                plat.push(l.as_secs_f64() * 1e3);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let (graft, prune) = {
        let mut g = 0;
        let mut p = 0;
        let mut drops = (0, 0, 0, 0, 0, 0, 0, 0);
        for n in &nodes {
            let m = n.metrics().await.unwrap();
            g += m.topics.grafts;
            p += m.topics.prunes;
            drops.0 += m.topics.late;
            drops.1 += m.topics.skipped;
            drops.2 += m.topics.peer_queue_full;
            drops.3 += m.topics.subscriber_lagged;
            drops.4 += m.topics.rate_limited;
            drops.5 += m.topics.bad_time + m.topics.bad_signature + m.topics.malformed + m.topics.bad_frames;
            drops.6 += m.topics.not_neighbor;
            drops.7 += m.topics.hold_full;
        }
        eprintln!(
            "drops: late {} skipped {} peer_queue_full {} subscriber_lagged {} rate_limited {} invalid {} not_neighbor {} hold_full {}",
            drops.0, drops.1, drops.2, drops.3, drops.4, drops.5, drops.6, drops.7
        );
        (g, p)
    };

    // Blobs: 10 MiB from one provider, then from two.
    let data: Vec<u8> = (0..a.blob).map(|i| (i % 251) as u8).collect();
    let hash = nodes[2 % a.nodes].add_blob(data.clone());
    let mut blob_ms = Vec::new();
    for r in 0..3 {
        let fetcher = &nodes[(10 + r) % a.nodes];
        let t = Instant::now();
        let (got, _) = fetcher.fetch_blob(hash, &[nodes[2 % a.nodes].id()], None).await.unwrap();
        blob_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(got.len(), data.len());
    }
    let t = Instant::now();
    let (got, report) =
        nodes[20 % a.nodes].fetch_blob(hash, &[nodes[2 % a.nodes].id(), nodes[10 % a.nodes].id()], None).await.unwrap();
    let two_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(*got, data);

    let hwm = rss_kb("VmHWM:");
    let rss_per_node_mb = hwm.saturating_sub(base_rss) as f64 / 1024.0 / a.nodes as f64;
    println!(
        "{{\"nodes\":{},\"msgs\":{},\"size\":{},\"publish_rate\":{:.0},\"slowest_receiver_msgs_s\":{:.1},\"all_delivered_after_s\":{:.2},\"delivery_ratio\":{:.4},\"flood_p50_ms\":{:.1},\"flood_p99_ms\":{:.1},\"app_duplicates\":{},\"wire_gossip_received\":{},\"delivered\":{},\"rmr\":{:.3},\"grafts\":{},\"prunes\":{},\"paced_p50_ms\":{:.2},\"paced_p99_ms\":{:.2},\"paced_ratio\":{:.4},\"blob_bytes\":{},\"blob_one_provider_ms\":{:?},\"blob_two_providers_ms\":{:.1},\"blob_chunks_per_provider\":{:?},\"rss_peak_mb\":{:.0},\"rss_per_node_mb\":{:.2},\"wall_s\":{:.1}}}",
        a.nodes,
        a.msgs,
        a.size,
        a.msgs as f64 / publish_s,
        slowest,
        all_after,
        total as f64 / want as f64,
        flood_p50,
        flood_p99,
        app_dups,
        received,
        delivered,
        // Relative message redundancy: payload copies received per delivery, minus one.
        received as f64 / delivered.max(1) as f64 - 1.0,
        graft,
        prune,
        pct(&mut plat, 0.5),
        pct(&mut plat, 0.99),
        ptotal as f64 / pwant.max(1) as f64,
        a.blob,
        blob_ms.iter().map(|m| (m * 10.0).round() / 10.0).collect::<Vec<_>>(),
        two_ms,
        report.per_provider.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        hwm as f64 / 1024.0,
        rss_per_node_mb,
        t0.elapsed().as_secs_f64(),
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

/// (gossip messages received, deliveries) summed over nodes.
async fn gossip_counts(nodes: &[Node]) -> (u64, u64) {
    let mut r = 0;
    let mut d = 0;
    for n in nodes {
        let m = n.metrics().await.unwrap();
        r += m.topics.gossip_received;
        d += m.topics.delivered;
    }
    (r, d)
}
