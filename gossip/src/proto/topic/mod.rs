//! The topic core: every topic of one node — HyParView and Plumtree together, the checks a
//! broadcast passes before it enters the tree, per-origin delivery order, slow-peer pruning, the
//! contact book and topic membership through the DHT member set — as one sans-IO state machine.
//!
//! It is fed `(now, input)` through its methods and polled for [`Out`]puts; timers are its own
//! (`poll_timeout` / `handle_timeout`). It reads no clock, opens no socket and draws no OS
//! randomness: time comes in as [`Now`], randomness as the seed it was built with, signature
//! checks through the [`Verifier`] the caller passes. The QUIC driver (`net::topics`), the
//! simulator and the tests drive this same core.
//!
//! A broadcast is verified (signature, size, time window, id = BLAKE3 of the envelope) before it
//! can be delivered or relayed; every new broadcast of a batch of frames is checked at once.
//! Only neighbours take part in the tree: a broadcast frame from a peer that is not one is
//! answered with a `Disconnect`, and only a full, verified message from it is still taken.

mod handle;
mod membership;
mod order;
mod types;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use suprnova_dht::{Identity, NodeId};

use self::handle::remember;
use self::membership::{Membership, ReadFor};
use self::order::Order;
pub use self::types::{
    Ed25519Verifier, MembershipConfig, Now, TopicError, TopicEvent, TopicInfo, TopicStats, TopicsConfig, Verifier,
};
use crate::proto::Frame;
use crate::proto::hyparview::{self, HyParView, PeerInfo};
use crate::proto::plumtree::{self, MessageId, Plumtree};
use crate::wire::{Envelope, TopicId, encode_contact};

/// Contact addresses remembered at most.
const MAX_CONTACTS: usize = 50_000;

/// What the core asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// Send `frame` to `to` over its link (opened if needed, to the addresses `contact` gives).
    Send {
        /// Recipient.
        to: NodeId,
        /// The frame.
        frame: Frame,
    },
    /// No topic has `peer` as a neighbour any more: its link may close once queued frames left.
    Release(NodeId),
    /// Hand `event` to the topic's subscribers.
    Event {
        /// Topic.
        topic: TopicId,
        /// What happened.
        event: TopicEvent,
    },
    /// We left the topic: its subscriptions end.
    Closed(TopicId),
    /// Write our entry (our contact addresses) into the topic's DHT member set.
    Announce(TopicId),
    /// Read the topic's DHT member set and answer with [`TopicCore::members_read`].
    ReadMembers(TopicId),
}

#[derive(Clone, Debug)]
enum TimerItem {
    Hpv(TopicId, hyparview::Timer<NodeId>),
    Pt(TopicId, plumtree::Timer),
    Order(TopicId, NodeId),
    Membership(TopicId),
}

struct Topic {
    hpv: HyParView<NodeId>,
    pt: Plumtree<NodeId>,
    next_seq: u64,
    order: Order,
    membership: Membership,
}

/// Every topic of one node.
pub struct TopicCore {
    identity: Identity,
    me: NodeId,
    contact: Vec<u8>,
    cfg: TopicsConfig,
    topics: BTreeMap<TopicId, Topic>,
    contacts: HashMap<NodeId, Vec<SocketAddr>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_items: HashMap<u64, TimerItem>,
    timer_seq: u64,
    /// Our run: the wall-clock time we started, in ms (receivers restart our order when it grows).
    epoch: u64,
    stats: TopicStats,
    seed: [u8; 32],
    rng: ChaCha20Rng,
    out: VecDeque<Out>,
}

