//! Attacks on a real node (127.0.0.1 only), shared by the adversarial test suite
//! (`tests/adversarial.rs`, short runs with assertions) and the `attacks` example (longer runs in
//! release that print figures).
//!
//! Each attack runs against a fresh network: a victim `Node`, two honest `Node`s, and records put
//! through them. While the attacker sends, an honest node pings the victim every 20 ms over its
//! established session (the honest view: answered share and latency). Afterwards the victim's
//! counters are compared with their values before the attack, and every record the victim held is
//! read back from it and compared byte for byte.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use suprnova_dht::handshake::build_initiation;
use suprnova_dht::identity::{Identity, NodeRecord};
use suprnova_dht::proto::{Dht, DhtConfig, DhtEvent, Target};
use suprnova_dht::stats::DropReason;
use suprnova_dht::testing::Adversary;
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Body, Key, Message, MutableRecord, Record, WireAddr};
use suprnova_gossip::net::transport::kind;
use suprnova_gossip::net::{Transport, TransportOptions};
use suprnova_gossip::proto::{Frame, encode_frame};
use suprnova_gossip::proto::{hyparview, plumtree};
use suprnova_gossip::wire::{Envelope, TopicId, encode_contact};
use suprnova_node::{Metrics, Node, NodeConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The topic the gossip attack targets.
pub const TOPIC: &str = "attacked";

/// What can be sent at the victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Random bytes of random length (0–1500), from 16 source ports.
    RandomBytes,
    /// DHT packets of every type, truncated or padded past 1,200 bytes.
    Malformed,
    /// Transport packets of a genuine session, captured and sent again (from the same address and
    /// from others).
    Replay,
    /// Valid, fresh handshake initiations from 256 identities on 64 source ports.
    Handshakes,
    /// An authenticated peer storing forged records (bad signatures, wrong keys, forged higher
    /// seqs of records the victim holds), oversized values and a flood of valid ones.
    Stores,
    /// A peer in the victim's table that answers every FindNode with colluders only, while the
    /// victim runs lookups.
    Colluders,
    /// A topic neighbour sending broadcasts with bad signatures, replays and stale timestamps.
    Gossip,
}

impl Attack {
    /// Every attack, in the order the suite runs them.
    pub const ALL: [Attack; 7] = [
        Attack::RandomBytes,
        Attack::Malformed,
        Attack::Replay,
        Attack::Handshakes,
        Attack::Stores,
        Attack::Colluders,
        Attack::Gossip,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Attack::RandomBytes => "random bytes",
            Attack::Malformed => "truncated/oversized",
            Attack::Replay => "replayed transport",
            Attack::Handshakes => "handshakes, many ports",
            Attack::Stores => "forged/oversized stores",
            Attack::Colluders => "colluder Nodes replies",
            Attack::Gossip => "gossip bad sig/replay",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The attack.
    pub attack: Attack,
    /// Packets (or frames, or messages) the attacker sent.
    pub sent: u64,
    /// How long it sent.
    pub elapsed: Duration,
    /// Honest pings sent and answered during the attack.
    pub pings: (u64, u64),
    /// Honest ping round trips, milliseconds, sorted.
    pub rtts_ms: Vec<f64>,
    /// Victim drop counters that grew, by reason (DHT reasons and the gossip layer's).
    pub drops: BTreeMap<String, u64>,
    /// Rate-limit refusals that grew, by limit.
    pub limited: BTreeMap<String, u64>,
    /// Stores refused that grew, by reason.
    pub refused: BTreeMap<String, u64>,
    /// The victim's metrics after the attack.
    pub after: Metrics,
    /// Records the victim held before, and how many it still serves unchanged.
    pub records: (usize, usize),
    /// Attack-specific outcome (lookups found, honest broadcasts delivered, …).
    pub extra: BTreeMap<&'static str, u64>,
    /// Process RSS before, and its peak during the attack, KiB (Linux; 0 elsewhere). The process
    /// holds all three nodes and the attacker.
    pub rss_kb: (u64, u64),
    /// Datagrams the victim's socket handed to its DHT side during the attack (attack and honest
    /// traffic; loopback drops the rest when the socket buffer overflows).
    pub dht_in: u64,
    /// Of those, dropped on the DHT side's full queue before the core saw them.
    pub dht_queue_full: u64,
    /// Handshake initiations the victim answered with a fresh response during the attack.
    pub handshakes_answered: u64,
}

impl Report {
    /// Share of honest pings answered, percent.
    pub fn answered_pct(&self) -> f64 {
        if self.pings.0 == 0 { 0.0 } else { 100.0 * self.pings.1 as f64 / self.pings.0 as f64 }
    }

