//! The mesh agreement core (`suprnova_mesh::simplex::Simplex`) under the latency model.
//!
//! Every member runs the real core. Its broadcasts reach every other member after the modelled
//! one-way delay (the mesh topic's links are ordered QUIC streams: no loss, and messages between
//! two members arrive in the order they were sent); the application answers `Propose` with a fresh payload at once and `Verify` with
//! "valid", as `MeshCore` does for a valid batch. Byzantine members are either silent (send
//! nothing) or equivocating (sign a second, different block or vote for every message they send
//! and show each half of the members a different one).
//!
//! After every event the simulator checks safety: no two honest members ever finalise different
//! blocks at one height. Violations are counted, never hidden.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use suprnova_dht::identity::Identity;
use suprnova_mesh::simplex::{Config, Digest, In, Members, Message, Out, Simplex};

use crate::engine::{self, Nanos, NetModel, Queue};

/// How a member behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Sends nothing.
    Silent,
    /// Signs two different blocks or votes for everything and splits the members between them.
    Equivocating,
}

enum Ev {
    Msg { to: u32, msg: Message },
    Wake { node: u32, at: Nanos },
}

/// The simulated mesh.
pub struct MeshSim {
    base: Instant,
    queue: Queue<Ev>,
    net: NetModel,
    rng: ChaCha8Rng,
    mesh: Digest,
    members: Members,
    ids: Vec<Identity>,
    roles: Vec<Behaviour>,
    nodes: Vec<Simplex>,
    wake: Vec<Nanos>,
    /// When each height was first proposed (the leader's `Propose`).
    pub proposed_at: BTreeMap<u64, Nanos>,
    /// Finalised digest and time by height, per member.
    pub finalized: Vec<BTreeMap<u64, (Digest, Nanos)>>,
    /// Safety violations seen (two honest members, two blocks, one height).
    pub violations: u64,
    /// Evidence of equivocation produced by honest members.
    pub evidence: u64,
    /// Messages sent.
    pub messages: u64,
    /// Heights an honest member skipped (`Out::Gap`: final blocks it never saw).
    pub gaps: u64,
    /// Arrival time of the last message per (from, to): links are ordered streams.
    last: Vec<Nanos>,
}

impl MeshSim {
    /// `roles.len()` members placed on the map.
    pub fn new(seed: u64, roles: Vec<Behaviour>, cfg: Config) -> Option<Self> {
        suprnova_dht::simcrypto::enable_insecure_simulation_crypto();
        let n = roles.len();
        let mut net = NetModel::new();
        let mut placement = engine::rng(seed, "mesh placement");
        for _ in 0..n {
            net.place(&mut placement);
        }
        let ids: Vec<Identity> =
            (0..n).map(|i| Identity::from_seed(engine::derive(seed, "mesh member", i as u64))).collect();
        let members = Members::new(ids.iter().map(Identity::public_key).collect())?;
        let mesh = engine::derive(seed, "mesh id", n as u64);
        let base = Instant::now();
        let nodes = ids
            .iter()
            .map(|id| Simplex::new(cfg.clone(), mesh, members.clone(), Some(Identity::from_seed(*id.seed())), base))
            .collect();
        let mut sim = MeshSim {
            base,
            queue: Queue::default(),
            net,
            rng: engine::rng(seed, "mesh network"),
            mesh,
            members,
            ids,
            roles,
            nodes,
            wake: vec![u64::MAX; n],
            proposed_at: BTreeMap::new(),
            finalized: vec![BTreeMap::new(); n],
            violations: 0,
            evidence: 0,
            messages: 0,
            gaps: 0,
            last: vec![0; n * n],
        };
        for i in 0..n {
            sim.drain(i);
        }
        Some(sim)
    }

    /// Virtual now.
    pub fn now(&self) -> Nanos {
        self.queue.now()
    }

