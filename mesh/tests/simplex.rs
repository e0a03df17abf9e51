//! The Simplex core on virtual time: honest and byzantine members (silent, equivocating,
//! proposing invalid batches), random delays that reorder messages, lost messages, partitions of
//! the honest members that heal. After every event: no two honest members ever finalise different
//! blocks at one height (safety). With f or fewer byzantine members and a healthy network, blocks
//! keep being finalised (liveness).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_dht::identity::Identity;
use suprnova_mesh::simplex::{Config, Digest, In, Members, Message, Out, Simplex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Honest,
    /// Sends nothing, ever.
    Silent,
    /// Signs two different blocks for every height it votes on, and shows each half of the
    /// members a different one; as leader it proposes two blocks.
    Equivocating,
    /// As leader proposes a batch the application refuses; otherwise honest.
    InvalidBatch,
}

/// A message on the wire: (deliver at, sequence number, recipient, encoded message).
type InFlight = (Instant, u64, usize, Vec<u8>);

struct Sim {
    mesh: Digest,
    members: Members,
    ids: Vec<Identity>,
    roles: Vec<Role>,
    nodes: Vec<Simplex>,
    now: Instant,
    start: Instant,
    rng: ChaCha8Rng,
    wire: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    delay_ms: (u64, u64),
    loss: f64,
    /// Partition: group of each node; messages between groups are lost.
    group: Vec<u8>,
    /// Finalised digest by height, per node.
    finalized: Vec<BTreeMap<u64, Digest>>,
    evidence: usize,
    /// Proposals the application builds: (ready at, node, height, payload). Building takes
    /// `build_ms`, the world's round interval in a real mesh.
    building: Vec<(Instant, usize, u64, Vec<u8>)>,
    build_ms: u64,
    /// Signing reservations each node asked for (node, up to).
    reservations: Vec<(usize, u64)>,
}

fn payload_valid(p: &[u8]) -> bool {
    p.first() != Some(&0xFF)
}

impl Sim {
    fn new(roles: Vec<Role>, seed: u64, delay_ms: (u64, u64)) -> Sim {
        Sim::build(roles, seed, delay_ms, true)
    }

    /// As the `net` driver runs it over the mesh topic: no notarisation forwarding.
    fn without_forwarding(roles: Vec<Role>, seed: u64, delay_ms: (u64, u64)) -> Sim {
        Sim::build(roles, seed, delay_ms, false)
    }

    fn build(roles: Vec<Role>, seed: u64, delay_ms: (u64, u64), forward: bool) -> Sim {
        let n = roles.len();
        let ids: Vec<Identity> = (0..n).map(|i| Identity::from_seed([i as u8 + 1; 32])).collect();
        let members = Members::new(ids.iter().map(|i| i.public_key()).collect()).unwrap();
        let mesh = *blake3::hash(format!("test mesh {n}").as_bytes()).as_bytes();
        let now = Instant::now();
        let cfg = Config { timeout: Duration::from_millis(300), forward_notarizations: forward };
        let nodes = ids
            .iter()
            .map(|id| Simplex::new(cfg.clone(), mesh, members.clone(), Some(Identity::from_seed(*id.seed())), now))
            .collect();
        let mut sim = Sim {
            mesh,
            members,
            ids,
            roles,
            nodes,
            now,
            start: now,
            rng: ChaCha8Rng::seed_from_u64(seed),
            wire: BinaryHeap::new(),
            seq: 0,
            delay_ms,
            loss: 0.0,
            group: vec![0; n],
            finalized: vec![BTreeMap::new(); n],
            evidence: 0,
            building: Vec::new(),
            build_ms: 2,
            reservations: Vec::new(),
        };
        for i in 0..n {
            sim.drain(i);
        }
        sim
    }

    fn honest(&self, i: usize) -> bool {
        self.roles[i] != Role::Silent && self.roles[i] != Role::Equivocating
    }

    fn send(&mut self, from: usize, to: usize, m: &Message) {
        if from == to || self.group[from] != self.group[to] {
            return;
        }
        if self.loss > 0.0 && (self.rng.next_u32() as f64 / u32::MAX as f64) < self.loss {
            return;
        }
        let (lo, hi) = self.delay_ms;
        let d = lo + self.rng.next_u64() % (hi - lo + 1);
        self.seq += 1;
        let bytes = postcard::to_allocvec(m).unwrap();
        self.wire.push(Reverse((self.now + Duration::from_millis(d), self.seq, to, bytes)));
    }

    fn broadcast(&mut self, from: usize, m: &Message) {
        for to in 0..self.nodes.len() {
            self.send(from, to, m);
        }
    }

    /// The equivocator's twin of a message: the same kind, for a different block.
    fn twin(&self, from: usize, m: &Message) -> Option<Message> {
        suprnova_mesh::testing::equivocation_twin(&self.mesh, &self.ids[from], m)
    }

