//! The topic core's inner work: checking and routing frames, carrying out what HyParView and
//! Plumtree ask, delivery in order, timers and membership ticks.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::Rng;
use suprnova_dht::NodeId;

use super::{MAX_CONTACTS, Now, Out, TimerItem, TopicCore, TopicEvent, Verifier};
use crate::proto::Frame;
use crate::proto::hyparview;
use crate::proto::plumtree::{self, MessageId};
use crate::wire::{Envelope, EnvelopeError, SigCheck, TopicId, decode_contact};

/// Signature verdicts of a batch's new broadcasts, by message id (an id is BLAKE3 of the
/// envelope, so a verdict holds for every copy of it).
pub(super) type Verdicts = HashMap<MessageId, Result<(), EnvelopeError>>;

/// Remembers where `id` can be reached (bounded: the book is emptied when full).
pub(super) fn remember(contacts: &mut HashMap<NodeId, Vec<SocketAddr>>, id: NodeId, addrs: Vec<SocketAddr>) {
    if contacts.len() >= MAX_CONTACTS && !contacts.contains_key(&id) {
        contacts.clear();
    }
    contacts.insert(id, addrs);
}

impl TopicCore {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.cfg.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks the signatures of the broadcasts in `batch` that are new, from a neighbour, and
    /// whose id is the hash of their envelope, all at once.
    pub(super) fn verify_batch(
        &mut self,
        now: Now,
        batch: &[(NodeId, Frame)],
        verifier: &mut dyn Verifier,
    ) -> Verdicts {
        let ttl_ms = self.ttl_ms();
        let mut verdicts = Verdicts::new();
        let mut pending: Vec<(MessageId, Envelope, Vec<u8>)> = Vec::new();
        let mut queued: HashSet<MessageId> = HashSet::new();
        for (from, frame) in batch {
            let Frame::Broadcast { topic, msg: plumtree::Message::Gossip { id, payload, .. } } = frame else {
                continue;
            };
            let Some(t) = self.topics.get(topic) else { continue };
            if t.pt.has_seen(id)
                || queued.contains(id)
                || !t.hpv.active().any(|a| a == from)
                || blake3::hash(payload).as_bytes() != id
            {
                continue;
            }
            queued.insert(*id);
            match Envelope::decode_unverified(payload, topic, now.unix_ms, ttl_ms) {
                Ok((e, signed)) => pending.push((*id, e, signed)),
                Err(e) => drop(verdicts.insert(*id, Err(e))),
            }
        }
        if pending.is_empty() {
            return verdicts;
        }
        let checks: Vec<SigCheck<'_>> =
            pending.iter().map(|(_, e, m)| (&e.origin, m.as_slice(), &e.signature)).collect();
        let ok = verifier.verify(&checks);
        for ((id, _, _), good) in pending.iter().zip(ok.into_iter().chain(std::iter::repeat(false))) {
            verdicts.insert(*id, if good { Ok(()) } else { Err(EnvelopeError::BadSignature) });
        }
        verdicts
    }

    /// One frame from `from`.
    pub(super) fn frame(&mut self, now: Now, from: NodeId, frame: Frame, verdicts: &Verdicts, v: &mut dyn Verifier) {
        match frame {
            Frame::KeepAlive => {}
            Frame::Membership { topic, msg } => {
                let Some(t) = self.topics.get_mut(&topic) else {
                    self.stats.unknown_topic += 1;
                    if matches!(msg, hyparview::Message::Join(_) | hyparview::Message::Neighbor { .. }) {
                        // Tell the peer we are not in the topic, so it does not count on us.
                        let msg = hyparview::Message::Disconnect { alive: false };
                        self.out.push_back(Out::Send { to: from, frame: Frame::Membership { topic, msg } });
                        self.release(from);
                    }
                    return;
                };
                t.hpv.handle(hyparview::In::Message { from, msg });
                self.flush(topic, now);
            }
            Frame::Broadcast { topic, msg } => self.broadcast_frame(now, from, topic, msg, verdicts, v),
        }
    }

