//! Plumtree broadcast (Leitão, Pereira, Rodrigues: "Epidemic Broadcast Trees", SRDS 2007), one
//! instance per topic, over the active view that HyParView maintains.
//!
//! A message goes in full (`Gossip`) to the *eager* peers, which form a spanning tree, and as a
//! batched announcement (`IHave`) to the *lazy* peers. A duplicate `Gossip` moves its sender to
//! lazy and answers `Prune`; an announced message that does not arrive within `graft_timeout_1`
//! is requested with `Graft`, which also puts the announcer back into the tree. When an announcement
//! shows a much shorter path than the tree's, the tree is optimised (graft the short path, prune
//! the long one).
//!
//! Message ids are BLAKE3 hashes of the payload. Each id is delivered once; ids are remembered for
//! `message_ttl` (bounded by `max_remembered`), payloads are kept for grafts for `cache_ttl`.
//! Payload validation (signatures) is the topic layer's job before a message enters here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::PeerId;

/// A message id: BLAKE3 of the payload.
pub type MessageId = [u8; 32];

/// Tunables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Wait for an announced message before grafting its first announcer.
    pub graft_timeout_1: Duration,
    /// Wait before grafting the next announcer.
    pub graft_timeout_2: Duration,
    /// Announcements are batched for this long.
    pub dispatch_timeout: Duration,
    /// Round difference above which an announcement triggers tree optimisation.
    pub optimization_threshold: u16,
    /// How long a delivered id is remembered (duplicates within it are never delivered again).
    pub message_ttl: Duration,
    /// Ids remembered at most (the oldest are forgotten first).
    pub max_remembered: usize,
    /// How long payloads are kept to answer grafts.
    pub cache_ttl: Duration,
    /// Payloads kept at most.
    pub max_cached: usize,
    /// Payload bytes kept at most (the oldest go first).
    pub max_cached_bytes: usize,
    /// A new neighbour is told (lazily, by `IHave`) of up to this many of the most recent cached
    /// messages, so that messages it missed while it was cut off reach it (0: none). This is the
    /// catch-up after a partition heals; it holds for messages still in the cache (`cache_ttl`).
    pub catch_up: usize,
    /// Largest payload accepted.
    pub max_message_size: usize,
    /// Ids per `IHave` message.
    pub max_ihave_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            graft_timeout_1: Duration::from_millis(40),
            graft_timeout_2: Duration::from_millis(40),
            dispatch_timeout: Duration::from_millis(10),
            optimization_threshold: 7,
            message_ttl: Duration::from_secs(300),
            max_remembered: 100_000,
            // As long as ids are remembered: a neighbour that was cut off for up to this long is
            // offered what it missed when it comes back (`catch_up`), within the byte bound.
            cache_ttl: Duration::from_secs(300),
            max_cached: 10_000,
            max_cached_bytes: 8 << 20,
            catch_up: 1_000,
            max_message_size: 64 * 1024,
            max_ihave_batch: 64,
        }
    }
}

/// Messages between neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A full message; `round` is its hop count from the origin.
    Gossip {
        /// BLAKE3(payload).
        id: MessageId,
        /// Hops so far.
        round: u16,
        /// The message.
        payload: Vec<u8>,
    },
    /// Announcements of messages the sender has.
    IHave(Vec<(MessageId, u16)>),
    /// Please send this message (if any) and keep me in your eager set.
    Graft {
        /// The message wanted, or `None` for a tree-optimisation graft.
        id: Option<MessageId>,
        /// Its round.
        round: u16,
    },
    /// Stop pushing to me eagerly.
    Prune,
}

/// Inputs.
#[derive(Clone, Debug)]
pub enum In<P> {
    /// Broadcast a payload from this node.
    Broadcast(Vec<u8>),
    /// A message from a neighbour.
    Message {
        /// Sender.
        from: P,
        /// The message.
        msg: Message,
    },
    /// A neighbour joined the active view.
    NeighborUp(P),
    /// A neighbour left it.
    NeighborDown(P),
    /// A timer fired.
    Timer(Timer),
}

/// Timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// An announced message is still missing.
    Missing(MessageId),
    /// Send the batched announcements.
    DispatchLazy,
    /// Forget expired ids and payloads.
    Expire,
}

/// Outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out<P> {
    /// Send to a neighbour.
    Send {
        /// Recipient.
        to: P,
        /// The message.
        msg: Message,
    },
    /// Hand a new message to the application (once per id).
    Deliver {
        /// Its id.
        id: MessageId,
        /// The payload.
        payload: Vec<u8>,
        /// Hops from the origin.
        round: u16,
        /// The neighbour it came from (`None`: our own broadcast).
        from: Option<P>,
    },
    /// Call back with `In::Timer(timer)` after `after`.
    ScheduleTimer {
        /// Delay.
        after: Duration,
        /// Which timer.
        timer: Timer,
    },
}

/// Counters (the basis of the relative message redundancy figure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads delivered to the application.
    pub delivered: u64,
    /// `Gossip` messages received, duplicates included.
    pub gossip_received: u64,
    /// Duplicate `Gossip` messages received.
    pub duplicates: u64,
    /// Grafts sent.
    pub grafts_sent: u64,
    /// Prunes sent.
    pub prunes_sent: u64,
    /// Messages dropped as too large.
    pub too_large: u64,
}

/// Plumtree state of one topic.
#[derive(Debug)]
pub struct Plumtree<P: PeerId> {
    cfg: Config,
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    /// Delivered ids and when they were first seen; `seen_order` expires them oldest first.
    seen: BTreeMap<MessageId, Instant>,
    seen_order: VecDeque<(Instant, MessageId)>,
    cache: BTreeMap<MessageId, (u16, Vec<u8>)>,
    cache_order: VecDeque<(Instant, MessageId)>,
    cache_bytes: usize,
    /// Announcers of messages we lack, in arrival order.
    missing: BTreeMap<MessageId, VecDeque<(P, u16)>>,
    lazy_queue: BTreeMap<P, Vec<(MessageId, u16)>>,
    dispatch_scheduled: bool,
    expire_scheduled: bool,
    out: VecDeque<Out<P>>,
    stats: Stats,
}

