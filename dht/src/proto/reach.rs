//! Reaching nodes behind NAT (wire-spec §15): this node as a relay (answering `Reserve` and
//! `Connect`), as a private node (keeping reservations on relays, publishing its reach record),
//! and as a dialler (opening circuits). The bytes flow through the data plane (`crate::path`),
//! which the driver runs and this core instructs with `DhtEvent::Plane`.

use std::net::IpAddr;

use super::*;
use crate::identity::capability;
use crate::path::{self, PlaneEvent, PlaneOp, RelayConfig, RelayServer};
use crate::wire::message::error_code;
use crate::wire::{ReachRecord, RelayRef};

/// How a node decides whether it can be dialled unsolicited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReachMode {
    /// Public unless peers see it at another address while it is bound to a private one.
    #[default]
    Auto,
    /// Always public (a server, or port forwarding).
    Public,
    /// Always private: hold relay reservations and publish a reach record from the start.
    Private,
}

/// What this node believes about its own reachability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Nothing says otherwise: dialled at its record's addresses.
    Public,
    /// Behind NAT: reached through relays.
    Private,
}

/// Settings for being reached behind NAT, and for relaying.
#[derive(Clone, Debug)]
pub struct ReachConfig {
    /// How reachability is decided.
    pub mode: ReachMode,
    /// The relay this node serves as (when it is public).
    pub relay: RelayConfig,
    /// Relays a private node holds reservations on.
    pub relays: usize,
    /// Lifetime asked for a reservation.
    pub reservation_ttl: Duration,
    /// A private node renews each reservation this often; it also keeps the NAT mapping open
    /// (below common UDP mapping timeouts of 30–120 s).
    pub keepalive: Duration,
    /// A private node republishes its reach record this often.
    pub republish: Duration,
    /// Lifetime of a reach record.
    pub record_ttl: Duration,
    /// A relay that refused or failed is not asked again for this long.
    pub retry_after: Duration,
    /// For a node bound to a wildcard address: the address its traffic leaves from (the
    /// driver finds it), which says whether it may be behind NAT.
    pub local_ip: Option<IpAddr>,
}

impl Default for ReachConfig {
    fn default() -> Self {
        ReachConfig {
            mode: ReachMode::Auto,
            relay: RelayConfig::default(),
            relays: 2,
            reservation_ttl: Duration::from_secs(120),
            keepalive: Duration::from_secs(25),
            republish: Duration::from_secs(120),
            record_ttl: Duration::from_secs(300),
            retry_after: Duration::from_secs(60),
            local_ip: None,
        }
    }
}

/// A relay this (private) node holds, or asks for, a reservation on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRelay {
    /// The relay.
    pub relay: RelayRef,
    /// Where we send to it.
    pub addr: SocketAddr,
    /// Until when the reservation holds; `None` while the first `Reserve` is unanswered.
    pub until: Option<Instant>,
    /// When we last asked.
    pub asked: Instant,
}

/// A request about relaying that waits for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RelayAsk {
    /// `Reserve` sent to a relay.
    Reserve,
    /// `Connect{target}` sent to a relay at `addr`.
    Connect { target: NodeId, addr: SocketAddr },
}

/// The reach state of the core.
#[derive(Debug)]
pub(super) struct Reach {
    cfg: ReachConfig,
    pub(super) state: Reachability,
    pub(super) server: RelayServer,
    pub(super) held: Vec<HeldRelay>,
    avoid: BTreeMap<NodeId, Instant>,
    seq: u64,
    published: Option<Instant>,
    dirty: bool,
    next_tick: Instant,
    /// Rounds of pings left to learn how peers see us (a node bound to a private address).
    probes: u8,
    /// Whether every address we were given is private (RFC 1918, CGNAT, ULA, link-local).
    bound_private: bool,
}

/// Whether `ip` is an address no one outside its site can dial.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

impl Reach {
    pub(super) fn new(cfg: ReachConfig, addrs: &[WireAddr], seq: u64, now: Instant) -> Self {
        let bound_private = if addrs.is_empty() {
            cfg.local_ip.is_some_and(is_private_ip)
        } else {
            addrs.iter().all(|a| is_private_ip(a.to_socket_addr().ip()))
        };
        let state = if cfg.mode == ReachMode::Private { Reachability::Private } else { Reachability::Public };
        Reach {
            server: RelayServer::new(cfg.relay.clone()),
            cfg,
            state,
            held: Vec::new(),
            avoid: BTreeMap::new(),
            seq,
            published: None,
            dirty: false,
            next_tick: now,
            probes: 6,
            bound_private,
        }
    }

