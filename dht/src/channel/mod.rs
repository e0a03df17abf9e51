//! The sans-IO secure channel (wire-spec §5, §8): per-peer sessions over one UDP socket.
//!
//! `Channel` is fed datagrams, local sends and timer ticks, each with `now`, and is polled for
//! datagrams to transmit and events. It owns: handshakes in flight (with retransmission), the
//! responder's DoS rules (mac1, load-triggered cookies, a response cache for retransmitted
//! initiations), sessions per peer (current / previous / not-yet-confirmed), rekeying, expiry,
//! record requests, and the drop counters. It has no sockets, clocks or OS randomness: randomness
//! comes from a ChaCha20 RNG seeded through `ChannelConfig::rng_seed`.

mod config;
mod receive;
mod responder;
mod timers;

pub use config::{ChannelConfig, ChannelEvent, PeerInfo, SendError, Transmit};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::handshake::noise::InitiatorState;
use crate::handshake::session::{Session, SessionError};
use crate::handshake::{self, HandshakeError, cookie, ct_eq, replay::ReplayError};
use crate::identity::{Identity, NodeId, NodeRecord};
use crate::ratelimit::{LimitStat, Limiter, Rate, allow_both, ip_key};
use crate::stats::{ChannelStats, DropReason};
use crate::wire::limits::MAX_PLAINTEXT;
use crate::wire::packet::{self, INITIATION_MAC1, Initiation, Packet, RESPONSE_MAC1, Response, Transport};
use crate::wire::{self, WireAddr};

struct Slot {
    session: Session,
    created: Instant,
}

struct Pending {
    local_index: u32,
    state: Option<InitiatorState>,
    packet: Vec<u8>,
    attempts: u32,
    next_retry: Instant,
    got_cookie: bool,
}

struct Peer {
    noise_key: [u8; 32],
    addr: SocketAddr,
    // Slots and the handshake are boxed: a session is ~370 bytes and most peers hold one of the
    // three at a time (or none), so inline they cost ~1.5 KB a peer.
    current: Option<Box<Slot>>,
    previous: Option<Box<Slot>>,
    /// Responder session waiting for the initiator's first packet (key confirmation).
    next: Option<Box<Slot>>,
    pending: Option<Box<Pending>>,
    queue: VecDeque<Vec<u8>>,
    last_timestamp: u64,
    cookie: Option<(Instant, [u8; 32])>,
    last_active: Instant,
}

impl Peer {
    fn new(noise_key: [u8; 32], addr: SocketAddr, now: Instant) -> Self {
        Peer {
            noise_key,
            addr,
            current: None,
            previous: None,
            next: None,
            pending: None,
            queue: VecDeque::new(),
            last_timestamp: 0,
            cookie: None,
            last_active: now,
        }
    }

