//! Devnet phases over QUIC: a broadcast on one topic that every node subscribes to, and a 10 MiB
//! blob fetched from two providers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use suprnova_node::{Node, TopicEvent};
use tokio::sync::mpsc;

use super::percentiles_ms;

const TOPIC: &str = "devnet";

/// Broadcast figures.
pub struct Broadcast {
    msgs: u64,
    receivers: usize,
    delivered: u64,
    slowest_msgs_s: f64,
    all_after: Duration,
    lat_ms: Vec<f64>,
    rmr: f64,
    grafts: u64,
}

impl Broadcast {
    pub fn print(&mut self) {
        let [p50, p99] = percentiles_ms(&mut self.lat_ms, [50.0, 99.0]);
        println!(
            "  broadcast             {}/{} delivered ({} × 256 B to {} subscribers) in {:.2} s; slowest subscriber {:.0} msg/s; latency p50 {:.1} ms, p99 {:.1} ms; RMR {:.2}, {} grafts",
            self.delivered,
            self.msgs * self.receivers as u64,
            self.msgs,
            self.receivers,
            self.all_after.as_secs_f64(),
            self.slowest_msgs_s,
            p50,
            p99,
            self.rmr,
            self.grafts
        );
    }

    pub fn complete(&self) -> bool {
        self.delivered == self.msgs * self.receivers as u64
    }
}

/// (gossip copies received, deliveries, grafts) summed over nodes.
async fn counts(nodes: &[Node]) -> Result<(u64, u64, u64)> {
    let mut out = (0, 0, 0);
    for n in nodes {
        let m = n.metrics().await?;
        out.0 += m.topics.gossip_received;
        out.1 += m.topics.delivered;
        out.2 += m.topics.grafts;
    }
    Ok(out)
}

/// Every node subscribes; node 1 publishes `msgs` messages as fast as it can.
pub async fn broadcast(nodes: &[Node], msgs: u64) -> Result<Broadcast> {
    let clock = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Duration)>();
    for (i, n) in nodes.iter().enumerate() {
        let mut sub = n.subscribe(TOPIC).await.context("subscribe")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                if let TopicEvent::Message { payload, .. } = ev {
                    let sent = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
                    let _ = tx.send((i, clock.elapsed().saturating_sub(Duration::from_nanos(sent))));
                }
            }
        });
    }
    // Joins, forward joins and neighbour requests settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = counts(nodes).await?;
    let publisher = nodes.get(1 % nodes.len()).context("no nodes")?;
    let start = Instant::now();
    for _ in 0..msgs {
        let mut p = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX).to_le_bytes().to_vec();
        p.resize(256, 0x5a);
        publisher.publish(TOPIC, p).await.context("publish")?;
    }
    let receivers = nodes.len() - 1;
    let want = msgs * receivers as u64;
    let mut per: HashMap<usize, (u64, Instant)> = HashMap::new();
    let mut lat_ms = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    let mut delivered = 0;
    while delivered < want {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some((i, l))) => {
                delivered += 1;
                let e = per.entry(i).or_insert((0, Instant::now()));
                e.0 += 1;
                e.1 = Instant::now();
                lat_ms.push(l.as_secs_f64() * 1e3);
            }
            _ => break,
        }
    }
    let all_after = start.elapsed();
    let slowest_msgs_s = per
        .values()
        .map(|(c, last)| *c as f64 / last.duration_since(start).as_secs_f64().max(1e-9))
        .fold(f64::INFINITY, f64::min);
    let after = counts(nodes).await?;
    let copies = after.0 - before.0;
    let deliveries = (after.1 - before.1).max(1);
    Ok(Broadcast {
        msgs,
        receivers,
        delivered,
        slowest_msgs_s: if per.len() < receivers { 0.0 } else { slowest_msgs_s },
        all_after,
        lat_ms,
        rmr: copies as f64 / deliveries as f64 - 1.0,
        grafts: after.2 - before.2,
    })
}

/// A blob of `size` bytes served by nodes 0 and 1, fetched by the last node.
pub async fn blob(nodes: &[Node], size: usize) -> Result<(Duration, usize)> {
    let (Some(a), Some(b), Some(f)) = (nodes.first(), nodes.get(1), nodes.last()) else {
        anyhow::bail!("the blob phase needs 3 nodes");
    };
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let hash = a.add_blob(data.clone());
    b.add_blob(data);
    let t = Instant::now();
    let (got, report) = f.fetch_blob(hash, &[a.id(), b.id()], None).await.context("blob fetch")?;
    let took = t.elapsed();
    anyhow::ensure!(got.len() == size, "blob arrived with {} bytes, not {size}", got.len());
    Ok((took, report.per_provider.len()))
}
