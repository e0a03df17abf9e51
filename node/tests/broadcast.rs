#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! 100 real nodes on one topic over QUIC on 127.0.0.1: exactly-once, in-order delivery per
//! origin, several publishers, and tree repair after 30% of the nodes stop.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_node::{Node, Subscription, TopicEvent};
use tokio::sync::mpsc;

const TOPIC: &str = "broadcast-test";

/// Collects every message a subscription delivers: (origin, seq, payload) in delivery order.
fn collect(mut sub: Subscription, out: mpsc::UnboundedSender<(usize, NodeId, u64, Vec<u8>)>, me: usize) {
    tokio::spawn(async move {
        while let Some(ev) = sub.recv().await {
            if let TopicEvent::Message { origin, seq, payload } = ev
                && out.send((me, origin, seq, payload)).is_err()
            {
                return;
            }
        }
    });
}

async fn subscribe_all(nodes: &[Node]) -> mpsc::UnboundedReceiver<(usize, NodeId, u64, Vec<u8>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, n) in nodes.iter().enumerate() {
        collect(n.subscribe(TOPIC).await.unwrap(), tx.clone(), i);
    }
    // Let the overlay settle: joins, forward joins and neighbour requests.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rx
}

/// Waits until every node in `expect` has `count` messages from `origin` or the time is up;
/// returns what each node received from `origin` (seqs in delivery order).
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<(usize, NodeId, u64, Vec<u8>)>,
    got: &mut HashMap<(usize, NodeId), Vec<u64>>,
    expect: &[(usize, NodeId, usize)],
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let done = expect.iter().all(|(i, o, n)| got.get(&(*i, *o)).map_or(0, Vec::len) >= *n);
        if done {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, origin, seq, payload))) => {
                assert_eq!(payload[..8], seq.to_le_bytes(), "payload matches its seq");
                got.entry((i, origin)).or_default().push(seq);
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_1000_messages_exactly_once_in_order_then_30_percent_stop() {
    let nodes = common::network(100, |_, _| {}).await;
    let mut rx = subscribe_all(&nodes).await;
    let publisher = 17;
    let origin = nodes[publisher].id();
    for seq in 0..1000u64 {
        let mut p = seq.to_le_bytes().to_vec();
        p.resize(256, 0xab);
        nodes[publisher].publish(TOPIC, p).await.unwrap();
        if seq % 100 == 99 {
            // Pace a little: a realistic publisher, and the 2-core CI machine.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut got = HashMap::new();
    let expect: Vec<_> = (0..100).filter(|i| *i != publisher).map(|i| (i, origin, 1000)).collect();
    gather(&mut rx, &mut got, &expect, Duration::from_secs(60)).await;
    let want: Vec<u64> = (0..1000).collect();
    for (i, _, _) in &expect {
        let seqs = got.get(&(*i, origin)).cloned().unwrap_or_default();
        assert_eq!(seqs.len(), 1000, "node {i} delivered {} of 1000", seqs.len());
        assert_eq!(seqs, want, "node {i}: exactly once, in order");
    }
    // Nothing more arrives: no late duplicates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "a duplicate was delivered");

    // Stop 30 nodes (not the publisher), then publish 200 more: every survivor gets them all.
    let stopped: Vec<usize> = (0..100).filter(|i| i % 10 < 3 && *i != publisher).take(30).collect();
    for i in &stopped {
        nodes[*i].shutdown().await;
    }
    for seq in 1000..1200u64 {
        let mut p = seq.to_le_bytes().to_vec();
        p.resize(256, 0xcd);
        nodes[publisher].publish(TOPIC, p).await.unwrap();
        if seq % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let survivors: Vec<usize> = (0..100).filter(|i| *i != publisher && !stopped.contains(i)).collect();
    let expect: Vec<_> = survivors.iter().map(|i| (*i, origin, 1200)).collect();
    gather(&mut rx, &mut got, &expect, Duration::from_secs(60)).await;
    let want: Vec<u64> = (0..1200).collect();
    for i in &survivors {
        assert_eq!(got.get(&(*i, origin)), Some(&want), "survivor {i} after 30% stopped");
    }
    let mut grafts = 0;
    for i in &survivors {
        grafts += nodes[*i].metrics().await.unwrap().topics.grafts;
    }
    println!("grafts among survivors after the stop: {grafts}");
    common::stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_publishers_reach_everyone() {
    let nodes = common::network(60, |_, _| {}).await;
    let mut rx = subscribe_all(&nodes).await;
    let publishers = [3usize, 25, 41, 59];
    for seq in 0..50u64 {
        for p in publishers {
            let mut payload = seq.to_le_bytes().to_vec();
            payload.push(p as u8);
            nodes[p].publish(TOPIC, payload).await.unwrap();
        }
    }
    let mut got = HashMap::new();
    let mut expect = Vec::new();
    for i in 0..nodes.len() {
        for p in publishers {
            if p != i {
                expect.push((i, nodes[p].id(), 50));
            }
        }
    }
    gather(&mut rx, &mut got, &expect, Duration::from_secs(60)).await;
    let want: Vec<u64> = (0..50).collect();
    for (i, o, _) in &expect {
        assert_eq!(got.get(&(*i, *o)), Some(&want), "node {i} from {}", o.short());
    }
    common::stop_all(&nodes).await;
}
