//! Per-origin delivery order of one topic.
//!
//! Each origin's run (`epoch`) numbers its messages from 0. A message is delivered when every
//! earlier one of its run was; a gap is waited for (`reorder_timeout`) before it is skipped, and
//! the first message seen of a run that does not start at 0 is held `first_message_wait` so that
//! earlier ones overtaken on the way still come first. Memory is bounded per origin, per topic
//! (bytes held) and in origins remembered.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use suprnova_dht::NodeId;

use super::types::{TopicEvent, TopicStats, TopicsConfig};
use crate::wire::Envelope;

/// Out-of-order broadcasts held per topic, in bytes, at most (beyond it new ones are dropped).
const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

/// One origin's order.
struct OriginOrder {
    epoch: u64,
    /// Next sequence number to deliver (`None` until the first message's wait is over).
    next: Option<u64>,
    pending: BTreeMap<u64, Envelope>,
    /// When the current gap (or the first wait) began.
    waiting_since: Option<Instant>,
    last_used: Instant,
}

impl OriginOrder {
    fn new(epoch: u64, now: Instant) -> Self {
        OriginOrder { epoch, next: None, pending: BTreeMap::new(), waiting_since: None, last_used: now }
    }

    /// Payload bytes held out of order.
    fn held(&self) -> usize {
        self.pending.values().map(|e| e.payload.len()).sum()
    }

    /// Gives up on the current gap: the next position becomes the first held message. Returns
    /// the sequence numbers skipped.
    fn skip_gap(&mut self) -> u64 {
        let first = self.pending.keys().next().copied();
        let skipped = match (self.next, first) {
            (Some(n), Some(f)) => f.saturating_sub(n),
            _ => 0,
        };
        self.next = first;
        skipped
    }

    /// Takes every message that is next in order, releasing its bytes from `held_bytes`.
    fn drain(&mut self, held_bytes: &mut usize, out: &mut Vec<TopicEvent>) {
        while let Some(n) = self.next {
            let Some(env) = self.pending.remove(&n) else { break };
            *held_bytes = held_bytes.saturating_sub(env.payload.len());
            out.push(TopicEvent::Message { origin: env.origin_id(), seq: env.seq, payload: env.payload });
            self.next = n.checked_add(1);
            // A gap that closed restarts the wait for the next one.
            self.waiting_since = None;
        }
    }
}

/// The delivery order of every origin heard in one topic.
#[derive(Default)]
pub(super) struct Order {
    origins: HashMap<NodeId, OriginOrder>,
    /// Payload bytes held out of order, all origins together.
    pending_bytes: usize,
}

impl Order {
    /// Takes a verified broadcast: pushes what is now deliverable onto `out`, and returns how
    /// long to wait before `timer` must look at this origin again (a gap or a first wait began).
    pub(super) fn accept(
        &mut self,
        env: Envelope,
        now: Instant,
        cfg: &TopicsConfig,
        stats: &mut TopicStats,
        out: &mut Vec<TopicEvent>,
    ) -> Option<Duration> {
        let origin = env.origin_id();
        if !self.origins.contains_key(&origin) && self.origins.len() >= cfg.max_origins {
            // Forget the origin heard from least recently.
            if let Some(old) = self.origins.iter().min_by_key(|(_, o)| o.last_used).map(|(k, _)| *k)
                && let Some(gone) = self.origins.remove(&old)
            {
                self.pending_bytes = self.pending_bytes.saturating_sub(gone.held());
            }
        }
        let o = self.origins.entry(origin).or_insert_with(|| OriginOrder::new(env.epoch, now));
        if env.epoch < o.epoch {
            stats.late += 1;
            return None;
        }
        if env.epoch > o.epoch {
            // A new run of the origin (it restarted): the old one's held messages go.
            self.pending_bytes = self.pending_bytes.saturating_sub(o.held());
            *o = OriginOrder::new(env.epoch, now);
        }
        o.last_used = now;
        if o.next.is_none() && env.seq == 0 {
            o.next = Some(0);
        }
        if o.next.is_some_and(|n| env.seq < n) {
            stats.late += 1;
            return None;
        }
        let len = env.payload.len();
        if o.next != Some(env.seq) && self.pending_bytes.saturating_add(len) > MAX_PENDING_BYTES {
            // The hold buffer is full: this one cannot wait for its gap.
            stats.hold_full += 1;
            return None;
        }
        self.pending_bytes += len;
        o.pending.insert(env.seq, env);
        if o.pending.len() > cfg.max_pending_per_origin {
            // Too far ahead: give up on the gap.
            stats.skipped += o.skip_gap();
        }
        let before = out.len();
        o.drain(&mut self.pending_bytes, out);
        stats.delivered += (out.len() - before) as u64;
        let first_wait = o.next.is_none();
        if o.pending.is_empty() {
            o.waiting_since = None;
            return None;
        }
        if o.waiting_since.is_some() {
            return None;
        }
        o.waiting_since = Some(now);
        Some(if first_wait { cfg.first_message_wait } else { cfg.reorder_timeout })
    }

    /// The wait for `origin` may be over: skips its gap if it is, pushing what becomes
    /// deliverable onto `out`. Returns when to look again, if something is still held.
    pub(super) fn timer(
        &mut self,
        origin: NodeId,
        now: Instant,
        cfg: &TopicsConfig,
        stats: &mut TopicStats,
        out: &mut Vec<TopicEvent>,
    ) -> Option<Duration> {
        let o = self.origins.get_mut(&origin)?;
        let timeout = if o.next.is_none() { cfg.first_message_wait } else { cfg.reorder_timeout };
        let since = o.waiting_since?;
        let waited = now.saturating_duration_since(since);
        if waited < timeout {
            return Some(timeout - waited);
        }
        stats.skipped += o.skip_gap();
        let before = out.len();
        o.drain(&mut self.pending_bytes, out);
        stats.delivered += (out.len() - before) as u64;
        o.waiting_since = None;
        if o.pending.is_empty() {
            return None;
        }
        o.waiting_since = Some(now);
        Some(timeout)
    }
}
