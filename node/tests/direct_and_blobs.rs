#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! Direct requests across nodes that only know one bootstrap node, and 10 MiB blobs: two
//! providers with one corrupt, and a resume after the only provider went away.

mod common;

use std::time::Duration;

use suprnova_node::{BlobError, BlobProgress, Direct, NodeError};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_across_20_nodes_that_know_one_bootstrap_node() {
    let nodes = common::network(20, |_, _| {}).await;
    // Every node answers requests with its index appended.
    for (i, n) in nodes.iter().enumerate() {
        let mut inbox = n.incoming().await.unwrap();
        tokio::spawn(async move {
            while let Some(d) = inbox.recv().await {
                if let Direct::Request { mut data, responder, .. } = d {
                    data.push(i as u8);
                    responder.respond(data);
                }
            }
        });
    }
    let mut answered = 0;
    for i in 0..20usize {
        let j = (i * 7 + 3) % 20;
        if i == j {
            continue;
        }
        let reply = nodes[i].request(nodes[j].id(), &[i as u8]).await.unwrap();
        assert_eq!(reply, vec![i as u8, j as u8], "{i} -> {j}");
        answered += 1;
    }
    assert_eq!(answered, 20);
    // An id nobody has: a clear error, not a hang.
    let nobody = suprnova_dht::Identity::from_seed([0xee; 32]).id();
    assert!(matches!(nodes[5].request(nobody, b"?").await, Err(NodeError::UnknownPeer(_))));
    // Too large is refused locally.
    let big = vec![0u8; 2 << 20];
    assert!(matches!(nodes[5].request(nodes[6].id(), &big).await, Err(NodeError::TooLarge { .. })));
    common::stop_all(&nodes).await;
}

fn ten_mib() -> Vec<u8> {
    let mut v = Vec::with_capacity(10 << 20);
    let mut x = 0x9e37_79b9_u32;
    while v.len() < 10 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_blob_from_two_providers_one_corrupt() {
    // Node 1 serves every chunk with a flipped byte.
    let nodes = common::network(4, |i, cfg| {
        if i == 1 {
            cfg.chunk_filter = Some(std::sync::Arc::new(suprnova_node::testing::CorruptChunks));
        }
    })
    .await;
    let data = ten_mib();
    let hash = nodes[0].add_blob(data.clone());
    assert_eq!(nodes[1].add_blob(data.clone()), hash);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (got, report) = nodes[3].fetch_blob(hash, &[nodes[1].id(), nodes[0].id()], Some(tx)).await.unwrap();
    assert_eq!(blake3::hash(&got), blake3::hash(&data), "hash-exact");
    assert_eq!(report.corrupt, vec![nodes[1].id()]);
    assert_eq!(report.per_provider, vec![(nodes[0].id(), 40)], "every chunk from the honest provider");
    let mut corrupt_events = 0;
    let mut chunks = 0;
    while let Ok(p) = rx.try_recv() {
        match p {
            BlobProgress::Corrupt { provider, .. } => {
                assert_eq!(provider, nodes[1].id());
                corrupt_events += 1;
            }
            BlobProgress::Chunk { .. } => chunks += 1,
            _ => {}
        }
    }
    assert_eq!((corrupt_events, chunks), (1, 40));
    // The fetcher now serves it; a corrupt-only fetch fails without accepting anything.
    assert_eq!(nodes[3].blob(&hash).unwrap().len(), 10 << 20);
    let err = nodes[2].fetch_blob(hash, &[nodes[1].id()], None).await.unwrap_err();
    assert!(matches!(err, NodeError::Blob(BlobError::Incomplete { missing: 40 })), "{err:?}");
    assert!(nodes[2].blob(&hash).is_none());
    common::stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_fetch_resumes_after_the_provider_goes_away() {
    // Node 0 serves 5 chunks, then refuses every further one (as if it had gone away).
    let nodes = common::network(3, |i, cfg| {
        cfg.request_timeout = Duration::from_secs(2);
        if i == 0 {
            cfg.chunk_filter = Some(std::sync::Arc::new(suprnova_node::testing::ChunkLimit::new(5)));
        }
    })
    .await;
    let data = ten_mib();
    let hash = nodes[0].add_blob(data.clone());
    assert_eq!(nodes[1].add_blob(data.clone()), hash);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let err = nodes[2].fetch_blob(hash, &[nodes[0].id()], Some(tx)).await.unwrap_err();
    assert!(matches!(err, NodeError::Blob(BlobError::Incomplete { missing: 35 })), "{err:?}");
    let mut failed = 0;
    while let Ok(p) = rx.try_recv() {
        if let BlobProgress::ProviderFailed { provider, .. } = p {
            assert_eq!(provider, nodes[0].id());
            failed += 1;
        }
    }
    assert_eq!(failed, 1, "the provider is reported once");
    assert!(nodes[2].blob(&hash).is_none(), "nothing incomplete is served");
    // Resume from the other provider: only the 35 missing chunks are fetched.
    let (got, report) = nodes[2].fetch_blob(hash, &[nodes[1].id()], None).await.unwrap();
    assert!(*got == data, "hash-exact after the resume");
    assert_eq!(report.resumed, 5);
    assert_eq!(report.per_provider, vec![(nodes[1].id(), 35)]);
    // A caller's size limit refuses a blob from its manifest: not one chunk is fetched.
    let big = nodes[1].add_blob(vec![7; 1 << 20]);
    let before = nodes[0].metrics().await.unwrap().blob_bytes_fetched;
    let err = nodes[0].fetch_blob_at_most(big, &[nodes[1].id()], 64 << 10, None).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Blob(BlobError::TooLarge { size, max }) if size == 1 << 20 && max == 64 << 10),
        "{err:?}"
    );
    assert_eq!(nodes[0].metrics().await.unwrap().blob_bytes_fetched, before);
    common::stop_all(&nodes).await;
}
