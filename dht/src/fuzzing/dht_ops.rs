//! The structure-aware `Dht` target: a node under test with three honest peers on virtual time,
//! driven by a sequence of operations that `arbitrary` decodes from the fuzz input.
//!
//! Operations mix what an attacker can do (raw datagrams from any source, including the honest
//! peers' addresses; replayed or bit-flipped copies of any packet ever sent; well-formed but
//! hostile messages over a genuine session: requests, unsolicited or mismatched answers, forged
//! records, node lists full of strangers and forgeries), what the node's owner does (put, get,
//! lookups, pings, bootstrap), and what the network does (delivery, loss, time passing).
//!
//! Invariants, checked after every operation: every timer bound holds; requests and queries stay
//! within their caps; the channel holds state only for nodes that authenticated or that the node
//! itself chose to contact; the store stays within its quotas and everything it serves validates;
//! every routing-table record verifies; the rate limiters track no more than their table size,
//! and every limiter refusal is exactly one drop under its reason. The node under test has tiny
//! rate limits and limiter tables (a handful of tokens, four keys), so that short inputs reach
//! refusals, the shared overflow bucket and the sweep. At the end, once sessions have expired and buckets refilled, the node still completes a fresh
//! handshake with an honest peer and is answered.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::channel::PeerInfo;
use crate::identity::{Identity, NodeId, NodeRecord};
use crate::proto::{DhtConfig, DhtEvent, GetMode, Target};
use crate::testing::{InFlight, Net, addr, config};
use crate::wire::bounded::{BoundedBytes, BoundedString, BoundedVec};
use crate::wire::{Body, Key, Message, MutableRecord, Record, SetEntry, WireAddr};

/// The node under test is node 0; nodes 1..=3 are honest peers that joined through it.
const PEERS: usize = 3;

/// One step.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Raw bytes to the node from source `src`: eight attacker ports, or an honest peer's address.
    Raw {
        /// Source choice.
        src: u8,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// A packet from the log of everything sent, delivered again to its destination, verbatim or
    /// with one byte changed.
    Replay {
        /// Which packet.
        pick: u16,
        /// Byte index and XOR mask.
        flip: Option<(u16, u8)>,
    },
    /// An honest peer's session carries a message chosen by the fuzzer to the node.
    Peer {
        /// Which peer.
        peer: u8,
        /// The message.
        msg: Msg,
    },
    /// The node's owner asks for something.
    Local(Local),
    /// Everything in flight is delivered.
    Run,
    /// Packets in flight are delivered where the mask has a bit set, the rest are lost.
    Lose {
        /// Delivery mask, repeating.
        keep: u8,
    },
    /// Time passes (up to 65 s).
    Tick {
        /// Milliseconds.
        ms: u16,
    },
    /// A long wait (up to 255 s): sessions expire, records lapse, refreshes run.
    Sleep {
        /// Seconds.
        s: u8,
    },
}

