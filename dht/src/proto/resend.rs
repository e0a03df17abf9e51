//! Retransmission of requests and the responder's answer cache (wire-spec §6.7).
//!
//! A request unanswered after one retransmission timeout (RTO) is sent again, under the same
//! message id, with the RTO doubled each time, until its deadline. The RTO follows RFC 6298:
//! smoothed round-trip time plus four deviations, sampled only from requests answered on their
//! first transmission (Karn), clamped to `[rto_min, rto_max]`. A responder remembers the encoded
//! answers it sent, by (peer, message id), for `ANSWER_CACHE_LIFETIME`: a retransmitted request
//! is answered again from the cache and never served twice, so a repeated `Store` with
//! `expected_seq` is not refused as a compare-and-swap mismatch and costs no second check.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::Dht;
use crate::channel::PeerInfo;
use crate::identity::NodeId;

/// How long a responder keeps an answer for a retransmitted request.
pub const ANSWER_CACHE_LIFETIME: Duration = Duration::from_secs(5);
/// Answers kept at most (oldest forgotten first).
pub const ANSWER_CACHE_ENTRIES: usize = 512;
/// Bytes of answers kept at most; one request's answer over `ANSWER_CACHE_MAX_ONE` is not kept.
pub const ANSWER_CACHE_BYTES: usize = 1 << 20;
/// Largest answer (all its parts) kept for one request.
pub const ANSWER_CACHE_MAX_ONE: usize = 16 * 1024;

/// A request's copy kept for retransmission.
#[derive(Debug)]
pub(super) struct Resend {
    /// Where it goes.
    pub info: PeerInfo,
    /// The encoded message (re-sealed on every transmission).
    pub bytes: Vec<u8>,
    /// When it is sent again.
    pub next: Instant,
    /// The current timeout (doubles after each transmission).
    pub rto: Duration,
    /// Transmissions so far after the first.
    pub resent: u32,
    /// Whether it went out at once on an established session (not queued behind a handshake,
    /// whose time is no round trip of the request): only then may its answer be sampled.
    pub clean: bool,
}

/// Round-trip estimate (RFC 6298).
#[derive(Debug)]
pub(super) struct RttEstimate {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimate {
    pub fn new() -> Self {
        RttEstimate { srtt: None, rttvar: Duration::ZERO }
    }

    /// A round trip measured on a request answered on its first transmission.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The retransmission timeout, clamped to `[min, max]`; 3 × `min` before the first sample,
    /// as a network we know nothing about yet may be slow.
    pub fn rto(&self, min: Duration, max: Duration) -> Duration {
        let rto = self.srtt.map_or(min * 3, |s| s + self.rttvar * 4);
        rto.clamp(min, max.max(min))
    }
}

/// What identifies a request in the cache besides (peer, id): a digest of its bytes, so that a
/// different request that reuses an id is served afresh, never answered with another's answer.
pub(super) type RequestDigest = [u8; 16];

/// The digest of a request's plaintext.
pub(super) fn digest(request: &[u8]) -> RequestDigest {
    let mut d = [0u8; 16];
    d.copy_from_slice(&blake3::hash(request).as_bytes()[..16]);
    d
}

/// The request's digest and the encoded parts of its answer.
type Answer = (RequestDigest, Vec<Vec<u8>>);

/// Encoded answers by (peer, message id), for retransmitted requests.
#[derive(Debug, Default)]
pub(super) struct AnswerCache {
    answers: BTreeMap<(NodeId, u64), Answer>,
    order: VecDeque<(Instant, NodeId, u64)>,
    bytes: usize,
}

impl AnswerCache {
    /// The answer already sent for this request (same peer, id and bytes), if it is still held.
    pub fn get(&self, peer: NodeId, id: u64, request: &RequestDigest) -> Option<&[Vec<u8>]> {
        self.answers.get(&(peer, id)).filter(|(d, _)| d == request).map(|(_, parts)| parts.as_slice())
    }

    /// Remembers one part of the answer to the request (peer, id) with digest `request`.
    pub fn keep(&mut self, now: Instant, peer: NodeId, id: u64, request: RequestDigest, part: &[u8]) {
        self.expire(now);
        let key = (peer, id);
        if self.answers.get(&key).is_some_and(|(d, _)| *d != request) {
            // The id was reused for another request: the old answer is of no use any more.
            self.forget(&key);
        }
        let held: usize = self.answers.get(&key).map_or(0, |(_, p)| p.iter().map(Vec::len).sum());
        if held + part.len() > ANSWER_CACHE_MAX_ONE {
            // Too big to keep whole: forget it, a retransmission is served afresh.
            self.forget(&key);
            return;
        }
        if !self.answers.contains_key(&key) {
            while self.order.len() >= ANSWER_CACHE_ENTRIES || self.bytes + part.len() > ANSWER_CACHE_BYTES {
                let Some((_, p, i)) = self.order.pop_front() else { break };
                self.forget(&(p, i));
            }
            self.order.push_back((now, peer, id));
        }
        self.bytes += part.len();
        self.answers.entry(key).or_insert_with(|| (request, Vec::new())).1.push(part.to_vec());
    }