    fn idle(&self) -> bool {
        self.current.is_none()
            && self.previous.is_none()
            && self.next.is_none()
            && self.pending.is_none()
            && self.queue.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Current,
    Previous,
    Next,
}

struct RecordRequest {
    nonce: [u8; 8],
    addr: SocketAddr,
    deadline: Instant,
}

/// Events counted over one-second windows (wire-spec §5.6's load check, and the record-request
/// threshold of §8.1).
struct LoadWindow {
    start: Instant,
    count: u32,
}

impl LoadWindow {
    /// Counts one event at `now` and returns the count in the current window.
    fn count(&mut self, now: Instant) -> u32 {
        if now.saturating_duration_since(self.start) >= Duration::from_secs(1) {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count
    }
}

/// The address with an IPv4-mapped IPv6 address replaced by the IPv4 address it stands for.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The secure channel state machine. See the module docs.
pub struct Channel {
    cfg: ChannelConfig,
    identity: Identity,
    start: Instant,
    last_timestamp_issued: u64,
    rng: ChaCha20Rng,
    peers: BTreeMap<NodeId, Peer>,
    indices: HashMap<u32, NodeId>,
    cookie_secret: [u8; 32],
    cookie_secret_prev: [u8; 32],
    cookie_secret_born: Instant,
    /// Initiations passing mac1 in the current second (the cookie's load check, §5.6).
    initiations: LoadWindow,
    responses: HashMap<[u8; 16], Vec<u8>>,
    response_order: VecDeque<([u8; 16], Instant)>,
    record_requests: VecDeque<RecordRequest>,
    local_record: Option<Vec<u8>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ChannelEvent>,
    stats: ChannelStats,
    scratch: Vec<u8>,
    /// Keyed by (source proven by a valid mac2, address).
    handshakes_per_addr: Limiter<(bool, SocketAddr)>,
    handshakes_per_ip: Limiter<(bool, IpAddr)>,
    record_requests_per_ip: Limiter<IpAddr>,
    /// Record requests in the current second (their per-IP limit applies above a threshold).
    record_request_load: LoadWindow,
    /// A lower bound of the earliest deadline (`None`: no deadline). Every change that can bring a
    /// deadline forward lowers it at once; `handle_timeout` rescans all peers only when it is due
    /// and then sets it exactly. Without it, `poll_timeout` walked every peer after every
    /// datagram (a quarter of a 1,000-node simulation's time).
    timer: Option<Instant>,
}

impl Channel {
    /// A channel for `identity`, starting at `now`.
    pub fn new(identity: Identity, cfg: ChannelConfig, now: Instant) -> Self {
        let mut rng = ChaCha20Rng::from_seed(cfg.rng_seed);
        let mut cookie_secret = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret);
        let mut cookie_secret_prev = [0u8; 32];
        rng.fill_bytes(&mut cookie_secret_prev);
        Channel {
            identity,
            start: now,
            last_timestamp_issued: 0,
            rng,
            peers: BTreeMap::new(),
            indices: HashMap::new(),
            cookie_secret,
            cookie_secret_prev,
            cookie_secret_born: now,
            initiations: LoadWindow { start: now, count: 0 },
            responses: HashMap::new(),
            response_order: VecDeque::new(),
            record_requests: VecDeque::new(),
            local_record: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: ChannelStats::default(),
            scratch: Vec::with_capacity(crate::wire::limits::MAX_DATAGRAM),
            timer: None,
            handshakes_per_addr: Limiter::new("handshakes_per_addr", cfg.handshakes_per_addr, cfg.limit_tracked),
            handshakes_per_ip: Limiter::new("handshakes_per_ip", cfg.handshakes_per_ip, cfg.limit_tracked),
            record_requests_per_ip: Limiter::new(
                "record_requests_per_ip",
                cfg.record_requests_per_ip,
                cfg.limit_tracked,
            ),
            record_request_load: LoadWindow { start: now, count: 0 },
            cfg,
        }
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Peers with a confirmed session.
    pub fn session_count(&self) -> usize {
        self.peers.values().filter(|p| p.current.is_some()).count()
    }

    /// Peers with any state.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The channel's rate limiters: configuration, sources tracked, refusals.
    pub fn limits(&self) -> Vec<LimitStat> {
        vec![self.handshakes_per_addr.stat(), self.handshakes_per_ip.stat(), self.record_requests_per_ip.stat()]
    }

    /// Sends to `peer` go to `addr` from now on (a relay circuit's leg, wire-spec §15.3), until
    /// an authenticated packet from elsewhere moves it again (roaming, §5.7).
    pub fn set_addr(&mut self, peer: &NodeId, addr: SocketAddr) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.addr = canonical(addr);
        }
    }

    /// The peers whose sends go to `addr` now.
    pub fn peers_at(&self, addr: &SocketAddr) -> Vec<NodeId> {
        self.peers.iter().filter(|(_, p)| p.addr == *addr).map(|(id, _)| *id).collect()
    }

    /// Whether a confirmed, unexpired session with `peer` exists.
    pub fn has_session(&self, peer: &NodeId, now: Instant) -> bool {
        self.peers.get(peer).and_then(|p| p.current.as_ref()).is_some_and(|s| now < s.created + self.cfg.reject_after)
    }

    /// The record served to record requests.
    pub fn set_local_record(&mut self, record: &NodeRecord) {
        self.local_record = wire::encode(record).ok();
    }

    /// Counts a drop decided by the layer above.
    pub fn count_drop(&mut self, r: DropReason) {
        self.stats.drops.add(r);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }

