//! `suprnova devnet`: the main job. Starts N nodes on 127.0.0.1 in one process, has every node
//! handshake with and ping a sample of the others, and reports what happened.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use suprnova_dht::identity::Identity;
use suprnova_dht::net::{self, NodeHandle};
use suprnova_dht::proto::{DhtConfig, Target};
use suprnova_dht::stats::Drops;
use tokio::task::JoinSet;

use super::{percentiles_ms, random_seed};

/// Deterministic-enough peer sample: node i talks to i+1 .. i+sample (mod n), so every node both
/// initiates and responds.
fn sample_of(i: usize, n: usize, sample: usize) -> Vec<usize> {
    (1..=sample.min(n.saturating_sub(1))).map(|k| (i + k) % n).collect()
}

/// Runs the devnet and prints the report.
pub async fn run(n: usize, sample: usize, pings: usize) -> Result<()> {
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    if n > 2000 {
        bail!("--nodes above 2000 is more than one process on this machine should host");
    }
    let t0 = Instant::now();
    println!("devnet: starting {n} nodes on 127.0.0.1 …");
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    for _ in 0..n {
        let ident = Identity::from_seed(random_seed()?);
        let (h, _task) = net::spawn(ident, "127.0.0.1:0".parse()?, DhtConfig::default()).await?;
        nodes.push(h);
    }
    let started = t0.elapsed();
    println!(
        "devnet: {n} nodes up in {:.1} ms; each handshakes with {} peers and pings each {} more times",
        started.as_secs_f64() * 1e3,
        sample.min(n - 1),
        pings
    );

    let t1 = Instant::now();
    let mut set = JoinSet::new();
    for (i, me) in nodes.iter().enumerate() {
        let me = me.clone();
        let peers: Vec<_> =
            sample_of(i, n, sample).into_iter().filter_map(|j| nodes.get(j)).map(|h| h.record().clone()).collect();
        set.spawn(async move {
            let mut first = Vec::new();
            let mut warm = Vec::new();
            let mut failures = Vec::new();
            // First contact with every peer concurrently (handshake + ping), then warm pings.
            let mut inner = JoinSet::new();
            for rec in peers {
                let me = me.clone();
                inner.spawn(async move {
                    let mut out = (None, Vec::new(), Vec::new());
                    match me.ping(Target::Record(rec.clone())).await {
                        Ok(r) => out.0 = Some(r.rtt),
                        Err(e) => out.2.push(e.to_string()),
                    }
                    for _ in 0..pings {
                        match me.ping(Target::Record(rec.clone())).await {
                            Ok(r) => out.1.push(r.rtt),
                            Err(e) => out.2.push(e.to_string()),
                        }
                    }
                    out
                });
            }
            while let Some(Ok((f, w, e))) = inner.join_next().await {
                first.extend(f);
                warm.extend(w);
                failures.extend(e);
            }
            (first, warm, failures)
        });
    }
    let mut first = Vec::new();
    let mut warm = Vec::new();
    let mut failures = Vec::new();
    while let Some(r) = set.join_next().await {
        let (f, w, e) = r?;
        first.extend(f.into_iter().map(|d: Duration| d.as_secs_f64() * 1e3));
        warm.extend(w.into_iter().map(|d: Duration| d.as_secs_f64() * 1e3));
        failures.extend(e);
    }
    let run_time = t1.elapsed();

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
    for h in &nodes {
        h.shutdown().await;
    }

    let expected_first = n * sample.min(n - 1);
    let [f50, f99] = percentiles_ms(&mut first, [50.0, 99.0]);
    let [w50, w99] = percentiles_ms(&mut warm, [50.0, 99.0]);
    println!();
    println!("devnet report ({n} nodes, {} s total)", fmt2(t0.elapsed().as_secs_f64()));
    println!(
        "  handshakes          {completed} completed of {initiated} initiated ({answered} answered by responders)"
    );
    println!("  sessions            {sessions} confirmed (counted per side)");
    println!(
        "  first ping          {}/{} answered, p50 {} ms, p99 {} ms (record known; includes the 1-RTT handshake)",
        first.len(),
        expected_first,
        fmt3(f50),
        fmt3(f99)
    );
    println!(
        "  warm ping           {}/{} answered, p50 {} ms, p99 {} ms",
        warm.len(),
        expected_first * pings,
        fmt3(w50),
        fmt3(w99)
    );
    println!("  packets             {pkts_in} received, {pkts_out} sent");
    println!("  ping phase          {} ms", fmt2(run_time.as_secs_f64() * 1e3));
    if drops.total() == 0 {
        println!("  drops               none");
    } else {
        for (r, c) in drops.nonzero() {
            println!("  drop {:<18} {c}", r.name());
        }
    }
    if !failures.is_empty() {
        failures.sort();
        failures.dedup();
        bail!("{} pings failed: {}", expected_first * (pings + 1) - first.len() - warm.len(), failures.join("; "));
    }
    Ok(())
}

fn fmt2(x: f64) -> String {
    format!("{x:.2}")
}
fn fmt3(x: f64) -> String {
    format!("{x:.3}")
}
