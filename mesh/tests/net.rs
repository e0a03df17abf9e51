//! A mesh on real nodes (127.0.0.1): five members run the Life world for 100 rounds over the
//! mesh's topic and hold the same state hash every round; inputs submitted at any member are
//! applied once everywhere; an observer node on the topic never certifies a different state; a
//! non-member reads the newest certified state from the DHT and refuses a forged head; an
//! observer that joins a running mesh by id and a member restarted from S0 catch up from the DHT
//! and then certify the same states as the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::Key;
use suprnova_dht::wire::bounded::{BoundedString, BoundedVec};
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::net::{Mesh, get_state};
use suprnova_mesh::simplex::{Certificate, Sig, Signers, finalize_message};
use suprnova_mesh::store::{Head, Ref, RoundRecord, StateRef, heads_key};
use suprnova_mesh::world::{BatchHeader, Genesis, Limits, SignedInput, state_hash};
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
        cfg.dht.routing.exempt_local = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_agree_on_100_rounds_and_a_non_member_reads_the_state_from_the_dht() {
    let nodes = nodes(6).await;
    let members: Vec<Identity> = (0..5).map(|i| Identity::from_seed(seed(i))).collect();
    let board = Board::empty(16, 16);
    let genesis = life_genesis(&members, &board);
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
    let mut last_certified = None;
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
                if i == 0 && c.certificate.is_some() {
                    last_certified = Some(c);
                }
            }
        }
        if submitted < 20 && seen[0].len() >= 5 {
            let round = meshes[(submitted % 5) as usize].status().await.unwrap().round + 1;
            let input =
                SignedInput::sign(&author, &meshes[0].id(), round, submitted, &SetCell { x: 3, y: 3, alive: true })
                    .unwrap();
            // A pool holds at most 4 × max_inputs_per_author pending inputs of one author: past
            // that, the author waits for rounds to apply some.
            match meshes[(submitted % 5) as usize].submit(input).await {
                Ok(_) => submitted += 1,
                Err(suprnova_mesh::world::InputError::AuthorLimit) => {}
                Err(e) => panic!("{e}"),
            }
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
    // A non-member reads the newest certified state from the DHT and checks it.
    let mesh_id = meshes[0].id();
    let got = get_state::<Life>(&nodes[5], mesh_id).await.unwrap();
    while let Ok(c) = rx[0].try_recv() {
        seen[0].insert(c.round, c.state_hash);
    }
    assert!(got.round >= 90, "newest stored round {}", got.round);
    assert_eq!(got.state_hash, seen[0][&got.round], "the state members certified");
    assert_eq!(state_hash(&got.state), got.state_hash);
    assert!(got.rejected.is_empty(), "{:?}", got.rejected);
    // A rogue node plants a head for a far-future round whose record carries a certificate signed
    // by keys that are not members: it is rejected with its reason, and the real state is served.
    let c = last_certified.unwrap();
    let rogue: Vec<Identity> = (0..5).map(|i| Identity::from_seed([0xe0 + i; 32])).collect();
    let empty = Board::empty(16, 16);
    let header = BatchHeader { round: 1_000_000, state_hash: state_hash(&empty), inputs_hash: [0; 32] };
    let mut record = RoundRecord {
        height: c.proposal.height + 999_000,
        parent_height: c.proposal.height,
        parent: c.digest,
        payload: postcard::to_allocvec(&header).unwrap().as_slice().try_into().unwrap(),
        certificate: c.certificate.clone().unwrap(),
        state: StateRef::Inline(postcard::to_allocvec(&empty).unwrap().as_slice().try_into().unwrap()),
    };
    let digest = record.digest(&mesh_id);
    let msg = finalize_message(&mesh_id, record.height, &digest);
    record.certificate = Certificate {
        height: record.height,
        digest,
        votes: Signers::try_from((0..4u16).map(|i| (i, Sig(rogue[usize::from(i)].sign(&msg)))).collect::<Vec<_>>())
            .unwrap(),
    };
    let key = nodes[5].put_immutable(postcard::to_allocvec(&record).unwrap()).await.unwrap();
    let head = postcard::to_allocvec(&Head { round: 1_000_000, record: Ref::Immutable(key.0) }).unwrap();
    nodes[5].put_set_entry(Key(heads_key(&mesh_id)), &head, Duration::from_secs(60)).await.unwrap();
    let got = get_state::<Life>(&nodes[5], mesh_id).await.unwrap();
    while let Ok(c) = rx[0].try_recv() {
        seen[0].insert(c.round, c.state_hash);
    }
    assert!(got.round < 1_000_000 && got.round >= 90);
    assert_eq!(got.state_hash, seen[0][&got.round]);
    let rogue_key = Identity::from_seed(seed(5)).public_key();
    assert!(
        got.rejected.iter().any(|(w, why)| *w == rogue_key && why.to_string().contains("certificate does not verify")),
        "{:?}",
        got.rejected
    );
    for m in &meshes {
        let s = m.status().await.unwrap();
        assert_eq!(s.store_failed, 0, "{:?}", s.last_store_error);
        m.stop();
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

fn life_genesis(members: &[Identity], board: &Board) -> Genesis {
    Genesis {
        world: BoundedString::truncated("life"),
        version: 1,
        state_hash: state_hash(board),
        members: BoundedVec::try_from(members.iter().map(Identity::public_key).collect::<Vec<_>>()).unwrap(),
        round_interval_ms: 10,
        limits: Limits::default(),
        space: None,
    }
}

type Rounds = tokio::sync::broadcast::Receiver<std::sync::Arc<suprnova_mesh::core::Certified<Board>>>;

fn drain(rx: &mut Rounds, seen: &mut BTreeMap<u64, [u8; 32]>) {
    while let Ok(c) = rx.try_recv() {
        seen.insert(c.round, c.state_hash);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_observer_and_a_restarted_member_catch_up_from_the_dht() {
    let nodes = nodes(6).await;
    let members: Vec<Identity> = (0..5).map(|i| Identity::from_seed(seed(i))).collect();
    let board = Board::empty(16, 16);
    let genesis = life_genesis(&members, &board);
    // Members keep a signing guard, so the restarted one cannot sign again where it signed before.
    let dir = std::env::temp_dir().join(format!("suprnova-mesh-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = |i: usize| {
        let (node, g, b) = (nodes[i].clone(), genesis.clone(), board.clone());
        let guard = dir.join(format!("member-{i}.guard"));
        async move {
            let id = (i < 5).then(|| Identity::from_seed(seed(i)));
            let cfg = MeshConfig { guard_file: Some(guard), ..MeshConfig::default() };
            Mesh::start(node, Life, g, b, id, cfg).await.unwrap()
        }
    };
    let mut meshes = Vec::new();
    for i in 0..5 {
        meshes.push(start(i).await);
    }
    let mut rx0 = meshes[0].rounds();
    let mut seen0 = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let until = |rx0: &mut Rounds, seen0: &mut BTreeMap<u64, [u8; 32]>, n: u64| {
        drain(rx0, seen0);
        assert!(tokio::time::Instant::now() < deadline, "stuck at round {:?}", seen0.keys().last());
        seen0.keys().last().copied().unwrap_or(0) >= n
    };
    while !until(&mut rx0, &mut seen0, 30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An observer joins the running mesh by its id alone (genesis and state from the DHT);
    // member 4 stops.
    let observer = Mesh::join(nodes[5].clone(), Life, genesis.mesh_id(), None, MeshConfig::default()).await.unwrap();
    assert_eq!(observer.genesis(), &genesis);
    let mut rx5 = observer.rounds();
    let joined_at = *seen0.keys().last().unwrap();
    meshes[4].stop();
    while !until(&mut rx0, &mut seen0, joined_at + 30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Member 4 restarts from scratch (S0) on its node: it must not trust a peer, only the DHT.
    let restarted = start(4).await;
    let mut rx4 = restarted.rounds();
    let restarted_at = *seen0.keys().last().unwrap();
    let (mut seen4, mut seen5) = (BTreeMap::new(), BTreeMap::new());
    loop {
        drain(&mut rx4, &mut seen4);
        drain(&mut rx5, &mut seen5);
        let done = |s: &BTreeMap<u64, [u8; 32]>| s.keys().last().is_some_and(|r| *r >= restarted_at + 30);
        if until(&mut rx0, &mut seen0, restarted_at + 40) && done(&seen4) && done(&seen5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drain(&mut rx0, &mut seen0);
    for (who, seen) in [("restarted member", &seen4), ("late observer", &seen5)] {
        let mut matched = 0;
        for (round, h) in seen {
            if let Some(h0) = seen0.get(round) {
                assert_eq!(h, h0, "{who} differs at round {round}");
                matched += 1;
            }
        }
        assert!(matched >= 20, "{who} matched {matched} rounds");
    }
    assert!(restarted.status().await.unwrap().caught_up >= 1);
    // The guard file holds a reservation ahead of every height member 4 reached before and after.
    let reserved: u64 = std::fs::read_to_string(dir.join("member-4.guard")).unwrap().trim().parse().unwrap();
    assert!(reserved >= 100, "reserved up to {reserved}");
    // It started from a recent certified round, not from S0.
    assert!(*seen5.keys().next().unwrap() + 10 >= joined_at, "observer started at {:?}", seen5.keys().next());
    for m in meshes.iter().chain([&restarted, &observer]) {
        m.stop();
    }
    for n in &nodes {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_too_large_for_a_record_is_served_as_a_blob_and_old_blobs_are_dropped() {
    let nodes = nodes(4).await;
    let members: Vec<Identity> = (0..3).map(|i| Identity::from_seed(seed(i))).collect();
    // 128 × 128 cells: 2 KiB of state, more than one DHT value holds.
    let board = Board::empty(128, 128);
    let genesis =
        Genesis::for_world(&Life, &board, members.iter().map(Identity::public_key).collect(), 50, Limits::default())
            .unwrap();
    let mut meshes = Vec::new();
    for (i, node) in nodes.iter().enumerate().take(3) {
        let id = Some(Identity::from_seed(seed(i)));
        meshes.push(
            Mesh::start(node.clone(), Life, genesis.clone(), board.clone(), id, MeshConfig::default()).await.unwrap(),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = meshes[0].status().await.unwrap();
        if st.round >= 30 && st.stored >= 10 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at round {}", st.round);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A non-member reads it (the record points at a blob the members serve).
    let got = get_state::<Life>(&nodes[3], genesis.mesh_id()).await.unwrap();
    assert!(got.round >= 10);
    assert_eq!(got.state.w, 128);
    // Each member serves the blobs of its last two stored rounds, not one per round.
    for n in &nodes[..3] {
        let held = n.metrics().await.unwrap().blobs;
        assert!((1..=4).contains(&held), "{held} blobs held after 30 rounds");
    }
    for m in &meshes {
        m.stop();
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genesis_too_large_for_a_record_is_found_through_its_locator() {
    let nodes = nodes(3).await;
    // 40 members: the genesis is over 1,200 bytes, too large for one immutable record.
    let members: Vec<Identity> = (0..40).map(|i| Identity::from_seed(seed(i))).collect();
    let board = Board::empty(8, 8);
    let genesis =
        Genesis::for_world(&Life, &board, members.iter().map(Identity::public_key).collect(), 100, Limits::default())
            .unwrap();
    assert!(postcard::to_allocvec(&genesis).unwrap().len() > suprnova_mesh::store::MAX_IMMUTABLE);
    let id = Some(Identity::from_seed(seed(0)));
    let m = Mesh::start(nodes[0].clone(), Life, genesis.clone(), board, id, MeshConfig::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        match suprnova_mesh::net::get_genesis(&nodes[2], genesis.mesh_id()).await {
            Ok(g) => break g,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "genesis not found: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got, genesis);
    // A planted locator entry pointing at some other blob is skipped.
    let bogus = nodes[1].add_blob(b"not a genesis".to_vec());
    nodes[1].provide_blob(bogus).await.unwrap();
    let key = Key(suprnova_mesh::store::genesis_locator_key(&genesis.mesh_id()));
    nodes[1].put_set_entry(key, &bogus.0, Duration::from_secs(60)).await.unwrap();
    assert_eq!(suprnova_mesh::net::get_genesis(&nodes[2], genesis.mesh_id()).await.unwrap(), genesis);
    // A locator pointing at a 1 MiB blob (for an id with no genesis at all) is refused from the
    // blob's manifest, not downloaded.
    let fake = [0x3c; 32];
    let big = nodes[1].add_blob(vec![7; 1 << 20]);
    nodes[1].provide_blob(big).await.unwrap();
    nodes[1]
        .put_set_entry(Key(suprnova_mesh::store::genesis_locator_key(&fake)), &big.0, Duration::from_secs(60))
        .await
        .unwrap();
    let before = nodes[2].metrics().await.unwrap().blob_bytes_fetched;
    assert!(suprnova_mesh::net::get_genesis(&nodes[2], fake).await.is_err());
    let fetched = nodes[2].metrics().await.unwrap().blob_bytes_fetched - before;
    assert!(fetched < 64 << 10, "{fetched} blob bytes fetched for a planted locator");
    m.stop();
    for n in &nodes {
        n.shutdown().await;
    }
}
