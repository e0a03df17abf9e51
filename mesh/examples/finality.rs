//! Finality cadence of a mesh on loopback: N member nodes on 127.0.0.1 run the Life world with no
//! round interval, back to back, and member 0 times the gap between consecutive certified rounds
//! (a round is certified one message delay after the next height starts, so in steady state the
//! gap is the time per final block).
//!
//! `cargo run --release -p suprnova-mesh --example finality -- 4 7 16`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::{BoundedString, BoundedVec};
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::life::{Board, Life};
use suprnova_mesh::net::Mesh;
use suprnova_mesh::world::{Genesis, Limits, state_hash};
use suprnova_node::{Node, NodeConfig};

fn seed(n: usize, i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[8] = n as u8;
    s
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![4, 7, 16] } else { sizes };
    for n in sizes {
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..n {
            let mut cfg = NodeConfig::with_seed(seed(n, i), "127.0.0.1:0".parse().unwrap());
            cfg.dht.routing.exempt_local = true;
            let node = Node::spawn(cfg).await.unwrap();
            if let Some(first) = nodes.first() {
                node.bootstrap(vec![first.target()]).await.unwrap();
            }
            nodes.push(node);
        }
        let ids: Vec<Identity> = (0..n).map(|i| Identity::from_seed(seed(n, i))).collect();
        let board = Board::empty(16, 16);
        let genesis = Genesis {
            world: BoundedString::truncated("life"),
            version: 1,
            state_hash: state_hash(&board),
            members: BoundedVec::try_from(ids.iter().map(Identity::public_key).collect::<Vec<_>>()).unwrap(),
            round_interval_ms: 0,
            limits: Limits::default(),
            space: None,
        };
        let mut meshes = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let id = Some(Identity::from_seed(seed(n, i)));
            meshes.push(
                Mesh::start(node.clone(), Life, genesis.clone(), board.clone(), id, MeshConfig::default())
                    .await
                    .unwrap(),
            );
        }
        let mut rx = meshes[0].rounds();
        // Warm up (topic formation, first timeouts), then measure 300 rounds.
        let mut last = None;
        let (mut gaps, mut rounds) = (Vec::new(), 0u64);
        let start = Instant::now();
        let mut t0 = None;
        while rounds < 350 && start.elapsed() < Duration::from_secs(120) {
            let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await else { break };
            let now = Instant::now();
            rounds += 1;
            if rounds > 50 {
                t0.get_or_insert(now);
                if let Some(prev) = last {
                    gaps.push(now.duration_since(prev).as_secs_f64() * 1e3);
                }
            }
            last = Some(now);
            let _ = c;
        }
        let secs = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
        let st = meshes[0].status().await.unwrap();
        println!(
            "{{\"members\":{n},\"rounds_measured\":{},\"rounds_per_s\":{:.0},\"gap_p50_ms\":{:.2},\"gap_p99_ms\":{:.2},\"timeouts\":{},\"dummies\":{}}}",
            gaps.len(),
            gaps.len() as f64 / secs,
            pct(&mut gaps, 0.5),
            pct(&mut gaps, 0.99),
            st.agreement.timeouts,
            st.agreement.dummies
        );
        for m in &meshes {
            m.stop();
        }
        for node in &nodes {
            node.shutdown().await;
        }
    }
}