    fn forget(&mut self, key: &(NodeId, u64)) {
        if let Some((_, parts)) = self.answers.remove(key) {
            self.bytes -= parts.iter().map(Vec::len).sum::<usize>();
        }
    }

    /// Drops answers older than [`ANSWER_CACHE_LIFETIME`].
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, p, i)) = self.order.front() {
            if now.saturating_duration_since(at) < ANSWER_CACHE_LIFETIME {
                break;
            }
            self.order.pop_front();
            self.forget(&(p, i));
        }
    }

    /// Answers held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Dht {
    /// A request we answered already (the peer retransmitted it): the same answer again, from
    /// the cache, without serving it twice. Returns whether it was one.
    pub(super) fn answer_again(&mut self, now: Instant, peer: NodeId, id: u64, request: &RequestDigest) -> bool {
        let Some(parts) = self.answers.get(peer, id, request) else { return false };
        let parts = parts.to_vec();
        for bytes in parts {
            let _ = self.channel.send_known(now, peer, &bytes);
        }
        self.stats.answers_repeated += 1;
        true
    }

    /// Sends again every request whose retransmission timeout passed (§6.7).
    pub(super) fn resend_due(&mut self, now: Instant) {
        let max = self.cfg.rto_max;
        let mut due = Vec::new();
        for p in self.pending.values_mut() {
            let Some(r) = p.resend.as_mut() else { continue };
            if now < r.next {
                continue;
            }
            r.resent += 1;
            // Two resends at the same timeout, then doubling: a lost datagram is far likelier
            // than a congested path at the few packets a request costs.
            if r.resent > 2 {
                r.rto = (r.rto * 2).min(max);
            }
            r.next = now + r.rto;
            due.push((r.info, r.bytes.clone()));
        }
        for (info, bytes) in due {
            // Behind a handshake the first copy is still queued: the handshake retransmits.
            if self.channel.has_session(&info.id, now) {
                self.stats.retransmits += 1;
                let _ = self.channel.send(now, &info, &bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_follows_the_samples_within_its_bounds() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(1));
        let mut e = RttEstimate::new();
        assert_eq!(e.rto(min, max), min * 3);
        for _ in 0..20 {
            e.sample(Duration::from_micros(300));
        }
        assert_eq!(e.rto(min, max), min, "a LAN's sub-millisecond RTT is clamped up");
        for _ in 0..20 {
            e.sample(Duration::from_millis(400));
        }
        let rto = e.rto(min, max);
        assert!(rto >= Duration::from_millis(400) && rto <= max, "{rto:?}");
        e.sample(Duration::from_secs(30));
        assert_eq!(e.rto(min, max), max);
    }

    #[test]
    fn answer_cache_is_bounded_and_expires() {
        let now = Instant::now();
        let peer = NodeId([7; 32]);
        let mut c = AnswerCache::default();
        let (req, other) = (digest(b"request"), digest(b"another request"));
        c.keep(now, peer, 1, req, &[1; 100]);
        c.keep(now, peer, 1, req, &[2; 100]);
        assert_eq!(c.get(peer, 1, &req).map(<[Vec<u8>]>::len), Some(2));
        assert!(c.get(peer, 1, &other).is_none(), "a reused id with other bytes is not a retransmission");
        assert_eq!(c.bytes(), 200);
        c.keep(now, peer, 1, other, &[3; 10]);
        assert_eq!((c.get(peer, 1, &other).map(<[Vec<u8>]>::len), c.bytes()), (Some(1), 10));
        for id in 2..(ANSWER_CACHE_ENTRIES as u64 + 10) {
            c.keep(now, peer, id, req, &[0; 10]);
        }
        assert_eq!(c.len(), ANSWER_CACHE_ENTRIES);
        assert!(c.get(peer, 1, &other).is_none(), "the oldest answer went first");
        c.keep(now, peer, 10_000, req, &vec![0; ANSWER_CACHE_MAX_ONE + 1]);
        assert!(c.get(peer, 10_000, &req).is_none(), "too big to keep");
        c.expire(now + ANSWER_CACHE_LIFETIME);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
