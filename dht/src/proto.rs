//! The sans-IO `Dht` state machine (wire-spec §6): messages over the secure channel. Today it
//! answers Ping with Pong, resolves bare addresses to signed records, and tracks its own requests;
//! Kademlia routing, lookups and storage build on it next.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::channel::{Channel, ChannelConfig, ChannelEvent, PeerInfo, SendError, Transmit};
use crate::identity::{Identity, NodeId, NodeRecord, RecordError};
use crate::stats::{ChannelStats, DropReason};
use crate::wire::bounded::BoundedString;
use crate::wire::message::error_code;
use crate::wire::{Body, Message, WireAddr};

/// Tunables of the `Dht`.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// The secure channel's settings.
    pub channel: ChannelConfig,
    /// A request fails if no answer arrives within this (covers the handshake too).
    pub request_timeout: Duration,
    /// Requests of our own in flight.
    pub max_pending_requests: usize,
    /// Node records remembered (until the routing table replaces this cache).
    pub max_known_records: usize,
    /// Capability flags advertised in our record.
    pub capabilities: u64,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            channel: ChannelConfig::default(),
            request_timeout: Duration::from_secs(10),
            max_pending_requests: 4096,
            max_known_records: 4096,
            capabilities: 0,
        }
    }
}

/// Whom to ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A node whose signed record we hold.
    Record(NodeRecord),
    /// An address; the node's record is fetched first and, if `expect` is set, must carry that id.
    Addr {
        /// Where.
        addr: SocketAddr,
        /// The id the node must have.
        expect: Option<NodeId>,
    },
}

/// Why a request of ours failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer in time.
    #[error("request timed out")]
    Timeout,
    /// The handshake with the peer was abandoned.
    #[error("handshake failed (no response; wrong key or unreachable)")]
    HandshakeFailed,
    /// The node at the address is not the one expected.
    #[error("node at address has id {0}, not the one expected")]
    IdentityMismatch(NodeId),
    /// The peer's record is invalid.
    #[error("invalid node record: {0}")]
    BadRecord(RecordError),
    /// The peer answered with an error code.
    #[error("peer refused the request (code {0})")]
    Refused(u16),
    /// The request could not be sent.
    #[error("cannot send: {0}")]
    Send(SendError),
    /// Too many requests in flight.
    #[error("too many requests in flight")]
    Busy,
    /// Records have no address of the socket's family.
    #[error("no usable address in record")]
    NoAddress,
}

/// What the `Dht` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// A ping was answered.
    Pong {
        /// Request id returned by `ping`.
        request: u64,
        /// Who answered.
        peer: NodeId,
        /// From where.
        addr: SocketAddr,
        /// Time from sending the ping (including any handshake) to the pong.
        rtt: Duration,
        /// Our address as the peer saw it.
        observed: WireAddr,
        /// The peer's record sequence number.
        record_seq: u64,
    },
    /// A request failed.
    RequestFailed {
        /// Request id.
        request: u64,
        /// Why.
        error: RequestError,
    },
    /// A session with a peer was confirmed.
    PeerConnected {
        /// Peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
    },
}

enum Waiting {
    /// Waiting for the record of `addr`.
    Record { addr: SocketAddr, expect: Option<NodeId> },
    /// Ping sent to `peer`.
    Pong { peer: NodeId },
}

struct Pending {
    waiting: Waiting,
    started: Instant,
    deadline: Instant,
}

/// The DHT protocol core. See the module docs.
pub struct Dht {
    cfg: DhtConfig,
    channel: Channel,
    record: NodeRecord,
    next_request: u64,
    pending: BTreeMap<u64, Pending>,
    known: BTreeMap<NodeId, NodeRecord>,
    events: VecDeque<DhtEvent>,
}

impl Dht {
    /// A DHT node for `identity` advertising `addrs`, starting at `now`.
    pub fn new(identity: Identity, addrs: &[WireAddr], cfg: DhtConfig, now: Instant) -> Result<Self, RecordError> {
        if addrs.iter().any(|a| !a.is_usable()) {
            return Err(RecordError::BadAddr);
        }
        // Milliseconds since the epoch as the first seq: a restarted node's record supersedes the
        // one it had before (unless it re-signed more than once per millisecond it ran).
        let seq = cfg.channel.unix_time_ns_at_start / 1_000_000;
        let record = identity.make_record(seq, cfg.capabilities, addrs)?;
        let mut channel = Channel::new(identity, cfg.channel.clone(), now);
        channel.set_local_record(&record);
        Ok(Dht {
            cfg,
            channel,
            record,
            next_request: 1,
            pending: BTreeMap::new(),
            known: BTreeMap::new(),
            events: VecDeque::new(),
        })
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.channel.identity().id()
    }

