//! Relays on real UDP (127.0.0.1, wire-spec §15): a private node holds reservations on public
//! relays and publishes its reach record; a dialler reads the record, opens a circuit and pings the
//! private node through it, end to end (the Noise session runs inside the circuit). Every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use suprnova_dht::identity::{Identity, capability};
use suprnova_dht::net::{self, NodeHandle};
use suprnova_dht::path;
use suprnova_dht::proto::{DhtConfig, ReachConfig, ReachMode, Reachability, Target};
use suprnova_dht::wire::{Key, Record};
use tokio::time::{sleep, timeout};

const LIMIT: Duration = Duration::from_secs(20);

async fn node(seed: u8, mode: ReachMode) -> NodeHandle {
    let cfg = DhtConfig { reach: ReachConfig { mode, ..ReachConfig::default() }, ..DhtConfig::default() };
    let (h, _task) = net::spawn(Identity::from_seed([seed; 32]), "127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    h
}

/// Polls `f` every 100 ms until it is true, at most `LIMIT`.
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < LIMIT {
        if f().await {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_is_reached_by_id_through_a_relay() {
    let relays = [node(1, ReachMode::Auto).await, node(2, ReachMode::Auto).await, node(3, ReachMode::Auto).await];
    for r in &relays {
        assert_ne!(r.record().capabilities & capability::RELAY, 0, "a public node relays by default");
    }
    let private = node(9, ReachMode::Private).await;
    let dialler = node(10, ReachMode::Auto).await;
    let seeds: Vec<Target> = relays.iter().map(|r| Target::Record(r.record())).collect();
    for n in relays.iter().chain([&private, &dialler]) {
        timeout(LIMIT, n.bootstrap(seeds.clone())).await.unwrap().unwrap();
    }
    assert_ne!(private.record().capabilities & capability::PRIVATE, 0);
    until("two reservations", async || {
        let s = private.stats().await.unwrap();
        s.reach.state == Reachability::Private && s.reach.held.iter().filter(|h| h.until.is_some()).count() == 2
    })
    .await;
    // The reach record is in the DHT, signed, naming the relays held.
    let key = Key::for_reach(&private.id());
    let mut reach = None;
    until("the reach record", async || {
        if let Ok(got) = dialler.get(key).await
            && let Record::Reach(r) = got.record
            && r.relays.len() == 2
        {
            reach = Some(r);
            return true;
        }
        false
    })
    .await;
    let reach = reach.unwrap();
    assert_eq!(reach.verify(), Ok(()));
    assert_eq!(reach.node.id, private.id());
    // A private node stays out of routing tables: a lookup does not list it.
    let found = dialler.find_node(private.id()).await.unwrap();
    assert!(found.nodes.iter().all(|f| f.record.id != private.id()));
    // Through the first relay: a circuit, then a ping to the virtual address with the id expected.
    let relay = reach.relays[0].clone();
    let leg = timeout(LIMIT, dialler.connect_via(relay.clone(), private.id())).await.unwrap().unwrap();
    assert!(path::is_virtual(&leg));
    let pong =
        timeout(LIMIT, dialler.ping(Target::Addr { addr: leg, expect: Some(private.id()) })).await.unwrap().unwrap();
    assert_eq!(pong.peer, private.id());
    // The relay forwarded the frames; both ends count them on their legs.
    let r = relays.iter().find(|r| r.id() == relay.id).unwrap();
    let rs = r.stats().await.unwrap();
    // Initiation, response and ping at least (the pong may go direct: on loopback the private
    // node also reaches the dialler directly, and a session follows its peer's latest address).
    assert!(rs.reach.plane.relayed_frames >= 3, "{:?}", rs.reach.plane);
    assert_eq!(rs.reach.circuits, 1, "{:?}", rs.reach.relay);
    let ds = dialler.stats().await.unwrap();
    let ps = private.stats().await.unwrap();
    assert_eq!(ds.reach.legs.len(), 1);
    assert_eq!(ds.reach.legs[0].peer, Some(private.id()));
    assert!(ps.reach.legs.iter().any(|l| l.bytes_in > 0 && l.bytes_out > 0));
    // Every byte the ends sent on their legs was forwarded, with nothing added but the 12-byte
    // headers (read until traffic in flight has landed).
    let counts = async || {
        let d = dialler.stats().await.unwrap().reach.plane;
        let p = private.stats().await.unwrap().reach.plane;
        let r = r.stats().await.unwrap().reach.plane;
        let sent = d.local_bytes_out + p.local_bytes_out + 12 * (d.local_frames_out + p.local_frames_out);
        (r.relayed_bytes, sent)
    };
    until("the relay's bytes to match the ends'", async || {
        let (relayed, sent) = counts().await;
        assert!(relayed <= sent, "the relay forwarded more than the ends sent: {relayed} > {sent}");
        relayed == sent
    })
    .await;
    // A node that does not hold a reservation cannot be connected to.
    let nobody = Identity::from_seed([77; 32]).id();
    assert!(timeout(LIMIT, dialler.connect_via(relay, nobody)).await.unwrap().is_err());
    for n in relays.iter().chain([&private, &dialler]) {
        n.shutdown().await;
    }
}
