//! Shared helpers for the multi-node tests (127.0.0.1 only).
#![allow(dead_code)]

use std::time::Duration;

use suprnova_node::{Node, NodeConfig};

/// A test node configuration: loopback, deterministic identity, patient ordering.
pub fn config(i: usize) -> NodeConfig {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    seed[8] = 0x5a;
    let mut cfg = NodeConfig::with_seed(seed, "127.0.0.1:0".parse().unwrap());
    cfg.dht.routing.exempt_local = true;
    cfg.transport.connect_timeout = Duration::from_secs(2);
    cfg.topics.reorder_timeout = Duration::from_secs(5);
    cfg
}

/// Starts `n` nodes; each joins through node 0 only.
pub async fn network(n: usize, tweak: impl Fn(usize, &mut NodeConfig)) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = config(i);
        tweak(i, &mut cfg);
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    out
}

pub async fn stop_all(nodes: &[Node]) {
    for n in nodes {
        n.shutdown().await;
    }
}
