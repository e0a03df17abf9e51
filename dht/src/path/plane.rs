//! The data plane (wire-spec §15.3): relayed frames in and out, sans-IO.
//!
//! * As an **endpoint** it holds legs: `(relay address, circuit id)` ↔ virtual address. Frames on a
//!   leg are unwrapped and handed up with the virtual address as source; datagrams sent to a
//!   virtual address are wrapped for the relay.
//! * As a **relay** it holds circuits: two legs bound to each other. A frame on one leg leaves on the
//!   other with the circuit id rewritten, the same length, within token buckets per circuit and
//!   direction and one for the whole relay. Unknown circuits are dropped, never answered.
//!
//! Every map is capped; every drop is counted by reason.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::virtual_addr;
use crate::identity::NodeId;
use crate::wire::packet::{self, Packet, RELAYED_HEADER_LEN};

/// Limits of the data plane.
#[derive(Clone, Debug)]
pub struct PlaneConfig {
    /// Endpoint legs held at once (opened by `Connect`, or created by frames from our relays).
    pub max_legs: usize,
    /// Of those, legs created by frames from a relay we hold a reservation on.
    pub max_auto_legs: usize,
    /// An endpoint leg with no frame either way for this long is forgotten.
    pub leg_idle: Duration,
    /// Relay circuits held at once.
    pub max_circuits: usize,
    /// A relay circuit with no frame for this long is closed.
    pub circuit_idle: Duration,
    /// Burst of a circuit's bucket, bytes.
    pub circuit_burst: u32,
    /// Bytes per second the relay forwards in all, both ways.
    pub relay_bytes_per_s: u64,
    /// Events kept for the driver at most (older ones are dropped first).
    pub max_events: usize,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            max_legs: 128,
            max_auto_legs: 64,
            leg_idle: Duration::from_secs(90),
            max_circuits: 256,
            circuit_idle: Duration::from_secs(60),
            circuit_burst: 512 * 1024,
            relay_bytes_per_s: 32 * 1024 * 1024,
            max_events: 256,
        }
    }
}

/// What the DHT core tells the plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaneOp {
    /// This node holds a reservation on the relay at `relay` until `until`: frames from it on
    /// circuits we do not know open legs (someone connected to us).
    Reserved {
        /// The relay's address.
        relay: SocketAddr,
        /// When the reservation ends.
        until: Instant,
    },
    /// The reservation on `relay` is gone.
    Unreserved {
        /// The relay's address.
        relay: SocketAddr,
    },
    /// We opened a circuit to `peer` through `relay` (`Connected{circuit}`).
    Leg {
        /// The relay's address.
        relay: SocketAddr,
        /// Our leg's circuit id.
        circuit: u64,
        /// Who is at the other end.
        peer: NodeId,
    },
    /// As a relay: bind the legs `a` and `b` (address, circuit id) to each other.
    Open {
        /// The initiator's leg.
        a: (SocketAddr, u64),
        /// The target's leg.
        b: (SocketAddr, u64),
        /// Forwarding rate per direction, bytes per second.
        bytes_per_s: u32,
    },
    /// As a relay: close the circuit that has leg `a` as its initiator leg.
    Close {
        /// The initiator's leg.
        a: (SocketAddr, u64),
    },
}

/// What the plane tells the DHT core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaneEvent {
    /// A relay circuit closed (idle), or could not be opened: its initiator leg, and bytes
    /// forwarded in all.
    CircuitClosed {
        /// The initiator's leg.
        a: (SocketAddr, u64),
        /// Bytes forwarded, both ways.
        bytes: u64,
    },
    /// One of our legs was forgotten (idle): sessions that ran over it must move.
    LegClosed {
        /// Its virtual address.
        path: SocketAddr,
    },
}

/// What to do with a received relayed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Ours: the inner datagram starts at `start` and comes from the virtual address `src`.
    Local {
        /// The leg's virtual address.
        src: SocketAddr,
        /// Offset of the inner datagram in the buffer.
        start: usize,
    },
    /// Relay: the buffer was rewritten in place; send it, whole, to `to`.
    Forward {
        /// The other leg's address.
        to: SocketAddr,
    },
    /// A keep-alive (empty inner datagram): taken in, nothing to pass on.
    Consumed,
    /// Dropped, for this reason.
    Drop(PlaneDrop),
}

/// Why the plane dropped a frame or a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlaneDrop {
    /// Not a well-formed relayed frame.
    Malformed,
    /// A frame on a circuit this node neither relays nor is an end of.
    UnknownCircuit,
    /// Over a circuit's or the relay's rate.
    Rate,
    /// A leg could not be created: too many legs, or its virtual address is taken.
    TooManyLegs,
    /// A send to a virtual address with no leg.
    NoRoute,
    /// A datagram too long to wrap in a frame.
    TooLong,
}