/// A message an honest peer's session carries (the peer's core does not choose it).
#[derive(Arbitrary, Debug)]
pub enum Msg {
    /// Ping.
    Ping {
        /// Message id.
        id: u16,
    },
    /// FindNode for a node of the pool.
    FindNode {
        /// Message id.
        id: u16,
        /// Target choice.
        target: u8,
    },
    /// FindValue for a key of the key set.
    FindValue {
        /// Message id.
        id: u16,
        /// Key choice.
        key: u8,
    },
    /// FindSet.
    FindSet {
        /// Message id.
        id: u16,
        /// Key choice.
        key: u8,
        /// Page after this writer's key.
        after: Option<u8>,
    },
    /// Store.
    Store {
        /// Message id.
        id: u16,
        /// The record.
        rec: Rec,
        /// Lifetime asked.
        ttl_s: u32,
        /// Compare-and-swap.
        cas: Option<u8>,
        /// Store under another key than the record's.
        wrong_key: Option<u8>,
    },
    /// An answer: Pong (ids are sequential, so the fuzzer can hit the node's own requests).
    Pong {
        /// Message id.
        id: u16,
        /// Record seq claimed.
        seq: u64,
    },
    /// An answer: Nodes from the pool (genuine, unreachable strangers, forged).
    Nodes {
        /// Message id.
        id: u16,
        /// Parts claimed.
        total: u8,
        /// Pool choices.
        nodes: Vec<u8>,
    },
    /// An answer: Value.
    Value {
        /// Message id.
        id: u16,
        /// Key choice.
        key: u8,
        /// Records.
        recs: Vec<Rec>,
    },
    /// An answer: a set page of writers' entries.
    SetPage {
        /// Message id.
        id: u16,
        /// Key choice.
        key: u8,
        /// Writers.
        writers: Vec<u8>,
        /// More pages claimed.
        more: bool,
    },
    /// An answer: StoreAck.
    StoreAck {
        /// Message id.
        id: u16,
        /// Key choice.
        key: u8,
    },
    /// An answer: Error.
    Error {
        /// Message id.
        id: u16,
        /// Code.
        code: u16,
    },
    /// Any plaintext.
    Bytes(Vec<u8>),
}

/// A record built from a few choices: valid ones are signed by one of four writers.
#[derive(Arbitrary, Debug)]
pub enum Rec {
    /// Immutable, `len` copies of `v`.
    Immutable {
        /// Byte.
        v: u8,
        /// Length choice.
        len: u16,
    },
    /// Mutable.
    Mutable {
        /// Writer choice.
        writer: u8,
        /// Salt choice.
        salt: u8,
        /// Sequence number.
        seq: u8,
        /// Signature broken after signing.
        forged: bool,
    },
    /// A set entry.
    Entry {
        /// Writer choice.
        writer: u8,
        /// Set choice.
        set: u8,
        /// Sequence number.
        seq: u8,
        /// Lifetime.
        ttl_s: u16,
        /// Signature broken after signing.
        forged: bool,
    },
}

/// What the node's owner asks.
#[derive(Arbitrary, Debug)]
pub enum Local {
    /// Put (refused locally when invalid).
    Put {
        /// The record.
        rec: Rec,
        /// Lifetime.
        ttl_s: u16,
    },
    /// Get.
    Get {
        /// Key choice.
        key: u8,
        /// All records, or the first.
        all: bool,
    },
    /// Lookup for a pool node.
    FindNode {
        /// Target choice.
        target: u8,
    },
    /// Ping a peer, by record or by address.
    Ping {
        /// Peer choice.
        peer: u8,
        /// Only the address is known.
        by_addr: bool,
    },
    /// Bootstrap through the peers again.
    Bootstrap,
}

/// Fixed material: writers, set keys, and the pool of node records answers may carry.
struct World {
    writers: Vec<Identity>,
    /// Honest nodes first (0..=PEERS), then strangers at addresses nobody listens on, then
    /// forgeries (a genuine record with a field changed after signing).
    pool: Vec<NodeRecord>,
}

