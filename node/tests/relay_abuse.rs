#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! The adversarial suite's relay attacks (wire-spec §15.2, §15.3), on 127.0.0.1: a relay under a
//! flood of reservations from 60 identities, then a bulk transfer pushed through one of its
//! circuits, stays within its limits (reservations held, bytes per second per circuit) and keeps
//! serving the honest node that reserved before the flood.

mod common;

use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;
use suprnova_dht::net::{self, NodeHandle};
use suprnova_dht::proto::{DhtConfig, ReachConfig, ReachMode, Reachability};
use suprnova_node::{Direct, Node};

const MAX_RESERVATIONS: usize = 16;
const CIRCUIT_RATE: u32 = 256 * 1024;

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Private DHT nodes that reserve on whatever relay they find: the flood.
async fn attackers(n: usize, relay: &Node) -> Vec<NodeHandle> {
    let mut out = Vec::new();
    for i in 0..n {
        let cfg = DhtConfig {
            reach: ReachConfig { mode: ReachMode::Private, relays: 1, ..ReachConfig::default() },
            ..DhtConfig::default()
        };
        let mut seed = [0xa7u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let (h, _) = net::spawn(Identity::from_seed(seed), "127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
        let _ = h.bootstrap(vec![relay.target()]).await;
        out.push(h);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_under_abuse_stays_within_its_limits_and_serves_honest_reservations() {
    // Node 0 is the relay under attack (limits lowered so a test can reach them; every node here
    // shares 127.0.0.1, so the per-IP cap is lifted); the other public nodes do not relay.
    let nodes = common::network(5, |i, cfg| {
        let relay = &mut cfg.dht.reach.relay;
        relay.enabled = i == 0;
        relay.max_reservations = MAX_RESERVATIONS;
        relay.max_reservations_per_ip = 1000;
        relay.circuit_bytes_per_s = CIRCUIT_RATE;
        if i == 3 {
            cfg.dht.reach.mode = ReachMode::Private;
        }
    })
    .await;
    let (relay, honest, dialler) = (&nodes[0], &nodes[3], &nodes[4]);
    until("the honest reservation", async || {
        let r = honest.metrics().await.unwrap().dht.reach;
        r.state == Reachability::Private && r.held.iter().any(|h| h.until.is_some())
    })
    .await;
    let mut inbox = honest.incoming().await.unwrap();
    tokio::spawn(async move {
        while let Some(d) = inbox.recv().await {
            if let Direct::Request { data, responder, .. } = d {
                responder.respond(data);
            }
        }
    });
    // The flood of reservations.
    let flood = attackers(60, relay).await;
    until("the flood to meet the cap", async || {
        let r = relay.metrics().await.unwrap().dht.reach;
        r.relay.reservations_refused >= 20
    })
    .await;
    let r = relay.metrics().await.unwrap().dht.reach;
    assert!(r.reservations <= MAX_RESERVATIONS, "{} reservations held", r.reservations);
    assert!(r.relay.reservations_refused >= 20, "{:?}", r.relay);
    // Renewals keep the honest reservation; the honest node is still reached through the relay.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reply = dialler.request(honest.id(), b"still there?").await.unwrap();
    assert_eq!(reply, b"still there?");
    let held = honest.metrics().await.unwrap().dht.reach.held;
    assert!(held.iter().any(|h| h.relay.id == relay.id() && h.until.is_some()), "{held:?}");
    // A bulk transfer through one circuit is held to the circuit's rate.
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 + 7) as u8).collect();
    let hash = honest.add_blob(blob.clone());
    let before = relay.metrics().await.unwrap().dht.reach.plane.relayed_bytes;
    let t0 = Instant::now();
    let (got, _) = dialler.fetch_blob(hash, &[honest.id()], None).await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(*got, blob);
    let moved = relay.metrics().await.unwrap().dht.reach.plane.relayed_bytes - before;
    let burst = 512.0 * 1024.0;
    let allowed = f64::from(CIRCUIT_RATE) * 2.0 * secs + 2.0 * burst;
    assert!((moved as f64) <= allowed, "{moved} bytes in {secs:.1} s through a {CIRCUIT_RATE} B/s circuit");
    assert!(moved >= blob.len() as u64, "the blob crossed the relay: {moved} bytes");
    eprintln!(
        "relay abuse: {} refused, {moved} bytes in {secs:.1} s ({:.0} KiB/s)",
        r.relay.reservations_refused,
        moved as f64 / secs / 1024.0
    );
    for a in &flood {
        a.shutdown().await;
    }
    common::stop_all(&nodes).await;
}
