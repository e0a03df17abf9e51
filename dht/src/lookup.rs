//! Iterative Kademlia lookups (Maymounkov & Mazières 2002, §2.3) with α requests in flight per
//! path, and optional disjoint paths in the style of S/Kademlia (Baumgart & Mies 2007, §4.4):
//! the seeds are split over `paths` independent lookups and a node learned by one path is never
//! queried by another, so one colluding node cannot steer every path.
//!
//! Sans-IO: the `Dht` asks for the next requests, sends them, and reports each answer or timeout.
//! A lookup terminates when, on every path, the `k` closest live candidates have all answered
//! (or nothing is left to ask), and it never sends more than `max_queries` per path.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::identity::{Distance, NodeId, NodeRecord};

/// Tunables of a lookup.
#[derive(Clone, Copy, Debug)]
pub struct LookupConfig {
    /// Requests in flight per path.
    pub alpha: usize,
    /// How many closest nodes the lookup must hear from.
    pub k: usize,
    /// Disjoint paths (1 = plain Kademlia).
    pub paths: usize,
    /// Requests per path at most.
    pub max_queries: usize,
    /// Candidates remembered per path (the farthest are forgotten).
    pub max_candidates: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig { alpha: 3, k: 20, paths: 1, max_queries: 60, max_candidates: 160 }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Waiting,
    InFlight,
    Responded,
    Failed,
    /// In flight past the stall time: no longer counted against α or waited for.
    Stalled,
}

#[derive(Clone, Debug)]
struct Candidate {
    record: NodeRecord,
    addr: SocketAddr,
    state: State,
    hop: u32,
    path: usize,
}

/// A node the lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its record.
    pub record: NodeRecord,
    /// Where it answered.
    pub addr: SocketAddr,
    /// 1 for a seed, n + 1 for a node learned from a hop-n answer.
    pub hop: u32,
}

/// One iterative lookup. See the module docs.
#[derive(Debug)]
pub struct Lookup {
    target: NodeId,
    local: NodeId,
    cfg: LookupConfig,
    candidates: BTreeMap<Distance, Candidate>,
    queries: Vec<usize>,
}

impl Lookup {
    /// A lookup for `target` from `local`, seeded with known nodes (e.g. the routing table's closest).
    pub fn new(target: NodeId, local: NodeId, cfg: LookupConfig, seeds: Vec<(NodeRecord, SocketAddr)>) -> Self {
        let paths = cfg.paths.max(1);
        let mut l = Lookup {
            target,
            local,
            cfg: LookupConfig { paths, alpha: cfg.alpha.max(1), ..cfg },
            candidates: BTreeMap::new(),
            queries: vec![0; paths],
        };
        let mut seeds = seeds;
        seeds.sort_by_key(|(r, _)| target.distance(&r.id));
        for (i, (record, addr)) in seeds.into_iter().enumerate() {
            l.add(record, addr, 1, i % paths);
        }
        l
    }

    /// The target.
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn add(&mut self, record: NodeRecord, addr: SocketAddr, hop: u32, path: usize) {
        if record.id == self.local {
            return;
        }
        let d = self.target.distance(&record.id);
        if self.candidates.contains_key(&d) {
            return; // known already, possibly to another path: paths stay disjoint
        }
        self.candidates.insert(d, Candidate { record, addr, state: State::Waiting, hop, path });
        // Bound memory: forget the farthest waiting candidates of this path beyond the cap.
        let on_path: Vec<Distance> = self.candidates.iter().filter(|(_, c)| c.path == path).map(|(d, _)| *d).collect();
        if on_path.len() > self.cfg.max_candidates {
            for d in on_path.iter().skip(self.cfg.max_candidates) {
                if self.candidates.get(d).is_some_and(|c| c.state == State::Waiting) {
                    self.candidates.remove(d);
                }
            }
        }
    }

    /// The `k` closest candidates of `path` that did not fail or stall, closest first.
    fn window(&self, path: usize) -> impl Iterator<Item = (&Distance, &Candidate)> {
        self.candidates
            .iter()
            .filter(move |(_, c)| c.path == path && !matches!(c.state, State::Failed | State::Stalled))
            .take(self.cfg.k)
    }

