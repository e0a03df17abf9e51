//! Kademlia with real nodes over UDP on 127.0.0.1, in one process: 100 nodes bootstrap from one
//! seed, store and read 200 records of each kind, survive 30 % of the nodes stopping, refuse stale
//! and conflicting writes, and expire records. Every wait is bounded.
//!
//! `cargo test -p suprnova-dht --test kademlia -- --nocapture` prints the latency and hop figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_dht::identity::Identity;
use suprnova_dht::net::{self, NodeError, NodeHandle};
use suprnova_dht::proto::{DhtConfig, RequestError, Target};
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::message::error_code;
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
use tokio::task::JoinSet;
use tokio::time::timeout;

const N: usize = 100;
const PER_KIND: usize = 200;

fn config(replication: usize) -> DhtConfig {
    let mut cfg = DhtConfig::default();
    cfg.routing.exempt_local = true; // all nodes share 127.0.0.0/24
    cfg.replication = replication;
    // Loopback answers in microseconds; a dead node should cost little time.
    cfg.rpc_timeout = Duration::from_millis(500);
    cfg
}

async fn start(n: usize, cfg: &DhtConfig) -> Vec<NodeHandle> {
    let mut v = Vec::new();
    for i in 0..n {
        let mut seed = [0x5eu8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let (h, _) = net::spawn(Identity::from_seed(seed), "127.0.0.1:0".parse().unwrap(), cfg.clone()).await.unwrap();
        v.push(h);
    }
    v
}

/// Everyone joins through node 0, ten at a time.
async fn bootstrap_all(nodes: &[NodeHandle]) {
    let seed = nodes[0].record().clone();
    for chunk in nodes[1..].chunks(10) {
        let mut set = JoinSet::new();
        for h in chunk {
            let (h, seed) = (h.clone(), seed.clone());
            set.spawn(async move { timeout(Duration::from_secs(30), h.bootstrap(vec![Target::Record(seed)])).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().expect("bootstrap timed out").expect("bootstrap failed");
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn mutable(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> (Key, Record) {
    let m = MutableRecord::sign(id, salt, seq, value).unwrap();
    (m.key(), Record::Mutable(m))
}

fn set_entry(id: &Identity, key: &Key, seq: u64, ttl_s: u32, value: &[u8]) -> Record {
    let mut e = SetEntry {
        public_key: id.public_key(),
        seq,
        ttl_s,
        value: BoundedBytes::try_from(value).unwrap(),
        signature: [0; 64],
    };
    e.signature = id.sign(&e.signed_bytes(key).unwrap());
    Record::SetEntry(e)
}

/// 200 records of each kind: (key, record, is_set).
fn workload(rng: &mut ChaCha20Rng) -> Vec<(Key, Record, bool)> {
    let mut v = Vec::new();
    for i in 0..PER_KIND {
        let mut value = vec![0u8; 64 + (rng.next_u32() % 400) as usize];
        rng.fill_bytes(&mut value);
        v.push((
            Key::for_immutable(&value),
            Record::Immutable { value: BoundedBytes::try_from(&value[..]).unwrap() },
            false,
        ));
        let writer = Identity::from_seed([i as u8; 32]);
        let (k, r) = mutable(&writer, format!("salt-{i}").as_bytes(), 1 + i as u64, &value[..32]);
        v.push((k, r, false));
        // 40 sets of 5 members each.
        let set = Key(*blake3::hash(format!("topic-{}", i % 40).as_bytes()).as_bytes());
        v.push((set, set_entry(&writer, &set, 1, 3600, format!("member-{i}").as_bytes()), true));
    }
    v
}

/// One read: `get` for single records, `get_all` for set entries. Returns whether the record
/// came back, the hop of the node that served it, and the latency in ms.
async fn read_one(h: NodeHandle, k: Key, r: Record, is_set: bool) -> (bool, u32, f64) {
    let t = Instant::now();
    let got = if is_set {
        timeout(Duration::from_secs(60), h.get_all(k))
            .await
            .unwrap()
            .map(|v| (v.iter().any(|g| g.record == r), v.iter().map(|g| g.hop).max().unwrap_or(0)))
    } else {
        timeout(Duration::from_secs(60), h.get(k)).await.unwrap().map(|g| (g.record == r, g.hop))
    };
    let (ok, hop) = got.unwrap_or((false, 0));
    (ok, hop, t.elapsed().as_secs_f64() * 1e3)
}

/// Reads every item back from random nodes, 32 reads in flight.
async fn read_back(
    nodes: &[NodeHandle],
    items: &[(Key, Record, bool)],
    rng: &mut ChaCha20Rng,
) -> (usize, Vec<f64>, Vec<u32>) {
    let mut set = JoinSet::new();
    let mut todo = items.iter().cloned();
    let (mut ok, mut lat, mut hops) = (0, Vec::new(), Vec::new());
    loop {
        while set.len() < 32 {
            let Some((k, r, is_set)) = todo.next() else { break };
            let h = nodes[(rng.next_u32() as usize) % nodes.len()].clone();
            set.spawn(read_one(h, k, r, is_set));
        }
        let Some(res) = set.join_next().await else { break };
        let (found, hop, ms) = res.unwrap();
        lat.push(ms);
        if found {
            ok += 1;
            hops.push(hop);
        }
    }
    (ok, lat, hops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_nodes_bootstrap_store_survive_and_refuse() {
    // r = 8: stopping 30 % of the nodes at once loses a record only if all 8 replicas stop
    // (0.3^8 ≈ 7e-5 per record). With the default r = 3 it would be 0.3^3 ≈ 2.7 %.
    let cfg = config(8);
    let nodes = start(N, &cfg).await;
    let t = Instant::now();
    bootstrap_all(&nodes).await;
    // A second self-lookup by the early joiners, which met few peers when they joined.
    for h in &nodes[..10] {
        timeout(Duration::from_secs(30), h.bootstrap(vec![])).await.unwrap().unwrap();
    }
    let boot_s = t.elapsed().as_secs_f64();
    let mut sizes = Vec::new();
    for h in &nodes {
        sizes.push(h.stats().await.unwrap().table);
    }
    let min = *sizes.iter().min().unwrap();
    println!("bootstrap: {N} nodes in {boot_s:.2} s; routing tables min {min}, max {}", sizes.iter().max().unwrap());
    assert!(min >= 20, "a routing table holds only {min} peers: {sizes:?}");

    // Puts from random nodes.
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let items = workload(&mut rng);
    let mut put_ms = Vec::new();
    let mut put_hops = Vec::new();
    for chunk in items.chunks(32) {
        let mut set = JoinSet::new();
        for (k, r, _) in chunk.iter().cloned() {
            let h = nodes[(rng.next_u32() as usize) % N].clone();
            set.spawn(async move {
                let t = Instant::now();
                let res = timeout(Duration::from_secs(60), h.put(k, r, Duration::from_secs(3600), None)).await.unwrap();
                (res, t.elapsed().as_secs_f64() * 1e3)
            });
        }
        while let Some(r) = set.join_next().await {
            let (res, ms) = r.unwrap();
            let out = res.expect("put failed");
            assert!(out.stored >= 1);
            put_ms.push(ms);
            put_hops.push(f64::from(out.hops));
        }
    }
    println!(
        "put: {} records, latency p50 {:.2} ms p99 {:.2} ms, lookup hops p50 {:.0} max {:.0}",
        put_ms.len(),
        pct(&mut put_ms, 50.0),
        pct(&mut put_ms, 99.0),
        pct(&mut put_hops, 50.0),
        pct(&mut put_hops, 100.0)
    );

    let (ok, mut lat, hops) = read_back(&nodes, &items, &mut rng).await;
    let mut hops: Vec<f64> = hops.into_iter().map(f64::from).collect();
    println!(
        "get: {ok}/{} read back, latency p50 {:.2} ms p99 {:.2} ms, hops of the answering node p50 {:.0} max {:.0}",
        items.len(),
        pct(&mut lat, 50.0),
        pct(&mut lat, 99.0),
        pct(&mut hops, 50.0),
        pct(&mut hops, 100.0)
    );
    assert_eq!(ok, items.len(), "every record readable from another random node");

    // Stale sequence numbers and compare-and-swap conflicts are refused by the replicas.
    let writer = Identity::from_seed([200; 32]);
    let (k, r2) = mutable(&writer, b"cas", 2, b"two");
    nodes[3].put(k, r2, Duration::from_secs(3600), Some(0)).await.unwrap();
    let (_, r1) = mutable(&writer, b"cas", 1, b"one");
    let e = nodes[4].put(k, r1, Duration::from_secs(3600), None).await.unwrap_err();
    assert!(matches!(e, NodeError::Request(RequestError::Refused(error_code::STALE))), "{e:?}");
    let (_, r3) = mutable(&writer, b"cas", 3, b"three");
    let e = nodes[5].put(k, r3.clone(), Duration::from_secs(3600), Some(1)).await.unwrap_err();
    assert!(matches!(e, NodeError::Request(RequestError::Refused(error_code::CAS_MISMATCH))), "{e:?}");
    nodes[5].put(k, r3.clone(), Duration::from_secs(3600), Some(2)).await.unwrap();
    assert_eq!(nodes[60].get(k).await.unwrap().record, r3);

    // Stop 30 % of the nodes (never the ones we read through); every record stays readable.
    let mut stopped = 0;
    for (i, h) in nodes.iter().enumerate() {
        if i % 10 < 3 {
            h.shutdown().await;
            stopped += 1;
        }
    }
    assert_eq!(stopped, 30);
    let alive: Vec<NodeHandle> =
        nodes.iter().enumerate().filter(|(i, _)| i % 10 >= 3).map(|(_, h)| h.clone()).collect();
    let t = Instant::now();
    let (ok, mut lat, _) = read_back(&alive, &items, &mut rng).await;
    println!(
        "after stopping 30 nodes: {ok}/{} read back in {:.1} s, latency p50 {:.2} ms p99 {:.2} ms",
        items.len(),
        t.elapsed().as_secs_f64(),
        pct(&mut lat, 50.0),
        pct(&mut lat, 99.0)
    );
    assert_eq!(ok, items.len(), "records lost after 30 % of the nodes stopped");
    for h in &alive {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_when_nobody_republishes() {
    let nodes = start(12, &config(3)).await;
    bootstrap_all(&nodes).await;
    let value = b"short-lived".to_vec();
    let key = Key::for_immutable(&value);
    let rec = Record::Immutable { value: BoundedBytes::try_from(&value[..]).unwrap() };
    let out = nodes[1].put(key, rec.clone(), Duration::from_secs(2), None).await.unwrap();
    assert!(out.stored >= 3);
    assert_eq!(nodes[7].get(key).await.unwrap().record, rec);
    // The publisher leaves (it would republish), the copies lapse.
    nodes[1].shutdown().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = nodes[7].get(key).await.unwrap_err();
    assert!(matches!(e, NodeError::Request(RequestError::NotFound)), "{e:?}");
    let mut expired = 0;
    for h in nodes.iter().skip(2) {
        let s = h.stats().await.unwrap();
        assert_eq!(s.records, 0);
        expired += s.dht.records_expired;
    }
    assert!(expired >= 2, "expired {expired}");
    for h in &nodes {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_without_bootstrap_and_serves_its_records() {
    use suprnova_dht::identity::NodeId;
    use suprnova_dht::net::NodeOptions;
    let dir = std::env::temp_dir().join(format!("suprnova-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(3);
    let mut nodes = start(12, &cfg).await;
    // Node X keeps its state on disk.
    let x_seed = [0x77u8; 32];
    let opts = NodeOptions { database: Some(dir.join("dht.redb")), snapshot_every: Duration::from_millis(200) };
    let (x, _) =
        net::spawn_with(Identity::from_seed(x_seed), "127.0.0.1:0".parse().unwrap(), cfg.clone(), opts.clone())
            .await
            .unwrap();
    assert_eq!(x.restored().unwrap().peers, 0);
    let x_addr = x.local_addr();
    nodes.push(x.clone());
    bootstrap_all(&nodes).await;
    // A value whose key is closer to X than to anyone else, so X is one of its 3 replicas.
    let ids: Vec<NodeId> = nodes.iter().map(|h| h.id()).collect();
    let (key, rec) = (0u32..)
        .map(|i| {
            let v = format!("x-holds-{i}").into_bytes();
            (Key::for_immutable(&v), Record::Immutable { value: BoundedBytes::try_from(&v[..]).unwrap() })
        })
        .find(|(k, _)| ids.iter().min_by_key(|id| NodeId(k.0).distance(id)) == Some(&x.id()))
        .unwrap();
    let out = nodes[1].put(key, rec.clone(), Duration::from_secs(3600), None).await.unwrap();
    assert_eq!(out.stored, 3);
    assert_eq!(x.stats().await.unwrap().records, 1);
    let holders: Vec<usize> = {
        let mut v = Vec::new();
        for (i, h) in nodes.iter().enumerate() {
            if h.id() != x.id() && h.stats().await.unwrap().records == 1 {
                v.push(i);
            }
        }
        v
    };
    assert_eq!(holders.len(), 2);

    // X stops (saving its state) and comes back on the same address with no bootstrap address.
    x.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (x2, _) = net::spawn_with(Identity::from_seed(x_seed), x_addr, cfg.clone(), opts).await.unwrap();
    assert_eq!(x2.id(), x.id());
    let restored = x2.restored().unwrap();
    assert!(restored.peers >= 10, "{restored:?}");
    assert_eq!(restored.records, 1);
    let peers = timeout(Duration::from_secs(30), x2.bootstrap(vec![])).await.unwrap().unwrap();
    assert!(peers >= 10, "rejoined with {peers} peers");
    // The other replicas leave; a reader that never held the record gets it from X.
    for &i in &holders {
        nodes[i].shutdown().await;
    }
    let reader = nodes.iter().enumerate().find(|(i, h)| !holders.contains(i) && h.id() != x.id() && *i != 1).unwrap().1;
    let got = timeout(Duration::from_secs(30), reader.get(key)).await.unwrap().unwrap();
    assert_eq!(got.record, rec);
    // X serves it, unless (on a loaded machine, where the shutdowns take seconds) replica repair
    // has already copied it to a node the reader asks first; X must still hold it either way.
    // (CI saw the second case once: the served-by-X assertion alone was timing-dependent.)
    let held = x2.stats().await.unwrap().records;
    assert!(got.from == x2.id() || held == 1, "served by {:?}; X holds {held}", got.from);
    x2.shutdown().await;
    for h in &nodes {
        h.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