    /// Capability bits for our record.
    pub(super) fn capabilities(&self) -> u64 {
        match self.state {
            Reachability::Private => capability::PRIVATE,
            Reachability::Public => {
                let may_relay = self.cfg.mode == ReachMode::Public || !self.bound_private;
                if self.cfg.relay.enabled && may_relay { capability::RELAY } else { 0 }
            }
        }
    }

    /// When the reach timer has work: never for a public node with nothing reserved on it and
    /// nothing left to learn.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let probing = self.cfg.mode == ReachMode::Auto && self.bound_private && self.probes > 0;
        let busy = self.state == Reachability::Private || self.server.reservations() > 0 || probing;
        busy.then_some(self.next_tick)
    }
}

impl Dht {
    /// Whether this node believes it can be dialled unsolicited.
    pub fn reachability(&self) -> Reachability {
        self.reach.state
    }

    /// The relays this node holds (or asks for) reservations on.
    pub fn held_relays(&self) -> &[HeldRelay] {
        &self.reach.held
    }

    /// The relay this node serves as.
    pub fn relay(&self) -> &RelayServer {
        &self.reach.server
    }

    /// Our record, re-signed with the current capability bits and `addrs`.
    pub(super) fn resign(&mut self, addrs: &[WireAddr]) -> Result<(), RecordError> {
        let caps = self.cfg.capabilities | self.reach.capabilities();
        let rec = self.channel.identity().make_record(self.record.seq + 1, caps, addrs)?;
        self.channel.set_local_record(&rec);
        self.record = rec;
        self.reach.dirty = true;
        Ok(())
    }

    /// Two peers see us at a public IP we were not given. Bound to private addresses, this node
    /// is behind NAT: it turns private. Returns whether it did.
    pub(super) fn observed_elsewhere(&mut self, now: Instant) -> bool {
        let auto = self.reach.cfg.mode == ReachMode::Auto;
        if !(auto && self.reach.bound_private && self.reach.state == Reachability::Public) {
            return false;
        }
        self.reach.state = Reachability::Private;
        let addrs: Vec<WireAddr> = self.record.addrs.iter().copied().collect();
        let _ = self.resign(&addrs);
        self.reach.next_tick = now;
        true
    }

    /// `Reserve{ttl_s}` from `peer` at `addr`.
    pub(super) fn serve_reserve(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, ttl_s: u32) -> Body {
        if self.reach.state == Reachability::Private || path::is_virtual(&addr) {
            return serve::error(error_code::RELAY_OFF, "not a relay");
        }
        // Reservations expire on the reach timer: make sure it runs.
        self.reach.next_tick = self.reach.next_tick.min(now + Duration::from_secs(1));
        match self.reach.server.reserve(now, peer, addr, ttl_s) {
            Ok((ttl_s, closes)) => {
                for op in closes {
                    self.events.push_back(DhtEvent::Plane(op));
                }
                let c = self.reach.server.config();
                Body::Reserved {
                    ttl_s,
                    max_circuits: c.max_circuits_per_reservation,
                    circuit_bytes_per_s: c.circuit_bytes_per_s,
                }
            }
            Err(code) => serve::error(code, "reservation refused"),
        }
    }

    /// `Connect{target}` from `peer` at `addr`.
    pub(super) fn serve_connect(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, target: NodeId) -> Body {
        use rand_core::Rng;
        if self.reach.state == Reachability::Private || path::is_virtual(&addr) {
            return serve::error(error_code::RELAY_OFF, "not a relay");
        }
        let ids = (self.rng.next_u64() | 1, self.rng.next_u64() | 1);
        match self.reach.server.connect(now, peer, addr, target, ids) {
            Ok((circuit, op)) => {
                self.events.push_back(DhtEvent::Plane(op));
                Body::Connected { circuit }
            }
            Err(code) => serve::error(code, "no circuit"),
        }
    }

    /// Opens a circuit to `target` through `relay`; the answer arrives as
    /// `DhtEvent::CircuitOpened` or `RequestFailed` with the returned id.
    pub fn connect_via(&mut self, now: Instant, relay: &RelayRef, target: NodeId) -> Result<u64, RequestError> {
        let addr = relay.addr.to_socket_addr();
        if !relay.addr.is_usable() || path::is_virtual(&addr) {
            return Err(RequestError::NoAddress);
        }
        let info = PeerInfo { id: relay.id, noise_key: relay.noise_key, addr };
        let w = Waiting::Relay { peer: relay.id, ask: RelayAsk::Connect { target, addr } };
        self.send_request(now, &info, Body::Connect { target }, w, self.cfg.rpc_timeout)
    }

