//! LAN discovery (wire-spec §15.6): nodes on one link find each other with no bootstrap address.
//! Each announces its signed node record to an administratively scoped multicast group; a node
//! that hears an announcement from a LAN address dials the announcer there. Sans-IO: the driver
//! owns the multicast socket and feeds `(now, source, bytes)`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::identity::{NodeId, NodeRecord, RecordError};
use crate::proto::is_private_ip;
use crate::wire::limits::{MAX_RECORD_LEN, PROTOCOL_VERSION};

/// The multicast group announcements go to (administratively scoped, RFC 2365).
pub const LAN_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 83, 78);
/// The UDP port of the group.
pub const LAN_PORT: u16 = 4434;
/// Type byte of an announcement.
pub const ANNOUNCE_TYPE: u8 = 0x0b;
/// Bytes before the record: type, version, two reserved zero bytes, flags, port (u16 BE).
pub const ANNOUNCE_HEADER_LEN: usize = 7;
/// Flag: the sender is new and asks the others to announce themselves soon.
pub const FLAG_ANSWER_ME: u8 = 1;

/// Why an announcement is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LanError {
    /// Shorter than a header and a record, or longer than the largest record allows.
    #[error("bad length")]
    BadLength,
    /// Not type 0x0b, version 1, reserved bytes zero, known flags only.
    #[error("bad header")]
    BadHeader,
    /// Port 0.
    #[error("port 0")]
    BadPort,
    /// The record does not decode or verify.
    #[error("bad record: {0}")]
    BadRecord(RecordError),
    /// From an address that is not on a LAN (only private, link-local and loopback sources count).
    #[error("not from a LAN address")]
    NotLan,
    /// Our own announcement, looped back.
    #[error("our own")]
    Own,
    /// Over the processing rate.
    #[error("rate limited")]
    Rate,
}

/// A parsed announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Flags (`FLAG_ANSWER_ME`).
    pub flags: u8,
    /// The port the announcer's node listens on.
    pub port: u16,
    /// Its verified record.
    pub record: NodeRecord,
}

/// Encodes an announcement of `record` (its encoding) listening on `port`.
pub fn encode_announce(record: &[u8], port: u16, answer_me: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(ANNOUNCE_HEADER_LEN + record.len());
    v.extend_from_slice(&[ANNOUNCE_TYPE, PROTOCOL_VERSION, 0, 0, u8::from(answer_me)]);
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(record);
    v
}

/// Parses and verifies an announcement. Checks, in order: length, header, port, record.
pub fn parse_announce(b: &[u8]) -> Result<Announce, LanError> {
    if b.len() <= ANNOUNCE_HEADER_LEN || b.len() > ANNOUNCE_HEADER_LEN + MAX_RECORD_LEN {
        return Err(LanError::BadLength);
    }
    let (head, rec) = b.split_at(ANNOUNCE_HEADER_LEN);
    let [t, v, r0, r1, flags, p0, p1] = <[u8; ANNOUNCE_HEADER_LEN]>::try_from(head).map_err(|_| LanError::BadLength)?;
    if t != ANNOUNCE_TYPE || v != PROTOCOL_VERSION || r0 != 0 || r1 != 0 || flags & !FLAG_ANSWER_ME != 0 {
        return Err(LanError::BadHeader);
    }
    let port = u16::from_be_bytes([p0, p1]);
    if port == 0 {
        return Err(LanError::BadPort);
    }
    let record = NodeRecord::decode_verified(rec).map_err(LanError::BadRecord)?;
    Ok(Announce { flags, port, record })
}

/// Limits of the beacon.
#[derive(Clone, Debug)]
pub struct LanConfig {
    /// Announcers remembered.
    pub max_tracked: usize,
    /// Announcements processed per second; more are dropped.
    pub max_per_s: u32,
    /// Announce again this often once settled (with up to a sixth of jitter).
    pub every: Duration,
}

impl Default for LanConfig {
    fn default() -> Self {
        LanConfig { max_tracked: 64, max_per_s: 20, every: Duration::from_secs(30) }
    }
}

