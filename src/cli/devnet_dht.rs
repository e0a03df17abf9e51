//! The devnet's DHT phases: every node joins through one seed, then puts and gets of each record
//! kind, one at a time from random nodes, so the latencies are the protocol's and not a queue's.

use std::time::Instant;

use anyhow::Result;
use suprnova_dht::identity::Identity;
use suprnova_dht::net::NodeHandle;
use suprnova_dht::proto::{DEFAULT_TTL, Target};
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Key, MutableRecord, Record, SetEntry};
use tokio::task::JoinSet;

use super::{percentiles_ms, random_seed};

/// Bootstrap figures.
pub struct Boot {
    secs: f64,
    min: usize,
    max: usize,
    nodes: usize,
}

impl Boot {
    /// Prints the bootstrap line.
    pub fn print(&self) {
        println!(
            "  bootstrap             {} nodes joined through one seed in {:.2} s; routing tables hold {}..{} peers",
            self.nodes, self.secs, self.min, self.max
        );
    }
}

/// Every node but the seed joins through node 0, ten at a time.
pub async fn bootstrap(nodes: &[NodeHandle]) -> Result<Boot> {
    let t = Instant::now();
    let seed = nodes.first().map(|h| h.record().clone()).ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    for chunk in nodes.get(1..).unwrap_or(&[]).chunks(10) {
        let mut set = JoinSet::new();
        for h in chunk {
            let (h, seed) = (h.clone(), seed.clone());
            set.spawn(async move { h.bootstrap(vec![Target::Record(seed)]).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let (mut min, mut max) = (usize::MAX, 0);
    for h in nodes {
        let n = h.stats().await?.table;
        min = min.min(n);
        max = max.max(n);
    }
    Ok(Boot { secs, min, max, nodes: nodes.len() })
}

/// Figures for one record kind.
pub struct KindFigures {
    kind: &'static str,
    put_ms: Vec<f64>,
    get_ms: Vec<f64>,
    hops: Vec<f64>,
    puts_ok: usize,
    gets_ok: usize,
    total: usize,
    /// What went wrong, if anything.
    pub failures: Vec<String>,
}

impl KindFigures {
    /// Prints the put and get lines.
    pub fn print(&mut self) {
        let [p50, p99] = percentiles_ms(&mut self.put_ms, [50.0, 99.0]);
        let [g50, g99] = percentiles_ms(&mut self.get_ms, [50.0, 99.0]);
        let [h50, hmax] = percentiles_ms(&mut self.hops, [50.0, 100.0]);
        println!(
            "  put {:<18}{}/{} stored; latency p50 {p50:.2} ms, p99 {p99:.2} ms",
            self.kind, self.puts_ok, self.total
        );
        println!(
            "  get {:<18}{}/{} read from another node; latency p50 {g50:.2} ms, p99 {g99:.2} ms; hops p50 {h50:.0}, max {hmax:.0}",
            self.kind, self.gets_ok, self.total
        );
    }
}

fn mutable(id: &Identity, salt: &[u8], seq: u64, value: &[u8]) -> Result<(Key, Record)> {
    let m = MutableRecord::sign(id, salt, seq, value)?;
    Ok((m.key(), Record::Mutable(m)))
}

fn set_entry(id: &Identity, key: &Key, value: &[u8]) -> Result<Record> {
    Ok(Record::SetEntry(SetEntry::sign(id, key, 1, 300, value)?))
}

/// `n` puts and `n` gets of each record kind, one at a time.
pub async fn records(nodes: &[NodeHandle], n: usize) -> Result<Vec<KindFigures>> {
    let mut out = Vec::new();
    let mut pick = {
        let mut x = u64::from_le_bytes(random_seed()?.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([7; 8]));
        move |len: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % len.max(1) as u64) as usize
        }
    };
    for kind in ["immutable", "mutable", "set entry"] {
        let mut f = KindFigures {
            kind,
            put_ms: Vec::new(),
            get_ms: Vec::new(),
            hops: Vec::new(),
            puts_ok: 0,
            gets_ok: 0,
            total: n,
            failures: Vec::new(),
        };
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
        for (key, rec) in &items {
            let Some(h) = nodes.get(pick(nodes.len())) else { continue };
            let t = Instant::now();
            match h.put(*key, rec.clone(), DEFAULT_TTL, None).await {
                Ok(_) => {
                    f.put_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    f.puts_ok += 1;
                }
                Err(e) => f.failures.push(format!("put: {e}")),
            }
        }
        for (key, rec) in &items {
            let Some(h) = nodes.get(pick(nodes.len())) else { continue };
            let t = Instant::now();
            let got = if kind == "set entry" {
                h.get_all(*key).await.map(|v| v.into_iter().find(|g| &g.record == rec))
            } else {
                h.get(*key).await.map(|g| Some(g).filter(|g| &g.record == rec))
            };
            match got {
                Ok(Some(g)) => {
                    f.get_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    f.hops.push(f64::from(g.hop));
                    f.gets_ok += 1;
                }
                Ok(None) => f.failures.push("get: a different record came back".into()),
                Err(e) => f.failures.push(format!("get: {e}")),
            }
        }
        out.push(f);
    }
    Ok(out)
}