    fn transmit(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        if self.transmits.len() >= self.cfg.max_outbox {
            return;
        }
        self.stats.packets_out += 1;
        self.transmits.push_back(Transmit { dst, payload });
    }

    fn event(&mut self, e: ChannelEvent) {
        if self.events.len() >= self.cfg.max_outbox {
            self.stats.drops.add(DropReason::QueueFull);
            return;
        }
        self.events.push_back(e);
    }

    fn timestamp(&mut self, now: Instant) -> u64 {
        let elapsed = u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let t = self.cfg.unix_time_ns_at_start.saturating_add(elapsed).max(self.last_timestamp_issued + 1);
        self.last_timestamp_issued = t;
        t
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if !self.indices.contains_key(&i) {
                return i;
            }
        }
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill_bytes(&mut b);
        b
    }

    /// Makes room for a new peer by forgetting the longest-idle peer without sessions, handshake
    /// or queue. O(peers), and only runs when the table is full.
    fn make_room(&mut self) -> bool {
        if self.peers.len() < self.cfg.max_peers {
            return true;
        }
        let victim = self.peers.iter().filter(|(_, p)| p.idle()).min_by_key(|(_, p)| p.last_active).map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.peers.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Sends `data` to `to`, opening a session first if needed (the data waits in a bounded queue).
    pub fn send(&mut self, now: Instant, to: &PeerInfo, data: &[u8]) -> Result<(), SendError> {
        let to = &PeerInfo { addr: canonical(to.addr), ..*to };
        if to.id == self.identity.id() {
            return Err(SendError::SelfSend);
        }
        if data.len() > MAX_PLAINTEXT {
            return Err(SendError::TooLarge);
        }
        if self.transmits.len() >= self.cfg.max_outbox {
            return Err(SendError::Backpressure);
        }
        if !self.peers.contains_key(&to.id) {
            if !self.make_room() {
                return Err(SendError::TableFull);
            }
            self.peers.insert(to.id, Peer::new(to.noise_key, to.addr, now));
            self.note_deadline(now + self.cfg.peer_idle_timeout);
        }
        let reject_after = self.cfg.reject_after;
        let rekey_after = self.cfg.rekey_after;
        let rekey_msgs = self.cfg.rekey_after_messages;
        let Some(peer) = self.peers.get_mut(&to.id) else {
            return Err(SendError::TableFull);
        };
        peer.last_active = now;
        if peer.noise_key != to.noise_key {
            // The node rotated its static key (new record): old sessions stay valid until they
            // expire, new handshakes use the new key.
            peer.noise_key = to.noise_key;
        }
        let usable = peer.current.as_ref().is_some_and(|s| now < s.created + reject_after);
        if usable {
            let mut out = Vec::with_capacity(data.len() + 32);
            let addr = peer.addr;
            let mut needs_rekey = false;
            if let Some(slot) = peer.current.as_mut() {
                match slot.session.seal_into(data, &mut out) {
                    Ok(_) => {
                        needs_rekey = now >= slot.created + rekey_after || slot.session.sent() >= rekey_msgs;
                    }
                    Err(SessionError::TooLarge) => return Err(SendError::TooLarge),
                    Err(_) => {
                        // Counter space exhausted: fall through to queue + handshake.
                        out.clear();
                    }
                }
            }
            if !out.is_empty() {
                self.transmit(addr, out);
                if needs_rekey && self.peers.get(&to.id).is_some_and(|p| p.pending.is_none()) {
                    self.start_handshake(now, to.id);
                }
                return Ok(());
            }
        }
        let Some(peer) = self.peers.get_mut(&to.id) else {
            return Err(SendError::TableFull);
        };
        if peer.current.is_none() {
            peer.addr = to.addr;
        }
        if peer.queue.len() >= self.cfg.max_queued_per_peer {
            return Err(SendError::QueueFull);
        }
        peer.queue.push_back(data.to_vec());
        if peer.pending.is_none() {
            self.start_handshake(now, to.id);
        }
        Ok(())
    }

    fn fresh_cookie(&self, peer: &Peer, now: Instant) -> Option<[u8; 32]> {
        let life = Duration::from_secs(cookie::COOKIE_SECRET_LIFETIME_S);
        peer.cookie.filter(|(at, _)| now < *at + life).map(|(_, c)| c)
    }

    fn start_handshake(&mut self, now: Instant, id: NodeId) {
        let local_index = self.fresh_index();
        let eph = self.random::<32>();
        let ts = self.timestamp(now);
        let Some(peer) = self.peers.get(&id) else { return };
        let cookie = self.fresh_cookie(peer, now);
        let (noise_key, addr) = (peer.noise_key, peer.addr);
        let built =
            handshake::build_initiation(&self.identity, &noise_key, eph, local_index, ts, cookie.as_ref(), false);
        let Ok((state, bytes)) = built else {
            // Only a low-order static key in the peer's record gets here.
            self.fail_handshake(id);
            return;
        };
        let retry = self.cfg.handshake_retry;
        if let Some(peer) = self.peers.get_mut(&id) {
            if let Some(old) = peer.pending.take() {
                self.indices.remove(&old.local_index);
            }
            peer.pending = Some(Box::new(Pending {
                local_index,
                state: Some(state),
                packet: bytes.clone(),
                attempts: 1,
                next_retry: now + retry,
                got_cookie: false,
            }));
        }
        self.indices.insert(local_index, id);
        self.note_deadline(now + retry);
        self.stats.handshakes_initiated += 1;
        self.transmit(addr, bytes);
    }

    fn fail_handshake(&mut self, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if let Some(p) = peer.pending.take() {
            self.indices.remove(&p.local_index);
        }
        let dropped = peer.queue.len();
        peer.queue.clear();
        // The peer may now be idle: it is forgotten `peer_idle_timeout` after its last activity.
        let idle_at = peer.last_active + self.cfg.peer_idle_timeout;
        self.note_deadline(idle_at);
        self.stats.handshakes_failed += 1;
        self.event(ChannelEvent::HandshakeFailed { peer: id, dropped });
    }

    /// Sends `data` to a peer we already hold state for (e.g. replying to a request).
    pub fn send_known(&mut self, now: Instant, id: NodeId, data: &[u8]) -> Result<(), SendError> {
        let info = {
            let p = self.peers.get(&id).ok_or(SendError::TableFull)?;
            PeerInfo { id, noise_key: p.noise_key, addr: p.addr }
        };
        self.send(now, &info, data)
    }

    /// Asks `addr` for its signed node record (§4.6); answered by `ChannelEvent::Record`.
    pub fn request_record(&mut self, now: Instant, addr: SocketAddr) {
        let addr = canonical(addr);
        let nonce = self.random::<8>();
        if self.record_requests.len() >= self.cfg.max_record_requests {
            self.record_requests.pop_front();
        }
        let deadline = now + self.cfg.record_request_timeout;
        self.record_requests.push_back(RecordRequest { nonce, addr, deadline });
        self.note_deadline(deadline);
        self.transmit(addr, packet::record_request(nonce));
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.packets_in += 1;
        // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the core always uses a.b.c.d.
        let from = canonical(from);
        let pkt = match packet::parse(data) {
            Ok(p) => p,
            Err(e) => return self.stats.drops.add(e.into()),
        };
        let result = match pkt {
            Packet::Initiation(init) => self.on_initiation(now, from, data, &init),
            Packet::Response(resp) => self.on_response(now, from, data, &resp),
            Packet::CookieReply(c) => self.on_cookie_reply(now, &c),
            Packet::Transport(t) => self.on_transport(now, from, &t),
            Packet::RecordRequest(nonce) => self.on_record_request(now, from, nonce),
            Packet::RecordReply(nonce, rec) => self.on_record_reply(from, nonce, rec),
            // Relay frames belong to the data plane under the channel (§15.3); one that reaches
            // the channel came to a node that has none.
            Packet::Relayed(..) => Err(DropReason::RelayFrame),
        };
        if let Err(r) = result {
            self.stats.drops.add(r);
        }
    }

    /// Earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Lowers the timer bound to `t` if `t` is earlier.
    fn note_deadline(&mut self, t: Instant) {
        self.timer = Some(self.timer.map_or(t, |cur| cur.min(t)));
    }
}