    /// Requests to send now: marks them in flight.
    pub fn next_requests(&mut self) -> Vec<(NodeRecord, SocketAddr)> {
        let mut out = Vec::new();
        for path in 0..self.cfg.paths {
            let in_flight = self.candidates.values().filter(|c| c.path == path && c.state == State::InFlight).count();
            let budget = self.cfg.alpha.saturating_sub(in_flight);
            let used = self.queries.get(path).copied().unwrap_or(0);
            let budget = budget.min(self.cfg.max_queries.saturating_sub(used));
            let picks: Vec<Distance> =
                self.window(path).filter(|(_, c)| c.state == State::Waiting).take(budget).map(|(d, _)| *d).collect();
            for d in picks {
                if let Some(c) = self.candidates.get_mut(&d) {
                    c.state = State::InFlight;
                    out.push((c.record.clone(), c.addr));
                }
                if let Some(q) = self.queries.get_mut(path) {
                    *q += 1;
                }
            }
        }
        out
    }

    fn find(&mut self, id: &NodeId) -> Option<&mut Candidate> {
        self.candidates.get_mut(&self.target.distance(id))
    }

    /// `from` answered with these (verified) nodes.
    pub fn on_response(&mut self, from: &NodeId, nodes: Vec<(NodeRecord, SocketAddr)>) {
        let Some(c) = self.find(from) else { return };
        if !matches!(c.state, State::InFlight | State::Stalled) {
            return;
        }
        c.state = State::Responded;
        let (hop, path) = (c.hop + 1, c.path);
        for (record, addr) in nodes {
            self.add(record, addr, hop, path);
        }
    }

    /// A request to `from` failed or timed out.
    pub fn on_failure(&mut self, from: &NodeId) {
        if let Some(c) = self.find(from)
            && matches!(c.state, State::InFlight | State::Stalled)
        {
            c.state = State::Failed;
        }
    }

    /// A request to `from` is taking long: stop counting it against α and stop waiting for it
    /// (an answer that comes later is still used).
    pub fn on_stall(&mut self, from: &NodeId) {
        if let Some(c) = self.find(from)
            && c.state == State::InFlight
        {
            c.state = State::Stalled;
        }
    }

    /// Whether the lookup is done on every path.
    pub fn is_finished(&self) -> bool {
        (0..self.cfg.paths).all(|path| {
            let in_flight = self.candidates.values().any(|c| c.path == path && c.state == State::InFlight);
            if in_flight {
                return false;
            }
            let exhausted = self.queries.get(path).copied().unwrap_or(0) >= self.cfg.max_queries;
            exhausted || self.window(path).all(|(_, c)| c.state == State::Responded)
        })
    }