impl World {
    fn new(net: &Net) -> Self {
        let writers = (0..4u8).map(|i| Identity::from_seed([0x60 + i; 32])).collect();
        let mut pool: Vec<NodeRecord> = net.nodes.iter().map(|n| n.record().clone()).collect();
        for i in 0..4u16 {
            let id = Identity::from_seed([0x70 + i as u8; 32]);
            let a = WireAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 31_000 + i)));
            if let Ok(r) = id.make_record(1, 0, &[a]) {
                pool.push(r);
            }
        }
        let forged: Vec<NodeRecord> = pool
            .iter()
            .take(2)
            .map(|r| {
                let mut f = r.clone();
                f.seq = f.seq.wrapping_add(1);
                f
            })
            .collect();
        pool.extend(forged);
        World { writers, pool }
    }

    fn writer(&self, w: u8) -> Option<&Identity> {
        self.writers.get(usize::from(w) % self.writers.len().max(1))
    }

    fn set_key(set: u8) -> Key {
        Key::for_immutable(&[b's', set % 2])
    }

    /// The key set: immutable values, mutable records and sets the records above live under.
    fn key(&self, k: u8) -> Key {
        match k % 3 {
            0 => Key::for_immutable(&[k / 3 % 4]),
            1 => match self.writer(k / 3) {
                Some(w) => Key::for_mutable(&w.public_key(), &[k / 12 % 2]),
                None => Key([k; 32]),
            },
            _ => Self::set_key(k / 3),
        }
    }

    /// The record and the key it belongs under.
    fn rec(&self, r: &Rec) -> Option<(Key, Record)> {
        match *r {
            Rec::Immutable { v, len } => {
                let value = vec![v; usize::from(len % 1000) + 1];
                let key = Key::for_immutable(&value);
                Some((key, Record::Immutable { value: BoundedBytes::try_from(value.as_slice()).ok()? }))
            }
            Rec::Mutable { writer, salt, seq, forged } => {
                let mut m = MutableRecord::sign(self.writer(writer)?, &[salt % 2], u64::from(seq), b"v").ok()?;
                if forged {
                    m.seq = m.seq.wrapping_add(1);
                }
                Some((m.key(), Record::Mutable(m)))
            }
            Rec::Entry { writer, set, seq, ttl_s, forged } => {
                let key = Self::set_key(set);
                let mut e = SetEntry::sign(self.writer(writer)?, &key, u64::from(seq), u32::from(ttl_s), b"e").ok()?;
                if forged {
                    e.ttl_s = e.ttl_s.wrapping_add(1);
                }
                Some((key, Record::SetEntry(e)))
            }
        }
    }

    fn node(&self, n: u8) -> Option<&NodeRecord> {
        self.pool.get(usize::from(n) % self.pool.len().max(1))
    }

    fn body(&self, msg: Msg) -> Option<(u64, Body)> {
        let id = |i: u16| u64::from(i);
        Some(match msg {
            Msg::Ping { id: i } => (id(i), Body::Ping),
            Msg::FindNode { id: i, target } => (id(i), Body::FindNode { target: self.node(target)?.id }),
            Msg::FindValue { id: i, key } => (id(i), Body::FindValue { key: self.key(key) }),
            Msg::FindSet { id: i, key, after } => {
                let after = after.and_then(|w| self.writer(w)).map(|w| w.public_key());
                (id(i), Body::FindSet { key: self.key(key), after })
            }
            Msg::Store { id: i, rec, ttl_s, cas, wrong_key } => {
                let (key, record) = self.rec(&rec)?;
                let key = wrong_key.map_or(key, |k| self.key(k));
                (id(i), Body::Store { key, record, ttl_s, expected_seq: cas.map(u64::from) })
            }
            Msg::Pong { id: i, seq } => (id(i), Body::Pong { observed: WireAddr::from(addr(0)), record_seq: seq }),
            Msg::Nodes { id: i, total, nodes } => {
                let recs: Vec<NodeRecord> = nodes.iter().take(20).filter_map(|&n| self.node(n).cloned()).collect();
                (id(i), Body::Nodes { total, nodes: BoundedVec::try_from(recs).ok()? })
            }
            Msg::Value { id: i, key, recs } => {
                let recs: Vec<Record> = recs.iter().take(8).filter_map(|r| self.rec(r).map(|x| x.1)).collect();
                (id(i), Body::Value { key: self.key(key), records: BoundedVec::try_from(recs).ok()? })
            }
            Msg::SetPage { id: i, key, writers, more } => {
                let k = self.key(key);
                let entries: Vec<SetEntry> = writers
                    .iter()
                    .take(8)
                    .filter_map(|&w| SetEntry::sign(self.writer(w)?, &k, 1, 60, b"p").ok())
                    .collect();
                (id(i), Body::SetPage { key: k, entries: BoundedVec::try_from(entries).ok()?, more })
            }
            Msg::StoreAck { id: i, key } => (id(i), Body::StoreAck { key: self.key(key) }),
            Msg::Error { id: i, code } => (id(i), Body::Error { code, detail: BoundedString::truncated("fuzz") }),
            Msg::Bytes(_) => return None,
        })
    }
}