    /// What the data plane reports.
    pub fn plane_event(&mut self, _now: Instant, ev: PlaneEvent) {
        match ev {
            PlaneEvent::CircuitClosed { a, .. } => self.reach.server.closed(&a),
            // Sessions that ran over the leg go back to the peer's own address, if it has one.
            PlaneEvent::LegClosed { path } => {
                for peer in self.channel.peers_at(&path) {
                    if let Some(addr) =
                        self.lookup_record(&peer).and_then(|r| r.addr_for(false).or_else(|| r.addr_for(true)))
                    {
                        self.channel.set_addr(&peer, addr);
                    }
                }
            }
        }
    }

    /// An answer to a relay request of ours.
    pub(super) fn on_relay_answer(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, id: u64, body: Body) {
        // Only an answer to a relay request of ours is taken; anything else is left waiting.
        if !self.pending.get(&id).is_some_and(|p| matches!(p.waiting, Waiting::Relay { .. })) {
            return self.channel.count_drop(DropReason::UnexpectedResponse);
        }
        let Some(p) = self.take_from(now, id, peer) else { return };
        let Waiting::Relay { ask, .. } = p.waiting else { return };
        match (ask, body) {
            (RelayAsk::Reserve, Body::Reserved { ttl_s, .. }) => {
                // Never longer than we asked: a relay's word is not trusted further.
                let granted = Duration::from_secs(u64::from(ttl_s)).min(self.reach.cfg.reservation_ttl);
                let until = now + granted;
                let Some(h) = self.reach.held.iter_mut().find(|h| h.relay.id == peer) else { return };
                let first = h.until.is_none();
                let moved = h.addr != addr;
                h.until = Some(until);
                h.addr = addr;
                self.reach.dirty |= moved;
                self.events.push_back(DhtEvent::Plane(PlaneOp::Reserved { relay: addr, until }));
                if first {
                    // Reachable from now on: say so at once.
                    self.publish_reach(now);
                }
            }
            (RelayAsk::Connect { target, addr: relay }, Body::Connected { circuit }) => {
                self.events.push_back(DhtEvent::Plane(PlaneOp::Leg { relay, circuit, peer: target }));
                let path = path::virtual_addr(relay, circuit);
                // The session (if one exists) now runs through the circuit.
                self.channel.set_addr(&target, path);
                self.events.push_back(DhtEvent::CircuitOpened { request: id, peer: target, relay: peer, path });
            }
            // Reserved for a Connect or Connected for a Reserve: a broken relay; the request fails.
            (ask, _) => {
                self.channel.count_drop(DropReason::UnexpectedResponse);
                self.relay_failed(now, id, peer, ask, RequestError::Refused(error_code::MALFORMED));
            }
        }
    }

    /// A relay request of ours failed (`Error`, timeout, handshake).
    pub(super) fn relay_failed(&mut self, now: Instant, id: u64, peer: NodeId, ask: RelayAsk, error: RequestError) {
        match ask {
            RelayAsk::Reserve => self.drop_relay(now, peer),
            RelayAsk::Connect { .. } => self.events.push_back(DhtEvent::RequestFailed { request: id, error }),
        }
    }

    fn drop_relay(&mut self, now: Instant, peer: NodeId) {
        let Some(i) = self.reach.held.iter().position(|h| h.relay.id == peer) else { return };
        let h = self.reach.held.remove(i);
        if h.until.is_some() {
            self.events.push_back(DhtEvent::Plane(PlaneOp::Unreserved { relay: h.addr }));
            self.reach.dirty = true;
        }
        if self.reach.avoid.len() >= 256 {
            self.reach.avoid.clear();
        }
        self.reach.avoid.insert(peer, now + self.reach.cfg.retry_after);
    }

