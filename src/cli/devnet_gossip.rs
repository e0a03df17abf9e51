//! Devnet phases over QUIC: every node subscribes to one topic; a flood of broadcasts, a paced
//! run, a 10 MiB blob from two providers, and the broadcast again after a third of the nodes stop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use suprnova_dht::NodeId;
use suprnova_node::{Node, TopicEvent};
use tokio::sync::mpsc;

use super::devnet_common::{Latency, cpu_seconds};

const TOPIC: &str = "devnet";

/// One delivery: (receiving node, origin, seq, latency).
type Delivery = (usize, NodeId, u64, Duration);

/// Every node's subscription, funnelled into one channel.
pub struct Subs {
    clock: Instant,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Subs {
    /// Subscribes every node to the devnet topic, then lets joins settle (bounded: until every
    /// node has an active neighbour, at most 5 s).
    pub async fn join(nodes: &[Node]) -> Result<Subs> {
        let clock = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel::<Delivery>();
        for (i, n) in nodes.iter().enumerate() {
            let mut sub = n.subscribe(TOPIC).await.context("subscribe")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(ev) = sub.recv().await {
                    if let TopicEvent::Message { origin, seq, payload } = ev {
                        let sent =
                            payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
                        let _ = tx.send((i, origin, seq, clock.elapsed().saturating_sub(Duration::from_nanos(sent))));
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in nodes {
            while Instant::now() < deadline && n.topic_info(TOPIC).await.is_none_or(|i| i.active.is_empty()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Forward joins and neighbour requests settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Subs { clock, rx })
    }
}

/// Broadcast figures.
#[derive(Serialize, Default, Clone)]
pub struct Broadcast {
    /// Messages published.
    pub messages: u64,
    /// Bytes per message.
    pub message_bytes: usize,
    /// Subscribers other than the publisher.
    pub receivers: usize,
    /// Deliveries seen.
    pub delivered: u64,
    /// Deliveries expected (messages × receivers).
    pub expected: u64,
    /// delivered / expected.
    pub delivery_ratio: f64,
    /// Deliveries of a message a subscriber already had (must be 0).
    pub duplicate_deliveries: u64,
    /// Seconds from the first publish until the last delivery.
    pub all_delivered_s: f64,
    /// Messages per second at the slowest subscriber.
    pub slowest_msgs_s: f64,
    /// Publish-to-delivery latency.
    pub latency: Latency,
    /// Relative message redundancy: gossip copies received / deliveries − 1.
    pub rmr: f64,
    /// Grafts sent.
    pub grafts: u64,
    /// Process CPU seconds (user + system) spent during the phase.
    pub cpu_s: f64,
    /// CPU seconds per 1,000 deliveries.
    pub cpu_s_per_1000_deliveries: f64,
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

/// `msgs` broadcasts of `size` bytes from `publisher` to every other node in `live`, as fast as
/// it can publish (`pace` = None) or at a fixed rate; waits (bounded) for every delivery.
/// What a broadcast phase sends.
pub struct Plan<'a> {
    /// Indices of the nodes still running.
    pub live: &'a [usize],
    /// Index of the publisher.
    pub publisher: usize,
    /// Messages.
    pub msgs: u64,
    /// Bytes each.
    pub size: usize,
    /// Gap between publishes (None: as fast as possible).
    pub pace: Option<Duration>,
}

pub async fn broadcast(
    subs: &mut Subs,
    nodes: &[Node],
    plan: Plan<'_>,
    bar: &indicatif::ProgressBar,
) -> Result<Broadcast> {
    let Plan { live, publisher, msgs, size, pace } = plan;
    let live_nodes: Vec<Node> = live.iter().filter_map(|&i| nodes.get(i).cloned()).collect();
    let publisher_node = nodes.get(publisher).context("no publisher")?.clone();
    let receivers = live.iter().filter(|&&i| i != publisher).count();
    let want = msgs * receivers as u64;
    bar.set_length(want);
    bar.set_position(0);
    // Drop anything left over from an earlier phase.
    while subs.rx.try_recv().is_ok() {}
    let before = counts(&live_nodes).await?;
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let me = publisher_node.id();
    let publishing = {
        let p = publisher_node.clone();
        let clock = subs.clock;
        tokio::spawn(async move {
            let mut next = Instant::now();
            for _ in 0..msgs {
                if let Some(gap) = pace {
                    tokio::time::sleep_until(next.into()).await;
                    next += gap;
                }
                let mut payload = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX).to_le_bytes().to_vec();
                payload.resize(size.max(8), 0x5a);
                match p.publish(TOPIC, payload).await {
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("publish: {e}")),
                }
            }
            Ok(())
        })
    };
    let mut per: HashMap<usize, (u64, Instant)> = HashMap::new();
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
    let mut lat_ms = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    let (mut delivered, mut dups) = (0u64, 0u64);
    let quiet = if pace.is_some() { Duration::from_secs(5) } else { Duration::from_secs(10) };
    while delivered < want {
        match tokio::time::timeout(quiet, subs.rx.recv()).await {
            Ok(Some((i, origin, seq, l))) => {
                if origin != me || !live.contains(&i) {
                    continue;
                }
                if !seen.insert((i, seq)) {
                    dups += 1;
                    continue;
                }
                delivered += 1;
                let e = per.entry(i).or_insert((0, Instant::now()));
                e.0 += 1;
                e.1 = Instant::now();
                lat_ms.push(l.as_secs_f64() * 1e3);
                if delivered % 256 == 0 {
                    bar.set_position(delivered);
                }
            }
            _ => break,
        }
    }
    bar.set_position(delivered);
    publishing.await.context("publisher task")??;
    let all = start.elapsed();
    let cpu = cpu_seconds().zip(cpu0).map_or(f64::NAN, |(a, b)| a - b);
    let slowest = per
        .values()
        .map(|(c, last)| *c as f64 / last.duration_since(start).as_secs_f64().max(1e-9))
        .fold(f64::INFINITY, f64::min);
    let after = counts(&live_nodes).await?;
    let copies = after.0.saturating_sub(before.0);
    let deliveries = after.1.saturating_sub(before.1).max(1);
    Ok(Broadcast {
        messages: msgs,
        message_bytes: size,
        receivers,
        delivered,
        expected: want,
        delivery_ratio: delivered as f64 / want.max(1) as f64,
        duplicate_deliveries: dups,
        all_delivered_s: all.as_secs_f64(),
        slowest_msgs_s: if per.len() < receivers { 0.0 } else { slowest },
        latency: Latency::of(&mut lat_ms),
        rmr: copies as f64 / deliveries as f64 - 1.0,
        grafts: after.2.saturating_sub(before.2),
        cpu_s: cpu,
        cpu_s_per_1000_deliveries: cpu / (delivered.max(1) as f64 / 1000.0),
    })
}

/// Blob figures.
#[derive(Serialize, Default, Clone)]
pub struct Blob {
    /// Size.
    pub bytes: usize,
    /// Providers that served chunks.
    pub providers: usize,
    /// Time to find its providers in the DHT, fetch and verify it.
    pub ms: f64,
    /// Of which: the provider lookup.
    pub lookup_ms: f64,
    /// Of which: manifest and chunks, fetched and verified.
    pub fetch_ms: f64,
    /// Every chunk matched its BLAKE3 hash and the result matched the source.
    pub verified: bool,
}

/// A blob of `size` bytes served by nodes 0 and 1 (announced in the DHT), found and fetched by
/// the last node.
pub async fn blob(nodes: &[Node], size: usize) -> Result<Blob> {
    let (Some(a), Some(b), Some(f)) = (nodes.first(), nodes.get(1), nodes.last()) else {
        anyhow::bail!("the blob phase needs 3 nodes");
    };
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let hash = a.add_blob(data.clone());
    b.add_blob(data.clone());
    a.provide_blob(hash).await.context("announce blob")?;
    b.provide_blob(hash).await.context("announce blob")?;
    let t = Instant::now();
    let mut providers = f.find_blob_providers(hash).await.context("find providers")?;
    if providers.is_empty() {
        providers = vec![a.id(), b.id()];
    }
    let lookup_ms = t.elapsed().as_secs_f64() * 1e3;
    let (got, report) = f.fetch_blob(hash, &providers, None).await.context("blob fetch")?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Blob {
        bytes: got.len(),
        providers: report.per_provider.len(),
        ms,
        lookup_ms,
        fetch_ms: ms - lookup_ms,
        verified: got.as_slice() == data.as_slice(),
    })
}

/// Waits (at most `limit`) until every node in `live` has a non-empty active view in the topic
/// holding none of `dead`; returns the time it took, or None.
pub async fn repaired(nodes: &[Node], live: &[usize], dead: &HashSet<NodeId>, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    loop {
        let mut ok = true;
        for &i in live {
            let Some(n) = nodes.get(i) else { continue };
            match n.topic_info(TOPIC).await {
                Some(info) if !info.active.is_empty() && info.active.iter().all(|p| !dead.contains(p)) => {}
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
