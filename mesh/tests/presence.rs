//! The spatial index on real nodes (127.0.0.1): 1,000 agents spread over 8 nodes announce their
//! positions in 2-D and in 3-D; radius queries from every node return exactly the agents a
//! brute-force scan finds, before and after 300 of them move, including queries that start at a
//! crowded coarse level and descend. Hostile entries (a sybil flood filling a cell, garbage
//! values, positions outside their cell) are refused or dropped under a named reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Key, Record, SetEntry};
use suprnova_mesh::presence::{LevelWrite, PresenceError, Spatial, SpatialConfig};
use suprnova_mesh::spatial::{Position, Presence, Space, distance};
use suprnova_node::{Node, NodeConfig};
use tokio::sync::Semaphore;

fn seed(i: usize, tag: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[8] = tag;
    s
}

async fn nodes(n: usize) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = NodeConfig::with_seed(seed(i, 0x70), "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_local = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    // A second round of bootstraps so that every table knows every node.
    for n in &out {
        let _ = n.bootstrap(vec![out[0].target()]).await;
    }
    out
}

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn random_pos(rng: &mut ChaCha8Rng, s: &Space) -> Position {
    let mut p = [0.0; 3];
    for (a, v) in p.iter_mut().enumerate().take(usize::from(s.dims)) {
        *v = s.min[a] + unit(rng) * (s.max[a] - s.min[a]);
    }
    p
}

fn brute(agents: &[(Identity, Position)], c: &Position, r: f64, dims: u8) -> BTreeSet<[u8; 32]> {
    agents.iter().filter(|(_, p)| distance(c, p, dims) <= r).map(|(id, _)| id.public_key()).collect()
}