    /// Runs node `i`'s outputs: the application answers at once, messages go on the wire.
    fn drain(&mut self, i: usize) {
        let mut guard = 0;
        while let Some(out) = self.nodes[i].poll() {
            guard += 1;
            assert!(guard < 100_000, "runaway outputs");
            match out {
                Out::Broadcast(m) => match self.roles[i] {
                    Role::Silent => {}
                    Role::Equivocating => {
                        let n = self.nodes.len();
                        let twin = self.twin(i, &m);
                        for to in 0..n {
                            match (&twin, to % 2) {
                                (Some(t), 1) => {
                                    let t = t.clone();
                                    self.send(i, to, &t)
                                }
                                _ => self.send(i, to, &m),
                            }
                        }
                    }
                    _ => self.broadcast(i, &m),
                },
                Out::Propose { height, .. } => {
                    let payload = if self.roles[i] == Role::InvalidBatch {
                        vec![0xFF, i as u8]
                    } else {
                        let mut p = vec![0x01];
                        p.extend_from_slice(&height.to_le_bytes());
                        p.push(i as u8);
                        p
                    };
                    self.building.push((self.now + Duration::from_millis(self.build_ms), i, height, payload));
                }
                Out::Verify { digest, proposal } => {
                    let valid = payload_valid(&proposal.payload);
                    let now = self.now;
                    self.nodes[i].handle(now, In::Verified { height: proposal.height, digest, valid });
                }
                Out::Finalized { proposal, digest, certificate } => {
                    if let Some(c) = &certificate {
                        self.members.verify_certificate(&self.mesh, c).unwrap();
                        assert_eq!(c.digest, digest);
                    }
                    assert!(payload_valid(&proposal.payload), "an invalid batch was finalised");
                    let prev = self.finalized[i].insert(proposal.height, digest);
                    assert!(prev.is_none(), "node {i} finalised height {} twice", proposal.height);
                    if self.honest(i) {
                        self.check_safety(proposal.height, digest);
                    }
                }
                Out::Gap { .. } => {}
                Out::Reserve { up_to } => {
                    self.reservations.push((i, up_to));
                    self.nodes[i].reserved(up_to);
                }
                Out::Evidence(e) => {
                    assert!(e.verify(&self.mesh, &self.members), "evidence must prove itself");
                    assert!(!self.honest(e.signer as usize), "an honest member was accused");
                    self.evidence += 1;
                }
            }
        }
    }

    fn check_safety(&self, height: u64, digest: Digest) {
        for (j, f) in self.finalized.iter().enumerate() {
            if self.honest(j)
                && let Some(d) = f.get(&height)
            {
                assert_eq!(*d, digest, "SAFETY: two blocks finalised at height {height}");
            }
        }
    }

