//! Runs every attack of the adversarial suite against a fresh victim node and prints what the
//! honest side saw. `cargo run --release -p suprnova-node --example attacks -- [SECONDS] [RATE]`
//! (defaults: 10 s per attack at 20,000 packets a second; the colluder attack has no rate: the
//! victim runs lookups back to back for the time).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/attacks/mod.rs"]
mod attacks;

use std::time::Duration;

use attacks::{Attack, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    println!("each attack {secs} s against a fresh victim with two honest peers (127.0.0.1, 2 cores)");
    println!();
    println!(
        "| attack | sent | rate/s | honest pings answered | rtt p50 / p99 ms | process RSS before → peak MiB | victim drops (growth) | limits hit | other |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, a) in Attack::ALL.iter().enumerate() {
        let rate = if *a == Attack::Colluders { 0 } else { rate };
        let r = run(*a, rate, Duration::from_secs(secs), 0xb0 + i as u8).await;
        let drops: Vec<String> = r.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let limits: Vec<String> = r.limited.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let mut other: Vec<String> = r.extra.iter().map(|(k, v)| format!("{k} {v}")).collect();
        other.extend(r.refused.iter().map(|(k, v)| format!("refused {k} {v}")));
        other.push(format!("records intact {}/{}", r.records.1, r.records.0));
        other.push(format!("channel peers {}", r.after.dht.channel_peers));
        other.push(format!("records held {}", r.after.dht.records));
        let tracked = r.after.dht.limits.iter().map(|l| l.tracked).max().unwrap_or(0);
        other.push(format!("largest limiter table {tracked}"));
        println!(
            "| {} | {} | {:.0} | {:.1} % ({}/{}) | {:.2} / {:.2} | {:.0} → {:.0} | {} | {} | {} |",
            a.name(),
            r.sent,
            r.rate(),
            r.answered_pct(),
            r.pings.1,
            r.pings.0,
            r.rtt(0.5),
            r.rtt(0.99),
            r.rss_kb.0 as f64 / 1024.0,
            r.rss_kb.1 as f64 / 1024.0,
            drops.join(", "),
            limits.join(", "),
            other.join(", ")
        );
    }
}