/// Source addresses of raw datagrams.
fn source(src: u8) -> SocketAddr {
    match src % 11 {
        s @ 0..8 => SocketAddr::from((Ipv4Addr::LOCALHOST, 30_000 + u16::from(s))),
        s => addr(usize::from(s - 7)),
    }
}

fn info(rec: &NodeRecord, i: usize) -> PeerInfo {
    PeerInfo { id: rec.id, noise_key: rec.noise_key, addr: addr(i) }
}

fn cfg(i: usize) -> DhtConfig {
    let mut c = config(i);
    c.routing.exempt_local = true;
    if i == 0 {
        // The node under test has tiny rate limits and limiter tables, so that short inputs reach
        // refusals, the overflow bucket and the sweep.
        use crate::ratelimit::Rate;
        c.channel.handshakes_per_addr = Some(Rate::new(1, 2));
        c.channel.handshakes_per_ip = Some(Rate::new(5, 8));
        c.channel.record_requests_per_ip = Some(Rate::new(2, 2));
        c.channel.record_requests_load_per_s = 3;
        c.channel.limit_tracked = 4;
        c.requests_per_peer = Some(Rate::new(20, 10));
        c.requests_per_ip = Some(Rate::new(50, 20));
        c.stores_per_peer = Some(Rate::new(5, 4));
        c.stores_per_ip = Some(Rate::new(10, 8));
    }
    c
}

/// Runs the target on raw fuzz input. Built with the `sim-crypto` feature (as the fuzz crate
/// builds it), the public-key operations are the simulator's BLAKE3 stand-ins: this target is
/// about the DHT state machine, the handshake targets fuzz the real crypto, and the stand-ins
/// make it ten times faster under the sanitizer.
pub fn dht_ops(data: &[u8]) {
    #[cfg(feature = "sim-crypto")]
    // Refused only if the process installed another provider: then that one serves throughout.
    let _ = crate::simcrypto::enable_insecure_simulation_crypto();
    run_bytes(data);
}

/// The target without installing the stand-ins: unit tests run in a process shared with tests that need the
/// real crypto (and cargo unifies features, so the workspace build has `sim-crypto` on).
fn run_bytes(data: &[u8]) {
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let _ = run(ops);
}

/// Runs `ops` and the final check; returns the network for tests to inspect.
fn run(ops: Vec<Op>) -> Option<Net> {
    let mut net = Net::new((0..=PEERS).map(cfg).collect());
    let victim_rec = net.nodes.first().map(|n| n.record().clone())?;
    for i in 1..=PEERS {
        let now = net.now;
        if let Some(n) = net.nodes.get_mut(i) {
            let _ = n.bootstrap(now, vec![Target::Record(victim_rec.clone())]);
        }
        net.run();
    }
    let world = World::new(&net);
    let victim = info(&victim_rec, 0);
    let limit_tracked = cfg(1).channel.limit_tracked;
    for op in ops {
        step(&mut net, &world, &victim, op);
        check(&net, &world, limit_tracked);
    }
    // After the attack: sessions expire, buckets refill; an honest peer is still answered.
    net.run();
    net.advance(Duration::from_secs(200));
    net.run();
    let peer = net.nodes.get(1).map(|n| n.record().clone())?;
    for i in 0..=PEERS {
        net.take_events(i);
    }
    let now = net.now;
    let ping = net.nodes.get_mut(0)?.ping(now, Target::Record(peer));
    // Only a full request table could refuse, and the caps are checked above.
    assert!(ping.is_ok(), "the node cannot even send a ping: {ping:?}");
    let req = ping.ok()?;
    let mut answered = false;
    for _ in 0..40 {
        net.run();
        answered |= net.take_events(0).iter().any(|e| matches!(e, DhtEvent::Pong { request, .. } if *request == req));
        if answered {
            break;
        }
        net.advance(Duration::from_millis(500));
    }
    assert!(answered, "an honest peer no longer answers the node after the attack");
    Some(net)
}

