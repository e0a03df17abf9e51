//! A relay's admission rules (wire-spec §15.2, §15.3): which reservations and circuits it takes,
//! within bounded, configurable limits. Sans-IO; the DHT core asks it and passes the resulting
//! [`PlaneOp`]s to the data plane, which forwards the bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::PlaneOp;
use crate::identity::NodeId;
use crate::ratelimit::ip_key;
use crate::wire::message::error_code;

/// A relay's limits.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Whether this node serves as a relay at all.
    pub enabled: bool,
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Reservations from one IP (an IPv6 /64) at once.
    pub max_reservations_per_ip: usize,
    /// Longest reservation granted.
    pub max_ttl: Duration,
    /// Circuits held at once.
    pub max_circuits: usize,
    /// Circuits to one reserved node at once.
    pub max_circuits_per_reservation: u16,
    /// Circuits one initiator holds at once.
    pub max_circuits_per_initiator: usize,
    /// Bytes per second forwarded on one circuit, each way.
    pub circuit_bytes_per_s: u32,
    /// Longest a circuit lives.
    pub circuit_lifetime: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            max_reservations: 128,
            max_reservations_per_ip: 4,
            max_ttl: Duration::from_secs(300),
            max_circuits: 256,
            max_circuits_per_reservation: 16,
            max_circuits_per_initiator: 8,
            circuit_bytes_per_s: 2 * 1024 * 1024,
            circuit_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Counters of the relay's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Reservations granted (new or renewed).
    pub reservations_granted: u64,
    /// Reservations refused at a limit.
    pub reservations_refused: u64,
    /// Circuits opened.
    pub circuits_opened: u64,
    /// `Connect`s refused: no reservation.
    pub connects_no_reservation: u64,
    /// `Connect`s refused at a limit.
    pub connects_refused: u64,
}

#[derive(Clone, Debug)]
struct Reservation {
    addr: SocketAddr,
    until: Instant,
    circuits: u16,
}

#[derive(Clone, Debug)]
struct CircuitInfo {
    initiator: NodeId,
    target: NodeId,
    until: Instant,
}

/// The relay's state: reservations and the circuits it opened. See the module docs.
#[derive(Debug)]
pub struct RelayServer {
    cfg: RelayConfig,
    reservations: HashMap<NodeId, Reservation>,
    /// By the initiator's leg.
    circuits: HashMap<(SocketAddr, u64), CircuitInfo>,
    per_initiator: HashMap<NodeId, usize>,
    stats: RelayStats,
}

impl RelayServer {
    /// A relay with these limits.
    pub fn new(cfg: RelayConfig) -> Self {
        RelayServer {
            cfg,
            reservations: HashMap::new(),
            circuits: HashMap::new(),
            per_initiator: HashMap::new(),
            stats: RelayStats::default(),
        }
    }

    /// The limits.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Turns relaying on or off (off drops every reservation; circuits end with them).
    pub fn set_enabled(&mut self, on: bool, now: Instant) -> Vec<PlaneOp> {
        self.cfg.enabled = on;
        if on { Vec::new() } else { self.expire(now + self.cfg.circuit_lifetime + self.cfg.max_ttl) }
    }

