//! `suprnova devnet`: the main job. Starts N nodes on 127.0.0.1 in one process and measures the
//! encrypted channel in three phases: every node handshakes with a sample of peers at once; pings
//! one at a time across the devnet (round-trip time without queueing); then every node pings its
//! peers at once (throughput under load). Then the DHT (bootstrap, puts and gets of every record
//! kind), a broadcast to every node over QUIC, and a 10 MiB blob from two providers. Ends with
//! drops by reason.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use suprnova_dht::identity::NodeRecord;
use suprnova_dht::net::{NodeError, NodeHandle, PingReply};
use suprnova_dht::proto::{DhtConfig, Target};
use suprnova_dht::stats::Drops;
use tokio::task::JoinSet;

use super::{percentiles_ms, random_seed};

/// Every devnet node shares 127.0.0.1, so the per-subnet diversity limit is lifted (it stays on
/// by default for real nodes).
fn devnet_config() -> DhtConfig {
    let mut cfg = DhtConfig::default();
    cfg.routing.exempt_loopback = true;
    cfg
}

/// Node i talks to i+1 .. i+sample (mod n), so every node both initiates and responds.
fn sample_of(i: usize, n: usize, sample: usize) -> Vec<usize> {
    (1..=sample.min(n.saturating_sub(1))).map(|k| (i + k) % n).collect()
}

/// (node, peer record) for every ordered pair in the sample.
fn pairs(nodes: &[NodeHandle], sample: usize) -> Vec<(NodeHandle, NodeRecord)> {
    let n = nodes.len();
    let mut out = Vec::new();
    for (i, me) in nodes.iter().enumerate() {
        for j in sample_of(i, n, sample) {
            if let Some(peer) = nodes.get(j) {
                out.push((me.clone(), peer.record().clone()));
            }
        }
    }
    out
}

struct Phase {
    rtts_ms: Vec<f64>,
    failures: Vec<String>,
    elapsed: Duration,
}

/// Sends `rounds` pings over every pair, all pairs concurrently (each pair's pings in sequence).
async fn concurrent(pairs: &[(NodeHandle, NodeRecord)], rounds: usize) -> Result<Phase> {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (me, rec) in pairs {
        let (me, rec) = (me.clone(), rec.clone());
        set.spawn(async move {
            let mut out: Vec<Result<PingReply, NodeError>> = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                out.push(me.ping(Target::Record(rec.clone())).await);
            }
            out
        });
    }
    let mut phase = Phase { rtts_ms: Vec::new(), failures: Vec::new(), elapsed: Duration::ZERO };
    while let Some(r) = set.join_next().await {
        for p in r? {
            match p {
                Ok(r) => phase.rtts_ms.push(r.rtt.as_secs_f64() * 1e3),
                Err(e) => phase.failures.push(e.to_string()),
            }
        }
    }
    phase.elapsed = t.elapsed();
    Ok(phase)
}

/// One ping at a time over every pair, `rounds` times.
async fn sequential(pairs: &[(NodeHandle, NodeRecord)], rounds: usize) -> Phase {
    let t = Instant::now();
    let mut phase = Phase { rtts_ms: Vec::new(), failures: Vec::new(), elapsed: Duration::ZERO };
    for _ in 0..rounds {
        for (me, rec) in pairs {
            match me.ping(Target::Record(rec.clone())).await {
                Ok(r) => phase.rtts_ms.push(r.rtt.as_secs_f64() * 1e3),
                Err(e) => phase.failures.push(e.to_string()),
            }
        }
    }
    phase.elapsed = t.elapsed();
    phase
}

fn line(name: &str, p: &mut Phase, expected: usize, what: &str) {
    let [p50, p99] = percentiles_ms(&mut p.rtts_ms, [50.0, 99.0]);
    let rate = p.rtts_ms.len() as f64 / p.elapsed.as_secs_f64().max(1e-9);
    println!(
        "  {name:<22}{}/{} answered in {:.1} ms ({:.0} {what}/s); rtt p50 {:.3} ms, p99 {:.3} ms",
        p.rtts_ms.len(),
        expected,
        p.elapsed.as_secs_f64() * 1e3,
        rate,
        p50,
        p99
    );
}