    /// Percentile of honest ping RTTs, milliseconds.
    pub fn rtt(&self, p: f64) -> f64 {
        if self.rtts_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.rtts_ms.len() - 1) as f64 * p).round() as usize;
        self.rtts_ms[i.min(self.rtts_ms.len() - 1)]
    }

    /// Attack packets per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A drop counter's growth.
    pub fn drop(&self, r: DropReason) -> u64 {
        self.drops.get(r.name()).copied().unwrap_or(0)
    }
}

/// The victim and its honest peers.
pub struct Net {
    /// Node 0.
    pub victim: Node,
    /// Nodes 1 and 2.
    pub honest: Vec<Node>,
    /// Keys the victim held after the puts, with their values.
    pub held: Vec<(Key, Vec<u8>)>,
    /// The victim's subscription (gossip attack).
    pub sub: Option<suprnova_node::Subscription>,
}

fn seed(i: usize, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s
}

fn node_config(i: usize, tag: u8) -> NodeConfig {
    let mut cfg = NodeConfig::with_seed(seed(i, tag), "127.0.0.1:0".parse().unwrap());
    cfg.dht.routing.exempt_local = true;
    cfg.transport.connect_timeout = Duration::from_secs(2);
    cfg
}

/// A victim and two honest nodes, joined, with 30 immutable records put through the honest ones
/// (each held by r = 3 of the 3 nodes).
pub async fn network(tag: u8, gossip: bool) -> Net {
    let victim = Node::spawn(node_config(0, tag)).await.unwrap();
    let mut honest = Vec::new();
    for i in 1..3 {
        let n = Node::spawn(node_config(i, tag)).await.unwrap();
        n.bootstrap(vec![victim.target()]).await.unwrap();
        honest.push(n);
    }
    let mut keys = Vec::new();
    for i in 0..30u32 {
        let value = format!("record {i} of the victim's network, tag {tag}").into_bytes();
        let key = honest[(i % 2) as usize].put_immutable(value.clone()).await.unwrap();
        keys.push((key, value));
    }
    let holds = victim.holds(keys.iter().map(|k| k.0).collect()).await.unwrap();
    let held: Vec<(Key, Vec<u8>)> = keys.into_iter().zip(holds).filter(|(_, h)| *h).map(|(k, _)| k).collect();
    let sub = if gossip {
        let sub = victim.subscribe(TOPIC).await.unwrap();
        let mut hs = Vec::new();
        for h in &honest {
            hs.push(h.subscribe(TOPIC).await.unwrap());
        }
        // Everybody has a neighbour in the topic (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in std::iter::once(&victim).chain(honest.iter()) {
            while n.topic_info(TOPIC).await.is_none_or(|t| t.active.is_empty()) {
                assert!(Instant::now() < deadline, "topic did not form");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(hs);
        Some(sub)
    } else {
        None
    };
    Net { victim, honest, held, sub }
}

impl Net {
    /// Stops every node.
    pub async fn stop(self) {
        self.victim.shutdown().await;
        for h in &self.honest {
            h.shutdown().await;
        }
    }
}

/// Resident set size and its peak, KiB (Linux).
pub fn rss_kb() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A `Dht` core on its own UDP socket, driven by hand: what an attacker (or a recorded honest
/// peer) runs. With `capture` set, the datagrams it sends are kept (up to 10,000).
pub struct RawPeer {
    /// The core.
    pub dht: Dht,
    /// Its socket.
    pub sock: Arc<UdpSocket>,
    /// Whether to keep what it sends.
    pub capture: bool,
    /// What it sent, if captured.
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Events it reported.
    pub events: Vec<DhtEvent>,
}

impl RawPeer {
    /// A core with identity `seed` on a fresh 127.0.0.1 port.
    pub async fn new(seed: [u8; 32]) -> RawPeer {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let mut cfg = DhtConfig::default();
        cfg.routing.exempt_local = true;
        cfg.channel.rng_seed = seed;
        let dht = Dht::new(Identity::from_seed(seed), &[WireAddr::from(addr)], cfg, Instant::now()).unwrap();
        RawPeer { dht, sock, capture: false, sent: Vec::new(), events: Vec::new() }
    }

    /// Sends what the core wants sent.
    pub async fn flush(&mut self) {
        while let Some(t) = self.dht.poll_transmit() {
            let _ = self.sock.send_to(&t.payload, t.dst).await;
            if self.capture && self.sent.len() < 10_000 {
                self.sent.push((t.dst, t.payload));
            }
        }
        while let Some(e) = self.dht.poll_event() {
            if self.events.len() < 10_000 {
                self.events.push(e);
            }
        }
    }

    /// Runs the core on its socket for `d`.
    pub async fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = vec![0u8; 2048];
        loop {
            self.flush().await;
            let now = Instant::now();
            if now >= end {
                return;
            }
            let wake = self.dht.poll_timeout().map_or(end, |t| t.min(end)).max(now);
            match tokio::time::timeout(wake - now, self.sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => self.dht.handle_datagram(Instant::now(), from, &buf[..n]),
                Ok(Err(_)) => {}
                Err(_) => self.dht.handle_timeout(Instant::now()),
            }
            if self.dht.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                self.dht.handle_timeout(Instant::now());
            }
        }
    }

    /// Pumps until `done` holds for the events seen (bounded by `limit`).
    pub async fn pump_until(&mut self, limit: Duration, done: impl Fn(&[DhtEvent]) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.pump(Duration::from_millis(20)).await;
            if done(&self.events) {
                return true;
            }
        }
        false
    }
}