impl<P: PeerId> Plumtree<P> {
    /// An empty instance.
    pub fn new(cfg: Config) -> Self {
        Plumtree {
            cfg,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen: BTreeMap::new(),
            seen_order: VecDeque::new(),
            cache: BTreeMap::new(),
            cache_order: VecDeque::new(),
            cache_bytes: 0,
            missing: BTreeMap::new(),
            lazy_queue: BTreeMap::new(),
            dispatch_scheduled: false,
            expire_scheduled: false,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Eager peers (the tree).
    pub fn eager(&self) -> impl Iterator<Item = &P> {
        self.eager.iter()
    }

    /// Lazy peers.
    pub fn lazy(&self) -> impl Iterator<Item = &P> {
        self.lazy.iter()
    }

    /// Whether `id` was delivered within the de-duplication window (a `Gossip` with it is a duplicate).
    pub fn has_seen(&self, id: &MessageId) -> bool {
        self.seen.contains_key(id)
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<Out<P>> {
        self.out.pop_front()
    }

    /// Feeds one input at `now`.
    pub fn handle(&mut self, now: Instant, input: In<P>) {
        match input {
            In::Broadcast(payload) => {
                if payload.len() > self.cfg.max_message_size {
                    self.stats.too_large += 1;
                    return;
                }
                let id = *blake3::hash(&payload).as_bytes();
                if self.seen.contains_key(&id) {
                    return;
                }
                self.accept(now, id, 0, payload, None);
            }
            In::Message { from, msg } => self.on_message(now, from, msg),
            In::NeighborUp(p) => {
                self.lazy.remove(&p);
                if self.eager.insert(p.clone()) {
                    self.offer_cache(p);
                }
            }
            In::NeighborDown(p) => {
                self.eager.remove(&p);
                self.lazy.remove(&p);
                self.lazy_queue.remove(&p);
                for announcers in self.missing.values_mut() {
                    announcers.retain(|(a, _)| *a != p);
                }
            }
            In::Timer(Timer::Missing(id)) => self.on_missing(id),
            In::Timer(Timer::DispatchLazy) => {
                self.dispatch_scheduled = false;
                self.dispatch_lazy();
            }
            In::Timer(Timer::Expire) => {
                self.expire_scheduled = false;
                self.expire(now);
            }
        }
    }

    fn remember(&mut self, now: Instant, id: MessageId, round: u16, payload: &[u8]) {
        self.seen.insert(id, now);
        self.seen_order.push_back((now, id));
        while self.seen_order.len() > self.cfg.max_remembered {
            if let Some((_, old)) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.cache.insert(id, (round, payload.to_vec())).is_none() {
            self.cache_bytes += payload.len();
            self.cache_order.push_back((now, id));
        }
        while self.cache_order.len() > self.cfg.max_cached || self.cache_bytes > self.cfg.max_cached_bytes {
            let Some((_, old)) = self.cache_order.pop_front() else { break };
            self.uncache(&old);
        }
        if !self.expire_scheduled {
            self.expire_scheduled = true;
            self.out.push_back(Out::ScheduleTimer {
                after: self.cfg.cache_ttl.min(self.cfg.message_ttl),
                timer: Timer::Expire,
            });
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, id)) = self.seen_order.front().copied() {
            if now.saturating_duration_since(t) < self.cfg.message_ttl {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        while let Some((t, id)) = self.cache_order.front().copied() {
            if now.saturating_duration_since(t) < self.cfg.cache_ttl {
                break;
            }
            self.cache_order.pop_front();
            self.uncache(&id);
        }
        if !self.seen_order.is_empty() {
            self.expire_scheduled = true;
            self.out.push_back(Out::ScheduleTimer {
                after: self.cfg.cache_ttl.min(self.cfg.message_ttl),
                timer: Timer::Expire,
            });
        }
    }

    fn uncache(&mut self, id: &MessageId) {
        if let Some((_, payload)) = self.cache.remove(id) {
            self.cache_bytes = self.cache_bytes.saturating_sub(payload.len());
        }
    }

    /// Payload bytes held for grafts.
    pub fn cached_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Announces the most recent cached messages to a new neighbour (see `Config::catch_up`).
    fn offer_cache(&mut self, p: P) {
        if self.cfg.catch_up == 0 || self.cache_order.is_empty() {
            return;
        }
        let recent: Vec<(MessageId, u16)> = self
            .cache_order
            .iter()
            .rev()
            .filter_map(|(_, id)| self.cache.get(id).map(|(r, _)| (*id, r.saturating_add(1))))
            .take(self.cfg.catch_up)
            .collect();
        let queue = self.lazy_queue.entry(p).or_default();
        queue.extend(recent.into_iter().rev());
        if !self.dispatch_scheduled {
            self.dispatch_scheduled = true;
            self.out.push_back(Out::ScheduleTimer { after: self.cfg.dispatch_timeout, timer: Timer::DispatchLazy });
        }
    }

    /// A new message: deliver it, push it eagerly and announce it lazily.
    fn accept(&mut self, now: Instant, id: MessageId, round: u16, payload: Vec<u8>, from: Option<P>) {
        self.remember(now, id, round, &payload);
        self.missing.remove(&id);
        self.stats.delivered += 1;
        let next = round.saturating_add(1);
        for p in self.eager.iter().filter(|p| Some(*p) != from.as_ref()) {
            self.out.push_back(Out::Send {
                to: p.clone(),
                msg: Message::Gossip { id, round: next, payload: payload.clone() },
            });
        }
        let lazy: Vec<P> = self.lazy.iter().filter(|p| Some(*p) != from.as_ref()).cloned().collect();
        for p in lazy {
            self.lazy_queue.entry(p).or_default().push((id, next));
        }
        if !self.lazy_queue.is_empty() && !self.dispatch_scheduled {
            self.dispatch_scheduled = true;
            self.out.push_back(Out::ScheduleTimer { after: self.cfg.dispatch_timeout, timer: Timer::DispatchLazy });
        }
        self.out.push_back(Out::Deliver { id, payload, round, from });
    }

    fn dispatch_lazy(&mut self) {
        let queue = std::mem::take(&mut self.lazy_queue);
        for (p, ids) in queue {
            for chunk in ids.chunks(self.cfg.max_ihave_batch.max(1)) {
                self.out.push_back(Out::Send { to: p.clone(), msg: Message::IHave(chunk.to_vec()) });
            }
        }
    }

    fn on_message(&mut self, now: Instant, from: P, msg: Message) {
        match msg {
            Message::Gossip { id, round, payload } => {
                self.stats.gossip_received += 1;
                if payload.len() > self.cfg.max_message_size || *blake3::hash(&payload).as_bytes() != id {
                    self.stats.too_large += u64::from(payload.len() > self.cfg.max_message_size);
                    return;
                }
                if self.seen.contains_key(&id) {
                    // A duplicate: the sender's edge is redundant.
                    self.stats.duplicates += 1;
                    if self.eager.remove(&from) {
                        self.lazy.insert(from.clone());
                    }
                    self.stats.prunes_sent += 1;
                    self.out.push_back(Out::Send { to: from, msg: Message::Prune });
                    return;
                }
                if self.lazy.remove(&from) {
                    self.eager.insert(from.clone());
                }
                self.optimize(&id, round, &from);
                self.accept(now, id, round, payload, Some(from));
            }
            Message::IHave(entries) => {
                for (id, round) in entries.into_iter().take(self.cfg.max_ihave_batch) {
                    if self.seen.contains_key(&id) {
                        continue;
                    }
                    if !self.missing.contains_key(&id) && self.missing.len() >= self.cfg.max_cached {
                        continue;
                    }
                    let first = !self.missing.contains_key(&id);
                    let announcers = self.missing.entry(id).or_default();
                    if announcers.len() < 16 && !announcers.iter().any(|(p, _)| *p == from) {
                        announcers.push_back((from.clone(), round));
                    }
                    if first {
                        self.out.push_back(Out::ScheduleTimer {
                            after: self.cfg.graft_timeout_1,
                            timer: Timer::Missing(id),
                        });
                    }
                }
            }
            Message::Graft { id, round: _ } => {
                self.lazy.remove(&from);
                self.eager.insert(from.clone());
                if let Some(id) = id
                    && let Some((r, payload)) = self.cache.get(&id).cloned()
                {
                    self.out.push_back(Out::Send {
                        to: from,
                        msg: Message::Gossip { id, round: r.saturating_add(1), payload },
                    });
                }
            }
            Message::Prune => {
                if self.eager.remove(&from) {
                    self.lazy.insert(from);
                }
            }
        }
    }

    /// The announced message `id` did not come: graft the next announcer.
    fn on_missing(&mut self, id: MessageId) {
        if self.seen.contains_key(&id) {
            self.missing.remove(&id);
            return;
        }
        let Some(announcers) = self.missing.get_mut(&id) else { return };
        let Some((p, round)) = announcers.pop_front() else {
            self.missing.remove(&id);
            return;
        };
        if announcers.is_empty() {
            self.missing.remove(&id);
        }
        self.lazy.remove(&p);
        self.eager.insert(p.clone());
        self.stats.grafts_sent += 1;
        self.out.push_back(Out::Send { to: p, msg: Message::Graft { id: Some(id), round } });
        self.out.push_back(Out::ScheduleTimer { after: self.cfg.graft_timeout_2, timer: Timer::Missing(id) });
    }

    /// Tree optimisation: an earlier announcement with a much smaller round than the eager copy
    /// means a shorter path exists: graft it and prune the eager sender.
    fn optimize(&mut self, id: &MessageId, round: u16, from: &P) {
        let Some(announcers) = self.missing.get(id) else { return };
        let best = announcers.iter().min_by_key(|(_, r)| *r).cloned();
        if let Some((q, r)) = best
            && r.saturating_add(self.cfg.optimization_threshold) < round
            && q != *from
        {
            self.lazy.remove(&q);
            self.eager.insert(q.clone());
            self.out.push_back(Out::Send { to: q, msg: Message::Graft { id: None, round: r } });
            self.eager.remove(from);
            self.lazy.insert(from.clone());
            self.stats.prunes_sent += 1;
            self.out.push_back(Out::Send { to: from.clone(), msg: Message::Prune });
        }
    }
}