    /// Advances to the next event (delivery or timer); false if none before `until`.
    fn step(&mut self, until: Instant) -> bool {
        let next_msg = self.wire.peek().map(|Reverse((t, ..))| *t);
        let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
        let next_build = self.building.iter().map(|b| b.0).min();
        let Some(next) = [next_msg, next_timer, next_build].into_iter().flatten().min() else { return false };
        if next > until {
            return false;
        }
        self.now = self.now.max(next);
        if next_build == Some(next) {
            let k = self.building.iter().position(|b| b.0 == next).unwrap();
            let (_, i, height, payload) = self.building.swap_remove(k);
            let now = self.now;
            self.nodes[i].handle(now, In::Payload { height, payload, body: vec![7; 3] });
            self.drain(i);
        } else if next_msg == Some(next) {
            let Reverse((_, _, to, bytes)) = self.wire.pop().unwrap();
            if self.roles[to] != Role::Silent {
                let m: Message = postcard::from_bytes(&bytes).unwrap();
                let now = self.now;
                self.nodes[to].handle(now, In::Message(m));
                self.drain(to);
            }
        } else {
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    let now = self.now;
                    self.nodes[i].handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..2_000_000 {
            if !self.step(until) {
                break;
            }
        }
        self.now = self.now.max(until);
    }

    /// The fewest blocks any honest member has finalised.
    fn min_honest_finalized(&self) -> usize {
        (0..self.nodes.len()).filter(|i| self.honest(*i)).map(|i| self.finalized[i].len()).min().unwrap_or(0)
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

fn roles(n: usize, byz: &[(usize, Role)]) -> Vec<Role> {
    let mut r = vec![Role::Honest; n];
    for (i, role) in byz {
        r[*i] = *role;
    }
    r
}

#[test]
fn quorum_sizes() {
    for (n, q) in [(1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, 5), (7, 5), (10, 7), (16, 11), (100, 67)] {
        let m = Members::new((0..n).map(|i| Identity::from_seed([i as u8 + 1; 32]).public_key()).collect()).unwrap();
        assert_eq!(m.quorum(), q, "n = {n}");
        assert!(3 * m.quorum() > 2 * n, "more than 2/3");
    }
}

#[test]
fn one_member_runs_alone() {
    let mut sim = Sim::new(roles(1, &[]), 1, (1, 1));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.finalized[0].len() >= 50, "finalised {}", sim.finalized[0].len());
}

#[test]
fn honest_members_finalise_every_height_with_no_timeouts() {
    for n in [4, 7, 10] {
        let mut sim = Sim::new(roles(n, &[]), 7, (1, 5));
        sim.run_for(Duration::from_secs(2));
        let fin = sim.min_honest_finalized();
        assert!(fin >= 40, "n = {n}: {fin} blocks in 2 s with 1–5 ms delays");
        assert_eq!(sim.nodes.iter().map(|x| x.stats().timeouts).sum::<u64>(), 0, "n = {n}: no timeouts");
        // Every height finalised a block (no ⊥ needed).
        let heights: Vec<u64> = sim.finalized[0].keys().copied().collect();
        assert_eq!(heights, (1..=heights.len() as u64).collect::<Vec<_>>());
    }
}

#[test]
fn f_silent_members_cost_timeouts_not_the_mesh() {
    for (n, f) in [(4, 1), (7, 2), (10, 3)] {
        let byz: Vec<(usize, Role)> = (0..f).map(|i| (i, Role::Silent)).collect();
        let mut sim = Sim::new(roles(n, &byz), 11, (1, 10));
        sim.run_for(Duration::from_secs(10));
        let fin = sim.min_honest_finalized();
        assert!(fin >= 10, "n = {n}, f = {f} silent: {fin} blocks in 10 s");
        let dummies: u64 = sim.nodes[n - 1].stats().dummies;
        assert!(dummies > 0, "silent leaders' heights end with ⊥");
    }
}

#[test]
fn equivocators_are_caught_and_safety_holds() {
    for (n, f) in [(4, 1), (7, 2), (10, 3)] {
        let byz: Vec<(usize, Role)> = (0..f).map(|i| (i * 3 % n, Role::Equivocating)).collect();
        let mut sim = Sim::new(roles(n, &byz), 5, (1, 20));
        sim.run_for(Duration::from_secs(10));
        assert!(sim.evidence > 0, "n = {n}: equivocation evidence published");
        let fin = sim.min_honest_finalized();
        assert!(fin >= 10, "n = {n}, f = {f} equivocating: {fin} blocks in 10 s");
    }
}

#[test]
fn invalid_batches_are_never_finalised() {
    let mut sim = Sim::new(roles(7, &[(0, Role::InvalidBatch), (3, Role::InvalidBatch)]), 3, (1, 10));
    sim.run_for(Duration::from_secs(10));
    assert!(sim.min_honest_finalized() >= 10);
    let refused: u64 = sim.nodes.iter().map(|n| n.stats().drops.invalid_proposal).sum();
    assert!(refused > 0, "the invalid proposals were seen and refused");
}

#[test]
fn a_partition_of_the_honest_members_stalls_then_heals() {
    let n = 7;
    let mut sim = Sim::new(roles(n, &[(6, Role::Equivocating)]), 9, (1, 10));
    sim.run_for(Duration::from_secs(2));
    let before = sim.min_honest_finalized();
    assert!(before > 5);
    // 3 | 4: neither side has q = 5.
    sim.group = vec![0, 0, 0, 1, 1, 1, 1];
    sim.run_for(Duration::from_secs(5));
    let during = (0..n).filter(|i| sim.honest(*i)).map(|i| sim.finalized[i].len()).max().unwrap();
    assert!(during <= before + 3, "no progress without a quorum ({before} → {during})");
    sim.group = vec![0; n];
    sim.run_for(Duration::from_secs(10));
    let after = sim.min_honest_finalized();
    assert!(after >= during + 10, "progress resumes after the heal ({during} → {after})");
}

#[test]
fn lost_messages_are_recovered_by_resends() {
    for forward in [true, false] {
        let mut sim = Sim::build(roles(7, &[(2, Role::Silent)]), 21, (1, 30), forward);
        sim.loss = 0.2;
        sim.run_for(Duration::from_secs(20));
        assert!(sim.min_honest_finalized() >= 10, "20 % loss, forward {forward}: {}", sim.min_honest_finalized());
    }
}

#[test]
fn without_forwarding_a_partition_heals_and_equivocators_are_caught() {
    let n = 10;
    let mut sim = Sim::without_forwarding(roles(n, &[(8, Role::Equivocating), (9, Role::Silent)]), 13, (1, 10));
    sim.run_for(Duration::from_secs(2));
    let before = sim.min_honest_finalized();
    assert!(before > 5, "{before}");
    // 5 | 5: neither side has q = 7.
    sim.group = vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1];
    sim.run_for(Duration::from_secs(4));
    let during = (0..n).filter(|i| sim.honest(*i)).map(|i| sim.finalized[i].len()).max().unwrap();
    assert!(during <= before + 3, "no progress without a quorum ({before} → {during})");
    sim.group = vec![0; n];
    sim.run_for(Duration::from_secs(10));
    let after = sim.min_honest_finalized();
    assert!(after >= during + 10, "progress resumes after the heal ({during} → {after})");
    // The harness' equivocator sends each member one of its two votes; whoever saw both (here
    // or in a forwarded notarisation) holds the evidence.
    assert!((0..8).any(|i| sim.nodes[i].stats().equivocations >= 1), "the equivocator was caught");
}

#[test]
fn more_than_f_silent_members_stop_progress() {
    // 7 members tolerate f = 2. With 3 silent, the 4 honest ones are fewer than q = 5: nothing is
    // notarised, so nothing is finalised (liveness is lost, and nothing unsafe can happen).
    let mut sim = Sim::new(roles(7, &[(0, Role::Silent), (1, Role::Silent), (2, Role::Silent)]), 4, (1, 10));
    sim.run_for(Duration::from_secs(5));
    assert!(sim.elapsed() >= Duration::from_secs(5));
    assert_eq!(sim.min_honest_finalized(), 0);
    // Not even ⊥ gathers q votes: every honest member is still at height 1, re-sending.
    assert!((3..7).all(|i| sim.nodes[i].height() == 1));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, .. proptest::prelude::ProptestConfig::default() })]
    #[test]
    fn random_schedules_keep_safety(seed in 0u64..u64::MAX, n in 4usize..11, hi in 2u64..80, loss in 0u32..20) {
        let f = (n - 1) / 3;
        let byz: Vec<(usize, Role)> = (0..f)
            .map(|k| ((seed as usize + k * 5) % n, if k % 2 == 0 { Role::Equivocating } else { Role::Silent }))
            .collect();
        // Half the schedules run as the driver does, without notarisation forwarding. The driver
        // does that only over the mesh topic, a reliable broadcast, so those schedules lose at
        // most 5 % of messages (re-sends at each timeout are then their only repair).
        let forward = seed % 2 == 0 || loss > 5;
        eprintln!("seed {seed} n {n} delays 1..{hi} ms loss {loss} % byzantine {byz:?} forward {forward}");
        let mut sim = Sim::build(roles(n, &byz), seed, (1, hi), forward);
        sim.loss = f64::from(loss) / 100.0;
        sim.run_for(Duration::from_secs(8));
        // Safety is asserted on every finalisation inside the harness; liveness here:
        proptest::prop_assert!(sim.min_honest_finalized() >= 2, "seed {seed}: {} finalised", sim.min_honest_finalized());
    }
}