impl PlaneDrop {
    /// Every reason, in order.
    pub const ALL: [PlaneDrop; 6] = [
        PlaneDrop::Malformed,
        PlaneDrop::UnknownCircuit,
        PlaneDrop::Rate,
        PlaneDrop::TooManyLegs,
        PlaneDrop::NoRoute,
        PlaneDrop::TooLong,
    ];

    /// Stable snake_case name (metrics, wire-spec §9).
    pub fn name(self) -> &'static str {
        match self {
            PlaneDrop::Malformed => "relay_malformed",
            PlaneDrop::UnknownCircuit => "relay_unknown_circuit",
            PlaneDrop::Rate => "relay_rate",
            PlaneDrop::TooManyLegs => "relay_too_many_legs",
            PlaneDrop::NoRoute => "relay_no_route",
            PlaneDrop::TooLong => "relay_too_long",
        }
    }
}

/// Counters of the plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlaneStats {
    /// Frames received on our own legs, and their inner bytes.
    pub local_frames_in: u64,
    /// Inner bytes received on our own legs.
    pub local_bytes_in: u64,
    /// Frames sent on our own legs.
    pub local_frames_out: u64,
    /// Inner bytes sent on our own legs.
    pub local_bytes_out: u64,
    /// Frames forwarded as a relay.
    pub relayed_frames: u64,
    /// Frame bytes received and forwarded as a relay (the same number leaves as arrived).
    pub relayed_bytes: u64,
    /// Circuits opened and closed as a relay.
    pub circuits_opened: u64,
    /// Circuits closed as a relay.
    pub circuits_closed: u64,
    /// Drops by reason.
    pub drops: HashMap<PlaneDrop, u64>,
}

/// One of this node's legs.
#[derive(Clone, Debug)]
pub struct Leg {
    /// The relay.
    pub relay: SocketAddr,
    /// Our leg's circuit id.
    pub circuit: u64,
    /// Who is at the other end, when we opened the leg.
    pub peer: Option<NodeId>,
    /// Inner bytes received and sent.
    pub bytes_in: u64,
    /// Inner bytes sent.
    pub bytes_out: u64,
    last: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, n: usize, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        let n = n as f64;
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }
}

#[derive(Clone, Debug)]
struct Circuit {
    a: (SocketAddr, u64),
    b: (SocketAddr, u64),
    rate: f64,
    /// Buckets for a→b and b→a.
    buckets: [Bucket; 2],
    last: Instant,
    bytes: u64,
}

/// The data plane. See the module docs.
#[derive(Debug)]
pub struct DataPlane {
    cfg: PlaneConfig,
    legs: HashMap<SocketAddr, Leg>,
    by_circuit: HashMap<(SocketAddr, u64), SocketAddr>,
    auto_legs: usize,
    reserved: HashMap<SocketAddr, Instant>,
    /// Relay circuits by initiator leg; `ends` maps each leg to (initiator leg, direction).
    circuits: HashMap<(SocketAddr, u64), Circuit>,
    ends: HashMap<(SocketAddr, u64), ((SocketAddr, u64), usize)>,
    relay_bucket: Bucket,
    events: VecDeque<PlaneEvent>,
    stats: PlaneStats,
    next_sweep: Instant,
}

