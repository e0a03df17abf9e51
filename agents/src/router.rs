//! What the runtime decides about incoming agent envelopes, sans-IO: whether one is admitted
//! (transport, signature, time window, replay) and where it goes (the runtime's own system
//! requests or an agent's mailbox), and the bounded table of requests awaiting an agent's
//! answer. Fed the time as Unix milliseconds; no clock, task or lock inside. The runtime
//! (`runtime`, feature `net`) holds one [`Router`] and carries out its verdicts; the
//! `agents_router` fuzz target drives it with arbitrary envelopes and times.

use std::collections::{HashMap, VecDeque};

use crate::wire::{AgentId, Envelope, EnvelopeKind, SYSTEM_TAG};

/// How an envelope arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A one-way direct message.
    Message,
    /// A direct request (a reply is owed).
    Request,
    /// A swarm topic.
    Broadcast,
}

/// Where an admitted envelope goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the runtime itself (a system request: knowledge offers).
    System,
    /// To the recipient agent's mailbox (or, for a broadcast, the swarm's members here).
    Agent,
}

/// Why an envelope was refused (each is counted under its own reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its kind does not match how it arrived (a request sent as a message, a system message
    /// that expects no answer, ...).
    WrongTransport,
    /// The signature does not verify.
    BadSignature,
    /// Its time is outside the accepted window around now.
    Stale,
    /// Seen before (same sender and nonce).
    Replayed,
    /// The replay memory is full of envelopes still inside the window.
    ReplayFull,
}

/// The stateless part of admission: the envelope's kind against how it arrived, its
/// signature, and its route.
pub fn check(e: &Envelope, transport: Transport) -> Result<Route, Refusal> {
    let expected = match transport {
        Transport::Message => EnvelopeKind::Message,
        Transport::Request => EnvelopeKind::Request,
        Transport::Broadcast => EnvelopeKind::Broadcast,
    };
    if e.kind != expected || (transport == Transport::Broadcast && e.to != [0; 32]) {
        return Err(Refusal::WrongTransport);
    }
    if !e.verify() {
        return Err(Refusal::BadSignature);
    }
    let system = e.body.starts_with(SYSTEM_TAG) && transport != Transport::Broadcast;
    if system && transport != Transport::Request {
        // Runtime-level messages all expect an answer.
        return Err(Refusal::WrongTransport);
    }
    Ok(if system { Route::System } else { Route::Agent })
}

/// Requests awaiting an answer are forgotten after this long.
pub const PENDING_LIFETIME_MS: u64 = 60_000;
/// A full pending table is swept at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;

/// Admission and the pending requests of one runtime.
#[derive(Debug)]
pub struct Router<P> {
    skew_ms: u64,
    max_replay: usize,
    seen: HashMap<(AgentId, u64), u64>,
    order: VecDeque<(u64, AgentId, u64)>,
    pending: HashMap<(AgentId, u64), (P, u64)>,
    max_pending: usize,
    last_sweep_ms: u64,
}

impl<P> Router<P> {
    /// Envelopes within `skew_ms` of now are accepted; at most `max_replay` (sender, nonce)
    /// pairs are remembered and `max_pending` requests held.
    pub fn new(skew_ms: u64, max_replay: usize, max_pending: usize) -> Self {
        Router {
            skew_ms,
            max_replay,
            seen: HashMap::new(),
            order: VecDeque::new(),
            pending: HashMap::new(),
            max_pending,
            last_sweep_ms: 0,
        }
    }

    /// Decides about a decoded envelope that arrived by `transport` at `now_ms`: admitted (and
    /// remembered against replays) with its route, or refused with the reason. [`check`] then
    /// [`Router::fresh`]: a driver that shares the router may run the signature check first,
    /// outside its lock.
    pub fn admit(&mut self, now_ms: u64, e: &Envelope, transport: Transport) -> Result<Route, Refusal> {
        let route = check(e, transport)?;
        self.fresh(now_ms, e)?;
        Ok(route)
    }

