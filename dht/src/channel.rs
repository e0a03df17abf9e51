//! The sans-IO secure channel (wire-spec §5, §8): per-peer sessions over one UDP socket.
//!
//! `Channel` is fed datagrams, local sends and timer ticks, each with `now`, and is polled for
//! datagrams to transmit and events. It owns: handshakes in flight (with retransmission), the
//! responder's DoS rules (mac1, load-triggered cookies, a response cache for retransmitted
//! initiations), sessions per peer (current / previous / not-yet-confirmed), rekeying, expiry,
//! record requests, and the drop counters. It has no sockets, clocks or OS randomness: randomness
//! comes from a ChaCha20 RNG seeded through `ChannelConfig::rng_seed`.

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

/// Tunables of the channel. Defaults are the values of wire-spec §8.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Start a new handshake when sending on a session older than this.
    pub rekey_after: Duration,
    /// Never send or accept on a session older than this.
    pub reject_after: Duration,
    /// Start a new handshake after sending this many packets on a session.
    pub rekey_after_messages: u64,
    /// First handshake retransmission delay; doubles per attempt.
    pub handshake_retry: Duration,
    /// Initiation attempts before a handshake is abandoned.
    pub handshake_attempts: u32,
    /// Initiations per second (passing mac1) above which a valid mac2 (cookie) is demanded.
    pub cookie_threshold_per_s: u32,
    /// Peers with any state (sessions, handshakes, queues).
    pub max_peers: usize,
    /// Plaintexts queued per peer while its handshake runs.
    pub max_queued_per_peer: usize,
    /// Datagrams and events waiting to be polled.
    pub max_outbox: usize,
    /// Responses kept to answer retransmitted initiations byte-identically.
    pub response_cache: usize,
    /// How long a cached response is kept.
    pub response_cache_ttl: Duration,
    /// Outstanding record requests.
    pub max_record_requests: usize,
    /// How long a record request waits for its reply.
    pub record_request_timeout: Duration,
    /// A peer with no session, handshake or queue is forgotten after this.
    pub peer_idle_timeout: Duration,
    /// Seed of the channel's RNG (ephemerals, indices, cookie secrets, nonces).
    pub rng_seed: [u8; 32],
    /// Unix time (ns) that corresponds to the `now` given to `Channel::new`; initiation timestamps.
    pub unix_time_ns_at_start: u64,
    /// Initiations (passing mac1, not answered from the cache) per source address (IP and
    /// port); `None` turns the limit off. Initiations with a valid mac2 (a proven source) have
    /// buckets of their own. wire-spec §8.1.
    pub handshakes_per_addr: Option<Rate>,
    /// Initiations per source IP (IPv6: per /64), whatever the port; proven and unproven apart.
    pub handshakes_per_ip: Option<Rate>,
    /// Record requests answered per source IP (IPv6: per /64), applied only while record
    /// requests from everywhere exceed `record_requests_load_per_s` (a source address cannot be
    /// proven here, so a forged one must not be able to use up a real one's bucket otherwise).
    pub record_requests_per_ip: Option<Rate>,
    /// Record requests per second, from all sources, above which `record_requests_per_ip` applies.
    pub record_requests_load_per_s: u32,
    /// Sources each of these limiters tracks at most (beyond that, newcomers share one bucket).
    pub limit_tracked: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            handshake_retry: Duration::from_millis(250),
            handshake_attempts: 5,
            cookie_threshold_per_s: 1000,
            max_peers: 4096,
            max_queued_per_peer: 32,
            max_outbox: 8192,
            response_cache: 1024,
            response_cache_ttl: Duration::from_secs(10),
            max_record_requests: 256,
            record_request_timeout: Duration::from_secs(5),
            peer_idle_timeout: Duration::from_secs(600),
            rng_seed: [0; 32],
            unix_time_ns_at_start: 0,
            handshakes_per_addr: Some(Rate::new(5, 20)),
            handshakes_per_ip: Some(Rate::new(200, 1000)),
            record_requests_per_ip: Some(Rate::new(100, 1000)),
            record_requests_load_per_s: 1000,
            limit_tracked: 4096,
        }
    }
}

/// What the channel needs to reach a peer: taken from its verified node record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// Node id.
    pub id: NodeId,
    /// X25519 static key (from the signed record).
    pub noise_key: [u8; 32],
    /// Where to send.
    pub addr: SocketAddr,
}

