//! The mesh core (`suprnova_mesh::core::MeshCore`) with the Life world, under the latency model.
//!
//! Every member runs the real core: the input pool, batches built when it leads, every proposal
//! re-executed before it votes, the agreement, certified rounds, and the catch-up reads it asks
//! for when it falls behind. Its messages reach every other member after the modelled one-way
//! delay (the mesh topic's links are ordered QUIC streams: no loss, and messages between two
//! members arrive in the order they were sent). Inputs, signed by a few authors, reach every
//! member as gossip does: from one member, then after one more hop to the rest. The DHT is
//! modelled by the newest certified round an honest member stored; a catch-up read returns it
//! after three one-way delays.
//!
//! Byzantine members rewrite their core's outputs: silent ones send nothing (and hear nothing);
//! equivocating ones sign a second, different proposal, vote or finalize vote for every message
//! they send and show each half of the members a different one.
//!
//! After every event the simulator checks safety: no two honest members ever finalise different
//! blocks at one height. Violations are counted, never hidden.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use suprnova_dht::identity::Identity;
use suprnova_mesh::core::{Certified, Fetched, MeshConfig, MeshCore, MeshOut};
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::simplex::{Config, Digest, Message};
use suprnova_mesh::world::{Genesis, Limits, SignedInput};

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

/// Side of the board (16 × 16 cells: 32 bytes of state).
const SIDE: u16 = 16;
/// Input authors.
const AUTHORS: usize = 4;

enum Ev {
    Msg { to: u32, msg: Message },
    Input { to: u32, input: Box<SignedInput>, relay: bool },
    Wake { node: u32, at: Nanos },
    Fetched { node: u32 },
    Submit,
}

/// The simulated mesh.
pub struct MeshSim {
    base: Instant,
    queue: Queue<Ev>,
    net: NetModel,
    rng: ChaCha8Rng,
    mesh: Digest,
    ids: Vec<Identity>,
    authors: Vec<Identity>,
    roles: Vec<Behaviour>,
    nodes: Vec<MeshCore<Life>>,
    wake: Vec<Nanos>,
    /// The newest certified round an honest member stored (the DHT's copy).
    stored: Option<Arc<Certified<Board>>>,
    input_every: Option<Nanos>,
    /// When each height was first proposed (the leader's proposal leaving it).
    pub proposed_at: BTreeMap<u64, Nanos>,
    /// Finalised digest and time by height, per member.
    pub finalized: Vec<BTreeMap<u64, (Digest, Nanos)>>,
    /// Safety violations seen (two honest members, two blocks, one height).
    pub violations: u64,
    /// Messages sent.
    pub messages: u64,
    /// Heights an honest member skipped (`MeshOut::Gap`: final blocks it never saw).
    pub gaps: u64,
    /// Catch-up reads honest members asked for.
    pub fetches: u64,
    /// Inputs signed and gossiped.
    pub inputs_submitted: u64,
    /// Arrival time of the last message per (from, to): links are ordered streams.
    last: Vec<Nanos>,
    /// Until when each member hears no agreement message (cut off from the topic).
    deaf: Vec<Nanos>,
}

impl MeshSim {
    /// `roles.len()` members placed on the map, agreeing with `cfg`, a round as soon as the last
    /// is final.
    pub fn new(seed: u64, roles: Vec<Behaviour>, cfg: Config) -> Option<Self> {
        let _ = suprnova_dht::simcrypto::enable_insecure_simulation_crypto();
        let n = roles.len();
        let mut net = NetModel::new();
        let mut placement = engine::rng(seed, "mesh placement");
        for _ in 0..n {
            net.place(&mut placement);
        }
        let ids: Vec<Identity> =
            (0..n).map(|i| Identity::from_seed(engine::derive(seed, "mesh member", i as u64))).collect();
        let authors =
            (0..AUTHORS).map(|i| Identity::from_seed(engine::derive(seed, "mesh author", i as u64))).collect();
        let s0 = Board::empty(SIDE, SIDE);
        let genesis =
            Genesis::for_world(&Life, &s0, ids.iter().map(Identity::public_key).collect(), 0, Limits::default())?;
        let base = Instant::now();
        let mcfg = MeshConfig { simplex: cfg, ..MeshConfig::default() };
        let mut nodes = Vec::with_capacity(n);
        for id in &ids {
            let me = Some(Identity::from_seed_with(*id.seed(), id.crypto()));
            nodes.push(MeshCore::new(Life, genesis.clone(), s0.clone(), me, mcfg.clone(), base).ok()?);
        }
        let mut sim = MeshSim {
            base,
            queue: Queue::default(),
            net,
            rng: engine::rng(seed, "mesh network"),
            mesh: genesis.mesh_id(),
            ids,
            authors,
            roles,
            nodes,
            wake: vec![u64::MAX; n],
            stored: None,
            input_every: None,
            proposed_at: BTreeMap::new(),
            finalized: vec![BTreeMap::new(); n],
            violations: 0,
            messages: 0,
            gaps: 0,
            fetches: 0,
            inputs_submitted: 0,
            last: vec![0; n * n],
            deaf: vec![0; n],
        };
        for i in 0..n {
            sim.drain(i);
        }
        Some(sim)
    }