/// Runs the devnet and prints the report.
pub async fn run(n: usize, sample: usize, pings: usize, records: usize, messages: u64) -> Result<()> {
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    if n > 2000 {
        bail!("--nodes above 2000 is more than one process on this machine should host");
    }
    let t0 = Instant::now();
    println!("devnet: starting {n} nodes on 127.0.0.1 …");
    let mut full: Vec<suprnova_node::Node> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cfg = suprnova_node::NodeConfig::with_seed(random_seed()?, "127.0.0.1:0".parse()?);
        cfg.dht = devnet_config();
        full.push(suprnova_node::Node::spawn(cfg).await?);
    }
    let nodes: Vec<NodeHandle> = full.iter().map(|f| f.dht().clone()).collect();
    let pairs = pairs(&nodes, sample);
    println!(
        "devnet: {n} nodes up in {:.1} ms; each handshakes with {} peers at once, then pings them one at a time, then {pings} rounds all at once",
        t0.elapsed().as_secs_f64() * 1e3,
        sample.min(n - 1),
    );

    let mut hs = concurrent(&pairs, 1).await?;
    let mut seq = sequential(&pairs, 1).await;
    let mut load = concurrent(&pairs, pings).await?;
    let boot = super::devnet_dht::bootstrap(&nodes).await?;
    let mut dht = super::devnet_dht::records(&nodes, records).await?;
    let mut gossip = super::devnet_gossip::broadcast(&full, messages).await?;
    let blob = super::devnet_gossip::blob(&full, 10 << 20).await?;

    let mut drops = Drops::default();
    let (mut initiated, mut completed, mut answered, mut sessions, mut pkts_in, mut pkts_out) = (0, 0, 0, 0, 0, 0);
    for h in &nodes {
        let s = h.stats().await?;
        drops.merge(&s.channel.drops);
        initiated += s.channel.handshakes_initiated;
        completed += s.channel.handshakes_completed;
        answered += s.channel.handshakes_answered;
        sessions += s.sessions;
        pkts_in += s.channel.packets_in;
        pkts_out += s.channel.packets_out;
    }
    let mut stopping = JoinSet::new();
    for f in full {
        stopping.spawn(async move { f.shutdown().await });
    }
    while stopping.join_next().await.is_some() {}

    println!();
    println!("devnet report: {n} nodes, {} pairs, {:.2} s in all", pairs.len(), t0.elapsed().as_secs_f64());
    line("handshake + ping", &mut hs, pairs.len(), "handshakes");
    line("ping, one at a time", &mut seq, pairs.len(), "pings");
    line("ping, all at once", &mut load, pairs.len() * pings, "pings");
    boot.print();
    for k in &mut dht {
        k.print();
    }
    gossip.print();
    println!(
        "  blob                  10 MiB fetched from {} providers in {:.1} ms, every 256 KiB chunk verified",
        blob.1,
        blob.0.as_secs_f64() * 1e3
    );
    println!(
        "  handshakes            {completed} completed of {initiated} initiated, {answered} answered; {sessions} sessions (both sides)"
    );
    println!("  packets               {pkts_in} received, {pkts_out} sent");
    if drops.total() == 0 {
        println!("  dropped               none");
    } else {
        for (r, c) in drops.nonzero() {
            println!("  dropped {:<14} {c}", r.name());
        }
    }
    let mut failures: Vec<String> = hs.failures.into_iter().chain(seq.failures).chain(load.failures).collect();
    failures.extend(dht.iter().flat_map(|k| k.failures.iter().cloned()));
    if !gossip.complete() {
        failures.push("broadcast did not reach every subscriber".into());
    }
    if !failures.is_empty() {
        let mut kinds = failures.clone();
        kinds.sort();
        kinds.dedup();
        bail!("{} pings failed: {}", failures.len(), kinds.join("; "));
    }
    Ok(())
}