    /// Nodes that answered, closest first (all paths merged), at most `n`.
    pub fn closest(&self, n: usize) -> Vec<Found> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Responded)
            .take(n)
            .map(|c| Found { record: c.record.clone(), addr: c.addr, hop: c.hop })
            .collect()
    }

    /// Requests sent so far, over all paths.
    pub fn queries(&self) -> usize {
        self.queries.iter().sum()
    }

    /// Requests that failed.
    pub fn failures(&self) -> usize {
        self.candidates.values().filter(|c| c.state == State::Failed).count()
    }

    /// The hop at which `id` was learned, if it is a candidate.
    pub fn hop_of(&self, id: &NodeId) -> Option<u32> {
        self.candidates.get(&self.target.distance(id)).map(|c| c.hop)
    }

    /// Whether `id` has a request in flight from this lookup.
    pub fn is_in_flight(&self, id: &NodeId) -> bool {
        self.candidates
            .get(&self.target.distance(id))
            .is_some_and(|c| matches!(c.state, State::InFlight | State::Stalled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn net(n: usize) -> Vec<(NodeRecord, SocketAddr)> {
        (0..n)
            .map(|i| {
                let mut s = [7u8; 32];
                s[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let addr = SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                (Identity::from_seed(s).make_record(1, 0, &[addr.into()]).unwrap(), addr)
            })
            .collect()
    }

    /// What `who` answers to FIND_NODE(target) in a converged Kademlia network: its routing table
    /// holds up to `m` nodes per distance bucket (all of its nearest, fewer and fewer far away),
    /// and it answers with the 20 of those closest to `target`.
    fn knows(
        all: &[(NodeRecord, SocketAddr)],
        who: &NodeId,
        target: &NodeId,
        m: usize,
    ) -> Vec<(NodeRecord, SocketAddr)> {
        let mut buckets: std::collections::BTreeMap<u32, Vec<(NodeRecord, SocketAddr)>> = Default::default();
        for (r, a) in all.iter().filter(|(r, _)| r.id != *who) {
            let b = buckets.entry(who.distance(&r.id).leading_zeros()).or_default();
            if b.len() < m {
                b.push((r.clone(), *a));
            }
        }
        let mut near: Vec<_> = buckets.into_values().flatten().collect();
        near.sort_by_key(|(r, _)| target.distance(&r.id));
        near.truncate(20);
        near
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// On an honest network lookups terminate within the query cap and find the true k
        /// closest; with failing nodes they still terminate.
        #[test]
        fn terminates_and_converges(seed_ix in 0usize..200, target in any::<[u8; 32]>(), paths in 1usize..4, fail_mod in 0usize..5) {
            let all = net(200);
            let target = NodeId(target);
            let local = all[seed_ix].0.id;
            let cfg = LookupConfig { k: 8, paths, ..LookupConfig::default() };
            let seeds = knows(&all, &local, &target, 8);
            let mut l = Lookup::new(target, local, cfg, seeds);
            let mut steps = 0;
            while !l.is_finished() {
                let reqs = l.next_requests();
                prop_assert!(!reqs.is_empty(), "stalled without requests");
                for (r, _) in reqs {
                    let dead = fail_mod > 0 && (r.id.0[0] as usize) % 5 < fail_mod.min(1);
                    if dead { l.on_failure(&r.id) } else { l.on_response(&r.id, knows(&all, &r.id, &target, 8)) }
                }
                steps += 1;
                prop_assert!(steps < 1000);
            }
            prop_assert!(l.queries() <= cfg.max_queries * paths);
            if fail_mod == 0 && paths == 1 {
                let mut truth: Vec<NodeId> = all.iter().map(|(r, _)| r.id).filter(|id| *id != local).collect();
                truth.sort_by_key(|id| target.distance(id));
                let found: Vec<NodeId> = l.closest(8).iter().map(|f| f.record.id).collect();
                prop_assert_eq!(found, truth[..8].to_vec());
            }
        }
    }

    #[test]
    fn disjoint_paths_never_share_a_node() {
        let all = net(100);
        let target = NodeId([0x55; 32]);
        let local = all[0].0.id;
        let cfg = LookupConfig { k: 5, paths: 3, ..LookupConfig::default() };
        let mut l = Lookup::new(target, local, cfg, knows(&all, &local, &target, 9));
        let mut asked_by_path: Vec<std::collections::BTreeSet<NodeId>> = vec![Default::default(); 3];
        for _ in 0..100 {
            if l.is_finished() {
                break;
            }
            for (r, _) in l.next_requests() {
                let path = l.candidates[&target.distance(&r.id)].path;
                asked_by_path[path].insert(r.id);
                l.on_response(&r.id, knows(&all, &r.id, &target, 8));
            }
        }
        assert!(l.is_finished());
        for a in 0..3 {
            for b in a + 1..3 {
                assert!(asked_by_path[a].is_disjoint(&asked_by_path[b]));
            }
        }
    }

    #[test]
    fn stalled_requests_free_their_slot_and_are_not_waited_for() {
        let all = net(100);
        let target = NodeId([0x33; 32]);
        let local = all[0].0.id;
        let cfg = LookupConfig { k: 5, alpha: 3, ..LookupConfig::default() };
        let mut l = Lookup::new(target, local, cfg, knows(&all, &local, &target, 9));
        let first: Vec<NodeId> = l.next_requests().into_iter().map(|(r, _)| r.id).collect();
        assert_eq!(first.len(), 3);
        // Nothing more while three are in flight.
        assert!(l.next_requests().is_empty());
        for id in &first {
            l.on_stall(id);
        }
        // Their slots are free again.
        let second: Vec<NodeId> = l.next_requests().into_iter().map(|(r, _)| r.id).collect();
        assert_eq!(second.len(), 3);
        assert!(second.iter().all(|id| !first.contains(id)));
        let mut rounds = 0;
        let mut pending = second;
        while !l.is_finished() {
            for id in pending.drain(..) {
                l.on_response(&id, knows(&all, &id, &target, 8));
            }
            pending = l.next_requests().into_iter().map(|(r, _)| r.id).collect();
            rounds += 1;
            assert!(rounds < 100);
        }
        // Finished without the stalled three; they are not among the results...
        assert!(l.closest(20).iter().all(|f| !first.contains(&f.record.id)));
        // ...until one answers late, which still counts.
        assert!(l.is_in_flight(&first[0]));
        l.on_response(&first[0], vec![]);
        assert!(l.closest(100).iter().any(|f| f.record.id == first[0]));
    }
}