/// A node found on the LAN: dial it at `addr`, expecting `record.id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanFound {
    /// Its verified record.
    pub record: NodeRecord,
    /// Where it listens: the announcement's source IP and the port it gave.
    pub addr: SocketAddr,
}

/// Counters of the beacon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LanStats {
    /// Announcements sent.
    pub sent: u64,
    /// Announcements accepted.
    pub accepted: u64,
    /// Nodes found (new, or at a new address).
    pub found: u64,
    /// Announcements dropped, by reason.
    pub dropped: HashMap<&'static str, u64>,
}

/// The beacon. See the module docs.
#[derive(Debug)]
pub struct LanBeacon {
    cfg: LanConfig,
    me: NodeId,
    record: Vec<u8>,
    port: u16,
    start: Instant,
    next: Instant,
    sent: u32,
    seen: HashMap<NodeId, (SocketAddr, Instant)>,
    window: (Instant, u32),
    last_answer: Option<Instant>,
    jitter: u64,
    stats: LanStats,
}

/// The first announcements go out at these offsets from the start; then every `cfg.every`.
const START: [Duration; 4] =
    [Duration::ZERO, Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];

impl LanBeacon {
    /// A beacon announcing `record` (a node listening on `port`), starting at `now`.
    pub fn new(cfg: LanConfig, record: &NodeRecord, port: u16, now: Instant) -> Self {
        let jitter = u64::from_le_bytes(record.id.0[..8].try_into().unwrap_or([7; 8])) | 1;
        LanBeacon {
            cfg,
            me: record.id,
            record: crate::wire::encode(record).unwrap_or_default(),
            port,
            start: now,
            next: now,
            sent: 0,
            seen: HashMap::new(),
            window: (now, 0),
            last_answer: None,
            jitter,
            stats: LanStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &LanStats {
        &self.stats
    }

    /// Announces `record` from now on (the node re-signed it).
    pub fn set_record(&mut self, record: &NodeRecord) {
        self.record = crate::wire::encode(record).unwrap_or_default();
    }

    /// When `poll_announce` has something next.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// The announcement to multicast now, if one is due.
    pub fn poll_announce(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next || self.record.is_empty() {
            return None;
        }
        let answer_me = self.sent == 0;
        self.sent = self.sent.saturating_add(1);
        self.next = match START.get(self.sent as usize) {
            Some(d) => (self.start + *d).max(now),
            None => {
                self.jitter ^= self.jitter << 13;
                self.jitter ^= self.jitter >> 7;
                self.jitter ^= self.jitter << 17;
                let spread = self.cfg.every.as_millis() as u64 / 6;
                now + self.cfg.every + Duration::from_millis(self.jitter % spread.max(1))
            }
        };
        self.stats.sent += 1;
        Some(encode_announce(&self.record, self.port, answer_me))
    }

    fn drop(&mut self, e: LanError) -> Option<LanFound> {
        let name = match e {
            LanError::BadLength => "bad_length",
            LanError::BadHeader => "bad_header",
            LanError::BadPort => "bad_port",
            LanError::BadRecord(_) => "bad_record",
            LanError::NotLan => "not_lan",
            LanError::Own => "own",
            LanError::Rate => "rate",
        };
        *self.stats.dropped.entry(name).or_insert(0) += 1;
        None
    }

    /// An announcement from `from`: the node to dial, if it is new (or moved).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<LanFound> {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        if self.window.1 >= self.cfg.max_per_s {
            return self.drop(LanError::Rate);
        }
        self.window.1 += 1;
        let ip = crate::channel::canonical(from).ip();
        if !(is_private_ip(ip) || ip.is_loopback()) {
            return self.drop(LanError::NotLan);
        }
        let a = match parse_announce(bytes) {
            Ok(a) => a,
            Err(e) => return self.drop(e),
        };
        if a.record.id == self.me {
            return self.drop(LanError::Own);
        }
        self.stats.accepted += 1;
        let addr = SocketAddr::new(ip, a.port);
        if a.flags & FLAG_ANSWER_ME != 0
            && self.last_answer.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            // A newcomer: announce ourselves soon rather than at our next turn.
            self.last_answer = Some(now);
            self.next = self.next.min(now + Duration::from_millis(50 + self.jitter % 200));
        }
        if self.seen.get(&a.record.id).is_some_and(|(at, _)| *at == addr) {
            if let Some(s) = self.seen.get_mut(&a.record.id) {
                s.1 = now;
            }
            return None;
        }
        if self.seen.len() >= self.cfg.max_tracked && !self.seen.contains_key(&a.record.id) {
            // Forget the announcer heard from longest ago.
            if let Some(old) = self.seen.iter().min_by_key(|(_, (_, t))| *t).map(|(id, _)| *id) {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(a.record.id, (addr, now));
        self.stats.found += 1;
        Some(LanFound { record: a.record, addr })
    }
}

/// Whether LAN discovery makes sense for a node bound to `ip`: a private or link-local address,
/// or a wildcard one (any interface may be on a LAN).
pub fn on_lan(ip: IpAddr) -> bool {
    ip.is_unspecified() || is_private_ip(ip)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::identity::Identity;

    fn record(seed: u8) -> NodeRecord {
        Identity::from_seed([seed; 32]).make_record(1, 0, &[crate::wire::WireAddr::V4([10, 0, 0, seed], 4433)]).unwrap()
    }

    #[test]
    fn announcements_round_trip_and_bad_ones_are_refused() {
        let r = record(1);
        let enc = crate::wire::encode(&r).unwrap();
        let a = encode_announce(&enc, 4433, true);
        assert_eq!(parse_announce(&a).unwrap(), Announce { flags: 1, port: 4433, record: r });
        let mut bad = a.clone();
        bad[4] = 2;
        assert_eq!(parse_announce(&bad), Err(LanError::BadHeader));
        let mut bad = a.clone();
        bad[5] = 0;
        bad[6] = 0;
        assert_eq!(parse_announce(&bad), Err(LanError::BadPort));
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(parse_announce(&bad), Err(LanError::BadRecord(_))));
        assert_eq!(parse_announce(&a[..7]), Err(LanError::BadLength));
    }

