//! Real UDP on 127.0.0.1: two nodes run by the tokio driver handshake and ping; a stream of
//! garbage datagrams is counted and does not stop them answering. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use suprnova_dht::identity::Identity;
use suprnova_dht::net::{self, NodeError};
use suprnova_dht::proto::{DhtConfig, RequestError, Target};
use suprnova_dht::stats::DropReason;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

async fn node(seed: u8) -> net::NodeHandle {
    let (h, _task) = net::spawn(Identity::from_seed([seed; 32]), "127.0.0.1:0".parse().unwrap(), DhtConfig::default())
        .await
        .unwrap();
    h
}

#[tokio::test]
async fn two_nodes_handshake_and_ping_over_udp() {
    let a = node(1).await;
    let b = node(2).await;
    let r = timeout(LIMIT, a.ping(Target::Record(b.record().clone()))).await.unwrap().unwrap();
    assert_eq!(r.peer, b.id());
    assert_eq!(r.addr, b.local_addr());
    assert_eq!(r.observed.to_socket_addr(), a.local_addr());
    // By address with the expected id, then by bare address: same node, same session.
    let r = timeout(LIMIT, a.ping(Target::Addr { addr: b.local_addr(), expect: Some(b.id()) })).await.unwrap().unwrap();
    assert_eq!(r.peer, b.id());
    let r = timeout(LIMIT, b.ping(Target::Addr { addr: a.local_addr(), expect: None })).await.unwrap().unwrap();
    assert_eq!(r.peer, a.id());
    let sa = a.stats().await.unwrap();
    let sb = b.stats().await.unwrap();
    assert_eq!(sa.channel.handshakes_completed, 1, "one session serves both directions");
    assert_eq!(sb.channel.handshakes_answered, 1);
    assert_eq!(sa.channel.drops.total() + sb.channel.drops.total(), 0);
    // The wrong id at a real address is refused.
    let wrong = Identity::from_seed([3; 32]).id();
    let e =
        timeout(LIMIT, a.ping(Target::Addr { addr: b.local_addr(), expect: Some(wrong) })).await.unwrap().unwrap_err();
    assert!(matches!(e, NodeError::Request(RequestError::IdentityMismatch(id)) if id == b.id()));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn garbage_is_counted_and_honest_pings_still_answered() {
    let victim = node(4).await;
    let honest = node(5).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sent = 0u64;
    for i in 0..2000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1300) as usize;
        let mut d: Vec<u8> = (0..len).map(|k| (x >> (k % 57)) as u8).collect();
        if let Some(b) = d.first_mut() {
            *b = (i % 8) as u8; // mostly our own packet types, to get past the first check
        }
        if let Some(b) = d.get_mut(1) {
            *b = 1;
        }
        if sock.send_to(&d, victim.local_addr()).await.is_ok() {
            sent += 1;
        }
        if i % 10 == 0 {
            // Single-threaded test runtime: let the victim drain its socket.
            tokio::task::yield_now().await;
        }
        if i % 500 == 0 {
            let r = timeout(LIMIT, honest.ping(Target::Record(victim.record().clone()))).await.unwrap();
            assert!(r.is_ok(), "honest ping during the flood: {r:?}");
        }
    }
    // Loopback may drop under pressure, so wait for the counters to settle, boundedly.
    let mut stats = victim.stats().await.unwrap();
    for _ in 0..50 {
        if stats.channel.packets_in >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = victim.stats().await.unwrap();
    }
    let drops = stats.channel.drops.total();
    // Every garbage datagram that arrived was dropped under a named reason; honest traffic was not.
    assert!(drops > sent / 2, "only {drops} of {sent} counted");
    assert!(stats.channel.drops.get(DropReason::BadLength) + stats.channel.drops.get(DropReason::UnknownType) > 0);
    let honest_out = honest.stats().await.unwrap().channel.packets_out;
    assert_eq!(stats.channel.packets_in - drops, honest_out, "every honest packet accepted: {:?}", stats.channel);
    assert_eq!(stats.channel.handshakes_answered, 1);
    victim.shutdown().await;
    honest.shutdown().await;
}
