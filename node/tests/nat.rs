#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! A node behind NAT (here `--reachability private` on loopback: it stays out of routing tables
//! and is reached only through its relays, wire-spec §15) answers requests, receives messages and
//! serves a blob to nodes that know only its id; QUIC runs end to end through the relay circuit.
//! The bed's `nat` session does the same across real NAT routers.

mod common;

use std::time::Duration;

use suprnova_dht::proto::{ReachMode, Reachability};
use suprnova_node::{Direct, Node};

/// Polls until `f` holds, at most 20 s.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn forwarded(nodes: &[Node]) -> u64 {
    let mut sum = 0;
    for n in nodes {
        sum += n.metrics().await.unwrap().dht.reach.plane.relayed_bytes;
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_node_is_reached_by_id_through_a_relay_over_quic() {
    const PRIVATE: usize = 4;
    let nodes = common::network(6, |i, cfg| {
        if i == PRIVATE {
            cfg.dht.reach.mode = ReachMode::Private;
        }
    })
    .await;
    let private = &nodes[PRIVATE];
    let dialler = &nodes[5];
    until("the private node's reservations", async || {
        let r = private.metrics().await.unwrap().dht.reach;
        r.state == Reachability::Private && r.held.iter().any(|h| h.until.is_some())
    })
    .await;
    let mut inbox = private.incoming().await.unwrap();
    tokio::spawn(async move {
        while let Some(d) = inbox.recv().await {
            if let Direct::Request { mut data, responder, .. } = d {
                data.extend_from_slice(b" (from behind NAT)");
                responder.respond(data);
            }
        }
    });
    let before = forwarded(&nodes).await;
    // By id only: the lookup does not list a private node; its reach record names the relays.
    let mut reply = Err(suprnova_node::NodeError::Timeout);
    until("a request answered through the relay", async || {
        reply = dialler.request(private.id(), b"hello").await;
        reply.is_ok()
    })
    .await;
    assert_eq!(reply.unwrap(), b"hello (from behind NAT)");
    let relayed = forwarded(&nodes).await - before;
    assert!(relayed > 1000, "the QUIC handshake and the request crossed a relay: {relayed} bytes");
    let paths = dialler.metrics().await.unwrap().dht.reach.legs;
    assert!(paths.iter().any(|l| l.peer == Some(private.id()) && l.bytes_out > 0), "{paths:?}");
    // A blob served from behind NAT.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let hash = private.add_blob(data.clone());
    let (got, _) = dialler.fetch_blob(hash, &[private.id()], None).await.unwrap();
    assert_eq!(*got, data);
    common::stop_all(&nodes).await;
}