/// xorshift: the attacks' only randomness, fixed seeds so runs are comparable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Sends `packets` (built on demand) at about `rate` per second for `d`, round-robin over
/// `socks`, yielding often so the victim (on the same runtime) keeps up. Returns packets sent.
async fn blast(
    socks: &[Arc<UdpSocket>],
    to: SocketAddr,
    rate: u64,
    d: Duration,
    mut packet: impl FnMut(u64) -> Option<Vec<u8>>,
) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let Some(p) = packet(sent) else { return sent };
            let s = &socks[(sent as usize) % socks.len()];
            let _ = s.send_to(&p, to).await;
            sent += 1;
            if sent.is_multiple_of(16) {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

async fn sockets(n: usize) -> Vec<Arc<UdpSocket>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()));
    }
    v
}

/// Pings the victim from `prober` every 20 ms until `stop` is set.
fn probe(
    prober: Node,
    victim: NodeRecord,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, Vec<f64>)> {
    tokio::spawn(async move {
        let (mut sent, mut ok, mut rtts) = (0u64, 0u64, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            sent += 1;
            let t = Instant::now();
            // A ping lost on a flooded loopback costs 300 ms, not the whole window.
            let r = tokio::time::timeout(Duration::from_millis(300), prober.ping(Target::Record(victim.clone()))).await;
            if let Ok(Ok(_)) = r {
                ok += 1;
                rtts.push(t.elapsed().as_secs_f64() * 1e3);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rtts.sort_by(|a, b| a.total_cmp(b));
        (sent, ok, rtts)
    })
}

fn grew<K: Ord + Clone>(before: &BTreeMap<K, u64>, after: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn drops_of(m: &Metrics) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> =
        m.dht.channel.drops.nonzero().into_iter().map(|(r, n)| (r.name().to_string(), n)).collect();
    let t = &m.topics;
    for (k, v) in [
        ("gossip_bad_signature", t.bad_signature),
        ("gossip_bad_time", t.bad_time),
        ("gossip_duplicates", t.duplicates),
        ("gossip_malformed", t.malformed),
        ("gossip_bad_frames", t.bad_frames),
        ("gossip_rate_limited", t.rate_limited),
        ("gossip_not_neighbor", t.not_neighbor),
    ] {
        if v > 0 {
            out.insert(k.to_string(), v);
        }
    }
    out
}

fn limited_of(m: &Metrics) -> BTreeMap<String, u64> {
    m.dht.limits.iter().map(|l| (l.name.to_string(), l.refused)).collect()
}

fn refused_of(m: &Metrics) -> BTreeMap<String, u64> {
    m.dht.dht.stores_refused.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Runs `attack` at about `rate` packets per second for `d` against a fresh network.
pub async fn run(attack: Attack, rate: u64, d: Duration, tag: u8) -> Report {
    let mut net = network(tag, attack == Attack::Gossip).await;
    let victim_rec = net.victim.record().clone();
    let to = net.victim.local_addr();
    // The prober's session exists before the attack starts (as a neighbour's would).
    net.honest[0].ping(Target::Record(victim_rec.clone())).await.unwrap();
    let mut extra = BTreeMap::new();

    // Attack-specific preparation, before the counters are read.
    let mut raw = match attack {
        Attack::Replay | Attack::Stores | Attack::Colluders => {
            let mut p = RawPeer::new(seed(9, tag)).await;
            p.dht.bootstrap(Instant::now(), vec![Target::Record(victim_rec.clone())]).unwrap();
            let ok = p
                .pump_until(Duration::from_secs(5), |e| e.iter().any(|e| matches!(e, DhtEvent::Bootstrapped { .. })))
                .await;
            assert!(ok, "the raw peer did not join");
            Some(p)
        }
        _ => None,
    };
    if attack == Attack::Replay {
        // Traffic worth capturing: 200 pings over the session.
        let p = raw.as_mut().unwrap();
        p.capture = true;
        for _ in 0..200 {
            let _ = p.dht.ping(Instant::now(), Target::Record(victim_rec.clone()));
        }
        p.pump(Duration::from_millis(300)).await;
    }
    let before = net.victim.metrics().await.unwrap();
    // Linux: writing 5 resets the process's peak RSS, so the peak read after is this attack's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = rss_kb();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = probe(net.honest[0].clone(), victim_rec.clone(), stop.clone());
    let start = Instant::now();
    let sent = match attack {
        Attack::RandomBytes => {
            let socks = sockets(16).await;
            let mut rng = Rng::new(0x5eed_0001);
            blast(&socks, to, rate, d, |_| {
                let len = (rng.next() % 1501) as usize;
                let mut p = rng.bytes(len);
                // Most with a DHT header's first bytes, to get past the cheapest check.
                if p.len() > 1 && !rng.next().is_multiple_of(4) {
                    p[0] = (rng.next() % 7) as u8;
                    p[1] = 1;
                }
                Some(p)
            })
            .await
        }
        Attack::Malformed => {
            let socks = sockets(16).await;
            let mut rng = Rng::new(0x5eed_0002);
            // Exact sizes per type (wire-spec §4.2); each packet is one of them cut short or
            // padded past 1,200 bytes.
            let sizes = [(1u8, 240usize), (2, 92), (3, 80), (4, 48), (5, 288), (6, 200)];
            blast(&socks, to, rate, d, |i| {
                let (ty, len) = sizes[(i as usize) % sizes.len()];
                let n = if i % 2 == 0 { (rng.next() as usize) % len } else { 1201 + (rng.next() as usize) % 300 };
                let mut p = rng.bytes(n);
                if let Some(b) = p.first_mut() {
                    *b = ty;
                }
                if let Some(b) = p.get_mut(1) {
                    *b = 1;
                }
                for b in p.iter_mut().skip(2).take(2) {
                    *b = 0;
                }
                Some(p)
            })
            .await
        }
        Attack::Replay => {
            let p = raw.as_ref().unwrap();
            let captured: Vec<Vec<u8>> =
                p.sent.iter().filter(|(dst, d)| *dst == to && d.first() == Some(&4)).map(|(_, d)| d.clone()).collect();
            extra.insert("captured", captured.len() as u64);
            assert!(captured.len() >= 100, "captured {}", captured.len());
            // From the session's own address (the replay window's case) and from 8 others.
            let mut socks = vec![p.sock.clone()];
            socks.extend(sockets(8).await);
            let n = captured.len();
            blast(&socks, to, rate, d, |i| Some(captured[(i as usize) % n].clone())).await
        }
        Attack::Handshakes => {
            let socks = sockets(64).await;
            let ids: Vec<Identity> = (0..256).map(|i| Identity::from_seed(seed(1000 + i, tag))).collect();
            let key = victim_rec.noise_key;
            let base = 1_900_000_000_000_000_000u64;
            blast(&socks, to, rate, d, |i| {
                let id = &ids[(i as usize) % ids.len()];
                let mut eph = [0u8; 32];
                eph[..8].copy_from_slice(&(i + 1).to_le_bytes());
                build_initiation(id, &key, eph, i as u32, base + i, None, false).ok().map(|(_, p)| p)
            })
            .await
        }
        Attack::Stores => {
            let p = raw.as_mut().unwrap();
            let victim_info =
                suprnova_dht::channel::PeerInfo { id: victim_rec.id, noise_key: victim_rec.noise_key, addr: to };
            let writer = Identity::from_seed(seed(77, tag));
            let mut held_mutable = MutableRecord::sign(&writer, b"m", 5, b"genuine").unwrap();
            // A genuine mutable record the victim holds (stored directly), which forgeries then try
            // to overwrite with higher seqs.
            let store = |id: u64, key: Key, record: Record| Message {
                id,
                body: Body::Store { key, record, ttl_s: 3600, expected_seq: None },
            };
            let _ = p.dht.send_raw(
                Instant::now(),
                &victim_info,
                &store(1, held_mutable.key(), Record::Mutable(held_mutable.clone())).encode().unwrap(),
            );
            p.pump(Duration::from_millis(200)).await;
            let mut rng = Rng::new(0x5eed_0005);
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < d {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let id = 100 + sent;
                    let bytes = match sent % 5 {
                        // A forged higher seq of the held record.
                        0 => {
                            held_mutable.seq += 1;
                            let mut f = held_mutable.clone();
                            f.value = BoundedBytes::try_from(&b"forged"[..]).unwrap();
                            store(id, f.key(), Record::Mutable(f)).encode().unwrap()
                        }
                        // An immutable value under the wrong key.
                        1 => {
                            let v = rng.bytes(64);
                            let r = Record::Immutable { value: BoundedBytes::try_from(v.as_slice()).unwrap() };
                            store(id, Key(rng.next().to_le_bytes().repeat(4).try_into().unwrap()), r).encode().unwrap()
                        }
                        // An oversized value: a Store whose value claims more than the 900-byte
                        // limit (not decodable: malformed).
                        2 => {
                            let mut raw = vec![0u8; 0];
                            raw.extend_from_slice(&[(id & 0x7f) as u8, 6]);
                            raw.extend_from_slice(&[9u8; 32]);
                            raw.push(0);
                            raw.extend_from_slice(&[0xb6, 0x07]);
                            raw.extend_from_slice(&[1u8; 950]);
                            raw.truncate(1100);
                            raw
                        }
                        // Valid records, as fast as the attacker likes (the store limit's case).
                        _ => {
                            let v = rng.bytes(32);
                            let key = Key::for_immutable(&v);
                            let r = Record::Immutable { value: BoundedBytes::try_from(v.as_slice()).unwrap() };
                            store(id, key, r).encode().unwrap()
                        }
                    };
                    let _ = p.dht.send_raw(Instant::now(), &victim_info, &bytes);
                    sent += 1;
                }
                p.pump(Duration::from_millis(2)).await;
            }
            sent
        }
        Attack::Colluders => {
            let p = raw.as_mut().unwrap();
            // 64 colluders at addresses nobody answers from.
            let colluders: Vec<NodeRecord> = (0..64)
                .map(|i| {
                    let id = Identity::from_seed(seed(2000 + i, tag));
                    let a = WireAddr::from(SocketAddr::from(([127, 0, 0, 1], 65_400 + i as u16)));
                    id.make_record(1, 0, &[a]).unwrap()
                })
                .collect();
            p.dht.set_answer_filter(Some(std::sync::Arc::new(Adversary {
                colluders: Some(Arc::new(colluders.clone())),
                ..Adversary::default()
            })));
            // The victim looks up random targets; the liar answers each FindNode with colluders.
            let victim = net.victim.clone();
            let lookups = tokio::spawn(async move {
                let start = Instant::now();
                let (mut n, mut ok, mut honest_found) = (0u64, 0u64, 0u64);
                let mut rng = Rng::new(0x5eed_0006);
                while n == 0 || start.elapsed() < d {
                    let mut t = [0u8; 32];
                    t.copy_from_slice(&rng.bytes(32));
                    n += 1;
                    if let Ok(Ok(found)) =
                        tokio::time::timeout(Duration::from_secs(10), victim.find_peers(suprnova_dht::NodeId(t))).await
                    {
                        ok += 1;
                        honest_found += found.len() as u64;
                    }
                }
                (n, ok, honest_found)
            });
            while !lookups.is_finished() {
                p.pump(Duration::from_millis(20)).await;
            }
            let (n, ok, found) = lookups.await.unwrap();
            extra.insert("lookups", n);
            extra.insert("lookups_ok", ok);
            extra.insert("nodes_found", found);
            extra.insert("lookup_ms_mean", (start.elapsed().as_millis() as u64) / n.max(1));
            let ids: std::collections::BTreeSet<_> = colluders.iter().map(|c| c.id).collect();
            extra.insert("colluder_ids", ids.len() as u64);
            n
        }
        Attack::Gossip => gossip_attack(&mut net, rate, d, tag, &mut extra).await,
    };
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pings_sent, pings_ok, rtts_ms) = prober.await.unwrap();
    let rss1 = rss_kb();
    // Let queued input drain before reading the counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(p) = raw.as_mut() {
        p.pump(Duration::from_millis(100)).await;
    }
    let after = net.victim.metrics().await.unwrap();

    // Every record the victim held is still served by it, byte for byte.
    let keys: Vec<Key> = net.held.iter().map(|k| k.0).collect();
    let holds = net.victim.holds(keys).await.unwrap();
    let mut intact = 0;
    for ((key, value), h) in net.held.iter().zip(holds) {
        if h && net.victim.get_immutable(*key).await.ok().as_ref() == Some(value) {
            intact += 1;
        }
    }
    if attack == Attack::Stores {
        let writer = Identity::from_seed(seed(77, tag));
        let key = Key::for_mutable(&writer.public_key(), b"m");
        let got = net.victim.get_mutable(key).await.unwrap();
        extra.insert("mutable_seq_after", got.seq);
        extra.insert("mutable_genuine", u64::from(got.value.as_slice() == b"genuine" && got.signature_ok()));
    }
    let dht_in = after.demux.1.saturating_sub(before.demux.1);
    let dht_queue_full = after.demux.2.saturating_sub(before.demux.2);
    let handshakes_answered =
        after.dht.channel.handshakes_answered.saturating_sub(before.dht.channel.handshakes_answered);
    let report = Report {
        attack,
        sent,
        elapsed,
        pings: (pings_sent, pings_ok),
        rtts_ms,
        drops: grew(&drops_of(&before), &drops_of(&after)),
        limited: grew(&limited_of(&before), &limited_of(&after)),
        refused: grew(&refused_of(&before), &refused_of(&after)),
        after,
        records: (net.held.len(), intact),
        extra,
        rss_kb: (rss0.0, rss1.1),
        dht_in,
        dht_queue_full,
        handshakes_answered,
    };
    net.stop().await;
    report
}