    /// Whether member `i` is honest.
    pub fn honest(&self, i: usize) -> bool {
        self.roles.get(i) == Some(&Behaviour::Honest)
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now())
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Nanos) {
        while let Some(ev) = self.queue.pop_until(until) {
            match ev {
                Ev::Msg { to, msg } => {
                    let i = to as usize;
                    if self.roles.get(i) == Some(&Behaviour::Silent) {
                        continue;
                    }
                    let now = self.instant();
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle(now, In::Message(msg));
                    }
                    self.drain(i);
                }
                Ev::Wake { node, at } => {
                    let i = node as usize;
                    if self.wake.get(i) != Some(&at) {
                        continue;
                    }
                    if let Some(w) = self.wake.get_mut(i) {
                        *w = u64::MAX;
                    }
                    let now = self.instant();
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle_timeout(now);
                    }
                    self.drain(i);
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        if from == to {
            return;
        }
        self.messages += 1;
        let d = self.net.one_way(&mut self.rng, from, to);
        let mut at = self.queue.now() + d;
        if let Some(last) = self.last.get_mut(from * self.nodes.len() + to) {
            at = at.max(*last + 1);
            *last = at;
        }
        self.queue.at(at, Ev::Msg { to: to as u32, msg });
    }

    /// The equivocator's twin of a message: the same kind, for a different block.
    fn twin(&self, from: usize, m: &Message) -> Option<Message> {
        suprnova_mesh::fuzzing::equivocation_twin(&self.mesh, self.ids.get(from)?, m)
    }

    /// Carries out member `i`'s outputs and schedules its timer.
    fn drain(&mut self, i: usize) {
        for _ in 0..1_000_000 {
            let Some(out) = self.nodes.get_mut(i).and_then(Simplex::poll) else { break };
            match out {
                Out::Broadcast(m) => match self.roles.get(i).copied().unwrap_or(Behaviour::Honest) {
                    Behaviour::Silent => {}
                    Behaviour::Equivocating => {
                        let twin = self.twin(i, &m);
                        for to in 0..self.nodes.len() {
                            match (&twin, to % 2) {
                                (Some(t), 1) => self.send(i, to, t.clone()),
                                _ => self.send(i, to, m.clone()),
                            }
                        }
                    }
                    Behaviour::Honest => {
                        for to in 0..self.nodes.len() {
                            self.send(i, to, m.clone());
                        }
                    }
                },
                Out::Propose { height, .. } => {
                    self.proposed_at.entry(height).or_insert(self.queue.now());
                    let mut payload = vec![0x01];
                    payload.extend_from_slice(&height.to_le_bytes());
                    payload.push(i as u8);
                    let now = self.instant();
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle(now, In::Payload { height, payload, body: Vec::new() });
                    }
                }
                Out::Verify { digest, proposal } => {
                    let now = self.instant();
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle(now, In::Verified { height: proposal.height, digest, valid: true });
                    }
                }
                Out::Finalized { proposal, digest, .. } => {
                    let now = self.queue.now();
                    if let Some(f) = self.finalized.get_mut(i) {
                        f.entry(proposal.height).or_insert((digest, now));
                    }
                    if self.honest(i) {
                        let conflict =
                            self.finalized.iter().enumerate().any(|(j, f)| {
                                self.honest(j) && f.get(&proposal.height).is_some_and(|(d, _)| *d != digest)
                            });
                        if conflict {
                            self.violations += 1;
                        }
                    }
                }
                Out::Evidence(e) => {
                    if self.honest(i) && e.verify(&self.mesh, &self.members) {
                        self.evidence += 1;
                    }
                }
                Out::Reserve { up_to } => {
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.reserved(up_to);
                    }
                }
                Out::Gap { from, to } => {
                    if self.honest(i) {
                        self.gaps += to.saturating_sub(from) + 1;
                    }
                }
            }
        }
        let Some(t) = self.nodes.get(i).and_then(Simplex::poll_timeout) else { return };
        let t = engine::nanos(t.saturating_duration_since(self.base)).max(self.now());
        if let Some(w) = self.wake.get_mut(i)
            && (t < *w || *w < self.queue.now())
        {
            *w = t;
            self.queue.at(t, Ev::Wake { node: i as u32, at: t });
        }
    }

    /// Heights every honest member finalised, with the time from the first proposal to the last
    /// honest member's finalisation and to the median one's.
    pub fn finality(&self) -> Vec<(u64, Nanos, Nanos)> {
        let honest: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.honest(i)).collect();
        let Some(first) = honest.first().and_then(|&i| self.finalized.get(i)) else { return Vec::new() };
        let mut out = Vec::new();
        for &h in first.keys() {
            let mut times: Vec<Nanos> = Vec::new();
            for &i in &honest {
                if let Some((_, t)) = self.finalized.get(i).and_then(|f| f.get(&h)) {
                    times.push(*t);
                }
            }
            if times.len() < honest.len() {
                continue;
            }
            let Some(&start) = self.proposed_at.get(&h) else { continue };
            times.sort_unstable();
            let median = times.get(times.len() / 2).copied().unwrap_or(start);
            let last = times.last().copied().unwrap_or(start);
            out.push((h, median.saturating_sub(start), last.saturating_sub(start)));
        }
        out
    }

    /// The height every honest member has reached in its own chain (the lowest of their tips).
    pub fn min_honest_height(&self) -> u64 {
        (0..self.nodes.len())
            .filter(|&i| self.honest(i))
            .map(|i| self.finalized.get(i).and_then(|f| f.keys().next_back().copied()).unwrap_or(0))
            .min()
            .unwrap_or(0)
    }
}