    /// Our current signed record.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Re-signs our record with new addresses and a higher sequence number.
    pub fn set_addrs(&mut self, addrs: &[WireAddr]) -> Result<(), RecordError> {
        if addrs.iter().any(|a| !a.is_usable()) {
            return Err(RecordError::BadAddr);
        }
        let rec = self.channel.identity().make_record(self.record.seq + 1, self.cfg.capabilities, addrs)?;
        self.channel.set_local_record(&rec);
        self.record = rec;
        Ok(())
    }

    /// Channel counters, including drops by reason.
    pub fn stats(&self) -> &ChannelStats {
        self.channel.stats()
    }

    /// The secure channel (read-only).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Pings `target`; the answer arrives as `DhtEvent::Pong` or `RequestFailed` with this id.
    pub fn ping(&mut self, now: Instant, target: Target) -> Result<u64, RequestError> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            return Err(RequestError::Busy);
        }
        let request = self.next_request;
        self.next_request += 1;
        match target {
            Target::Record(rec) => {
                rec.verify().map_err(RequestError::BadRecord)?;
                self.send_ping(now, request, now, &rec)?;
            }
            Target::Addr { addr, expect } => {
                let addr = crate::channel::canonical(addr);
                let known = expect.and_then(|id| self.known.get(&id)).cloned();
                match known {
                    Some(rec) => self.send_ping(now, request, now, &rec)?,
                    None => {
                        self.channel.request_record(now, addr);
                        let deadline = now + self.cfg.request_timeout;
                        self.pending.insert(
                            request,
                            Pending { waiting: Waiting::Record { addr, expect }, started: now, deadline },
                        );
                    }
                }
            }
        }
        Ok(request)
    }

    fn remember(&mut self, rec: &NodeRecord) {
        if let Some(held) = self.known.get(&rec.id) {
            if rec.supersedes(held).is_err() {
                return;
            }
        } else if self.known.len() >= self.cfg.max_known_records {
            return;
        }
        self.known.insert(rec.id, rec.clone());
    }

    fn send_ping(
        &mut self,
        now: Instant,
        request: u64,
        started: Instant,
        rec: &NodeRecord,
    ) -> Result<(), RequestError> {
        let ipv6 = false;
        let info = PeerInfo::from_record(rec, ipv6)
            .or_else(|| PeerInfo::from_record(rec, !ipv6))
            .ok_or(RequestError::NoAddress)?;
        self.remember(rec);
        let msg =
            Message { id: request, body: Body::Ping }.encode().map_err(|_| RequestError::Send(SendError::TooLarge))?;
        self.channel.send(now, &info, &msg).map_err(RequestError::Send)?;
        let deadline = started + self.cfg.request_timeout;
        self.pending.insert(request, Pending { waiting: Waiting::Pong { peer: rec.id }, started, deadline });
        Ok(())
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.channel.handle_datagram(now, from, data);
        self.drain_channel(now);
    }

    fn drain_channel(&mut self, now: Instant) {
        while let Some(ev) = self.channel.poll_event() {
            match ev {
                ChannelEvent::Received { peer, addr, data } => self.on_message(now, peer, addr, &data),
                ChannelEvent::Established { peer, addr, .. } => {
                    self.events.push_back(DhtEvent::PeerConnected { peer, addr })
                }
                ChannelEvent::HandshakeFailed { peer, .. } => self.fail_where(
                    |w| matches!(w, Waiting::Pong { peer: p } if *p == peer),
                    RequestError::HandshakeFailed,
                ),
                ChannelEvent::Record { from, record } => self.on_record(now, from, record),
            }
        }
    }

    fn fail_where(&mut self, pred: impl Fn(&Waiting) -> bool, error: RequestError) {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| pred(&p.waiting)).map(|(id, _)| *id).collect();
        for request in ids {
            self.pending.remove(&request);
            self.events.push_back(DhtEvent::RequestFailed { request, error });
        }
    }

    fn on_record(&mut self, now: Instant, from: SocketAddr, record: NodeRecord) {
        let waiting: Vec<(u64, Option<NodeId>, Instant)> = self
            .pending
            .iter()
            .filter_map(|(id, p)| match p.waiting {
                Waiting::Record { addr, expect } if addr == from => Some((*id, expect, p.started)),
                _ => None,
            })
            .collect();
        for (request, expect, started) in waiting {
            self.pending.remove(&request);
            if expect.is_some_and(|e| e != record.id) {
                self.channel.count_drop(DropReason::IdentityMismatch);
                self.events
                    .push_back(DhtEvent::RequestFailed { request, error: RequestError::IdentityMismatch(record.id) });
                continue;
            }
            // The reply came from `from`, so that is where the node is reachable from here.
            let rec = record.clone();
            let info = PeerInfo { id: rec.id, noise_key: rec.noise_key, addr: from };
            self.remember(&rec);
            let sent = Message { id: request, body: Body::Ping }
                .encode()
                .map_err(|_| SendError::TooLarge)
                .and_then(|m| self.channel.send(now, &info, &m));
            match sent {
                Ok(()) => {
                    let deadline = started + self.cfg.request_timeout;
                    self.pending
                        .insert(request, Pending { waiting: Waiting::Pong { peer: rec.id }, started, deadline });
                }
                Err(e) => self.events.push_back(DhtEvent::RequestFailed { request, error: RequestError::Send(e) }),
            }
        }
    }

    fn reply(&mut self, now: Instant, peer: NodeId, id: u64, body: Body) {
        if let Ok(bytes) = (Message { id, body }).encode() {
            // A full queue toward a peer only loses this answer; the peer's request times out.
            let _ = self.channel.send_known(now, peer, &bytes);
        }
    }

    fn error(code: u16, detail: &str) -> Body {
        Body::Error { code, detail: BoundedString::truncated(detail) }
    }

    fn on_message(&mut self, now: Instant, peer: NodeId, addr: SocketAddr, data: &[u8]) {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(_) => {
                self.channel.count_drop(DropReason::MalformedMessage);
                if let Some(id) = Message::peek_id(data) {
                    self.reply(now, peer, id, Self::error(error_code::UNSUPPORTED, "unknown or malformed message"));
                }
                return;
            }
        };
        match msg.body {
            Body::Ping => {
                let body = Body::Pong { observed: WireAddr::from(addr), record_seq: self.record.seq };
                self.reply(now, peer, msg.id, body);
            }
            Body::Pong { observed, record_seq } => match self.pending.get(&msg.id) {
                Some(Pending { waiting: Waiting::Pong { peer: p }, started, .. }) if *p == peer => {
                    let rtt = now.saturating_duration_since(*started);
                    self.pending.remove(&msg.id);
                    self.events.push_back(DhtEvent::Pong { request: msg.id, peer, addr, rtt, observed, record_seq });
                }
                _ => self.channel.count_drop(DropReason::UnexpectedResponse),
            },
            Body::Error { code, .. } => match self.pending.get(&msg.id) {
                Some(Pending { waiting: Waiting::Pong { peer: p }, .. }) if *p == peer => {
                    self.pending.remove(&msg.id);
                    self.events
                        .push_back(DhtEvent::RequestFailed { request: msg.id, error: RequestError::Refused(code) });
                }
                _ => self.channel.count_drop(DropReason::UnexpectedResponse),
            },
            Body::FindNode { .. } | Body::FindValue { .. } | Body::Store { .. } => {
                self.reply(now, peer, msg.id, Self::error(error_code::UNSUPPORTED, "not served by this node yet"));
            }
            Body::Nodes { .. } | Body::Value { .. } | Body::StoreAck { .. } => {
                self.channel.count_drop(DropReason::UnexpectedResponse);
            }
        }
    }

    /// Earliest time `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let req = self.pending.values().map(|p| p.deadline).min();
        [req, self.channel.poll_timeout()].into_iter().flatten().min()
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.channel.handle_timeout(now);
        self.drain_channel(now);
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| now >= p.deadline).map(|(id, _)| *id).collect();
        for request in expired {
            self.pending.remove(&request);
            self.events.push_back(DhtEvent::RequestFailed { request, error: RequestError::Timeout });
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.channel.poll_transmit()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }
}