fn step(net: &mut Net, world: &World, victim: &PeerInfo, op: Op) {
    let now = net.now;
    match op {
        Op::Raw { src, bytes } => {
            if let Some(n) = net.nodes.get_mut(0) {
                n.handle_datagram(now, source(src), &bytes);
            }
            net.collect();
        }
        Op::Replay { pick, flip } => {
            let Some(mut p) =
                (!net.log.is_empty()).then(|| usize::from(pick) % net.log.len()).and_then(|i| net.log.get(i).cloned())
            else {
                return;
            };
            if let Some((at, mask)) = flip {
                let len = p.data.len().max(1);
                if let Some(b) = p.data.get_mut(usize::from(at) % len) {
                    *b ^= mask.max(1);
                }
            }
            net.deliver(p);
        }
        Op::Peer { peer, msg } => {
            let from = 1 + usize::from(peer) % PEERS;
            let bytes = match msg {
                Msg::Bytes(b) => b,
                m => match world.body(m).and_then(|(id, body)| Message { id, body }.encode().ok()) {
                    Some(b) => b,
                    None => return,
                },
            };
            if let Some(n) = net.nodes.get_mut(from) {
                let _ = n.send_raw(now, victim, &bytes);
            }
            net.collect();
        }
        Op::Local(l) => {
            let Some(n) = net.nodes.get_mut(0) else { return };
            match l {
                Local::Put { rec, ttl_s } => {
                    if let Some((key, record)) = world.rec(&rec) {
                        let _ = n.put(now, key, record, Duration::from_secs(u64::from(ttl_s)), None);
                    }
                }
                Local::Get { key, all } => {
                    let mode = if all { GetMode::All } else { GetMode::First };
                    let _ = n.get(now, world.key(key), mode);
                }
                Local::FindNode { target } => {
                    let t = world.node(target).map_or(NodeId([target; 32]), |r| r.id);
                    let _ = n.find_node(now, t);
                }
                Local::Ping { peer, by_addr } => {
                    let i = 1 + usize::from(peer) % PEERS;
                    let target = match world.pool.get(i) {
                        Some(r) if !by_addr => Target::Record(r.clone()),
                        Some(r) => Target::Addr { addr: addr(i), expect: Some(r.id) },
                        None => return,
                    };
                    let _ = n.ping(now, target);
                }
                Local::Bootstrap => {
                    let seeds = world.pool.iter().skip(1).take(PEERS).cloned().map(Target::Record).collect();
                    let _ = n.bootstrap(now, seeds);
                }
            }
            net.collect();
        }
        Op::Run => net.run(),
        Op::Lose { keep } => {
            let wire: Vec<InFlight> = net.take_wire();
            for (i, p) in wire.into_iter().enumerate() {
                if keep & (1 << (i % 8)) != 0 {
                    net.deliver(p);
                }
            }
        }
        Op::Tick { ms } => net.advance(Duration::from_millis(u64::from(ms))),
        Op::Sleep { s } => net.advance(Duration::from_secs(u64::from(s))),
    }
}