    /// Counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Reservations held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits held.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// `Reserve{ttl_s}` from `peer` at its session address `addr`: the granted lifetime and the
    /// plane operations closing circuits it invalidates (a release, or a renewal from a new
    /// address: the NAT rebound, its circuits lead nowhere), or the error code to answer with.
    pub fn reserve(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        ttl_s: u32,
    ) -> Result<(u32, Vec<PlaneOp>), u16> {
        if !self.cfg.enabled {
            return Err(error_code::RELAY_OFF);
        }
        let moved = self.reservations.get(&peer).is_some_and(|r| r.addr != addr);
        let closes = if ttl_s == 0 || moved { self.close_circuits_to(&peer) } else { Vec::new() };
        if ttl_s == 0 {
            self.reservations.remove(&peer);
            return Ok((0, closes));
        }
        if !self.reservations.contains_key(&peer) {
            let ip = ip_key(addr.ip());
            let from_ip = self.reservations.values().filter(|r| ip_key(r.addr.ip()) == ip).count();
            if self.reservations.len() >= self.cfg.max_reservations || from_ip >= self.cfg.max_reservations_per_ip {
                self.stats.reservations_refused += 1;
                return Err(error_code::RESOURCE_LIMIT);
            }
        }
        let granted = Duration::from_secs(u64::from(ttl_s)).min(self.cfg.max_ttl);
        let circuits = self.reservations.get(&peer).map_or(0, |r| r.circuits);
        self.reservations.insert(peer, Reservation { addr, until: now + granted, circuits });
        self.stats.reservations_granted += 1;
        Ok((u32::try_from(granted.as_secs()).unwrap_or(u32::MAX), closes))
    }

    /// Closes every circuit to `target`: the plane operations.
    fn close_circuits_to(&mut self, target: &NodeId) -> Vec<PlaneOp> {
        let legs: Vec<(SocketAddr, u64)> =
            self.circuits.iter().filter(|(_, c)| c.target == *target).map(|(a, _)| *a).collect();
        legs.into_iter()
            .map(|a| {
                self.closed(&a);
                PlaneOp::Close { a }
            })
            .collect()
    }

    /// `Connect{target}` from `peer` at `addr`, with `ids` two fresh random circuit ids: the
    /// initiator's circuit id and the plane operation opening the circuit, or the error code.
    pub fn connect(
        &mut self,
        now: Instant,
        peer: NodeId,
        addr: SocketAddr,
        target: NodeId,
        ids: (u64, u64),
    ) -> Result<(u64, PlaneOp), u16> {
        if !self.cfg.enabled {
            return Err(error_code::RELAY_OFF);
        }
        let Some(res) = self.reservations.get(&target).filter(|r| r.until > now) else {
            self.stats.connects_no_reservation += 1;
            return Err(error_code::NO_RESERVATION);
        };
        let mine = self.per_initiator.get(&peer).copied().unwrap_or(0);
        let (ca, cb) = ids;
        let taken = ca == 0 || cb == 0 || ca == cb || self.circuits.contains_key(&(addr, ca));
        if self.circuits.len() >= self.cfg.max_circuits
            || res.circuits >= self.cfg.max_circuits_per_reservation
            || mine >= self.cfg.max_circuits_per_initiator
            || taken
        {
            self.stats.connects_refused += 1;
            return Err(error_code::RESOURCE_LIMIT);
        }
        let b = (res.addr, cb);
        let until = now + self.cfg.circuit_lifetime;
        if let Some(r) = self.reservations.get_mut(&target) {
            r.circuits += 1;
        }
        *self.per_initiator.entry(peer).or_insert(0) += 1;
        self.circuits.insert((addr, ca), CircuitInfo { initiator: peer, target, until });
        self.stats.circuits_opened += 1;
        Ok((ca, PlaneOp::Open { a: (addr, ca), b, bytes_per_s: self.cfg.circuit_bytes_per_s }))
    }