/// A topic neighbour (its own QUIC transport) joins the victim's topic and sends bad broadcasts;
/// meanwhile an honest node publishes every 50 ms and the victim's subscription counts them.
async fn gossip_attack(net: &mut Net, rate: u64, d: Duration, tag: u8, extra: &mut BTreeMap<&'static str, u64>) -> u64 {
    let topic = TopicId::from_name(TOPIC);
    let me = Identity::from_seed(seed(50, tag));
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let my_addr = socket.local_addr().unwrap();
    let (dht_tx, _dht_rx) = mpsc::channel(16);
    let (t, mut streams) = Transport::new(
        &me,
        suprnova_dht::pathio::PathSocket::new(socket, Default::default()),
        dht_tx,
        TransportOptions::default(),
    )
    .unwrap();
    // Streams the victim opens to us are read to their end and ignored (dropping one unread
    // would stop it, and the victim would count the link as lost).
    tokio::spawn(async move {
        while let Some(s) = streams.recv().await {
            if let suprnova_gossip::net::IncomingStream::Uni { mut recv, .. } = s {
                tokio::spawn(async move { while let Ok(Some(_)) = recv.read_chunk(64 * 1024, true).await {} });
            }
        }
    });
    let conn = t.connect(net.victim.id(), &[net.victim.local_addr()]).await.unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[kind::GOSSIP]).await.unwrap();
    let join = Frame::Membership { topic, msg: hyparview::Message::Join(encode_contact(&[my_addr])) };
    s.write_all(&encode_frame(&join).unwrap()).await.unwrap();
    // Wait until the victim has us as a neighbour (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !net.victim.topic_info(TOPIC).await.is_some_and(|i| i.active.contains(&me.id())) {
        assert!(Instant::now() < deadline, "the victim did not accept the attacker as a neighbour");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Honest traffic: node 1 publishes every 50 ms; the victim's subscription collects.
    let publisher = net.honest[1].clone();
    let honest_origin = publisher.id();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let pubs = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if publisher.publish(TOPIC, format!("honest {n}").into_bytes()).await.is_ok() {
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n
    });

    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let epoch = now_ms();
    // One genuine broadcast of ours, replayed over and over.
    let genuine = Envelope::sign(&me, &topic, epoch, 0, now_ms(), b"once".to_vec()).unwrap().encode();
    let gossip = |payload: Vec<u8>| {
        let id = *blake3::hash(&payload).as_bytes();
        encode_frame(&Frame::Broadcast { topic, msg: plumtree::Message::Gossip { id, round: 0, payload } }).unwrap()
    };
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut batch = Vec::new();
        while sent < due {
            let frame = match sent % 3 {
                0 => gossip(genuine.clone()),
                1 => {
                    let mut e =
                        Envelope::sign(&me, &topic, epoch, sent + 1, now_ms(), sent.to_le_bytes().to_vec()).unwrap();
                    e.signature[0] ^= 1;
                    gossip(e.encode())
                }
                _ => {
                    // Signed, but an hour old: outside the TTL.
                    let e =
                        Envelope::sign(&me, &topic, epoch, sent + 1, now_ms() - 3_600_000, sent.to_le_bytes().to_vec())
                            .unwrap();
                    gossip(e.encode())
                }
            };
            batch.extend_from_slice(&frame);
            sent += 1;
        }
        if !batch.is_empty() && s.write_all(&batch).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = pubs.await.unwrap();
    // What the victim's subscriber saw: every honest broadcast, and of ours only the one genuine
    // broadcast, once (bounded wait for the tail).
    let (mut honest_delivered, mut ours) = (0u64, 0u64);
    if let Some(sub) = net.sub.as_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while honest_delivered < published {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sub.recv()).await {
                Ok(Some(suprnova_node::TopicEvent::Message { origin, .. })) => {
                    if origin == honest_origin {
                        honest_delivered += 1;
                    } else if origin == me.id() {
                        ours += 1;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // Anything else already queued.
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            if let suprnova_node::TopicEvent::Message { origin, .. } = e
                && origin == me.id()
            {
                ours += 1;
            }
        }
    }
    extra.insert("honest_published", published);
    extra.insert("victim_delivered", honest_delivered);
    extra.insert("attacker_delivered", ours);
    t.close().await;
    sent
}
