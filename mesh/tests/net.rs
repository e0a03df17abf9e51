//! A mesh on real nodes (127.0.0.1): five members run the Life world for 100 rounds over the
//! mesh's topic and hold the same state hash every round; inputs submitted at any member are
//! applied once everywhere; an observer node on the topic never certifies a different state.
//! (An observer that joins after round 1 cannot execute later rounds until it catches up from
//! the DHT, which is the next step; so how many rounds it follows is not asserted here.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::{BoundedString, BoundedVec};
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::net::Mesh;
use suprnova_mesh::world::{Genesis, Limits, SignedInput, state_hash};
use suprnova_node::{Node, NodeConfig};

fn seed(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[8] = 0x6d;
    s
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = NodeConfig::with_seed(seed(i), "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_loopback = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_agree_on_100_rounds_and_apply_each_input_once() {
    let nodes = nodes(6).await;
    let members: Vec<Identity> = (0..5).map(|i| Identity::from_seed(seed(i))).collect();
    let board = Board::empty(16, 16);
    let genesis = Genesis {
        world: BoundedString::truncated("life"),
        version: 1,
        state_hash: state_hash(&board),
        members: BoundedVec::try_from(members.iter().map(Identity::public_key).collect::<Vec<_>>()).unwrap(),
        round_interval_ms: 10,
        limits: Limits::default(),
    };
    let mut meshes = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let id = (i < 5).then(|| Identity::from_seed(seed(i)));
        let m =
            Mesh::start(node.clone(), Life, genesis.clone(), board.clone(), id, MeshConfig::default()).await.unwrap();
        meshes.push(m);
    }
    let mut rx: Vec<_> = meshes.iter().map(Mesh::rounds).collect();
    let author = Identity::from_seed([0x99; 32]);
    let mut seen: Vec<BTreeMap<u64, [u8; 32]>> = vec![BTreeMap::new(); 6];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut submitted = 0u64;
    while seen[..5].iter().any(|s| s.len() < 100) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "100 rounds within 90 s: {:?}",
            seen.iter().map(BTreeMap::len).collect::<Vec<_>>()
        );
        for (i, r) in rx.iter_mut().enumerate() {
            while let Ok(c) = r.try_recv() {
                seen[i].insert(c.round, c.state_hash);
            }
        }
        if submitted < 20 && seen[0].len() >= 5 {
            let round = seen[0].keys().last().copied().unwrap_or(0) + 1;
            let input =
                SignedInput::sign(&author, &meshes[0].id(), round, submitted, &SetCell { x: 3, y: 3, alive: true })
                    .unwrap();
            meshes[(submitted % 5) as usize].submit(input).await.unwrap();
            submitted += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every member certified the same state in every round they both saw.
    for i in 1..6 {
        for (round, h) in &seen[i] {
            if let Some(h0) = seen[0].get(round) {
                assert_eq!(h, h0, "node {i} differs at round {round}");
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in &meshes[..5] {
        let s = m.status().await.unwrap();
        assert_eq!(s.stats.inputs_applied, 20, "each input applied once");
        assert_eq!(s.undecodable, 0);
    }
    for m in &meshes {
        m.stop();
    }
    for n in &nodes {
        n.shutdown().await;
    }
}
