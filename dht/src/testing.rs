//! Test harness: several `Dht` cores on virtual time with a scriptable network in between, in the
//! spirit of quinn-proto's `Pair`, and [`Adversary`], a node that lies. Used by tests, the fuzz
//! targets and the simulator (feature `testing`).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::channel::Transmit;
use crate::identity::{Identity, NodeId, NodeRecord};
use crate::proto::serve::{nodes_bodies, pack};
use crate::proto::{AnswerFilter, Dht, DhtConfig, DhtEvent};
use crate::wire::bounded::BoundedVec;
use crate::wire::{Body, Record, SetEntry, WireAddr};

/// A packet in flight.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Sender address.
    pub src: SocketAddr,
    /// Receiver address.
    pub dst: SocketAddr,
    /// Bytes.
    pub data: Vec<u8>,
}

/// Nodes on virtual time; `addr(i)` is 127.0.0.1:(10000 + i).
pub struct Net {
    /// The nodes.
    pub nodes: Vec<Dht>,
    /// Virtual now.
    pub now: Instant,
    /// Packets sent and not yet delivered.
    pub wire: VecDeque<InFlight>,
    /// Every packet ever sent, in order.
    pub log: Vec<InFlight>,
    /// Events seen per node.
    pub events: Vec<Vec<DhtEvent>>,
}

/// The address of node `i`.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 10000 + u16::try_from(i).unwrap_or(0)))
}

/// A config with fixed seeds for node `i`.
pub fn config(i: usize) -> DhtConfig {
    let mut cfg = DhtConfig::default();
    cfg.channel.rng_seed = [u8::try_from(i).unwrap_or(0).wrapping_add(100); 32];
    cfg.channel.unix_time_ns_at_start = 1_700_000_000_000_000_000;
    cfg
}

impl Net {
    /// `n` nodes with identities from seeds `[i+1; 32]` and the given configs.
    pub fn new(cfgs: Vec<DhtConfig>) -> Self {
        let now = Instant::now();
        let nodes = cfgs
            .into_iter()
            .enumerate()
            .filter_map(|(i, cfg)| {
                let id = Identity::from_seed([u8::try_from(i + 1).unwrap_or(0); 32]);
                Dht::new(id, &[WireAddr::from(addr(i))], cfg, now).ok()
            })
            .collect::<Vec<_>>();
        let events = nodes.iter().map(|_| Vec::new()).collect();
        Net { nodes, now, wire: VecDeque::new(), log: Vec::new(), events }
    }

    /// `n` nodes with `config(i)`.
    pub fn with_nodes(n: usize) -> Self {
        Self::new((0..n).map(config).collect())
    }

    /// Moves every node's outgoing datagrams onto the wire and collects events.
    pub fn collect(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            debug_assert!(node.channel().timer_bound_holds(), "channel timer bound above a deadline");
            while let Some(Transmit { dst, payload }) = node.poll_transmit() {
                let p = InFlight { src: addr(i), dst, data: payload };
                self.log.push(p.clone());
                self.wire.push_back(p);
            }
            while let Some(e) = node.poll_event() {
                if let Some(v) = self.events.get_mut(i) {
                    v.push(e);
                }
            }
        }
    }

    fn index_of(a: SocketAddr) -> Option<usize> {
        usize::from(a.port()).checked_sub(10000)
    }

    /// Delivers one packet (no loss), returns false if the wire was empty.
    pub fn step(&mut self) -> bool {
        self.collect();
        let Some(p) = self.wire.pop_front() else { return false };
        self.deliver(p);
        true
    }

    /// Delivers a packet to its destination node (if it is one of ours).
    pub fn deliver(&mut self, p: InFlight) {
        if let Some(node) = Self::index_of(p.dst).and_then(|i| self.nodes.get_mut(i)) {
            node.handle_datagram(self.now, p.src, &p.data);
        }
        self.collect();
    }

    /// Delivers until the wire is empty (bounded).
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
    }

    /// Takes the packets on the wire without delivering them.
    pub fn take_wire(&mut self) -> Vec<InFlight> {
        self.collect();
        self.wire.drain(..).collect()
    }

    /// Advances virtual time and fires due timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for n in self.nodes.iter_mut() {
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        self.collect();
    }

    /// Events of node `i`, drained.
    pub fn take_events(&mut self, i: usize) -> Vec<DhtEvent> {
        self.collect();
        self.events.get_mut(i).map(std::mem::take).unwrap_or_default()
    }
}

