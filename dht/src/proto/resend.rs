//! Retransmission of requests and the responder's answer cache (wire-spec §6.7).
//!
//! A request unanswered after one retransmission timeout (RTO) is sent again, under the same
//! message id, with the RTO doubled each time, until its deadline. The RTO follows RFC 6298:
//! smoothed round-trip time plus four deviations, sampled only from requests answered on their
//! first transmission (Karn), clamped to `[rto_min, rto_max]`. As in RFC 6298 §5.5, a resend that
//! goes unanswered too backs the peer's RTO off for the requests that follow, until an answer to a request sent
//! once measures the path again: a peer that is slow because it is overloaded is not sent every
//! request three times. And retransmissions draw on a budget that only first transmissions fill
//! (`RESEND_BUDGET_MAX`, one token per request): whatever happens, resending at most doubles the
//! traffic, so an overloaded network is never pushed into collapse by its own retries. A responder remembers the encoded
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

/// Tokens of the retransmission budget at most (and at the start): the resends a burst may take.
pub const RESEND_BUDGET_MAX: u32 = 64;
/// How far a peer's RTO is backed off at most by timeouts, as a power of two.
const MAX_BACKOFF: u32 = 5;

/// Retransmissions allowed: one token per request sent, one spent per resend.
#[derive(Debug)]
pub(super) struct ResendBudget {
    tokens: u32,
}

impl ResendBudget {
    pub fn new() -> Self {
        ResendBudget { tokens: RESEND_BUDGET_MAX }
    }

    /// A request went out for the first time.
    pub fn earn(&mut self) {
        self.tokens = (self.tokens + 1).min(RESEND_BUDGET_MAX);
    }

    /// Takes a token for one resend, if there is one.
    pub fn spend(&mut self) -> bool {
        let ok = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        ok
    }
}

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
    /// Timeouts since the last sample, as a power of two on the RTO (RFC 6298 §5.5).
    backoff: u32,
    /// When it was last backed off: the timeouts of requests sent together count once.
    backed_off: Option<Instant>,
}

impl RttEstimate {
    pub fn new() -> Self {
        RttEstimate { srtt: None, rttvar: Duration::ZERO, backoff: 0, backed_off: None }
    }

    /// A request timed out: later requests wait twice as long before a resend, until a sample.
    /// Backs off at most once per RTO, so a burst of requests lost together doubles it once.
    pub fn back_off(&mut self, now: Instant, min: Duration, max: Duration) {
        let rto = self.rto(min, max);
        if self.backed_off.is_some_and(|t| now.saturating_duration_since(t) < rto) {
            return;
        }
        self.backed_off = Some(now);
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
    }

    /// A round trip measured on a request answered on its first transmission.
    pub fn sample(&mut self, rtt: Duration) {
        self.backoff = 0;
        self.backed_off = None;
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

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The retransmission timeout, clamped to `[min, max]`; 3 × `min` before the first sample,
    /// as a network we know nothing about yet may be slow.
    pub fn rto(&self, min: Duration, max: Duration) -> Duration {
        let rto = self.srtt.map_or(min * 3, |s| s + self.rttvar * 4).clamp(min, max.max(min));
        (rto * (1 << self.backoff)).min(max.max(min))
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
    /// The retransmission timeout toward `peer` (its own estimate, else the node's).
    pub(super) fn rto_of(&self, peer: &NodeId) -> Duration {
        let (min, max) = (self.cfg.rto_min, self.cfg.rto_max);
        self.peer_rtt.get(peer).map_or_else(|| self.rtt.rto(min, max), |e| e.rto(min, max))
    }

    /// When a lookup stops waiting for a request to `peer` sent `now`: `lookup_stall`, or two
    /// of the peer's RTOs if that is longer, so that on a slow or loaded path the lookup does
    /// not give up on every request (and ask still more peers) before its resend could answer.
    pub(super) fn stall_deadline(&self, now: Instant, peer: &NodeId) -> Instant {
        now + self.cfg.lookup_stall.max(self.rto_of(peer) * 2)
    }

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

    /// Sends again every request whose retransmission timeout passed (§6.7), as far as the
    /// budget allows; one the budget refuses waits one more timeout.
    pub(super) fn resend_due(&mut self, now: Instant) {
        let (min, max) = (self.cfg.rto_min, self.cfg.rto_max);
        let mut due = Vec::new();
        for p in self.pending.values_mut() {
            let Some(r) = p.resend.as_mut() else { continue };
            if now < r.next {
                continue;
            }
            // Only the peer's own RTO backs off (dead peers must not slow requests to the others
            // down), and only when a resend went unanswered too: one lost datagram, the common
            // case on a lossy path, says nothing about load.
            let known = self.peer_rtt.len() < self.cfg.max_known_records || self.peer_rtt.contains_key(&r.info.id);
            if r.resent == 1 && known {
                self.peer_rtt.entry(r.info.id).or_insert_with(RttEstimate::new).back_off(now, min, max);
            }
            if !self.resend_budget.spend() {
                r.next = now + r.rto;
                self.stats.resends_skipped += 1;
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
    fn timeouts_back_the_rto_off_until_a_sample() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(1));
        let now = Instant::now();
        let mut e = RttEstimate::new();
        for _ in 0..4 {
            e.sample(Duration::from_millis(10));
        }
        assert_eq!(e.rto(min, max), min);
        e.back_off(now, min, max);
        e.back_off(now + Duration::from_millis(10), min, max);
        assert_eq!(e.rto(min, max), min * 2, "timeouts within one RTO back off once");
        e.back_off(now + Duration::from_millis(200), min, max);
        assert_eq!(e.rto(min, max), min * 4);
        for i in 0..10 {
            e.back_off(now + Duration::from_secs(2 + i), min, max);
        }
        assert_eq!(e.rto(min, max), max, "clamped");
        e.sample(Duration::from_millis(10));
        assert_eq!(e.rto(min, max), min, "a sample ends the backoff");
    }

    #[test]
    fn the_budget_allows_one_resend_per_request_beyond_its_burst() {
        let mut b = ResendBudget::new();
        let burst = (0..1000).take_while(|_| b.spend()).count();
        assert_eq!(burst, RESEND_BUDGET_MAX as usize);
        for _ in 0..10 {
            b.earn();
        }
        assert_eq!((0..1000).take_while(|_| b.spend()).count(), 10);
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