fn check(net: &Net, world: &World, limit_tracked: usize) {
    let defaults = DhtConfig::default();
    for n in &net.nodes {
        assert!(n.channel().timer_bound_holds(), "a channel timer bound is above a deadline");
        assert!(n.pending_requests() <= defaults.max_pending_requests);
        assert!(n.pending_queries() <= defaults.max_queries);
        assert!(n.table().entries().all(|e| e.record.verify().is_ok()), "an unverified record in the table");
        assert!(n.limits().iter().all(|l| l.tracked <= limit_tracked));
    }
    for n in &net.nodes {
        // Every refusal of a limiter is one drop under its reason, and the other way round.
        let refused =
            |names: &[&str]| -> u64 { n.limits().iter().filter(|l| names.contains(&l.name)).map(|l| l.refused).sum() };
        let d = &n.stats().drops;
        use crate::stats::DropReason as R;
        assert_eq!(d.get(R::RateLimitedHandshake), refused(&["handshakes_per_addr", "handshakes_per_ip"]));
        assert_eq!(d.get(R::RateLimitedRecordRequest), refused(&["record_requests_per_ip"]));
        assert_eq!(d.get(R::RateLimitedRequest), refused(&["requests_per_peer", "requests_per_ip"]));
        assert_eq!(d.get(R::RateLimitedStore), refused(&["stores_per_peer", "stores_per_ip"]));
    }
    let Some(v) = net.nodes.first() else { return };
    // Channel state only for nodes that authenticated (the honest peers) or that the node chose
    // to contact (from the pool), never for a raw source; never for itself.
    let mut others: Vec<NodeId> = world.pool.iter().map(|r| r.id).filter(|id| *id != v.id()).collect();
    others.sort();
    others.dedup();
    assert!(
        v.channel().peer_count() <= others.len(),
        "{} peers with channel state, {} possible",
        v.channel().peer_count(),
        others.len()
    );
    assert!(v.limits().iter().all(|l| l.tracked <= 4), "the node under test tracks at most 4 keys per limit");
    let s = v.store();
    let sc = &defaults.store;
    assert!(s.len() <= sc.max_items && s.bytes() <= sc.max_bytes);
    let now = net.now;
    for k in s.keys() {
        for r in s.get(now, k) {
            assert!(crate::store::validate(k, &r).is_ok(), "the store serves an invalid record");
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn a_scripted_attack_keeps_every_invariant() {
        let forged = Rec::Mutable { writer: 1, salt: 0, seq: 5, forged: true };
        let ops = vec![
            Op::Raw { src: 0, bytes: vec![1, 1, 0, 0] },
            Op::Raw { src: 9, bytes: vec![0xff; 1200] },
            Op::Local(Local::Put { rec: Rec::Immutable { v: 7, len: 100 }, ttl_s: 600 }),
            Op::Run,
            Op::Replay { pick: 3, flip: None },
            Op::Replay { pick: 40, flip: Some((50, 0x80)) },
            Op::Peer { peer: 0, msg: Msg::Store { id: 9, rec: forged, ttl_s: 60, cas: None, wrong_key: None } },
            Op::Peer { peer: 1, msg: Msg::Nodes { id: 2, total: 1, nodes: vec![4, 5, 8, 9] } },
            Op::Peer { peer: 2, msg: Msg::Bytes(vec![0xde, 0xad]) },
            Op::Local(Local::FindNode { target: 6 }),
            Op::Lose { keep: 0b1010_1010 },
            Op::Tick { ms: 3000 },
            Op::Sleep { s: 250 },
            Op::Run,
        ];
        let net = run(ops).unwrap();
        let v = &net.nodes[0];
        let d = &v.stats().drops;
        assert_eq!(d.get(crate::stats::DropReason::BadLength), 1, "{d:?}");
        assert_eq!(d.get(crate::stats::DropReason::TooLarge), 0, "1200 bytes is not too large");
        assert_eq!(d.get(crate::stats::DropReason::QuicBit), 1, "0xff has the QUIC bit");
        assert!(d.get(crate::stats::DropReason::Replay) + d.get(crate::stats::DropReason::UnknownIndex) >= 1, "{d:?}");
        assert_eq!(v.dht_stats().stores_refused.get("bad_signature"), Some(&1));
        assert!(d.get(crate::stats::DropReason::MalformedMessage) >= 1, "{d:?}");
        let key = Key::for_immutable(&[7; 101]); // len 100 means 101 bytes
        assert!(net.nodes.iter().any(|n| !n.store().get(net.now, &key).is_empty()), "the put record is held");
    }

    #[test]
    fn random_inputs_keep_every_invariant() {
        let mut rng = rand_chacha::ChaCha8Rng::from_seed([9; 32]);
        for len in [64usize, 256, 1024, 4096] {
            for _ in 0..3 {
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                run_bytes(&data);
            }
        }
    }
}