    /// Checks an envelope's time and that it was not seen before, and remembers it.
    pub fn fresh(&mut self, now_ms: u64, e: &Envelope) -> Result<(), Refusal> {
        let skew = self.skew_ms;
        if e.time_ms.saturating_add(skew) < now_ms || e.time_ms > now_ms.saturating_add(skew) {
            return Err(Refusal::Stale);
        }
        // Forget what is too old to be accepted anyway.
        while let Some(&(t, from, nonce)) = self.order.front() {
            if t.saturating_add(2 * skew) >= now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(from, nonce));
        }
        if self.seen.contains_key(&(e.from, e.nonce)) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= self.max_replay {
            return Err(Refusal::ReplayFull);
        }
        self.seen.insert((e.from, e.nonce), e.time_ms);
        self.order.push_back((e.time_ms.max(now_ms), e.from, e.nonce));
        Ok(())
    }

    /// Holds `p` for request `id` to agent `to` until it is answered, or gives it back if the
    /// table is full (requests older than [`PENDING_LIFETIME_MS`] are swept first, at most
    /// once a second, so a flood at the cap costs no sweep per request).
    pub fn hold(&mut self, now_ms: u64, to: AgentId, id: u64, p: P) -> Result<(), P> {
        if self.pending.len() >= self.max_pending && self.last_sweep_ms + SWEEP_EVERY_MS <= now_ms {
            self.last_sweep_ms = now_ms;
            let cutoff = now_ms.saturating_sub(PENDING_LIFETIME_MS);
            self.pending.retain(|_, (_, t)| *t >= cutoff);
        }
        if self.pending.len() >= self.max_pending {
            return Err(p);
        }
        self.pending.insert((to, id), (p, now_ms));
        Ok(())
    }

    /// The request `id` to agent `to`, if still held: it is being answered.
    pub fn take(&mut self, to: &AgentId, id: u64) -> Option<P> {
        self.pending.remove(&(*to, id)).map(|(p, _)| p)
    }

    /// Forgets every request held for agent `to` (it stopped).
    pub fn forget_agent(&mut self, to: &AgentId) {
        self.pending.retain(|(a, _), _| a != to);
    }

    /// (sender, nonce) pairs remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Requests held.
    pub fn held(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use suprnova_dht::identity::Identity;

    const NOW: u64 = 1_800_000_000_000;

    fn env(kind: EnvelopeKind, nonce: u64, time_ms: u64, body: &[u8]) -> Envelope {
        let to = if kind == EnvelopeKind::Broadcast { [0; 32] } else { [7; 32] };
        Envelope::sign(&Identity::from_seed([1; 32]), kind, to, nonce, time_ms, body).unwrap()
    }

    #[test]
    fn admits_once_within_the_window_and_routes_system_requests_to_the_runtime() {
        let mut r: Router<()> = Router::new(60_000, 16, 4);
        let m = env(EnvelopeKind::Message, 1, NOW, b"hi");
        assert_eq!(r.admit(NOW, &m, Transport::Message), Ok(Route::Agent));
        assert_eq!(r.admit(NOW, &m, Transport::Message), Err(Refusal::Replayed));
        assert_eq!(r.admit(NOW, &m, Transport::Request), Err(Refusal::WrongTransport));
        let old = env(EnvelopeKind::Message, 2, NOW - 60_001, b"hi");
        assert_eq!(r.admit(NOW, &old, Transport::Message), Err(Refusal::Stale));
        let early = env(EnvelopeKind::Message, 3, NOW + 60_001, b"hi");
        assert_eq!(r.admit(NOW, &early, Transport::Message), Err(Refusal::Stale));
        let mut forged = env(EnvelopeKind::Message, 4, NOW, b"hi");
        forged.nonce = 5;
        assert_eq!(r.admit(NOW, &forged, Transport::Message), Err(Refusal::BadSignature));
        let mut sys = SYSTEM_TAG.to_vec();
        sys.push(0);
        assert_eq!(r.admit(NOW, &env(EnvelopeKind::Request, 6, NOW, &sys), Transport::Request), Ok(Route::System));
        let one_way = env(EnvelopeKind::Message, 7, NOW, &sys);
        assert_eq!(r.admit(NOW, &one_way, Transport::Message), Err(Refusal::WrongTransport));
        let b = env(EnvelopeKind::Broadcast, 8, NOW, &sys);
        assert_eq!(r.admit(NOW, &b, Transport::Broadcast), Ok(Route::Agent), "a broadcast is never a system request");
        let mut to_one = env(EnvelopeKind::Broadcast, 9, NOW, b"x");
        to_one.to = [7; 32];
        assert_eq!(r.admit(NOW, &to_one, Transport::Broadcast), Err(Refusal::WrongTransport));
        assert_eq!(r.remembered(), 3);
    }

    #[test]
    fn replay_memory_is_bounded_and_forgets_what_the_window_refuses_anyway() {
        let mut r: Router<()> = Router::new(1_000, 2, 4);
        assert!(r.fresh(NOW, &env(EnvelopeKind::Message, 1, NOW, b"")).is_ok());
        assert!(r.fresh(NOW, &env(EnvelopeKind::Message, 2, NOW, b"")).is_ok());
        assert_eq!(r.fresh(NOW, &env(EnvelopeKind::Message, 3, NOW, b"")), Err(Refusal::ReplayFull));
        // Two windows later the first two are forgotten (they would be stale anyway).
        let later = NOW + 2_001;
        assert!(r.fresh(later, &env(EnvelopeKind::Message, 3, later, b"")).is_ok());
        assert_eq!(r.remembered(), 1);
    }

    #[test]
    fn pending_requests_are_bounded_swept_after_their_lifetime_and_answered_once() {
        let mut r: Router<u32> = Router::new(60_000, 16, 2);
        assert_eq!(r.hold(NOW, [1; 32], 1, 10), Ok(()));
        assert_eq!(r.hold(NOW, [1; 32], 2, 20), Ok(()));
        assert_eq!(r.hold(NOW + 500, [2; 32], 3, 30), Err(30), "full: handed back");
        assert_eq!(r.take(&[1; 32], 1), Some(10));
        assert_eq!(r.take(&[1; 32], 1), None, "answered once");
        assert_eq!(r.hold(NOW, [2; 32], 3, 30), Ok(()));
        // Full again; past the lifetime both are swept and the new one fits.
        assert_eq!(r.hold(NOW + PENDING_LIFETIME_MS + 1, [3; 32], 4, 40), Ok(()));
        assert_eq!(r.held(), 1);
        r.forget_agent(&[3; 32]);
        assert_eq!(r.held(), 0);
    }
}