/// Announces every agent from its node (agent i lives on node i % n), 64 at a time.
async fn announce_all(idx: &[Spatial], agents: &Arc<Vec<(Identity, Position)>>, which: &[usize]) {
    let sem = Arc::new(Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for &i in which {
        let (idx, agents, sem) = (idx[i % idx.len()].clone(), agents.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let (id, pos) = &agents[i];
            let a = idx.announce_position(id, *pos, b"agent").await.unwrap();
            assert!(a.levels.iter().all(|(_, w)| matches!(w, LevelWrite::Stored(n) if *n >= 1)), "{a:?}");
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Runs `queries` random queries from every node and checks each against brute force.
async fn check(
    idx: &[Spatial],
    agents: &[(Identity, Position)],
    rng: &mut ChaCha8Rng,
    radii: &[f64],
    queries: usize,
) -> (u64, usize) {
    let space = idx[0].space().clone();
    let (mut descended, mut found) = (0, 0);
    for q in 0..queries {
        let c = random_pos(rng, &space);
        let r = radii[q % radii.len()];
        let got = idx[q % idx.len()].query_local(c, r).await.unwrap();
        assert!(got.complete, "query {q} at {c:?} r {r}: incomplete ({got:?})");
        let ids: BTreeSet<[u8; 32]> = got.agents.iter().map(|n| n.agent).collect();
        let want = brute(agents, &c, r, space.dims);
        assert_eq!(ids, want, "query {q} at {c:?} r {r} (level {}, {} cells)", got.level, got.cells_read);
        assert_eq!(ids.len(), got.agents.len(), "an agent reported twice");
        // Positions are the announced ones, nearest first.
        for n in &got.agents {
            let (_, p) = agents.iter().find(|(id, _)| id.public_key() == n.agent).unwrap();
            assert_eq!(&n.position, p);
            assert_eq!(b"agent".as_slice(), n.info.as_slice());
        }
        assert!(got.agents.windows(2).all(|w| w[0].distance <= w[1].distance));
        descended += got.descended;
        found += ids.len();
    }
    (descended, found)
}

async fn run(space: Space, max_cells: u64, radii: &[f64], tag: u8) {
    let nodes = nodes(8).await;
    let mesh = [tag; 32];
    let cfg = SpatialConfig { max_cells, max_reads: 512, ..SpatialConfig::default() };
    let idx: Vec<Spatial> =
        nodes.iter().map(|n| Spatial::new(n.clone(), mesh, space.clone(), cfg.clone()).unwrap()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(tag));
    let agents: Vec<(Identity, Position)> =
        (0..1000).map(|i| (Identity::from_seed(seed(i, tag)), random_pos(&mut rng, &space))).collect();
    let mut agents = Arc::new(agents);
    let all: Vec<usize> = (0..1000).collect();
    announce_all(&idx, &agents, &all).await;
    let (descended, found) = check(&idx, &agents, &mut rng, radii, 48).await;
    // The coarsest level is crowded (more agents per cell than a set holds), so wide queries
    // had to descend; and the queries found agents, so equality above was not vacuous.
    assert!(descended > 0, "no query descended into a crowded cell");
    assert!(found > 100, "queries found only {found} agents");

    // 300 agents move: half a short step (often the same cells), half anywhere.
    let movers: Vec<usize> = (0..300).map(|k| k * 3 + 1).collect();
    {
        let a = Arc::get_mut(&mut agents).unwrap();
        for (j, &i) in movers.iter().enumerate() {
            let p = a[i].1;
            a[i].1 = if j % 2 == 0 {
                let mut q = p;
                for (ax, v) in q.iter_mut().enumerate().take(usize::from(space.dims)) {
                    *v = (*v + (unit(&mut rng) - 0.5) * 40.0).clamp(space.min[ax], space.max[ax]);
                }
                q
            } else {
                random_pos(&mut rng, &space)
            };
        }
    }
    announce_all(&idx, &agents, &movers).await;
    let (_, found) = check(&idx, &agents, &mut rng, radii, 48).await;
    assert!(found > 100);
    // And from exactly where movers went: each is found at its new position.
    for &i in movers.iter().take(20) {
        let (id, p) = &agents[i];
        let got = idx[0].query_local(*p, 1.0).await.unwrap();
        assert!(got.agents.iter().any(|n| n.agent == id.public_key() && n.position == *p));
    }
    let s = idx[0].stats();
    assert_eq!(s.agents, 125, "node 0 hosts every 8th agent");
    assert_eq!((s.dropped_undecodable, s.dropped_outside, s.dropped_misplaced, s.incomplete), (0, 0, 0, 0));
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_return_exactly_the_agents_within_r_in_2d_before_and_after_moves() {
    let space = Space::new(2, [0.0; 3], [1000.0, 1000.0, 0.0], vec![2, 4, 6]).unwrap();
    run(space, 16, &[5.0, 40.0, 120.0, 220.0], 0x21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_return_exactly_the_agents_within_r_in_3d_before_and_after_moves() {
    let space = Space::new(3, [-500.0; 3], [500.0; 3], vec![1, 3, 5]).unwrap();
    run(space, 27, &[10.0, 60.0, 150.0, 300.0], 0x31).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_cell_garbage_and_misplaced_entries_are_refused_or_dropped_with_reasons() {
    let nodes = nodes(5).await;
    let space = Space::new(2, [0.0; 3], [1000.0, 1000.0, 0.0], vec![2, 6]).unwrap();
    let mesh = [0x5f; 32];
    let idx = Spatial::new(nodes[1].clone(), mesh, space.clone(), SpatialConfig::default()).unwrap();
    let spot: Position = [500.5, 500.5, 0.0];
    let fine = space.cell(&spot, 6).unwrap();
    let key = Key(space.cell_key(&mesh, fine));
    let value = |p: Position| {
        postcard::to_allocvec(&Presence::Here {
            position: p,
            node: [9; 32],
            info: BoundedBytes::try_from(b"x".as_slice()).unwrap(),
        })
        .unwrap()
    };
    // 64 sybil writers fill the finest cell with entries living an hour (longer than an honest
    // agent's 120 s), so the DHT refuses newcomers there rather than evicting the sybils.
    for i in 0..64 {
        let id = Identity::from_seed(seed(i, 0x5e));
        let e = SetEntry::sign(&id, &key, 1, 3600, &value(spot)).unwrap();
        let o = nodes[0].put(key, Record::SetEntry(e), Duration::from_secs(3600), None).await.unwrap();
        assert!(o.stored >= 1);
    }
    let honest = Identity::from_seed(seed(1, 0x5d));
    match idx.announce_position(&honest, [500.6, 500.6, 0.0], b"").await {
        Err(PresenceError::CellFull { level: 6 }) => {}
        other => panic!("expected CellFull at level 6, got {other:?}"),
    }
    assert!(idx.stats().cells_full >= 1);
    // A query over the flooded cell says its answer may be short.
    let got = idx.query_local(spot, 2.0).await.unwrap();
    assert!(!got.complete);
    assert_eq!(got.agents.len(), 64);
    assert_eq!(idx.stats().incomplete, 1);

    // In another cell: one garbage value, one entry claiming a position in another cell, one
    // outside the box, and one good one.
    let there: Position = [100.5, 100.5, 0.0];
    let key = Key(space.cell_key(&mesh, space.cell(&there, 6).unwrap()));
    let bad: Vec<Vec<u8>> =
        vec![vec![0xff, 0xff, 0xff], value([900.0, 900.0, 0.0]), value([-5.0, 100.5, 0.0]), value([100.6, 100.6, 0.0])];
    for (i, v) in bad.iter().enumerate() {
        let id = Identity::from_seed(seed(i, 0x5c));
        let e = SetEntry::sign(&id, &key, 1, 60, v).unwrap();
        nodes[2].put(key, Record::SetEntry(e), Duration::from_secs(60), None).await.unwrap();
    }
    let got = idx.query_local(there, 3.0).await.unwrap();
    assert_eq!(got.agents.len(), 1);
    assert_eq!(got.agents[0].agent, Identity::from_seed(seed(3, 0x5c)).public_key());
    assert_eq!((got.drops.undecodable, got.drops.misplaced, got.drops.outside), (1, 1, 1));
    let s = idx.stats();
    assert_eq!((s.dropped_undecodable, s.dropped_misplaced, s.dropped_outside), (1, 1, 1));

    // Bad calls are refused before anything is written.
    assert!(matches!(idx.announce_position(&honest, [2000.0, 1.0, 0.0], b"").await, Err(PresenceError::Spatial(_))));
    assert!(matches!(
        idx.announce_position(&honest, [1.0, 1.0, 0.0], &[0; 97]).await,
        Err(PresenceError::InfoTooLong(97))
    ));
    assert!(matches!(idx.query_local([1.0, 1.0, 0.0], -1.0).await, Err(PresenceError::Spatial(_))));
    // A withdrawn agent is no longer found.
    let a = Identity::from_seed(seed(7, 0x5b));
    idx.announce_position(&a, [300.5, 300.5, 0.0], b"").await.unwrap();
    assert_eq!(idx.query_local([300.5, 300.5, 0.0], 1.0).await.unwrap().agents.len(), 1);
    assert_eq!(idx.withdraw(&a).await, 2);
    assert!(idx.query_local([300.5, 300.5, 0.0], 1.0).await.unwrap().agents.is_empty());
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_rewritten_before_they_expire() {
    let nodes = nodes(4).await;
    let space = Space::new(2, [0.0; 3], [100.0, 100.0, 0.0], vec![1, 4]).unwrap();
    // Entries live 6 s; the handle re-writes those 2 s old, checking every second.
    let cfg = SpatialConfig { ttl: Duration::from_secs(6), ..SpatialConfig::default() };
    let idx = Spatial::new(nodes[1].clone(), [0x77; 32], space, cfg).unwrap();
    let agents: Vec<Identity> = (0..5).map(|i| Identity::from_seed(seed(i, 0x77))).collect();
    for (i, a) in agents.iter().enumerate() {
        idx.announce_position(a, [10.0 + i as f64, 10.0, 0.0], b"").await.unwrap();
    }
    let first = idx.stats().announces;
    assert_eq!(first, 5);
    // Well past the first entries' lifetime.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let got = idx.query_local([12.0, 10.0, 0.0], 5.0).await.unwrap();
    assert_eq!(got.agents.len(), 5, "refreshed entries are still there");
    assert!(idx.stats().announces >= first + 10, "each agent was re-written at least twice");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_whose_world_has_a_space_indexes_positions_and_one_without_refuses() {
    use suprnova_mesh::core::MeshConfig;
    use suprnova_mesh::life::{Board, Life};
    use suprnova_mesh::net::Mesh;
    use suprnova_mesh::world::{Genesis, Limits, WithSpace};
    let nodes = nodes(3).await;
    let me = Identity::from_seed(seed(0, 0x70));
    let space = Space::new(2, [0.0; 3], [16.0, 16.0, 0.0], vec![1, 3]).unwrap();
    let world = WithSpace { world: Life, space: space.clone() };
    let s0 = Board::empty(16, 16);
    let g = Genesis::for_world(&world, &s0, vec![me.public_key()], 50, Limits::default()).unwrap();
    assert_eq!(g.space.as_ref(), Some(&space));
    let mesh = Mesh::start(nodes[0].clone(), world, g, s0.clone(), Some(me), MeshConfig::default()).await.unwrap();
    let agent = Identity::from_seed([0xa1; 32]);
    mesh.announce_position(&agent, [3.0, 4.0, 0.0], b"cell").await.unwrap();
    let got = mesh.query_local([3.5, 4.0, 0.0], 1.0).await.unwrap();
    assert_eq!(got.agents.len(), 1);
    assert_eq!(got.agents[0].node, *nodes[0].id().as_bytes());
    assert_eq!(mesh.status().await.unwrap().spatial.unwrap().announces, 1);
    // Life alone has no space: its mesh has no index.
    let g2 = Genesis::for_world(&Life, &s0, vec![Identity::from_seed([0xb2; 32]).public_key()], 50, Limits::default())
        .unwrap();
    let plain = Mesh::start(nodes[1].clone(), Life, g2, s0, None, MeshConfig::default()).await.unwrap();
    assert!(matches!(plain.query_local([1.0, 1.0, 0.0], 1.0).await, Err(PresenceError::NoSpace)));
    assert!(plain.status().await.unwrap().spatial.is_none());
    mesh.stop();
    plain.stop();
    for n in &nodes {
        n.shutdown().await;
    }
}