impl DataPlane {
    /// An empty plane.
    pub fn new(cfg: PlaneConfig, now: Instant) -> Self {
        let burst = cfg.relay_bytes_per_s as f64 / 4.0;
        DataPlane {
            cfg,
            legs: HashMap::new(),
            by_circuit: HashMap::new(),
            auto_legs: 0,
            reserved: HashMap::new(),
            circuits: HashMap::new(),
            ends: HashMap::new(),
            relay_bucket: Bucket { tokens: burst, last: now },
            events: VecDeque::new(),
            stats: PlaneStats::default(),
            next_sweep: now,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &PlaneStats {
        &self.stats
    }

    /// This node's legs by virtual address.
    pub fn legs(&self) -> impl Iterator<Item = (&SocketAddr, &Leg)> {
        self.legs.iter()
    }

    /// Relay circuits held.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// Relays this node holds a reservation on.
    pub fn reservations(&self) -> impl Iterator<Item = &SocketAddr> {
        self.reserved.keys()
    }

    /// Takes the events for the DHT core.
    pub fn take_events(&mut self) -> Vec<PlaneEvent> {
        self.events.drain(..).collect()
    }

    fn drop(&mut self, why: PlaneDrop) -> Inbound {
        *self.stats.drops.entry(why).or_insert(0) += 1;
        Inbound::Drop(why)
    }

    fn push_event(&mut self, ev: PlaneEvent) {
        if self.events.len() >= self.cfg.max_events {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    /// Applies an instruction of the DHT core.
    pub fn apply(&mut self, now: Instant, op: PlaneOp) {
        self.sweep(now);
        match op {
            PlaneOp::Reserved { relay, until } => {
                if self.reserved.len() < self.cfg.max_legs || self.reserved.contains_key(&relay) {
                    self.reserved.insert(relay, until);
                }
            }
            PlaneOp::Unreserved { relay } => {
                self.reserved.remove(&relay);
            }
            PlaneOp::Leg { relay, circuit, peer } => {
                let _ = self.add_leg(now, relay, circuit, Some(peer));
            }
            PlaneOp::Open { a, b, bytes_per_s } => self.open(now, a, b, bytes_per_s),
            PlaneOp::Close { a } => self.close(&a, false),
        }
    }

    fn add_leg(&mut self, now: Instant, relay: SocketAddr, circuit: u64, peer: Option<NodeId>) -> Option<SocketAddr> {
        if let Some(v) = self.by_circuit.get(&(relay, circuit)) {
            return Some(*v);
        }
        let v = virtual_addr(relay, circuit);
        let auto = peer.is_none();
        if self.legs.len() >= self.cfg.max_legs
            || (auto && self.auto_legs >= self.cfg.max_auto_legs)
            || self.legs.contains_key(&v)
        {
            self.drop(PlaneDrop::TooManyLegs);
            return None;
        }
        self.legs.insert(v, Leg { relay, circuit, peer, bytes_in: 0, bytes_out: 0, last: now });
        self.by_circuit.insert((relay, circuit), v);
        self.auto_legs += usize::from(auto);
        Some(v)
    }

    fn open(&mut self, now: Instant, a: (SocketAddr, u64), b: (SocketAddr, u64), bytes_per_s: u32) {
        if self.circuits.len() >= self.cfg.max_circuits || self.ends.contains_key(&a) || self.ends.contains_key(&b) {
            // Refused here: the relay's core must free what it counted for it.
            self.push_event(PlaneEvent::CircuitClosed { a, bytes: 0 });
            return;
        }
        let burst = f64::from(self.cfg.circuit_burst);
        let bucket = Bucket { tokens: burst, last: now };
        let c = Circuit { a, b, rate: f64::from(bytes_per_s), buckets: [bucket; 2], last: now, bytes: 0 };
        self.circuits.insert(a, c);
        self.ends.insert(a, (a, 0));
        self.ends.insert(b, (a, 1));
        self.stats.circuits_opened += 1;
    }

    fn close(&mut self, a: &(SocketAddr, u64), report: bool) {
        let Some(c) = self.circuits.remove(a) else { return };
        self.ends.remove(&c.a);
        self.ends.remove(&c.b);
        self.stats.circuits_closed += 1;
        if report {
            self.push_event(PlaneEvent::CircuitClosed { a: c.a, bytes: c.bytes });
        }
    }

    /// Forgets idle legs and circuits and ended reservations (at most once a second).
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + Duration::from_secs(1);
        self.reserved.retain(|_, until| *until > now);
        let idle = self.cfg.circuit_idle;
        let stale: Vec<_> =
            self.circuits.values().filter(|c| now.saturating_duration_since(c.last) >= idle).map(|c| c.a).collect();
        for a in stale {
            self.close(&a, true);
        }
        let idle = self.cfg.leg_idle;
        let gone: Vec<SocketAddr> =
            self.legs.iter().filter(|(_, l)| now.saturating_duration_since(l.last) >= idle).map(|(v, _)| *v).collect();
        for v in gone {
            if let Some(l) = self.legs.remove(&v) {
                self.by_circuit.remove(&(l.relay, l.circuit));
                self.auto_legs = self.auto_legs.saturating_sub(usize::from(l.peer.is_none()));
                self.push_event(PlaneEvent::LegClosed { path: v });
            }
        }
    }

    /// A relayed frame (first byte 7) arrived from `from`, in `buf`; see [`Inbound`].
    pub fn inbound(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8]) -> Inbound {
        self.sweep(now);
        let (circuit, inner_len) = match packet::parse(buf) {
            Ok(Packet::Relayed(c, inner)) => (c, inner.len()),
            _ => return self.drop(PlaneDrop::Malformed),
        };
        if let Some(&(a, dir)) = self.ends.get(&(from, circuit)) {
            return self.forward(now, a, dir, buf, inner_len);
        }
        let leg = match self.by_circuit.get(&(from, circuit)) {
            Some(v) => Some(*v),
            None if self.reserved.get(&from).is_some_and(|u| *u > now) => self.add_leg(now, from, circuit, None),
            None => return self.drop(PlaneDrop::UnknownCircuit),
        };
        let Some(v) = leg else { return Inbound::Drop(PlaneDrop::TooManyLegs) };
        if let Some(l) = self.legs.get_mut(&v) {
            l.last = now;
            l.bytes_in += inner_len as u64;
        }
        if inner_len == 0 {
            return Inbound::Consumed;
        }
        self.stats.local_frames_in += 1;
        self.stats.local_bytes_in += inner_len as u64;
        Inbound::Local { src: v, start: RELAYED_HEADER_LEN }
    }

    fn forward(&mut self, now: Instant, a: (SocketAddr, u64), dir: usize, buf: &mut [u8], inner: usize) -> Inbound {
        let (burst, relay_rate) = (f64::from(self.cfg.circuit_burst), self.cfg.relay_bytes_per_s as f64);
        let Some(c) = self.circuits.get_mut(&a) else { return self.drop(PlaneDrop::UnknownCircuit) };
        c.last = now;
        if inner == 0 {
            return Inbound::Consumed;
        }
        let rate = c.rate;
        let ok = c.buckets.get_mut(dir).is_some_and(|b| b.take(now, buf.len(), rate, burst));
        let to = if dir == 0 { c.b } else { c.a };
        if !ok || !self.relay_bucket.take(now, buf.len(), relay_rate, relay_rate / 4.0) {
            return self.drop(PlaneDrop::Rate);
        }
        if let Some(c) = self.circuits.get_mut(&a) {
            c.bytes += buf.len() as u64;
        }
        if let Some(id) = buf.get_mut(4..RELAYED_HEADER_LEN) {
            id.copy_from_slice(&to.1.to_le_bytes());
        }
        self.stats.relayed_frames += 1;
        self.stats.relayed_bytes += buf.len() as u64;
        Inbound::Forward { to: to.0 }
    }

    /// Where a datagram of `len` bytes for the virtual address `dst` goes: the relay's address
    /// and the frame header to put before it. `Err` if there is no leg or it is too long.
    pub fn outbound(
        &mut self,
        now: Instant,
        dst: SocketAddr,
        len: usize,
    ) -> Result<(SocketAddr, [u8; RELAYED_HEADER_LEN]), PlaneDrop> {
        if RELAYED_HEADER_LEN + len > packet::MAX_RELAYED_LEN {
            self.drop(PlaneDrop::TooLong);
            return Err(PlaneDrop::TooLong);
        }
        let Some(l) = self.legs.get_mut(&dst) else {
            self.drop(PlaneDrop::NoRoute);
            return Err(PlaneDrop::NoRoute);
        };
        l.last = now;
        l.bytes_out += len as u64;
        let out = (l.relay, packet::relayed_header(l.circuit));
        self.stats.local_frames_out += 1;
        self.stats.local_bytes_out += len as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_relay_forwards_same_size_with_the_id_rewritten_and_drops_unknown_circuits() {
        let t0 = Instant::now();
        let mut p = DataPlane::new(PlaneConfig::default(), t0);
        let (x, y) = (a("198.18.1.2:4433"), a("198.18.101.2:40000"));
        p.apply(t0, PlaneOp::Open { a: (x, 11), b: (y, 22), bytes_per_s: 1 << 20 });
        let mut f = packet::relayed(11, b"\x45hello").unwrap();
        assert_eq!(p.inbound(t0, x, &mut f), Inbound::Forward { to: y });
        assert_eq!(f, packet::relayed(22, b"\x45hello").unwrap());
        let mut back = packet::relayed(22, b"\x45hi").unwrap();
        assert_eq!(p.inbound(t0, y, &mut back), Inbound::Forward { to: x });
        assert_eq!(back, packet::relayed(11, b"\x45hi").unwrap());
        // The right circuit id from the wrong address is unknown.
        let mut spoof = packet::relayed(11, b"\x45x").unwrap();
        assert_eq!(p.inbound(t0, y, &mut spoof), Inbound::Drop(PlaneDrop::UnknownCircuit));
        assert_eq!(p.stats().relayed_bytes, 2 * 12 + 6 + 3);
        // Idle: closed and reported.
        let later = t0 + Duration::from_secs(61);
        let mut f = packet::relayed(11, b"\x45late").unwrap();
        assert_eq!(p.inbound(later, x, &mut f), Inbound::Drop(PlaneDrop::UnknownCircuit));
        assert_eq!(p.take_events(), vec![PlaneEvent::CircuitClosed { a: (x, 11), bytes: 33 }]);
    }

    #[test]
    fn a_circuit_is_held_to_its_rate() {
        let t0 = Instant::now();
        let cfg = PlaneConfig { circuit_burst: 10_000, ..PlaneConfig::default() };
        let mut p = DataPlane::new(cfg, t0);
        let (x, y) = (a("198.18.1.2:4433"), a("198.18.2.2:4433"));
        p.apply(t0, PlaneOp::Open { a: (x, 1), b: (y, 2), bytes_per_s: 1000 });
        let mut sent = 0;
        for _ in 0..100 {
            let mut f = packet::relayed(1, &[0x45; 988]).unwrap();
            if p.inbound(t0, x, &mut f) == (Inbound::Forward { to: y }) {
                sent += f.len();
            }
        }
        assert_eq!(sent, 10_000, "the burst, then nothing");
        assert_eq!(p.stats().drops[&PlaneDrop::Rate], 90);
        let mut f = packet::relayed(1, &[0x45; 988]).unwrap();
        assert_eq!(p.inbound(t0 + Duration::from_secs(1), x, &mut f), Inbound::Forward { to: y });
    }

    #[test]
    fn an_endpoint_unwraps_its_legs_and_wraps_sends_to_virtual_addresses() {
        let t0 = Instant::now();
        let mut p = DataPlane::new(PlaneConfig::default(), t0);
        let r = a("198.18.0.2:4433");
        let peer = NodeId([3; 32]);
        p.apply(t0, PlaneOp::Leg { relay: r, circuit: 5, peer });
        let v = virtual_addr(r, 5);
        let mut f = packet::relayed(5, &[0x41, 1, 2]).unwrap();
        assert_eq!(p.inbound(t0, r, &mut f), Inbound::Local { src: v, start: 12 });
        let (to, header) = p.outbound(t0, v, 3).unwrap();
        assert_eq!((to, header), (r, packet::relayed_header(5)));
        assert_eq!(p.outbound(t0, virtual_addr(r, 6), 3), Err(PlaneDrop::NoRoute));
        assert_eq!(p.outbound(t0, v, 1461), Err(PlaneDrop::TooLong));
        // A relay we hold no reservation on cannot open legs.
        let mut f = packet::relayed(7, &[0x41]).unwrap();
        assert_eq!(p.inbound(t0, r, &mut f), Inbound::Drop(PlaneDrop::UnknownCircuit));
        // With a reservation, a frame on a new circuit opens a leg (someone connected to us).
        p.apply(t0, PlaneOp::Reserved { relay: r, until: t0 + Duration::from_secs(120) });
        let mut f = packet::relayed(7, &[0x41]).unwrap();
        assert_eq!(p.inbound(t0, r, &mut f), Inbound::Local { src: virtual_addr(r, 7), start: 12 });
        let mut keepalive = packet::relayed(7, &[]).unwrap();
        assert_eq!(p.inbound(t0, r, &mut keepalive), Inbound::Consumed);
        assert_eq!(p.legs().count(), 2);
        // Idle legs are forgotten.
        let mut f = packet::relayed(5, &[0x41]).unwrap();
        let later = t0 + Duration::from_secs(200);
        assert_eq!(p.inbound(later, r, &mut f), Inbound::Drop(PlaneDrop::UnknownCircuit));
        assert_eq!(p.legs().count(), 0);
        let closed = p.take_events().into_iter().filter(|e| matches!(e, PlaneEvent::LegClosed { .. })).count();
        assert_eq!(closed, 2);
    }

    #[test]
    fn auto_legs_are_capped() {
        let t0 = Instant::now();
        let cfg = PlaneConfig { max_auto_legs: 3, ..PlaneConfig::default() };
        let mut p = DataPlane::new(cfg, t0);
        let r = a("198.18.0.2:4433");
        p.apply(t0, PlaneOp::Reserved { relay: r, until: t0 + Duration::from_secs(120) });
        let outcomes: Vec<_> = (1..=5u64)
            .map(|c| {
                let mut f = packet::relayed(c, &[0x41]).unwrap();
                matches!(p.inbound(t0, r, &mut f), Inbound::Local { .. })
            })
            .collect();
        assert_eq!(outcomes, [true, true, true, false, false]);
        assert_eq!(p.stats().drops[&PlaneDrop::TooManyLegs], 2);
    }
}