    /// The reach timer: the relay's expiry; a private node's reservations and reach record.
    pub(super) fn reach_due(&mut self, now: Instant) {
        if now < self.reach.next_tick {
            return;
        }
        self.reach.next_tick = now + Duration::from_secs(1);
        for op in self.reach.server.expire(now) {
            self.events.push_back(DhtEvent::Plane(op));
        }
        if self.reach.state != Reachability::Private {
            self.probe_observers(now);
            return;
        }
        self.reach.avoid.retain(|_, t| *t > now);
        let lapsed: Vec<NodeId> =
            self.reach.held.iter().filter(|h| h.until.is_some_and(|u| u <= now)).map(|h| h.relay.id).collect();
        for id in lapsed {
            self.drop_relay(now, id);
        }
        self.pick_relays(now);
        let keepalive = self.reach.cfg.keepalive;
        let due: Vec<HeldRelay> =
            self.reach.held.iter().filter(|h| now.saturating_duration_since(h.asked) >= keepalive).cloned().collect();
        for h in due {
            self.ask_reserve(now, &h.relay, h.addr);
        }
        let stale = self.reach.published.is_none_or(|t| now.saturating_duration_since(t) >= self.reach.cfg.republish);
        if (self.reach.dirty || stale) && self.reach.held.iter().any(|h| h.until.is_some()) {
            self.publish_reach(now);
        }
    }

    /// A node bound to a private address pings two peers it has no observation from, a few
    /// times: their pongs say where they see it, and two that see it at a public IP mean NAT.
    fn probe_observers(&mut self, now: Instant) {
        let auto = self.reach.cfg.mode == ReachMode::Auto;
        if !auto || !self.reach.bound_private || self.reach.probes == 0 || self.table.len() < 2 {
            return;
        }
        self.reach.probes -= 1;
        self.reach.next_tick = now + Duration::from_secs(5);
        let ask: Vec<NodeId> =
            self.table.entries().map(|e| e.id()).filter(|id| !self.observed.contains_key(id)).take(2).collect();
        for id in ask {
            self.ping_neighbour(now, id);
        }
    }

    /// Asks more relays while fewer than `relays` are held: public table peers that relay,
    /// lowest round trip first.
    fn pick_relays(&mut self, now: Instant) {
        let want = self.reach.cfg.relays.saturating_sub(self.reach.held.len());
        if want == 0 {
            return;
        }
        let mut candidates: Vec<(Duration, RelayRef, SocketAddr)> = self
            .table
            .entries()
            .filter(|e| {
                e.record.capabilities & capability::RELAY != 0 && e.record.capabilities & capability::PRIVATE == 0
            })
            .filter(|e| !path::is_virtual(&e.addr))
            .filter(|e| {
                !self.reach.avoid.contains_key(&e.id()) && !self.reach.held.iter().any(|h| h.relay.id == e.id())
            })
            .map(|e| {
                let rtt = self.peer_rtt.get(&e.id()).and_then(|r| r.srtt()).unwrap_or(Duration::from_secs(1));
                (rtt, RelayRef { id: e.id(), noise_key: e.record.noise_key, addr: WireAddr::from(e.addr) }, e.addr)
            })
            .collect();
        candidates.sort_by_key(|c| c.0);
        for (_, r, addr) in candidates.into_iter().take(want) {
            self.reach.held.push(HeldRelay { relay: r.clone(), addr, until: None, asked: now });
            self.ask_reserve(now, &r, addr);
        }
    }

    fn ask_reserve(&mut self, now: Instant, relay: &RelayRef, addr: SocketAddr) {
        if let Some(h) = self.reach.held.iter_mut().find(|h| h.relay.id == relay.id) {
            h.asked = now;
        }
        let info = PeerInfo { id: relay.id, noise_key: relay.noise_key, addr };
        let ttl_s = u32::try_from(self.reach.cfg.reservation_ttl.as_secs()).unwrap_or(u32::MAX);
        let w = Waiting::Relay { peer: relay.id, ask: RelayAsk::Reserve };
        if let Err(e) = self.send_request(now, &info, Body::Reserve { ttl_s }, w, self.cfg.rpc_timeout) {
            self.relay_failed(now, 0, relay.id, RelayAsk::Reserve, e);
        }
    }

    /// Signs and stores our reach record (the relays that confirmed a reservation).
    fn publish_reach(&mut self, now: Instant) {
        let relays: Vec<RelayRef> = self
            .reach
            .held
            .iter()
            .filter(|h| h.until.is_some())
            .map(|h| RelayRef { addr: WireAddr::from(h.addr), ..h.relay.clone() })
            .collect();
        self.reach.seq = self.reach.seq.max(self.record.seq) + 1;
        let Ok(rec) = ReachRecord::sign(self.channel.identity(), self.record.clone(), self.reach.seq, relays) else {
            return;
        };
        let key = rec.key();
        if self.put_once(now, key, Record::Reach(Box::new(rec)), self.reach.cfg.record_ttl).is_ok() {
            self.reach.published = Some(now);
            self.reach.dirty = false;
        }
    }
}
