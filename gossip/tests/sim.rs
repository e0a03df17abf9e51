//! HyParView + Plumtree on a discrete-event simulation (virtual time, seeded latencies): views stay
//! within bounds, every broadcast is delivered exactly once everywhere, duplicates cause prunes,
//! and after 30 % of the nodes fail the rest still receive every later message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_gossip::proto::hyparview::{self as hpv, HyParView, PeerInfo};
use suprnova_gossip::proto::plumtree::{self as pt, Plumtree};

type P = u32;

enum Ev {
    Hpv { to: P, from: P, msg: hpv::Message<P> },
    Pt { to: P, from: P, msg: pt::Message },
    HpvTimer { node: P, timer: hpv::Timer<P> },
    PtTimer { node: P, timer: pt::Timer },
}

struct Node {
    hpv: HyParView<P>,
    pt: Plumtree<P>,
    delivered: Vec<[u8; 32]>,
    alive: bool,
}

struct Sim {
    t0: Instant,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    rng: ChaCha20Rng,
    sent: u64,
    /// While set, nodes below this id and the rest cannot reach each other (a partition).
    cut: Option<P>,
}

impl Sim {
    fn new(n: usize, seed: u8) -> Self {
        let hcfg = hpv::Config { shuffle_interval: Duration::from_secs(10), ..hpv::Config::default() };
        let nodes = (0..n as u32)
            .map(|i| {
                let mut s = [seed; 32];
                s[..4].copy_from_slice(&i.to_le_bytes());
                Node {
                    hpv: HyParView::new(PeerInfo { id: i, data: vec![] }, hcfg.clone(), s),
                    pt: Plumtree::new(pt::Config::default()),
                    delivered: Vec::new(),
                    alive: true,
                }
            })
            .collect();
        Sim {
            t0: Instant::now(),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            rng: ChaCha20Rng::from_seed([seed; 32]),
            sent: 0,
            cut: None,
        }
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn latency(&mut self) -> u64 {
        1 + self.rng.next_u64() % 20
    }

    fn drain(&mut self, node: P) {
        loop {
            let mut progressed = false;
            while let Some(o) = self.nodes[node as usize].hpv.poll() {
                progressed = true;
                match o {
                    hpv::Out::Send { to, msg, .. } => {
                        let d = self.latency();
                        self.at(d, Ev::Hpv { to, from: node, msg });
                    }
                    hpv::Out::NeighborUp(p) => {
                        let now = self.now();
                        self.nodes[node as usize].pt.handle(now, pt::In::NeighborUp(p));
                    }
                    hpv::Out::NeighborDown(p) => {
                        let now = self.now();
                        self.nodes[node as usize].pt.handle(now, pt::In::NeighborDown(p));
                    }
                    hpv::Out::Disconnect(_) => {}
                    hpv::Out::ScheduleTimer { after, timer } => {
                        self.at(after.as_millis() as u64, Ev::HpvTimer { node, timer })
                    }
                }
            }
            while let Some(o) = self.nodes[node as usize].pt.poll() {
                progressed = true;
                match o {
                    pt::Out::Send { to, msg } => {
                        self.sent += 1;
                        let d = self.latency();
                        self.at(d, Ev::Pt { to, from: node, msg });
                    }
                    pt::Out::Deliver { id, .. } => self.nodes[node as usize].delivered.push(id),
                    pt::Out::ScheduleTimer { after, timer } => {
                        self.at(after.as_millis() as u64, Ev::PtTimer { node, timer })
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    /// Runs events until `until_ms` (bounded).
    fn run_until(&mut self, until_ms: u64) {
        for _ in 0..5_000_000 {
            let Some(Reverse((t, id))) = self.queue.peek().copied() else { break };
            if t > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = t;
            let Some(ev) = self.events.remove(&id) else { continue };
            let node = match &ev {
                Ev::Hpv { to, .. } | Ev::Pt { to, .. } => *to,
                Ev::HpvTimer { node, .. } | Ev::PtTimer { node, .. } => *node,
            };
            if let (Some(at), Ev::Hpv { from, .. } | Ev::Pt { from, .. }) = (self.cut, &ev)
                && (*from < at) != (node < at)
            {
                // Across the cut: lost, and both ends' transports give the link up.
                let from = *from;
                self.nodes[from as usize].hpv.handle(hpv::In::ConnectionLost(node));
                self.drain(from);
                self.nodes[node as usize].hpv.handle(hpv::In::ConnectionLost(from));
                self.drain(node);
                continue;
            }
            if !self.nodes[node as usize].alive {
                // Messages to a dead node: the sender's transport notices the loss.
                if let Ev::Hpv { from, .. } | Ev::Pt { from, .. } = ev
                    && self.nodes[from as usize].alive
                {
                    self.nodes[from as usize].hpv.handle(hpv::In::ConnectionLost(node));
                    self.drain(from);
                }
                continue;
            }
            let now = self.now();
            let n = &mut self.nodes[node as usize];
            match ev {
                Ev::Hpv { from, msg, .. } => n.hpv.handle(hpv::In::Message { from, msg }),
                Ev::Pt { from, msg, .. } => n.pt.handle(now, pt::In::Message { from, msg }),
                Ev::HpvTimer { timer, .. } => n.hpv.handle(hpv::In::Timer(timer)),
                Ev::PtTimer { timer, .. } => n.pt.handle(now, pt::In::Timer(timer)),
            }
            self.drain(node);
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn broadcast(&mut self, node: P, payload: Vec<u8>) -> [u8; 32] {
        let now = self.now();
        self.nodes[node as usize].pt.handle(now, pt::In::Broadcast(payload.clone()));
        self.drain(node);
        *blake3::hash(&payload).as_bytes()
    }
}

fn joined(n: usize, seed: u8) -> Sim {
    let mut sim = Sim::new(n, seed);
    for i in 1..n as u32 {
        let contact = (sim.rng.next_u32() % i) as P;
        sim.nodes[i as usize].hpv.handle(hpv::In::Join(PeerInfo { id: contact, data: vec![] }));
        sim.drain(i);
        let t = sim.now_ms + 50;
        sim.run_until(t);
    }
    let t = sim.now_ms + 60_000; // a few shuffles
    sim.run_until(t);
    sim
}

#[test]
fn views_stay_bounded_and_symmetric_enough() {
    let sim = joined(100, 1);
    for n in &sim.nodes {
        let (a, p) = n.hpv.view_sizes();
        assert!((1..=5).contains(&a), "active view {a}");
        assert!(p <= 30, "passive view {p}");
    }
    // Active views are symmetric after the joins settle.
    let views: Vec<BTreeSet<P>> = sim.nodes.iter().map(|n| n.hpv.active().copied().collect()).collect();
    let asymmetric = (0..100u32)
        .flat_map(|i| views[i as usize].iter().map(move |j| (i, *j)))
        .filter(|(i, j)| !views[*j as usize].contains(i))
        .count();
    assert!(asymmetric <= 5, "{asymmetric} one-sided active links");
}

#[test]
fn every_broadcast_is_delivered_exactly_once_everywhere() {
    let mut sim = joined(100, 2);
    let mut ids = Vec::new();
    for k in 0..200u32 {
        let origin = sim.rng.next_u32() % 100;
        ids.push(sim.broadcast(origin, format!("message {k}").into_bytes()));
        let t = sim.now_ms + 10;
        sim.run_until(t);
    }
    let t = sim.now_ms + 5_000;
    sim.run_until(t);
    for (i, n) in sim.nodes.iter().enumerate() {
        let got: BTreeSet<_> = n.delivered.iter().collect();
        assert_eq!(n.delivered.len(), ids.len(), "node {i} delivered {} (duplicates or losses)", n.delivered.len());
        assert_eq!(got.len(), ids.len(), "node {i}");
    }
    let delivered: u64 = sim.nodes.iter().map(|n| n.pt.stats().delivered).sum();
    let gossip: u64 = sim.nodes.iter().map(|n| n.pt.stats().gossip_received).sum();
    let dups: u64 = sim.nodes.iter().map(|n| n.pt.stats().duplicates).sum();
    let prunes: u64 = sim.nodes.iter().map(|n| n.pt.stats().prunes_sent).sum();
    let rmr = gossip as f64 / (delivered - ids.len() as u64) as f64 - 1.0;
    println!("100 nodes, 200 broadcasts: RMR {rmr:.3}, duplicates {dups}, prunes {prunes}, messages sent {}", sim.sent);
    assert!(prunes > 0 && dups > 0, "duplicates lead to prunes");
    assert!(rmr < 1.0, "once the tree forms, few full copies are redundant (RMR {rmr:.2})");
}

#[test]
fn tree_repairs_after_thirty_percent_fail() {
    let mut sim = joined(100, 3);
    for k in 0..20u32 {
        sim.broadcast(k % 100, format!("warm-up {k}").into_bytes());
        let t = sim.now_ms + 20;
        sim.run_until(t);
    }
    // 30 nodes fail at once.
    let mut dead = BTreeSet::new();
    while dead.len() < 30 {
        let d = 1 + sim.rng.next_u32() % 99;
        dead.insert(d);
    }
    for &d in &dead {
        sim.nodes[d as usize].alive = false;
    }
    let before: Vec<usize> = sim.nodes.iter().map(|n| n.delivered.len()).collect();
    let t = sim.now_ms + 2_000;
    sim.run_until(t);
    let mut ids = Vec::new();
    for k in 0..50u32 {
        ids.push(sim.broadcast(0, format!("after failure {k}").into_bytes()));
        let t = sim.now_ms + 20;
        sim.run_until(t);
    }
    let t = sim.now_ms + 10_000;
    sim.run_until(t);
    let grafts: u64 = sim.nodes.iter().map(|n| n.pt.stats().grafts_sent).sum();
    for (i, n) in sim.nodes.iter().enumerate() {
        if !n.alive {
            continue;
        }
        let after = &n.delivered[before[i]..];
        for id in &ids {
            assert_eq!(
                after.iter().filter(|x| *x == id).count(),
                1,
                "live node {i}: a post-failure message not delivered exactly once"
            );
        }
        let (a, p) = n.hpv.view_sizes();
        assert!(a <= 5 && p <= 30);
        assert!(n.hpv.active().all(|x| !dead.contains(x)) || a > 0);
    }
    println!("after 30 failures: grafts {grafts}");
}

#[test]
fn halves_meet_again_after_a_partition_and_catch_up_on_what_they_missed() {
    let n = 12u32;
    let mut sim = joined(n as usize, 4);
    sim.cut = Some(n / 2);
    // Messages on both sides during a 70 s cut (shuffles every 10 s here drain the passive views).
    let mut during = Vec::new();
    for k in 0..10u32 {
        let origin = if k < 5 { k } else { n / 2 + k };
        during.push(sim.broadcast(origin % n, format!("during the cut {k}").into_bytes()));
        let t = sim.now_ms + 100;
        sim.run_until(t);
    }
    let t = sim.now_ms + 70_000;
    sim.run_until(t);
    let crossing =
        |sim: &Sim| (0..n).filter(|&i| sim.nodes[i as usize].hpv.active().any(|&p| (p < n / 2) != (i < n / 2))).count();
    assert_eq!(crossing(&sim), 0, "no link crosses the cut");
    sim.cut = None;
    // After the heal, every node reads the member set (the node layer does so when the DHT sees a
    // former peer answer again): every active view is full of its own side, yet they reconnect.
    let everyone: Vec<PeerInfo<P>> = (0..n).map(|id| PeerInfo { id, data: vec![] }).collect();
    for i in 0..n {
        sim.nodes[i as usize].hpv.handle(hpv::In::Members { peers: everyone.clone(), mix: true });
        sim.drain(i);
    }
    let t = sim.now_ms + 5_000;
    sim.run_until(t);
    assert!(crossing(&sim) > 0, "links cross again");
    let mut after = Vec::new();
    for k in 0..5u32 {
        after.push(sim.broadcast(k * 2 % n, format!("after the heal {k}").into_bytes()));
        let t = sim.now_ms + 50;
        sim.run_until(t);
    }
    let t = sim.now_ms + 5_000;
    sim.run_until(t);
    for (i, node) in sim.nodes.iter().enumerate() {
        for id in during.iter().chain(&after) {
            let got = node.delivered.iter().filter(|x| *x == id).count();
            assert_eq!(got, 1, "node {i}: a message from during or after the cut delivered {got} times");
        }
    }
}

#[test]
fn known_members_cause_no_churn_unless_asked_to_mix() {
    let n = 12u32;
    let mut sim = joined(n as usize, 5);
    let views =
        |sim: &Sim| -> Vec<BTreeSet<P>> { sim.nodes.iter().map(|x| x.hpv.active().copied().collect()).collect() };
    let before = views(&sim);
    // Every member is already in a view (12 nodes, passive views of 30): nothing changes.
    for i in 0..n {
        let known: Vec<PeerInfo<P>> = sim.nodes[i as usize]
            .hpv
            .active()
            .chain(sim.nodes[i as usize].hpv.passive())
            .map(|&id| PeerInfo { id, data: vec![] })
            .collect();
        sim.nodes[i as usize].hpv.handle(hpv::In::Members { peers: known, mix: false });
        sim.drain(i);
    }
    let t = sim.now_ms + 1_000;
    sim.run_until(t);
    assert_eq!(views(&sim), before, "no member was asked");
}