impl TopicCore {
    /// A core for `identity`, reachable at `addrs`, started at `now`; `seed` is its randomness.
    pub fn new(identity: &Identity, addrs: &[SocketAddr], cfg: TopicsConfig, seed: [u8; 32], now: Now) -> Self {
        let mut own = seed;
        for (s, d) in own.iter_mut().zip(b"suprnova topic core membership..") {
            *s ^= d;
        }
        TopicCore {
            identity: Identity::from_seed_with(*identity.seed(), identity.crypto()),
            me: identity.id(),
            contact: encode_contact(addrs),
            cfg,
            topics: BTreeMap::new(),
            contacts: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_items: HashMap::new(),
            timer_seq: 0,
            epoch: now.unix_ms,
            stats: TopicStats::default(),
            seed,
            rng: ChaCha20Rng::from_seed(own),
            out: VecDeque::new(),
        }
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Where `peer` can be reached, as far as we know.
    pub fn contact(&self, peer: &NodeId) -> Option<&[SocketAddr]> {
        self.contacts.get(peer).map(Vec::as_slice)
    }

    /// Counters (those only the driver sees — rate limits, full queues, lagging subscribers —
    /// are its to add).
    pub fn stats(&self) -> TopicStats {
        let mut s = self.stats.clone();
        for t in self.topics.values() {
            let p = t.pt.stats();
            s.gossip_received += p.gossip_received;
            s.duplicates += p.duplicates;
            s.grafts += p.grafts_sent;
            s.prunes += p.prunes_sent;
        }
        s
    }

    /// Views of `topic`, if we are in it.
    pub fn info(&self, topic: &TopicId) -> Option<TopicInfo> {
        self.topics.get(topic).map(|t| TopicInfo {
            active: t.hpv.active().copied().collect(),
            passive: t.hpv.view_sizes().1,
            eager: t.pt.eager().count(),
            lazy: t.pt.lazy().count(),
        })
    }

    /// Enters `topic` (nothing happens if we are in it already): our entry goes into its member
    /// set and the set is read, to join through members found there.
    pub fn subscribe(&mut self, now: Now, topic: TopicId) -> Result<(), TopicError> {
        if self.topics.contains_key(&topic) {
            return Ok(());
        }
        if self.topics.len() >= self.cfg.max_topics {
            return Err(TopicError::TooManyTopics);
        }
        let mut seed = self.seed;
        for (s, t) in seed.iter_mut().zip(topic.0) {
            *s ^= t;
        }
        let me = PeerInfo { id: self.me, data: self.contact.clone() };
        let membership = Membership::new(now.at, self.rng.next_u64(), &self.cfg.membership);
        self.topics.insert(
            topic,
            Topic {
                hpv: HyParView::new(me, self.cfg.hyparview.clone(), seed),
                pt: Plumtree::new(self.cfg.plumtree.clone()),
                next_seq: 0,
                order: Order::default(),
                membership,
            },
        );
        self.out.push_back(Out::Announce(topic));
        self.out.push_back(Out::ReadMembers(topic));
        self.stats.member_reads += 1;
        self.schedule(now.at, self.cfg.membership.tick, TimerItem::Membership(topic));
        Ok(())
    }

    /// Joins `topic`'s overlay through `contacts` (we must be in the topic).
    pub fn join(&mut self, now: Now, topic: TopicId, contacts: Vec<(NodeId, Vec<SocketAddr>)>) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        for (id, addrs) in contacts {
            if id == self.me {
                continue;
            }
            let data = encode_contact(&addrs);
            remember(&mut self.contacts, id, addrs);
            t.hpv.handle(hyparview::In::Join(PeerInfo { id, data }));
        }
        self.flush(topic, now);
    }

