#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! A handful of nodes: records, topics, direct messages and blobs through the `Node` handle.

use std::time::Duration;

use suprnova_node::{Direct, Node, NodeConfig, TopicEvent};

async fn nodes(n: usize) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = NodeConfig::with_seed([i as u8 + 1; 32], "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_local = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    // Everyone refreshes once so that the first nodes learn the later ones.
    for n in &out {
        n.bootstrap(vec![]).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_requests_topics_and_blobs() {
    let ns = nodes(5).await;

    // Records of every kind.
    let key = ns[0].put_immutable(b"immutable".to_vec()).await.unwrap();
    assert_eq!(ns[4].get_immutable(key).await.unwrap(), b"immutable".to_vec());
    let mkey = ns[1].put_mutable(b"salt", 7, b"mutable", None).await.unwrap();
    let m = ns[3].get_mutable(mkey).await.unwrap();
    assert_eq!((m.seq, m.value.to_vec()), (7, b"mutable".to_vec()));
    let skey = suprnova_dht::wire::Key([9; 32]);
    ns[0].put_set_entry(skey, b"zero", Duration::from_secs(60)).await.unwrap();
    ns[2].put_set_entry(skey, b"two", Duration::from_secs(60)).await.unwrap();
    let mut values: Vec<Vec<u8>> = ns[4].get_set(skey).await.unwrap().into_iter().map(|e| e.value.to_vec()).collect();
    values.sort();
    assert_eq!(values, vec![b"two".to_vec(), b"zero".to_vec()]);

    // Connection events: node 3 sees node 0 connect for the request below.
    let mut events = ns[3].events();
    // Request/response and a one-way message.
    let mut inbox = ns[3].incoming().await.unwrap();
    assert!(ns[3].incoming().await.is_none(), "taken once");
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(d) = inbox.recv().await {
            match d {
                Direct::Request { from, data, responder } => {
                    let mut r = data.clone();
                    r.reverse();
                    responder.respond(r);
                    seen.push((from, data));
                }
                Direct::Message { from, data } => {
                    seen.push((from, data));
                    return seen;
                }
            }
        }
        seen
    });
    let reply = ns[0].request(ns[3].id(), b"abc").await.unwrap();
    assert_eq!(reply, b"cba".to_vec());
    ns[1].send(ns[3].id(), b"bye").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    assert_eq!(seen, vec![(ns[0].id(), b"abc".to_vec()), (ns[1].id(), b"bye".to_vec())]);
    let mut ups = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let suprnova_node::ConnectionEvent::Up(p) = e {
            ups.push(p);
        }
    }
    assert!(ups.contains(&ns[0].id()) && ups.contains(&ns[1].id()), "{ups:?}");
    // Nobody took node 2's inbox, but requests are still queued: it has room, so no refusal.
    // A request to a node that never answers is refused when its responder is dropped.
    let mut inbox2 = ns[2].incoming().await.unwrap();
    let dropper = tokio::spawn(async move {
        if let Some(Direct::Request { responder, .. }) = inbox2.recv().await {
            drop(responder);
        }
    });
    assert!(matches!(ns[0].request(ns[2].id(), b"x").await, Err(suprnova_node::NodeError::Refused { code: None })));
    dropper.await.unwrap();

    // Topics: everyone subscribes, two publish.
    let mut subs = Vec::new();
    for n in &ns {
        subs.push(n.subscribe("small").await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10u8 {
        ns[0].publish("small", vec![0, i]).await.unwrap();
        ns[4].publish("small", vec![4, i]).await.unwrap();
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut from0 = Vec::new();
        let mut from4 = Vec::new();
        let want = if i == 0 || i == 4 { 10 } else { 20 };
        while from0.len() + from4.len() < want {
            if let TopicEvent::Message { origin, payload, seq } =
                tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.unwrap().unwrap()
            {
                assert_eq!(u64::from(payload[1]), seq);
                if origin == ns[0].id() { from0.push(payload[1]) } else { from4.push(payload[1]) }
            }
        }
        let expect: Vec<u8> = (0..10).collect();
        if i != 0 {
            assert_eq!(from0, expect, "node {i}: in order from node 0");
        }
        if i != 4 {
            assert_eq!(from4, expect, "node {i}: in order from node 4");
        }
    }

    // A 1 MiB blob from two providers.
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let hash = ns[1].add_blob(data.clone());
    assert_eq!(ns[2].add_blob(data.clone()), hash);
    let (got, report) = ns[4].fetch_blob(hash, &[ns[1].id(), ns[2].id()], None).await.unwrap();
    assert_eq!(*got, data);
    assert_eq!(report.per_provider.iter().map(|(_, n)| n).sum::<usize>(), 4);
    assert!(report.corrupt.is_empty());
    // Now node 4 serves it too.
    let (again, _) = ns[0].fetch_blob(hash, &[ns[4].id()], None).await.unwrap();
    assert_eq!(*again, data);

    let m = ns[4].metrics().await.unwrap();
    assert!(m.topics.delivered >= 10);
    assert!(m.blob_bytes_fetched >= 1 << 20);
    for n in &ns {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_neighbour_cannot_graft_itself_into_the_tree() {
    use suprnova_gossip::net::{Transport, TransportOptions, kind};
    use suprnova_gossip::proto::plumtree;
    use suprnova_gossip::proto::{Frame, encode_frame};
    use suprnova_gossip::wire::TopicId;

    let ns = nodes(2).await;
    let _sub = ns[0].subscribe("guarded").await.unwrap();
    // An outsider with its own identity and socket, not in the topic's overlay.
    let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let (dht_tx, _dht_rx) = tokio::sync::mpsc::channel(16);
    let outsider = suprnova_dht::Identity::from_seed([0x77; 32]);
    let (t, _streams) = Transport::new(
        &outsider,
        suprnova_dht::pathio::PathSocket::new(socket, Default::default()),
        dht_tx,
        TransportOptions::default(),
    )
    .unwrap();
    let conn = t.connect(ns[0].id(), &[ns[0].local_addr()]).await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[kind::GOSSIP]).await.unwrap();
    let topic = TopicId::from_name("guarded");
    for msg in [plumtree::Message::Graft { id: None, round: 0 }, plumtree::Message::IHave(vec![([1; 32], 0)])] {
        s.write_all(&encode_frame(&Frame::Broadcast { topic, msg }).unwrap()).await.unwrap();
    }
    let mut refused = 0;
    for _ in 0..100 {
        refused = ns[0].metrics().await.unwrap().topics.not_neighbor;
        if refused == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, 2);
    let info = ns[0].topic_info("guarded").await.unwrap();
    assert_eq!((info.eager, info.lazy), (0, 0), "the outsider is in neither set");
    t.close().await;
    for n in &ns {
        n.shutdown().await;
    }
}