    #[test]
    fn a_beacon_announces_on_its_schedule_and_reports_each_node_once() {
        let t0 = Instant::now();
        let mut b = LanBeacon::new(LanConfig::default(), &record(1), 4433, t0);
        let first = b.poll_announce(t0).unwrap();
        assert_eq!(first[4], FLAG_ANSWER_ME);
        assert!(b.poll_announce(t0).is_none());
        let at: Vec<u128> = (0..3)
            .map(|_| {
                let t = b.poll_timeout();
                let a = b.poll_announce(t).unwrap();
                assert_eq!(a[4], 0);
                t.duration_since(t0).as_millis()
            })
            .collect();
        assert_eq!(at, [500, 1000, 2000]);
        let t = b.poll_timeout();
        assert!(t.duration_since(t0) >= Duration::from_secs(32), "then every 30 s or so");
        // Another node's announcement: found once, at its source IP and the port it gave.
        let other = crate::wire::encode(&record(2)).unwrap();
        let from: SocketAddr = "10.0.0.2:4434".parse().unwrap();
        let found = b.handle(t0, from, &encode_announce(&other, 5000, true)).unwrap();
        assert_eq!(found.addr, "10.0.0.2:5000".parse::<SocketAddr>().unwrap());
        assert!(b.handle(t0, from, &encode_announce(&other, 5000, false)).is_none());
        // The newcomer asked for an answer: ours goes out soon.
        assert!(b.poll_timeout() <= t0 + Duration::from_millis(250));
        // Our own, and announcements from public addresses, do not count.
        let own = crate::wire::encode(&record(1)).unwrap();
        assert!(b.handle(t0, from, &encode_announce(&own, 4433, false)).is_none());
        assert!(b.handle(t0, "198.51.100.1:4434".parse().unwrap(), &encode_announce(&other, 1, false)).is_none());
        assert_eq!(b.stats().dropped.get("own"), Some(&1));
        assert_eq!(b.stats().dropped.get("not_lan"), Some(&1));
    }
}