impl PeerInfo {
    /// From a record that has already been verified; picks an address of the given family.
    pub fn from_record(rec: &NodeRecord, ipv6: bool) -> Option<PeerInfo> {
        Some(PeerInfo { id: rec.id, noise_key: rec.noise_key, addr: rec.addr_for(ipv6)? })
    }
}

/// A datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// Something the layer above should know.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChannelEvent {
    /// A session with `peer` is confirmed and usable in both directions.
    Established {
        /// Peer id.
        peer: NodeId,
        /// Its authenticated address.
        addr: SocketAddr,
        /// Whether we initiated.
        initiator: bool,
    },
    /// An authenticated, decrypted, non-empty plaintext from `peer`.
    Received {
        /// Peer id.
        peer: NodeId,
        /// Source address of the packet.
        addr: SocketAddr,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// A handshake to `peer` was abandoned; `dropped` queued plaintexts were discarded.
    HandshakeFailed {
        /// Peer id.
        peer: NodeId,
        /// Plaintexts discarded.
        dropped: usize,
    },
    /// A verified node record answering `request_record`.
    Record {
        /// Address asked.
        from: SocketAddr,
        /// The record.
        record: NodeRecord,
    },
}

/// Why a local send was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SendError {
    /// No room for another peer.
    #[error("peer table full")]
    TableFull,
    /// Too many plaintexts already queued for this peer.
    #[error("send queue full")]
    QueueFull,
    /// Too many datagrams waiting to be polled.
    #[error("outbox full")]
    Backpressure,
    /// Plaintext larger than one transport packet can carry.
    #[error("message too large")]
    TooLarge,
    /// The destination is this node.
    #[error("cannot send to self")]
    SelfSend,
}

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
        };
        if let Err(r) = result {
            self.stats.drops.add(r);
        }
    }

    fn under_load(&mut self, now: Instant) -> bool {
        self.initiations.count(now) > self.cfg.cookie_threshold_per_s
    }

    /// Rotates the cookie secret lazily (it is only used under load): after one lifetime the
    /// current secret becomes the previous one; after two, both are replaced, so no cookie is
    /// accepted for more than two lifetimes after its secret was made.
    fn rotate_cookie_secret(&mut self, now: Instant) {
        let life = Duration::from_secs(cookie::COOKIE_SECRET_LIFETIME_S);
        let age = now.saturating_duration_since(self.cookie_secret_born);
        if age >= 2 * life {
            self.cookie_secret_prev = self.random::<32>();
            self.cookie_secret = self.random::<32>();
            self.cookie_secret_born = now;
        } else if age >= life {
            self.cookie_secret_prev = self.cookie_secret;
            self.cookie_secret = self.random::<32>();
            self.cookie_secret_born = now;
        }
    }

    fn mac2_ok(&self, data: &[u8], from: &WireAddr) -> bool {
        let (Some(body), Some(got)) =
            (data.get(..INITIATION_MAC1 + 16), data.get(INITIATION_MAC1 + 16..INITIATION_MAC1 + 32))
        else {
            return false;
        };
        [&self.cookie_secret, &self.cookie_secret_prev]
            .iter()
            .any(|s| ct_eq(&cookie::mac(&cookie::make_cookie(s, from), body), got))
    }

    fn send_cookie_reply(&mut self, to: SocketAddr, init: &Initiation, source: &WireAddr) {
        let nonce = self.random::<24>();
        let reply =
            handshake::build_cookie_reply(&self.identity.noise_public(), &self.cookie_secret, nonce, init, source);
        self.stats.cookies_sent += 1;
        self.transmit(to, reply);
    }

    fn cached_response(&mut self, now: Instant, mac1: &[u8; 16]) -> Option<Vec<u8>> {
        while let Some((k, at)) = self.response_order.front() {
            if now.saturating_duration_since(*at) < self.cfg.response_cache_ttl {
                break;
            }
            self.responses.remove(k);
            self.response_order.pop_front();
        }
        self.responses.get(mac1).cloned()
    }

    fn cache_response(&mut self, now: Instant, mac1: [u8; 16], bytes: Vec<u8>) {
        if self.cfg.response_cache == 0 {
            return;
        }
        while self.response_order.len() >= self.cfg.response_cache {
            if let Some((k, _)) = self.response_order.pop_front() {
                self.responses.remove(&k);
            }
        }
        self.responses.insert(mac1, bytes);
        self.response_order.push_back((mac1, now));
    }

    fn on_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        init: &Initiation,
    ) -> Result<(), DropReason> {
        if !handshake::mac1_ok(data, INITIATION_MAC1, &self.identity.noise_public()) {
            return Err(DropReason::BadMac1);
        }
        let source = WireAddr::from(from);
        let loaded = self.under_load(now);
        if loaded {
            self.rotate_cookie_secret(now);
            if !self.mac2_ok(data, &source) {
                self.send_cookie_reply(from, init, &source);
                return Err(DropReason::CookieRequired);
            }
        }
        if let Some(resp) = self.cached_response(now, &init.mac1) {
            self.stats.responses_replayed += 1;
            self.transmit(from, resp);
            return Ok(());
        }
        // Before any Diffie-Hellman: one source (or one IP on many ports) gets a bounded share.
        // A source proven by a valid mac2 has buckets of its own, so forged initiations can use
        // up only the unproven ones; an unproven initiation over its limit gets a cookie reply,
        // with which an honest initiator proves its address at once (§8.1).
        // (An all-zero mac2, what an initiator without a cookie sends, is never valid: no hashing.)
        let mac2_zero = data.get(INITIATION_MAC1 + 16..INITIATION_MAC1 + 32).is_none_or(|m| m.iter().all(|b| *b == 0));
        let proven = loaded
            || (!mac2_zero && {
                self.rotate_cookie_secret(now);
                self.mac2_ok(data, &source)
            });
        let (per_addr, per_ip) = (&mut self.handshakes_per_addr, &mut self.handshakes_per_ip);
        if !allow_both(now, per_addr, (proven, from), per_ip, (proven, ip_key(from.ip()))) {
            if !proven {
                self.send_cookie_reply(from, init, &source);
            }
            return Err(DropReason::RateLimitedHandshake);
        }
        let (st, payload) =
            handshake::consume_initiation(self.identity.noise_secret(), init, false).map_err(|e| match e {
                HandshakeError::Decrypt => DropReason::HandshakeDecrypt,
                HandshakeError::LowOrder => DropReason::LowOrderKey,
                HandshakeError::BadBinding => DropReason::BadBinding,
            })?;
        let id = payload.node_id();
        if id == self.identity.id() {
            return Err(DropReason::IdentityMismatch);
        }
        if let Some(p) = self.peers.get(&id) {
            if payload.timestamp <= p.last_timestamp {
                return Err(DropReason::StaleTimestamp);
            }
        } else if !self.make_room() {
            return Err(DropReason::TableFull);
        }
        let local_index = self.fresh_index();
        let eph = self.random::<32>();
        let rs = st.rs;
        let (bytes, keys, _) =
            handshake::build_response(st, eph, local_index, init.sender_index).map_err(|_| DropReason::LowOrderKey)?;
        self.note_deadline(now + self.cfg.peer_idle_timeout.min(self.cfg.reject_after));
        let peer = self.peers.entry(id).or_insert_with(|| Peer::new(rs, from, now));
        peer.noise_key = rs;
        peer.addr = from;
        peer.last_timestamp = payload.timestamp;
        peer.last_active = now;
        let old = peer
            .next
            .replace(Box::new(Slot { session: Session::new(local_index, init.sender_index, &keys), created: now }));
        if let Some(old) = old {
            self.indices.remove(&old.session.local_index);
        }
        self.indices.insert(local_index, id);
        self.stats.handshakes_answered += 1;
        self.cache_response(now, init.mac1, bytes.clone());
        self.transmit(from, bytes);
        Ok(())
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, data: &[u8], resp: &Response) -> Result<(), DropReason> {
        if !handshake::mac1_ok(data, RESPONSE_MAC1, &self.identity.noise_public()) {
            return Err(DropReason::BadMac1);
        }
        let id = *self.indices.get(&resp.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let Some(pending) = peer.pending.as_mut().filter(|p| p.local_index == resp.receiver_index) else {
            return Err(DropReason::UnknownIndex);
        };
        let Some(state) = pending.state.clone() else {
            return Err(DropReason::UnknownIndex);
        };
        let (keys, _) =
            handshake::consume_response(state, self.identity.noise_secret(), resp).map_err(|e| match e {
                HandshakeError::LowOrder => DropReason::LowOrderKey,
                _ => DropReason::HandshakeDecrypt,
            })?;
        let local_index = pending.local_index;
        peer.pending = None;
        let slot = Box::new(Slot { session: Session::new(local_index, resp.sender_index, &keys), created: now });
        self.stats.handshakes_completed += 1;
        self.install_current(now, id, from, slot, true);
        Ok(())
    }

    /// Makes `slot` the sending session for `id`, keeps the old one for receiving, flushes the queue.
    fn install_current(&mut self, now: Instant, id: NodeId, from: SocketAddr, slot: Box<Slot>, initiator: bool) {
        self.note_deadline(slot.created + self.cfg.reject_after);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if let Some(old) = peer.previous.take() {
            self.indices.remove(&old.session.local_index);
        }
        peer.previous = peer.current.replace(slot);
        peer.addr = from;
        peer.last_active = now;
        let queued: Vec<Vec<u8>> = peer.queue.drain(..).collect();
        let mut out = Vec::new();
        let send_keepalive = initiator && queued.is_empty();
        for data in queued.iter().map(Vec::as_slice).chain(send_keepalive.then_some(&[][..])) {
            let mut pkt = Vec::with_capacity(data.len() + 32);
            if let Some(cur) = peer.current.as_mut()
                && cur.session.seal_into(data, &mut pkt).is_ok()
            {
                out.push(pkt);
            }
        }
        for pkt in out {
            self.transmit(from, pkt);
        }
        self.stats.sessions_established += 1;
        self.event(ChannelEvent::Established { peer: id, addr: from, initiator });
    }

    fn on_cookie_reply(&mut self, now: Instant, c: &packet::CookieReply) -> Result<(), DropReason> {
        let id = *self.indices.get(&c.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let noise_key = peer.noise_key;
        let addr = peer.addr;
        let Some(pending) = peer.pending.as_mut().filter(|p| p.local_index == c.receiver_index) else {
            return Err(DropReason::UnexpectedCookie);
        };
        if pending.got_cookie {
            return Err(DropReason::UnexpectedCookie);
        }
        let mut mac1 = [0u8; 16];
        mac1.copy_from_slice(pending.packet.get(INITIATION_MAC1..INITIATION_MAC1 + 16).ok_or(DropReason::BadCookie)?);
        let cookie_value = cookie::open_cookie(&cookie::cookie_reply_key(&noise_key), &c.nonce, &mac1, &c.enc_cookie)
            .ok_or(DropReason::BadCookie)?;
        pending.got_cookie = true;
        handshake::set_mac2(&mut pending.packet, INITIATION_MAC1, Some(&cookie_value));
        let bytes = pending.packet.clone();
        peer.cookie = Some((now, cookie_value));
        self.transmit(addr, bytes);
        Ok(())
    }

    fn on_transport(&mut self, now: Instant, from: SocketAddr, t: &Transport<'_>) -> Result<(), DropReason> {
        let id = *self.indices.get(&t.receiver_index).ok_or(DropReason::UnknownIndex)?;
        let reject_after = self.cfg.reject_after;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        let kind =
            [(SlotKind::Current, &peer.current), (SlotKind::Previous, &peer.previous), (SlotKind::Next, &peer.next)]
                .into_iter()
                .find(|(_, s)| s.as_ref().is_some_and(|s| s.session.local_index == t.receiver_index))
                .map(|(k, _)| k)
                .ok_or(DropReason::UnknownIndex)?;
        let slot = match kind {
            SlotKind::Current => peer.current.as_mut(),
            SlotKind::Previous => peer.previous.as_mut(),
            SlotKind::Next => peer.next.as_mut(),
        }
        .ok_or(DropReason::UnknownIndex)?;
        if now >= slot.created + reject_after {
            return Err(DropReason::SessionExpired);
        }
        let mut buf = std::mem::take(&mut self.scratch);
        let opened = slot.session.open_into(t.counter, t.ciphertext, &mut buf);
        if let Err(e) = opened {
            self.scratch = buf;
            return Err(match e {
                SessionError::Replay(ReplayError::Duplicate) => DropReason::Replay,
                SessionError::Replay(ReplayError::TooOld) => DropReason::TooOld,
                SessionError::Exhausted => DropReason::SessionExpired,
                _ => DropReason::Decrypt,
            });
        }
        peer.addr = from;
        peer.last_active = now;
        if kind == SlotKind::Next
            && let Some(slot) = peer.next.take()
        {
            self.install_current(now, id, from, slot, false);
        }
        if buf.is_empty() {
            self.stats.keepalives_in += 1;
            self.scratch = buf;
        } else {
            self.event(ChannelEvent::Received { peer: id, addr: from, data: buf.clone() });
            buf.clear();
            self.scratch = buf;
        }
        Ok(())
    }

    fn on_record_request(&mut self, now: Instant, from: SocketAddr, nonce: [u8; 8]) -> Result<(), DropReason> {
        if self.local_record.is_none() {
            return Err(DropReason::NoRecord);
        }
        if self.record_request_load.count(now) > self.cfg.record_requests_load_per_s
            && !self.record_requests_per_ip.allow(now, ip_key(from.ip()))
        {
            return Err(DropReason::RateLimitedRecordRequest);
        }
        let rec = self.local_record.as_ref().ok_or(DropReason::NoRecord)?;
        let reply = packet::record_reply(nonce, rec).ok_or(DropReason::NoRecord)?;
        self.stats.records_served += 1;
        self.transmit(from, reply);
        Ok(())
    }

    fn on_record_reply(&mut self, from: SocketAddr, nonce: [u8; 8], rec: &[u8]) -> Result<(), DropReason> {
        let pos = self
            .record_requests
            .iter()
            .position(|r| r.addr == from && ct_eq(&r.nonce, &nonce))
            .ok_or(DropReason::UnsolicitedRecord)?;
        self.record_requests.remove(pos);
        let record = NodeRecord::decode_verified(rec).map_err(|_| DropReason::BadRecord)?;
        self.event(ChannelEvent::Record { from, record });
        Ok(())
    }

    /// Earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Lowers the timer bound to `t` if `t` is earlier.
    fn note_deadline(&mut self, t: Instant) {
        self.timer = Some(self.timer.map_or(t, |cur| cur.min(t)));
    }

    /// Whether the timer bound is at or before every real deadline (fuzzing and test invariant).
    #[doc(hidden)]
    pub fn timer_bound_holds(&self) -> bool {
        match (self.timer, self.exact_timeout()) {
            (_, None) => true,
            (Some(bound), Some(exact)) => bound <= exact,
            (None, Some(_)) => false,
        }
    }

    /// The earliest deadline, by walking every peer.
    fn exact_timeout(&self) -> Option<Instant> {
        let reject = self.cfg.reject_after;
        let idle = self.cfg.peer_idle_timeout;
        let peers = self.peers.values().flat_map(|p| {
            let slots = [&p.current, &p.previous, &p.next].into_iter().flatten().map(move |s| s.created + reject);
            let idle_at = p.idle().then_some(p.last_active + idle);
            slots.chain(p.pending.as_ref().map(|h| h.next_retry)).chain(idle_at)
        });
        let records = self.record_requests.front().map(|r| r.deadline);
        peers.chain(records).min()
    }

    /// Runs due timers: handshake retransmission and abandonment, session expiry, forgetting idle
    /// peers, expiring record requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_none_or(|t| now < t) {
            // Nothing can be due before the bound.
            return;
        }
        let reject = self.cfg.reject_after;
        let idle = self.cfg.peer_idle_timeout;
        let mut failed = Vec::new();
        let mut resend = Vec::new();
        let mut forget = Vec::new();
        let mut dead_indices = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            for slot in [&mut p.current, &mut p.previous, &mut p.next] {
                if slot.as_ref().is_some_and(|s| now >= s.created + reject)
                    && let Some(s) = slot.take()
                {
                    dead_indices.push(s.session.local_index);
                }
            }
            if let Some(h) = p.pending.as_mut()
                && now >= h.next_retry
            {
                if h.attempts >= self.cfg.handshake_attempts {
                    failed.push(*id);
                } else {
                    h.attempts += 1;
                    let backoff = self.cfg.handshake_retry * 2u32.saturating_pow(h.attempts - 1);
                    h.next_retry = now + backoff;
                    resend.push((p.addr, h.packet.clone()));
                }
            }
            if p.idle() && now >= p.last_active + idle {
                forget.push(*id);
            }
        }
        for i in dead_indices {
            self.indices.remove(&i);
        }
        for id in failed {
            self.fail_handshake(id);
        }
        for (addr, bytes) in resend {
            self.transmit(addr, bytes);
        }
        for id in forget {
            self.peers.remove(&id);
        }
        while self.record_requests.front().is_some_and(|r| now >= r.deadline) {
            self.record_requests.pop_front();
        }
        self.timer = self.exact_timeout();
    }

    /// Number of index-table entries (sessions + handshakes); for invariant checks.
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }
}