/// How a node lies when it answers, for tests and the simulator: an [`AnswerFilter`] that
/// rewrites the honest core's answers, so the honest nodes' defences run against the same core.
#[derive(Clone, Debug)]
pub struct Adversary {
    /// How many colluders a `Nodes` answer carries (a lookup's k; 20 by default, as the
    /// core's own answers).
    pub k: usize,
    /// Node records to add to every `Nodes` answer (forged or colluding).
    pub extra_nodes: Vec<NodeRecord>,
    /// Answer `FindNode` with `extra_nodes` only.
    pub only_extra_nodes: bool,
    /// Answer every `FindValue` with these records, whatever the key, and every `FindSet` with
    /// their set entries as one page that always claims more.
    pub values: Option<Vec<Record>>,
    /// Colluding nodes: every `Nodes` answer (to `FindNode`, and to a `FindValue` or `FindSet`
    /// not answered with `values`) carries the `k` of these closest to the target, so lookups
    /// are steered into the colluders (the adversary of
    /// S/Kademlia, Baumgart & Mies 2007). Shared, as many liars hold the same list.
    pub colluders: Option<std::sync::Arc<Vec<NodeRecord>>>,
}

impl Default for Adversary {
    fn default() -> Self {
        Adversary {
            k: DhtConfig::default().lookup.k,
            extra_nodes: Vec::new(),
            only_extra_nodes: false,
            values: None,
            colluders: None,
        }
    }
}

impl AnswerFilter for Adversary {
    fn rewrite(&self, peer: &NodeId, request: &Body, answers: Vec<Body>) -> Vec<Body> {
        match (request, self.values.as_ref()) {
            (Body::FindValue { key }, Some(lies)) => {
                let records = BoundedVec::try_from(pack(lies.clone()).0).unwrap_or_default();
                vec![Body::Value { key: *key, records }]
            }
            (Body::FindSet { key, .. }, Some(lies)) => {
                // The same page whatever was asked, always with more to come.
                let page: Vec<SetEntry> = lies
                    .iter()
                    .filter_map(|r| if let Record::SetEntry(e) = r { Some(e.clone()) } else { None })
                    .collect();
                let entries = BoundedVec::try_from(pack(page).0).unwrap_or_default();
                vec![Body::SetPage { key: *key, entries, more: true }]
            }
            (Body::FindNode { target }, _) => self.nodes(peer, target, answers),
            (Body::FindValue { key } | Body::FindSet { key, .. }, _) => self.nodes(peer, &NodeId(key.0), answers),
            _ => answers,
        }
    }
}

impl Adversary {
    /// A `Nodes` answer rewritten: the colluders closest to `target`, then `extra_nodes`.
    fn nodes(&self, peer: &NodeId, target: &NodeId, answers: Vec<Body>) -> Vec<Body> {
        if answers.is_empty() || !answers.iter().all(|b| matches!(b, Body::Nodes { .. })) {
            return answers;
        }
        let mut recs: Vec<NodeRecord> = answers
            .into_iter()
            .flat_map(|b| if let Body::Nodes { nodes, .. } = b { nodes.to_vec() } else { Vec::new() })
            .collect();
        if let Some(c) = &self.colluders {
            let k = self.k;
            let mut by: Vec<(crate::identity::Distance, &NodeRecord)> =
                c.iter().filter(|r| r.id != *peer).map(|r| (target.distance(&r.id), r)).collect();
            if k > 0 && by.len() > k {
                by.select_nth_unstable_by_key(k - 1, |x| x.0);
                by.truncate(k);
            }
            by.sort_unstable_by_key(|x| x.0);
            recs = by.into_iter().map(|(_, r)| r.clone()).collect();
        }
        if self.only_extra_nodes {
            recs.clear();
        }
        recs.extend(self.extra_nodes.iter().cloned());
        nodes_bodies(recs)
    }
}