    fn broadcast_frame(
        &mut self,
        now: Now,
        from: NodeId,
        topic: TopicId,
        msg: plumtree::Message,
        verdicts: &Verdicts,
        verifier: &mut dyn Verifier,
    ) {
        let ttl_ms = self.ttl_ms();
        let Some(t) = self.topics.get(&topic) else {
            self.stats.unknown_topic += 1;
            return;
        };
        if !t.hpv.active().any(|a| *a == from) {
            // Only neighbours take part in the tree: anyone else could graft itself into our
            // eager set for good. The sender believes we are its neighbour (views got out of
            // step: an eviction crossed a message, or two evictions crossed): tell it we are not,
            // so it drops us and finds a working neighbour instead of pushing into a link we
            // ignore. A full message (signed, checked below) is still taken: it cannot graft its
            // sender (Plumtree grafts only lazy peers), and dropping it could lose the only copy
            // sent during a churn.
            self.stats.not_neighbor += 1;
            if !matches!(msg, plumtree::Message::Prune) {
                let frame = Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: true } };
                self.out.push_back(Out::Send { to: from, frame });
            }
            if !matches!(msg, plumtree::Message::Gossip { .. }) {
                self.release(from);
                return;
            }
        }
        if let plumtree::Message::Gossip { id, payload, .. } = &msg
            && !t.pt.has_seen(id)
        {
            // Verify before the message can be delivered or relayed (usually done already for
            // the whole batch).
            let verdict = match verdicts.get(id) {
                Some(v) => *v,
                None if blake3::hash(payload).as_bytes() != id => Err(EnvelopeError::Malformed),
                None => Envelope::decode_unverified(payload, &topic, now.unix_ms, ttl_ms).and_then(|(e, m)| {
                    let good = verifier.verify(&[(&e.origin, m.as_slice(), &e.signature)]);
                    if good.first().copied().unwrap_or(false) { Ok(()) } else { Err(EnvelopeError::BadSignature) }
                }),
            };
            if let Err(e) = verdict {
                match e {
                    EnvelopeError::BadSignature => self.stats.bad_signature += 1,
                    EnvelopeError::Expired | EnvelopeError::FromTheFuture => self.stats.bad_time += 1,
                    EnvelopeError::Malformed | EnvelopeError::TooLarge => self.stats.malformed += 1,
                }
                return;
            }
        }
        let Some(t) = self.topics.get_mut(&topic) else { return };
        t.pt.handle(now.at, plumtree::In::Message { from, msg });
        self.flush(topic, now);
    }

    /// Asks the driver to drop the link to `p` unless a topic still has it as a neighbour.
    pub(super) fn release(&mut self, p: NodeId) {
        if !self.topics.values().any(|t| t.hpv.active().any(|a| *a == p)) {
            self.out.push_back(Out::Release(p));
        }
    }

    pub(super) fn schedule(&mut self, now: Instant, after: Duration, item: TimerItem) {
        self.timer_seq += 1;
        self.timers.push(Reverse((now + after, self.timer_seq)));
        self.timer_items.insert(self.timer_seq, item);
    }

    /// Carries out everything the cores of `topic` asked for, until both are quiet.
    pub(super) fn flush(&mut self, topic: TopicId, now: Now) {
        for _ in 0..100_000 {
            let Some(t) = self.topics.get_mut(&topic) else { return };
            if let Some(out) = t.hpv.poll() {
                match out {
                    hyparview::Out::Send { to, data, msg } => {
                        // Contact data may be relayed by third parties: it never replaces what
                        // we already know (dialling proves the id anyway).
                        if !self.contacts.contains_key(&to) {
                            let addrs = decode_contact(&data);
                            if !addrs.is_empty() {
                                remember(&mut self.contacts, to, addrs);
                            }
                        }
                        self.out.push_back(Out::Send { to, frame: Frame::Membership { topic, msg } });
                        // A link to a peer that is no neighbour anywhere carries this frame and
                        // closes (no keep-alives, so the connection can go idle).
                        self.release(to);
                    }
                    hyparview::Out::NeighborUp(p) => {
                        t.pt.handle(now.at, plumtree::In::NeighborUp(p));
                        self.out.push_back(Out::Event { topic, event: TopicEvent::NeighborUp(p) });
                    }
                    hyparview::Out::NeighborDown(p) => {
                        t.pt.handle(now.at, plumtree::In::NeighborDown(p));
                        self.out.push_back(Out::Event { topic, event: TopicEvent::NeighborDown(p) });
                    }
                    hyparview::Out::Disconnect(p) => self.release(p),
                    hyparview::Out::ScheduleTimer { after, timer } => {
                        self.schedule(now.at, after, TimerItem::Hpv(topic, timer));
                    }
                }
                continue;
            }
            if let Some(out) = t.pt.poll() {
                match out {
                    plumtree::Out::Send { to, msg } => {
                        self.out.push_back(Out::Send { to, frame: Frame::Broadcast { topic, msg } });
                    }
                    plumtree::Out::Deliver { payload, from, .. } => {
                        if from.is_some() {
                            self.deliver(topic, &payload, now);
                        }
                    }
                    plumtree::Out::ScheduleTimer { after, timer } => {
                        self.schedule(now.at, after, TimerItem::Pt(topic, timer));
                    }
                }
                continue;
            }
            return;
        }
    }

    fn deliver(&mut self, topic: TopicId, payload: &[u8], now: Now) {
        // Checked (canonical, signed) on entry; a plain decode suffices here.
        let Ok(env) = postcard::from_bytes::<Envelope>(payload) else { return };
        let origin = env.origin_id();
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let mut events = Vec::new();
        let wait = t.order.accept(env, now.at, &self.cfg, &mut self.stats, &mut events);
        self.out.extend(events.into_iter().map(|event| Out::Event { topic, event }));
        if let Some(wait) = wait {
            self.schedule(now.at, wait, TimerItem::Order(topic, origin));
        }
    }

    pub(super) fn order_timer(&mut self, topic: TopicId, origin: NodeId, now: Now) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let mut events = Vec::new();
        let again = t.order.timer(origin, now.at, &self.cfg, &mut self.stats, &mut events);
        self.out.extend(events.into_iter().map(|event| Out::Event { topic, event }));
        if let Some(wait) = again {
            self.schedule(now.at, wait, TimerItem::Order(topic, origin));
        }
    }

    pub(super) fn membership_tick(&mut self, topic: TopicId, now: Now) {
        let random = self.rng.next_u64();
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let (active, passive) = t.hpv.view_sizes();
        let work = t.membership.tick(now.at, active, passive, random, &self.cfg.membership);
        if work.announce {
            self.out.push_back(Out::Announce(topic));
        }
        if work.read.is_some() {
            self.stats.member_reads += 1;
            self.out.push_back(Out::ReadMembers(topic));
        }
        self.schedule(now.at, self.cfg.membership.tick, TimerItem::Membership(topic));
    }
}