    /// The answer to `Out::ReadMembers`: the members found in `topic`'s set (empty if the read
    /// failed). With no neighbour we join through a few of them; otherwise they feed HyParView.
    pub fn members_read(&mut self, now: Now, topic: TopicId, members: Vec<(NodeId, Vec<SocketAddr>)>) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let purpose = t.membership.answered();
        let mut peers: Vec<(NodeId, Vec<SocketAddr>)> =
            members.into_iter().filter(|(id, a)| *id != self.me && !a.is_empty()).collect();
        if t.hpv.active().next().is_none() {
            let mut picked = Vec::new();
            while picked.len() < self.cfg.membership.rejoin_contacts && !peers.is_empty() {
                let i = (self.rng.next_u64() % peers.len() as u64) as usize;
                picked.push(peers.swap_remove(i));
            }
            if !picked.is_empty() && purpose == ReadFor::Join {
                self.stats.rejoins += 1;
            }
            self.join(now, topic, picked);
            return;
        }
        let mix = matches!(purpose, ReadFor::Feed { mix: true });
        let mut infos = Vec::with_capacity(peers.len());
        for (id, addrs) in peers {
            infos.push(PeerInfo { id, data: encode_contact(&addrs) });
            remember(&mut self.contacts, id, addrs);
        }
        t.hpv.handle(hyparview::In::Members { peers: infos, mix });
        self.flush(topic, now);
    }

    /// The DHT saw a former peer answer again (a partition may have healed): every topic reads
    /// its member set and asks a member to become a neighbour for the next few ticks.
    pub fn revived(&mut self) {
        for t in self.topics.values_mut() {
            t.membership.revived(&self.cfg.membership);
        }
    }

    /// Signs and broadcasts `payload` on `topic`; returns the message id.
    pub fn publish(&mut self, now: Now, topic: TopicId, payload: Vec<u8>) -> Result<MessageId, TopicError> {
        if payload.len() > crate::wire::MAX_BROADCAST_PAYLOAD {
            return Err(TopicError::TooLarge(payload.len()));
        }
        let Some(t) = self.topics.get_mut(&topic) else { return Err(TopicError::NotSubscribed) };
        let env = Envelope::sign(&self.identity, &topic, self.epoch, t.next_seq, now.unix_ms, payload)
            .map_err(|_| TopicError::TooLarge(crate::wire::MAX_BROADCAST_PAYLOAD + 1))?;
        t.next_seq += 1;
        let bytes = env.encode();
        let id = *blake3::hash(&bytes).as_bytes();
        t.pt.handle(now.at, plumtree::In::Broadcast(bytes));
        self.flush(topic, now);
        Ok(id)
    }

    /// Leaves `topic`: neighbours are told, state is dropped, subscriptions end (`Out::Closed`).
    pub fn leave(&mut self, topic: TopicId) {
        let Some(t) = self.topics.remove(&topic) else { return };
        for p in t.hpv.active().copied().collect::<Vec<_>>() {
            let frame = Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: false } };
            self.out.push_back(Out::Send { to: p, frame });
            self.release(p);
        }
        self.out.push_back(Out::Closed(topic));
    }

    /// Leaves every topic (the node stops).
    pub fn shutdown(&mut self) {
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for t in topics {
            self.leave(t);
        }
    }

    /// A frame from `from` did not decode.
    pub fn bad_frame(&mut self) {
        self.stats.bad_frames += 1;
    }

    /// The link to `peer` failed or closed.
    pub fn link_lost(&mut self, now: Now, peer: NodeId) {
        self.stats.links_lost += 1;
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            if let Some(t) = self.topics.get_mut(&topic) {
                t.hpv.handle(hyparview::In::ConnectionLost(peer));
            }
            self.flush(topic, now);
        }
    }

    /// A `Gossip` frame for `peer` could not be queued (its link is full): it leaves `topic`'s
    /// tree and catches up from announcements.
    pub fn send_failed(&mut self, now: Now, topic: TopicId, peer: NodeId) {
        if let Some(t) = self.topics.get_mut(&topic) {
            t.pt.handle(now.at, plumtree::In::Message { from: peer, msg: plumtree::Message::Prune });
        }
    }

    /// Frames that arrived, in order; every new broadcast among them is verified at once.
    pub fn frames(&mut self, now: Now, batch: Vec<(NodeId, Frame)>, verifier: &mut dyn Verifier) {
        let verdicts = self.verify_batch(now, &batch, verifier);
        for (from, frame) in batch {
            self.frame(now, from, frame, &verdicts, verifier);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now.at {
                break;
            }
            self.timers.pop();
            let Some(item) = self.timer_items.remove(&seq) else { continue };
            match item {
                TimerItem::Hpv(topic, timer) => {
                    if let Some(t) = self.topics.get_mut(&topic) {
                        t.hpv.handle(hyparview::In::Timer(timer));
                        self.flush(topic, now);
                    }
                }
                TimerItem::Pt(topic, timer) => {
                    if let Some(t) = self.topics.get_mut(&topic) {
                        t.pt.handle(now.at, plumtree::In::Timer(timer));
                        self.flush(topic, now);
                    }
                }
                TimerItem::Order(topic, origin) => self.order_timer(topic, origin, now),
                TimerItem::Membership(topic) => self.membership_tick(topic, now),
            }
        }
    }
}