    /// The plane closed the circuit with initiator leg `a` (idle).
    pub fn closed(&mut self, a: &(SocketAddr, u64)) {
        let Some(c) = self.circuits.remove(a) else { return };
        if let Some(r) = self.reservations.get_mut(&c.target) {
            r.circuits = r.circuits.saturating_sub(1);
        }
        if let Some(n) = self.per_initiator.get_mut(&c.initiator) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_initiator.remove(&c.initiator);
            }
        }
    }

    /// Ends reservations past their time and circuits past their lifetime or whose target's
    /// reservation ended: the plane operations closing them.
    pub fn expire(&mut self, now: Instant) -> Vec<PlaneOp> {
        let live = |r: &Reservation| r.until > now;
        let enabled = self.cfg.enabled;
        self.reservations.retain(|_, r| enabled && live(r));
        let ended: Vec<(SocketAddr, u64)> = self
            .circuits
            .iter()
            .filter(|(_, c)| c.until <= now || !self.reservations.contains_key(&c.target))
            .map(|(a, _)| *a)
            .collect();
        ended
            .into_iter()
            .map(|a| {
                self.closed(&a);
                PlaneOp::Close { a }
            })
            .collect()
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
    fn reservations_and_circuits_stay_within_their_limits() {
        let t0 = Instant::now();
        let cfg = RelayConfig {
            max_reservations: 3,
            max_reservations_per_ip: 2,
            max_circuits_per_reservation: 2,
            max_circuits_per_initiator: 3,
            ..RelayConfig::default()
        };
        let mut r = RelayServer::new(cfg);
        let n = |i: u8| NodeId([i; 32]);
        let ttl = |r: Result<(u32, Vec<PlaneOp>), u16>| r.map(|(t, _)| t);
        assert_eq!(ttl(r.reserve(t0, n(1), a("10.0.0.1:1"), 600)), Ok(300), "capped at max_ttl");
        assert_eq!(ttl(r.reserve(t0, n(2), a("10.0.0.1:2"), 60)), Ok(60));
        assert_eq!(ttl(r.reserve(t0, n(3), a("10.0.0.1:3"), 60)), Err(error_code::RESOURCE_LIMIT), "per IP");
        assert_eq!(ttl(r.reserve(t0, n(3), a("10.0.0.2:3"), 60)), Ok(60));
        assert_eq!(ttl(r.reserve(t0, n(4), a("10.0.0.3:3"), 60)), Err(error_code::RESOURCE_LIMIT), "in all");
        assert_eq!(ttl(r.reserve(t0, n(1), a("10.0.0.1:1"), 300)), Ok(300), "a renewal is not a newcomer");
        // Circuits.
        let x = a("198.18.5.2:4433");
        assert_eq!(r.connect(t0, n(9), x, n(7), (1, 2)), Err(error_code::NO_RESERVATION));
        let (ca, op) = r.connect(t0, n(9), x, n(1), (11, 12)).unwrap();
        assert_eq!((ca, op), (11, PlaneOp::Open { a: (x, 11), b: (a("10.0.0.1:1"), 12), bytes_per_s: 2 << 20 }));
        assert!(r.connect(t0, n(9), x, n(1), (13, 14)).is_ok());
        assert_eq!(r.connect(t0, n(9), x, n(1), (15, 16)), Err(error_code::RESOURCE_LIMIT), "per reservation");
        assert!(r.connect(t0, n(9), x, n(2), (17, 18)).is_ok());
        assert_eq!(r.connect(t0, n(9), x, n(3), (19, 20)), Err(error_code::RESOURCE_LIMIT), "per initiator");
        assert_eq!(r.connect(t0, n(8), x, n(3), (11, 21)), Err(error_code::RESOURCE_LIMIT), "id in use");
        r.closed(&(x, 11));
        assert!(r.connect(t0, n(9), x, n(1), (23, 24)).is_ok(), "a closed circuit frees its places");
        // A renewal from a new address (the NAT rebound) closes the circuits to the old one.
        assert!(r.connect(t0, n(8), x, n(3), (31, 32)).is_ok());
        let (_, closes) = r.reserve(t0, n(3), a("10.0.0.2:9"), 60).unwrap();
        assert_eq!(closes, vec![PlaneOp::Close { a: (x, 31) }]);
        // Expiry: reservation n(2) ends at 60 s; its circuit closes with it.
        let ops = r.expire(t0 + Duration::from_secs(61));
        assert_eq!(ops, vec![PlaneOp::Close { a: (x, 17) }]);
        assert_eq!(r.reservations(), 1);
        // Off: everything refused and dropped.
        let _ = r.set_enabled(false, t0);
        assert_eq!(ttl(r.reserve(t0, n(5), a("10.0.0.9:1"), 60)), Err(error_code::RELAY_OFF));
        assert_eq!(r.reservations(), 0);
        assert_eq!(r.circuits(), 0);
    }
}
