//! The topic core (`proto::topic::TopicCore`) on a small discrete-event simulation (virtual time,
//! seeded latencies, every node subscribed to one topic whose member set is shared): views stay
//! within bounds, every broadcast is delivered exactly once everywhere, duplicates cause prunes,
//! after 30 % of the nodes fail the rest still receive every later message, and two halves of a
//! partition meet again on their own and catch up on what they missed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_dht::{Identity, NodeId};
use suprnova_gossip::proto::Frame;
use suprnova_gossip::proto::topic::{Ed25519Verifier, Now, Out, TopicCore, TopicEvent, TopicsConfig};
use suprnova_gossip::wire::TopicId;

type P = u32;

enum Ev {
    Frame {
        to: P,
        from: P,
        frame: Frame,
    },
    Wake {
        node: P,
    },
    Read {
        node: P,
    },
    /// Failure detection: the link from `node` to `peer` is reported lost.
    Lost {
        node: P,
        peer: P,
    },
}

struct Node {
    core: TopicCore,
    delivered: Vec<Vec<u8>>,
    alive: bool,
}

struct Sim {
    t0: Instant,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    ids: BTreeMap<NodeId, P>,
    rng: ChaCha20Rng,
    verifier: Ed25519Verifier,
    sent: u64,
    /// While set, nodes below this id and the rest cannot reach each other (a partition).
    cut: Option<P>,
}

fn topic() -> TopicId {
    TopicId::from_name("sim")
}

fn addr(i: P) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4433))
}