#[test]
fn a_restarted_member_with_the_guard_never_signs_where_it_may_have_signed() {
    let n = 4;
    let mut sim = Sim::new(roles(n, &[]), 13, (1, 5));
    for i in 0..n {
        sim.nodes[i].guard(0, 40);
        sim.drain(i);
    }
    sim.run_for(Duration::from_secs(1));
    let reserved = sim.reservations.iter().filter(|(i, _)| *i == 3).map(|(_, r)| *r).max().unwrap();
    assert!(reserved > sim.nodes[3].height(), "reservations stay ahead of the height");
    // Member 3 restarts with nothing but its guard file's value.
    let cfg = Config { timeout: Duration::from_millis(300), ..Config::default() };
    let id = Identity::from_seed(*sim.ids[3].seed());
    sim.nodes[3] = Simplex::new(cfg, sim.mesh, sim.members.clone(), Some(id), sim.now);
    sim.nodes[3].guard(reserved, 40);
    sim.drain(3);
    let before = sim.min_honest_finalized();
    let mut signed_low = 0;
    for _ in 0..200 {
        sim.run_for(Duration::from_millis(20));
        // Nothing member 3 sends may be for a height at or below its old reservation.
        signed_low += sim
            .wire
            .iter()
            .filter(|Reverse((_, _, _, bytes))| match postcard::from_bytes::<Message>(bytes).unwrap() {
                Message::Vote { signer: 3, height, .. } | Message::Finalize { signer: 3, height, .. } => {
                    height <= reserved
                }
                _ => false,
            })
            .count();
    }
    assert_eq!(signed_low, 0, "member 3 signed at a height it may have signed at before");
    assert!(sim.min_honest_finalized() >= before + 20, "the others carried on, and 3 followed");
    assert!(sim.nodes[3].height() > reserved, "member 3 is past its old reservation");
    assert_eq!(sim.evidence, 0);
}