    /// From now on an author signs one input (sets a cell) every `every` and gossips it.
    pub fn submit_every(&mut self, every: Nanos) {
        self.input_every = Some(every.max(1));
        self.queue.after(every.max(1), Ev::Submit);
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

    fn listens(&self, i: usize) -> bool {
        self.roles.get(i).is_some_and(|r| *r != Behaviour::Silent)
            && self.deaf.get(i).is_none_or(|&until| until <= self.queue.now())
    }

    /// Member `i` hears no agreement message until virtual time `until` (its links are cut; what
    /// it sends still arrives): afterwards it must catch up on the rounds it missed.
    pub fn deafen(&mut self, i: usize, until: Nanos) {
        if let Some(d) = self.deaf.get_mut(i) {
            *d = until;
        }
    }

    /// Member `i`'s newest certified round.
    pub fn final_round(&self, i: usize) -> u64 {
        self.nodes.get(i).map_or(0, MeshCore::final_round)
    }

    /// Whether member `i` ever moved forward by a catch-up read rather than by the agreement.
    pub fn caught_up(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.stats().caught_up > 0)
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Nanos) {
        while let Some(ev) = self.queue.pop_until(until) {
            let now = self.instant();
            let node = match ev {
                Ev::Msg { to, msg } => {
                    let i = to as usize;
                    if !self.listens(i) {
                        continue;
                    }
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle_message(now, msg);
                    }
                    i
                }
                Ev::Input { to, input, relay } => {
                    let i = to as usize;
                    if relay {
                        self.relay(i, &input);
                    }
                    if let Some(n) = self.nodes.get_mut(i) {
                        // Refusals (duplicates, mostly) are counted by the core.
                        let _ = n.submit(*input);
                    }
                    i
                }
                Ev::Wake { node, at } => {
                    let i = node as usize;
                    if self.wake.get(i) != Some(&at) {
                        continue;
                    }
                    if let Some(w) = self.wake.get_mut(i) {
                        *w = u64::MAX;
                    }
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.handle_timeout(now);
                    }
                    i
                }
                Ev::Fetched { node } => {
                    let i = node as usize;
                    let round: Option<Fetched<Board>> = self
                        .stored
                        .as_ref()
                        .and_then(|c| Some((c.round, (*c.state).clone(), c.proposal.clone(), c.certificate.clone()?)));
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.fetched(now, round);
                    }
                    i
                }
                Ev::Submit => {
                    self.submit_one();
                    continue;
                }
            };
            self.drain(node);
        }
    }

    /// One author signs one input and hands it to a random member, which gossips it on.
    fn submit_one(&mut self) {
        let k = self.inputs_submitted;
        let n = self.nodes.len();
        let author = self.authors.get(k as usize % AUTHORS.max(1));
        let round = self.nodes.iter().map(MeshCore::final_round).max().unwrap_or(0) + 1;
        let cell = SetCell { x: (k % u64::from(SIDE)) as u16, y: ((k / 7) % u64::from(SIDE)) as u16, alive: true };
        if let Some(Ok(input)) = author.map(|a| SignedInput::sign(a, &self.mesh, round, k, &cell)) {
            let to = engine::below(&mut self.rng, n);
            self.queue.after(0, Ev::Input { to: to as u32, input: Box::new(input), relay: true });
            self.inputs_submitted += 1;
        }
        if let Some(every) = self.input_every {
            self.queue.after(every, Ev::Submit);
        }
    }

    /// Gossip's second hop: member `from` passes an input it got first to every other member.
    fn relay(&mut self, from: usize, input: &SignedInput) {
        for to in 0..self.nodes.len() {
            if to != from {
                let d = self.net.one_way(&mut self.rng, from, to);
                self.queue.after(d, Ev::Input { to: to as u32, input: Box::new(input.clone()), relay: false });
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

    /// Member `i`'s message to the others, as its behaviour rewrites it.
    fn broadcast(&mut self, i: usize, m: Message) {
        if let Message::Propose { proposal, .. } = &m {
            self.proposed_at.entry(proposal.height).or_insert(self.queue.now());
        }
        match self.roles.get(i).copied().unwrap_or(Behaviour::Honest) {
            Behaviour::Silent => {}
            Behaviour::Equivocating => {
                let twin = self.ids.get(i).and_then(|id| suprnova_mesh::testing::equivocation_twin(&self.mesh, id, &m));
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
        }
    }

    /// Member `i` finalised `c`: recorded, checked against the other honest members, stored.
    fn certified(&mut self, i: usize, c: Certified<Board>) {
        let now = self.queue.now();
        if let Some(f) = self.finalized.get_mut(i) {
            f.entry(c.height).or_insert((c.digest, now));
        }
        if !self.honest(i) {
            return;
        }
        let conflict = self
            .finalized
            .iter()
            .enumerate()
            .any(|(j, f)| self.honest(j) && f.get(&c.height).is_some_and(|(d, _)| *d != c.digest));
        if conflict {
            self.violations += 1;
        }
        if c.certificate.is_some() && self.stored.as_ref().is_none_or(|s| s.round < c.round) {
            self.stored = Some(Arc::new(c));
        }
    }

    /// Carries out member `i`'s outputs and schedules its timer.
    fn drain(&mut self, i: usize) {
        for _ in 0..1_000_000 {
            let Some(out) = self.nodes.get_mut(i).and_then(MeshCore::poll) else { break };
            match out {
                MeshOut::Send(m) => self.broadcast(i, m),
                MeshOut::Certified(c) => self.certified(i, c),
                MeshOut::Evidence(_) => {}
                MeshOut::Reserve { up_to } => {
                    if let Some(n) = self.nodes.get_mut(i) {
                        n.reserved(up_to);
                    }
                }
                MeshOut::Gap { from, to } => {
                    if self.honest(i) {
                        self.gaps += to.saturating_sub(from) + 1;
                    }
                }
                MeshOut::Fetch => {
                    if self.honest(i) {
                        self.fetches += 1;
                    }
                    let mut d = 0;
                    for _ in 0..3 {
                        let j = engine::below(&mut self.rng, self.nodes.len());
                        d += self.net.one_way(&mut self.rng, i, j);
                    }
                    self.queue.after(d, Ev::Fetched { node: i as u32 });
                }
            }
        }
        let Some(t) = self.nodes.get(i).and_then(MeshCore::poll_timeout) else { return };
        let t = engine::nanos(t.saturating_duration_since(self.base)).max(self.now());
        if let Some(w) = self.wake.get_mut(i)
            && (t < *w || *w < self.queue.now())
        {
            *w = t;
            self.queue.at(t, Ev::Wake { node: i as u32, at: t });
        }
    }

    /// Equivocations honest members caught (each one's count: one per equivocator, height and
    /// vote kind).
    pub fn evidence(&self) -> u64 {
        (0..self.nodes.len())
            .filter(|&i| self.honest(i))
            .filter_map(|i| self.nodes.get(i))
            .map(|n| n.agreement_stats().equivocations)
            .sum()
    }

    /// Proposals honest members refused after re-executing them, by reason.
    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        let mut all = BTreeMap::new();
        for n in (0..self.nodes.len()).filter(|&i| self.honest(i)).filter_map(|i| self.nodes.get(i)) {
            for (why, k) in &n.stats().batches_refused {
                *all.entry(*why).or_insert(0) += k;
            }
        }
        all
    }

    /// Inputs applied in certified rounds, the fewest over honest members.
    pub fn inputs_applied(&self) -> u64 {
        (0..self.nodes.len())
            .filter(|&i| self.honest(i))
            .filter_map(|i| self.nodes.get(i))
            .map(|n| n.stats().inputs_applied)
            .min()
            .unwrap_or(0)
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