impl Sim {
    fn new(n: usize, seed: u8) -> Self {
        let mut cfg = TopicsConfig::default();
        cfg.hyparview.shuffle_interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let now = Now { at: t0, unix_ms: 1_800_000_000_000 };
        let mut ids = BTreeMap::new();
        let nodes = (0..n as u32)
            .map(|i| {
                let mut s = [seed; 32];
                s[..4].copy_from_slice(&i.to_le_bytes());
                let identity = Identity::from_seed(s);
                ids.insert(identity.id(), i);
                Node {
                    core: TopicCore::new(&identity, &[addr(i)], cfg.clone(), s, now),
                    delivered: Vec::new(),
                    alive: true,
                }
            })
            .collect();
        Sim {
            t0,
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            ids,
            rng: ChaCha20Rng::from_seed([seed; 32]),
            verifier: Ed25519Verifier::default(),
            sent: 0,
            cut: None,
        }
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn now(&self) -> Now {
        Now { at: self.t0 + Duration::from_millis(self.now_ms), unix_ms: 1_800_000_000_000 + self.now_ms }
    }

    fn id(&self, i: P) -> NodeId {
        self.nodes[i as usize].core.id()
    }

    fn cut_between(&self, a: P, b: P) -> bool {
        self.cut.is_some_and(|at| (a < at) != (b < at))
    }

    /// Carries out node `i`'s outputs and schedules its next timer.
    fn pump(&mut self, i: P) {
        while let Some(out) = self.nodes[i as usize].core.poll() {
            match out {
                Out::Send { to, frame } => {
                    self.sent += 1;
                    let to = self.ids[&to];
                    let d = 1 + self.rng.next_u64() % 20;
                    self.at(d, Ev::Frame { to, from: i, frame });
                }
                Out::Event { event: TopicEvent::Message { payload, .. }, .. } => {
                    self.nodes[i as usize].delivered.push(payload);
                }
                Out::ReadMembers(_) => self.at(50, Ev::Read { node: i }),
                Out::Event { .. } | Out::Release(_) | Out::Closed(_) | Out::Announce(_) => {}
            }
        }
        if let Some(due) = self.nodes[i as usize].core.poll_timeout() {
            let at = due.saturating_duration_since(self.t0).as_millis() as u64;
            self.seq += 1;
            self.queue.push(Reverse((at.max(self.now_ms), self.seq)));
            self.events.insert(self.seq, Ev::Wake { node: i });
        }
    }

    /// Runs events until `until_ms` (bounded).
    fn run_until(&mut self, until_ms: u64) {
        for _ in 0..20_000_000 {
            let Some(Reverse((t, id))) = self.queue.peek().copied() else { break };
            if t > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = t;
            let Some(ev) = self.events.remove(&id) else { continue };
            self.event(ev);
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn event(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Frame { to, from, frame } => {
                if self.cut_between(from, to) || !self.nodes[to as usize].alive {
                    // Lost; the sender's transport gives the link up a little later.
                    self.at(100, Ev::Lost { node: from, peer: to });
                    return;
                }
                let sender = self.id(from);
                let n = &mut self.nodes[to as usize];
                n.core.frames(now, vec![(sender, frame)], &mut self.verifier);
                self.pump(to);
            }
            Ev::Wake { node } => {
                if !self.nodes[node as usize].alive {
                    return;
                }
                let due = self.nodes[node as usize].core.poll_timeout().is_some_and(|d| d <= now.at);
                if due {
                    self.nodes[node as usize].core.handle_timeout(now);
                    self.pump(node);
                }
            }
            Ev::Read { node } => {
                // The member set: every live member on the reader's side of any cut.
                let members: Vec<(NodeId, Vec<SocketAddr>)> = (0..self.nodes.len() as P)
                    .filter(|&m| m != node && self.nodes[m as usize].alive && !self.cut_between(node, m))
                    .map(|m| (self.id(m), vec![addr(m)]))
                    .collect();
                self.nodes[node as usize].core.members_read(now, topic(), members);
                self.pump(node);
            }
            Ev::Lost { node, peer } => {
                if self.nodes[node as usize].alive {
                    let id = self.id(peer);
                    self.nodes[node as usize].core.link_lost(now, id);
                    self.pump(node);
                }
            }
        }
    }

    fn broadcast(&mut self, node: P, payload: Vec<u8>) -> Vec<u8> {
        let now = self.now();
        self.nodes[node as usize].core.publish(now, topic(), payload.clone()).expect("publish");
        self.pump(node);
        payload
    }
}

/// `n` nodes subscribe one after the other (each finds earlier ones in the member set).
fn joined(n: usize, seed: u8) -> Sim {
    let mut sim = Sim::new(n, seed);
    for i in 0..n as u32 {
        let now = sim.now();
        sim.nodes[i as usize].core.subscribe(now, topic()).unwrap();
        sim.pump(i);
        let t = sim.now_ms + 50;
        sim.run_until(t);
    }
    let t = sim.now_ms + 60_000; // a few shuffles
    sim.run_until(t);
    sim
}

fn active(sim: &Sim, i: P) -> BTreeSet<P> {
    sim.nodes[i as usize].core.info(&topic()).unwrap().active.iter().map(|p| sim.ids[p]).collect()
}

#[test]
fn views_stay_bounded_and_symmetric_enough() {
    let sim = joined(100, 1);
    for n in &sim.nodes {
        let info = n.core.info(&topic()).unwrap();
        assert!((1..=5).contains(&info.active.len()), "active view {}", info.active.len());
        assert!(info.passive <= 30, "passive view {}", info.passive);
    }
    let views: Vec<BTreeSet<P>> = (0..100).map(|i| active(&sim, i)).collect();
    let asymmetric = (0..100u32)
        .flat_map(|i| views[i as usize].iter().map(move |j| (i, *j)))
        .filter(|(i, j)| !views[*j as usize].contains(i))
        .count();
    assert!(asymmetric <= 5, "{asymmetric} one-sided active links");
}

#[test]
fn every_broadcast_is_delivered_exactly_once_everywhere() {
    let mut sim = joined(100, 2);
    let mut sent = Vec::new();
    for k in 0..200u32 {
        let origin = sim.rng.next_u32() % 100;
        sent.push((origin, sim.broadcast(origin, format!("message {k}").into_bytes())));
        let t = sim.now_ms + 10;
        sim.run_until(t);
    }
    let t = sim.now_ms + 5_000;
    sim.run_until(t);
    for (i, n) in sim.nodes.iter().enumerate() {
        // Everyone's but its own, each once.
        let owed: Vec<&Vec<u8>> = sent.iter().filter(|(o, _)| *o as usize != i).map(|(_, p)| p).collect();
        assert_eq!(n.delivered.len(), owed.len(), "node {i} delivered {} (duplicates or losses)", n.delivered.len());
        let got: BTreeSet<_> = n.delivered.iter().collect();
        assert!(owed.iter().all(|p| got.contains(p)), "node {i}");
    }
    let stats: Vec<_> = sim.nodes.iter().map(|n| n.core.stats()).collect();
    let delivered: u64 = stats.iter().map(|s| s.delivered).sum();
    let gossip: u64 = stats.iter().map(|s| s.gossip_received).sum();
    let dups: u64 = stats.iter().map(|s| s.duplicates).sum();
    let prunes: u64 = stats.iter().map(|s| s.prunes).sum();
    let rmr = gossip as f64 / delivered as f64 - 1.0;
    println!("100 nodes, 200 broadcasts: RMR {rmr:.3}, duplicates {dups}, prunes {prunes}, frames sent {}", sim.sent);
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
    let mut dead = BTreeSet::new();
    while dead.len() < 30 {
        dead.insert(1 + sim.rng.next_u32() % 99);
    }
    for &d in &dead {
        sim.nodes[d as usize].alive = false;
    }
    let before: Vec<usize> = sim.nodes.iter().map(|n| n.delivered.len()).collect();
    let t = sim.now_ms + 2_000;
    sim.run_until(t);
    let mut sent = Vec::new();
    for k in 0..50u32 {
        sent.push(sim.broadcast(0, format!("after failure {k}").into_bytes()));
        let t = sim.now_ms + 20;
        sim.run_until(t);
    }
    let t = sim.now_ms + 10_000;
    sim.run_until(t);
    for (i, n) in sim.nodes.iter().enumerate().skip(1) {
        if !n.alive {
            continue;
        }
        let after = &n.delivered[before[i]..];
        for p in &sent {
            assert_eq!(after.iter().filter(|x| *x == p).count(), 1, "live node {i}: not delivered exactly once");
        }
        assert!(active(&sim, i as P).iter().all(|x| !dead.contains(x)), "node {i} keeps a dead neighbour");
    }
}

#[test]
fn halves_meet_again_after_a_partition_and_catch_up_on_what_they_missed() {
    let n = 12u32;
    let mut sim = joined(n as usize, 4);
    sim.cut = Some(n / 2);
    // Messages on both sides during a 70 s cut (shuffles every 10 s here drain the passive views).
    let mut during = Vec::new();
    for k in 0..10u32 {
        let origin = if k < 5 { k } else { n / 2 + k % (n / 2) };
        during.push((origin, sim.broadcast(origin, format!("during the cut {k}").into_bytes())));
        let t = sim.now_ms + 100;
        sim.run_until(t);
    }
    let t = sim.now_ms + 70_000;
    sim.run_until(t);
    let crossing = |sim: &Sim| (0..n).filter(|&i| active(sim, i).iter().any(|&p| (p < n / 2) != (i < n / 2))).count();
    assert_eq!(crossing(&sim), 0, "no link crosses the cut");
    // The heal: the DHT tells every node a former peer answers again. The core does the rest
    // (reads the member set, asks a member it does not have as a neighbour).
    sim.cut = None;
    for i in 0..n {
        sim.nodes[i as usize].core.revived();
    }
    let t = sim.now_ms + 6_000;
    sim.run_until(t);
    assert!(crossing(&sim) > 0, "links cross again");
    let mut after = Vec::new();
    for k in 0..5u32 {
        let origin = k * 2 % n;
        after.push((origin, sim.broadcast(origin, format!("after the heal {k}").into_bytes())));
        let t = sim.now_ms + 50;
        sim.run_until(t);
    }
    let t = sim.now_ms + 5_000;
    sim.run_until(t);
    for (i, node) in sim.nodes.iter().enumerate() {
        for (origin, p) in during.iter().chain(&after) {
            let got = node.delivered.iter().filter(|x| *x == p).count();
            let owed = usize::from(*origin as usize != i);
            assert_eq!(got, owed, "node {i}: a message from during or after the cut delivered {got} times");
        }
    }
}

#[test]
fn a_node_whose_neighbours_all_leave_finds_the_topic_again() {
    let n = 10u32;
    let mut sim = joined(n as usize, 6);
    // Node 0's neighbours all crash; the others are still there, in the member set.
    let gone: Vec<P> = active(&sim, 0).into_iter().collect();
    for &g in &gone {
        sim.nodes[g as usize].alive = false;
    }
    for &g in &gone {
        let id = sim.id(g);
        let now = sim.now();
        sim.nodes[0].core.link_lost(now, id);
    }
    sim.pump(0);
    let t = sim.now_ms + 10_000;
    sim.run_until(t);
    let now_active = active(&sim, 0);
    assert!(!now_active.is_empty(), "node 0 joined again");
    assert!(now_active.iter().all(|p| !gone.contains(p)));
    let p = sim.broadcast(0, b"back".to_vec());
    let t = sim.now_ms + 2_000;
    sim.run_until(t);
    for i in (1..n).filter(|i| !gone.contains(i)) {
        assert_eq!(sim.nodes[i as usize].delivered.iter().filter(|x| **x == p).count(), 1, "node {i}");
    }
}
