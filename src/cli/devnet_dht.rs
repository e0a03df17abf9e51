//! The devnet's DHT phases: every node joins through one seed, then puts and gets of each record
//! kind, one at a time from random nodes, so the latencies are the protocol's and not a queue's.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::proto::{DEFAULT_TTL, Target};
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
use suprnova_node::Node;
use tokio::task::JoinSet;

use super::devnet_common::{Latency, picker};
use super::{percentiles_ms, random_seed};

/// Bootstrap figures.
#[derive(Serialize, Default, Clone)]
pub struct Boot {
    /// Nodes that joined (all but the seed).
    pub joined: usize,
    /// Seconds until every join returned.
    pub all_joined_s: f64,
    /// Table size every node had to reach: 20, or n − 1 in a smaller devnet.
    pub table_goal: usize,
    /// Seconds from the first join until every routing table held `table_goal` peers.
    pub until_goal_s: Option<f64>,
    /// Smallest and largest routing table afterwards.
    pub table_min: usize,
    /// Largest routing table afterwards.
    pub table_max: usize,
}

async fn table_sizes(nodes: &[Node]) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(nodes.len());
    for h in nodes {
        out.push(h.dht_stats().await?.table);
    }
    Ok(out)
}

/// Every node but the seed joins through node 0, all at once; meanwhile the routing tables are
/// watched until each holds 20 peers.
pub async fn bootstrap(nodes: &[Node], bar: &indicatif::ProgressBar) -> Result<Boot> {
    let t = Instant::now();
    let seed = nodes.first().map(|h| h.record().clone()).ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let goal = 20.min(nodes.len().saturating_sub(1));
    let mut set = JoinSet::new();
    for h in nodes.get(1..).unwrap_or(&[]) {
        let (h, seed) = (h.clone(), seed.clone());
        set.spawn(async move { h.bootstrap(vec![Target::Record(seed)]).await });
    }
    bar.set_length(nodes.len() as u64);
    let mut joins_done = None;
    let mut until_goal = None;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while (joins_done.is_none() || until_goal.is_none()) && Instant::now() < deadline {
        while let Some(r) = set.try_join_next() {
            r??;
        }
        if joins_done.is_none() && set.is_empty() {
            joins_done = Some(t.elapsed().as_secs_f64());
        }
        if until_goal.is_none() {
            let sizes = table_sizes(nodes).await?;
            let ready = sizes.iter().filter(|&&s| s >= goal).count();
            bar.set_position(ready as u64);
            if ready == nodes.len() {
                until_goal = Some(t.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let sizes = table_sizes(nodes).await?;
    Ok(Boot {
        joined: nodes.len().saturating_sub(1),
        all_joined_s: joins_done.unwrap_or_else(|| t.elapsed().as_secs_f64()),
        table_goal: goal,
        until_goal_s: until_goal,
        table_min: sizes.iter().copied().min().unwrap_or(0),
        table_max: sizes.iter().copied().max().unwrap_or(0),
    })
}

/// Figures for one record kind.
#[derive(Serialize, Default, Clone)]
pub struct KindFigures {
    /// immutable, mutable or set entry.
    pub kind: &'static str,
    /// Operations of each sort.
    pub count: usize,
    /// Puts stored on at least one node.
    pub puts_ok: usize,
    /// Put latency.
    pub put: Latency,
    /// Gets that returned the record put.
    pub gets_ok: usize,
    /// Get latency (from a random node, usually not the writer).
    pub get: Latency,
    /// Lookup hops of the answering node, median and largest.
    pub hops_p50: f64,
    /// Largest hop count.
    pub hops_max: f64,
    /// What went wrong, if anything (first 5).
    pub failures: Vec<String>,
    /// Failures in all.
    pub failure_count: usize,
}

impl KindFigures {
    fn fail(&mut self, what: String) {
        self.failure_count += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }
}

/// A record put, kept for reading back later: its kind, key, the record and the nodes that
/// stored it.
pub struct Item {
    /// immutable, mutable or set entry.
    pub kind: &'static str,
    /// Where.
    pub key: Key,
    /// What.
    pub record: Record,
    /// Replicas that acknowledged the store.
    pub replicas: Vec<NodeId>,
}

/// Reads `rec` under `key` through `h`; Ok(Some(hop)) when the same record came back.
pub async fn read_back(h: &Node, key: Key, rec: &Record) -> Result<Option<u32>, String> {
    let got = if matches!(rec, Record::SetEntry(_)) {
        h.get_all(key).await.map(|v| v.into_iter().find(|g| &g.record == rec))
    } else {
        h.get(key).await.map(|g| Some(g).filter(|g| &g.record == rec))
    };
    got.map(|g| g.map(|g| g.hop)).map_err(|e| e.to_string())
}

fn mutable(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> Result<(Key, Record)> {
    let m = MutableRecord::sign(id, salt, seq, value)?;
    Ok((m.key(), Record::Mutable(m)))
}

fn set_entry(id: &Identity, key: &Key, value: &[u8]) -> Result<Record> {
    Ok(Record::SetEntry(SetEntry::sign(id, key, 1, 300, value)?))
}

/// `n` puts and `n` gets of each record kind, one at a time from random nodes.
pub async fn records(nodes: &[Node], n: usize, bar: &indicatif::ProgressBar) -> Result<(Vec<KindFigures>, Vec<Item>)> {
    let mut out = Vec::new();
    let mut kept: Vec<Item> = Vec::new();
    let mut pick = picker()?;
    bar.set_length(6 * n as u64);
    for kind in ["immutable", "mutable", "set entry"] {
        let mut f = KindFigures { kind, count: n, ..KindFigures::default() };
        let writer = Identity::from_seed(random_seed()?);
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let value = format!("devnet {kind} {i} {}", hex::encode(random_seed()?));
            let (key, rec) = match kind {
                "immutable" => (
                    Key::for_immutable(value.as_bytes()),
                    Record::Immutable { value: BoundedBytes::try_from(value.as_bytes())? },
                ),
                "mutable" => mutable(&writer, format!("salt {i}").as_bytes(), 1, value.as_bytes())?,
                _ => {
                    let key = Key(*blake3::hash(format!("devnet topic {i}").as_bytes()).as_bytes());
                    (key, set_entry(&writer, &key, value.as_bytes())?)
                }
            };
            items.push((key, rec));
        }
        let (mut put_ms, mut get_ms, mut hops) = (Vec::new(), Vec::new(), Vec::new());
        let mut replicas = Vec::with_capacity(n);
        for (key, rec) in &items {
            let Some(h) = nodes.get(pick(nodes.len())) else { continue };
            let t = Instant::now();
            let (result, answers) = h.put_reported(*key, rec.clone(), DEFAULT_TTL, true).await;
            match result {
                Ok(_) => {
                    put_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    f.puts_ok += 1;
                }
                Err(e) => f.fail(format!("put: {e}")),
            }
            let stored: Vec<_> = answers.into_iter().filter(|(_, r)| r.is_ok()).map(|(peer, _)| peer).collect();
            replicas.push(stored);
            bar.inc(1);
        }
        for (key, rec) in &items {
            let Some(h) = nodes.get(pick(nodes.len())) else { continue };
            let t = Instant::now();
            match read_back(h, *key, rec).await {
                Ok(Some(hop)) => {
                    get_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    hops.push(f64::from(hop));
                    f.gets_ok += 1;
                }
                Ok(None) => f.fail("get: a different record came back".into()),
                Err(e) => f.fail(format!("get: {e}")),
            }
            bar.inc(1);
        }
        f.put = Latency::of(&mut put_ms);
        f.get = Latency::of(&mut get_ms);
        let [h50, hmax] = percentiles_ms(&mut hops, [50.0, 100.0]);
        (f.hops_p50, f.hops_max) = (h50, hmax);
        kept.extend(items.into_iter().zip(replicas).map(|((key, record), replicas)| Item {
            kind,
            key,
            record,
            replicas,
        }));
        out.push(f);
    }
    Ok((out, kept))
}

/// How record replicas fared after nodes stopped.
pub struct Restored {
    /// Keys with fewer than `want` live copies at the first count.
    pub below_at_start: usize,
    /// When every key had `want` live copies again (since `since`), if it happened in time.
    pub all_restored_s: Option<f64>,
    /// Keys with `want` live copies at the last count.
    pub restored: usize,
}

/// Counts the live copies of each key on `survivors` every 250 ms until every key has `want`
/// of them or `limit` passes.
pub async fn replicas_restored(
    survivors: &[Node],
    keys: Vec<Key>,
    want: usize,
    since: Instant,
    limit: Duration,
) -> Restored {
    let mut out = Restored { below_at_start: 0, all_restored_s: None, restored: 0 };
    for round in 0.. {
        let mut copies = vec![0usize; keys.len()];
        for h in survivors {
            if let Ok(held) = h.holds(keys.clone()).await {
                for (c, yes) in copies.iter_mut().zip(held) {
                    *c += usize::from(yes);
                }
            }
        }
        let full = copies.iter().filter(|c| **c >= want).count();
        if round == 0 {
            out.below_at_start = keys.len() - full;
        }
        out.restored = full;
        if full == keys.len() {
            out.all_restored_s = Some(since.elapsed().as_secs_f64());
            break;
        }
        if since.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

/// Every 10 s, until the process ends: what the DHT did in those 10 s, summed over `nodes` (queries
/// by kind, requests, failures, retransmissions, repair, drops by reason), one line on stderr.
pub async fn trace(nodes: Vec<Node>) {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut now: BTreeMap<String, u64> = BTreeMap::new();
        let mut add = |k: &str, v: u64| *now.entry(k.to_string()).or_default() += v;
        for h in &nodes {
            let Ok(s) = h.dht_stats().await else { continue };
            for (k, v) in &s.dht.query_latency {
                add(&format!("queries_{k}"), v.count);
            }
            add("queries_queued", s.dht.queries_queued);
            add("rpcs", s.dht.rpcs_sent);
            add("rpcs_failed", s.dht.rpcs_failed);
            add("retransmits", s.dht.retransmits);
            add("resends_skipped", s.dht.resends_skipped);
            add("repair_stores", s.dht.repair_stores);
            add("stores_accepted", s.dht.stores_accepted);
            add("handshakes", s.channel.handshakes_completed);
            add("packets_in", s.channel.packets_in);
            for (r, c) in s.channel.drops.nonzero() {
                add(&format!("drop_{}", r.name()), c);
            }
        }
        let delta: Vec<String> = now
            .iter()
            .map(|(k, v)| (k, v.saturating_sub(last.get(k).copied().unwrap_or(0))))
            .filter(|(_, d)| *d > 0)
            .map(|(k, d)| format!("{k}={d}"))
            .collect();
        eprintln!("devnet trace (10 s): {}", delta.join(" "));
        last = now;
    }
}
