//! The topic driver: one task owns every topic's HyParView and Plumtree cores, feeds them frames
//! from peers, commands and timers, and carries out what they ask (frames to peers over per-peer
//! links, deliveries to subscribers).
//!
//! Broadcasts are verified before they enter Plumtree (signature, size, TTL window) and delivered
//! in order per origin: each origin's run (`epoch`) numbers its messages from 0, and a gap is
//! waited for (`reorder_timeout`) before it is skipped. Every queue is bounded: a peer whose link
//! queue is full is moved out of the broadcast tree (it catches up through `IHave`/`Graft`), a
//! subscriber whose queue is full misses messages (counted), and neither stalls anyone else.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::RecvStream;
use suprnova_dht::{Identity, NodeId};
use tokio::sync::{mpsc, oneshot};

use super::transport::{Transport, kind};
use crate::proto::hyparview::{self, HyParView, PeerInfo};
use crate::proto::plumtree::{self, MessageId, Plumtree};
use crate::wire::{
    Envelope, EnvelopeError, Frame, KeyCache, MAX_FRAME, SigCheck, TopicId, decode_frame, encode_frame, verify_many,
};
pub use crate::wire::{decode_contact, encode_contact};

/// Tunables of the topic layer.
#[derive(Clone, Debug)]
pub struct TopicsConfig {
    /// HyParView per topic.
    pub hyparview: hyparview::Config,
    /// Plumtree per topic.
    pub plumtree: plumtree::Config,
    /// Lifetime of a broadcast (older ones are refused).
    pub ttl: Duration,
    /// Frames queued per peer link before the peer counts as slow.
    pub peer_queue: usize,
    /// Events queued per subscriber before it misses messages.
    pub subscriber_queue: usize,
    /// How long the first message seen from an origin run is held when its seq is not 0, so that
    /// earlier ones overtaken on the way can still be delivered first.
    pub first_message_wait: Duration,
    /// How long a gap in an origin's sequence is waited for before it is skipped. A missing
    /// message is normally grafted within a few hundred milliseconds; under overload paths differ
    /// by seconds. The default is Plumtree's payload cache lifetime: after it nobody can serve a
    /// graft any more, so waiting longer is pointless.
    pub reorder_timeout: Duration,
    /// Out-of-order messages held per origin at most.
    pub max_pending_per_origin: usize,
    /// Origins remembered per topic at most.
    pub max_origins: usize,
    /// Keep-alive interval on neighbour links.
    pub keepalive: Duration,
    /// Frames per second accepted from one peer's gossip stream (burst: twice that).
    pub peer_frame_rate: u32,
    /// Topics at most.
    pub max_topics: usize,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            hyparview: hyparview::Config::default(),
            // Plumtree sees whole envelopes: room for the largest payload plus the envelope fields.
            plumtree: plumtree::Config { max_message_size: ENVELOPE_MAX, ..plumtree::Config::default() },
            ttl: Duration::from_secs(300),
            peer_queue: 4096,
            subscriber_queue: 8192,
            first_message_wait: Duration::from_millis(500),
            reorder_timeout: Duration::from_secs(30),
            max_pending_per_origin: 16_384,
            max_origins: 10_000,
            // A fifth of the transport's idle timeout: four keep-alives in a row may be lost
            // before a live link is taken for dead.
            keepalive: Duration::from_secs(2),
            peer_frame_rate: 20_000,
            max_topics: 256,
        }
    }
}

/// Largest encoded envelope: the largest payload plus origin, varints, length and signature.
const ENVELOPE_MAX: usize = crate::wire::MAX_BROADCAST_PAYLOAD + 32 + 3 * 10 + 5 + 64;

/// Out-of-order broadcasts held per topic, in bytes, at most (beyond it new ones are dropped).
const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

/// Contact addresses remembered at most.
const MAX_CONTACTS: usize = 50_000;

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicEvent {
    /// A broadcast, in order per origin.
    Message {
        /// Who signed it.
        origin: NodeId,
        /// Its position in the origin's run.
        seq: u64,
        /// The application bytes.
        payload: Vec<u8>,
    },
    /// A neighbour joined our active view of the topic.
    NeighborUp(NodeId),
    /// A neighbour left it.
    NeighborDown(NodeId),
}

/// Counters of the topic layer (sums over topics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Broadcasts handed to subscribers.
    pub delivered: u64,
    /// `Gossip` messages received (duplicates included).
    pub gossip_received: u64,
    /// Duplicates among them.
    pub duplicates: u64,
    /// Grafts sent.
    pub grafts: u64,
    /// Prunes sent.
    pub prunes: u64,
    /// Frames that did not decode.
    pub bad_frames: u64,
    /// Broadcasts with a bad signature.
    pub bad_signature: u64,
    /// Broadcasts refused as expired or from the future.
    pub bad_time: u64,
    /// Broadcasts refused as malformed or too large.
    pub malformed: u64,
    /// Frames over a peer's rate limit.
    pub rate_limited: u64,
    /// Frames not queued because a peer's link was full.
    pub peer_queue_full: u64,
    /// Broadcasts older than what an origin's order had reached.
    pub late: u64,
    /// Sequence numbers skipped after waiting for a gap.
    pub skipped: u64,
    /// Events a full subscriber queue missed.
    pub subscriber_lagged: u64,
    /// Frames for topics we are not in.
    pub unknown_topic: u64,
    /// Links that failed or closed.
    pub links_lost: u64,
    /// Broadcast frames from peers that are not neighbours in the topic.
    pub not_neighbor: u64,
    /// Out-of-order broadcasts dropped because the topic's hold buffer was full.
    pub hold_full: u64,
}

/// Why a topic operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    /// Not subscribed to that topic.
    #[error("not subscribed to the topic")]
    NotSubscribed,
    /// Payload over the limit.
    #[error("payload too large ({0} bytes, at most {max})", max = crate::wire::MAX_BROADCAST_PAYLOAD)]
    TooLarge(usize),
    /// Topic limit reached.
    #[error("too many topics")]
    TooManyTopics,
    /// The driver stopped.
    #[error("topic driver stopped")]
    Stopped,
}

/// Topic neighbours and view sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicInfo {
    /// Active view.
    pub active: Vec<NodeId>,
    /// Passive view size.
    pub passive: usize,
    /// Eager (tree) peers.
    pub eager: usize,
    /// Lazy peers.
    pub lazy: usize,
}

enum Command {
    Subscribe(TopicId, oneshot::Sender<Result<mpsc::Receiver<TopicEvent>, TopicError>>),
    Join(TopicId, Vec<(NodeId, Vec<SocketAddr>)>),
    Members(TopicId, Vec<(NodeId, Vec<SocketAddr>)>, bool),
    Publish(TopicId, Vec<u8>, oneshot::Sender<Result<MessageId, TopicError>>),
    Leave(TopicId),
    Info(TopicId, oneshot::Sender<Option<TopicInfo>>),
    Stats(oneshot::Sender<TopicStats>, u64),
    Shutdown,
}

enum Input {
    Frame(NodeId, Frame),
    LinkLost(NodeId, u64),
    BadFrame,
}

/// A token bucket per peer, shared by all of that peer's gossip streams.
#[derive(Default)]
struct Buckets {
    peers: std::sync::Mutex<HashMap<NodeId, (f64, Instant)>>,
    limited: std::sync::atomic::AtomicU64,
}

impl Buckets {
    /// Takes a token for `peer`; `false` if it is over `rate` frames per second (burst 2 × rate).
    fn take(&self, peer: NodeId, rate: f64, now: Instant) -> bool {
        let Ok(mut m) = self.peers.lock() else { return false };
        if m.len() > 100_000 {
            m.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(10));
        }
        let (tokens, last) = m.entry(peer).or_insert((rate * 2.0, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate * 2.0);
        *last = now;
        if *tokens < 1.0 {
            self.limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        *tokens -= 1.0;
        true
    }
}

/// Handle to the topic driver. Cheap to clone.
#[derive(Clone)]
pub struct Topics {
    cmd: mpsc::Sender<Command>,
    input: mpsc::Sender<Input>,
    rate: u32,
    buckets: Arc<Buckets>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Topics {
    /// Starts the driver for `identity`, reachable at `addrs`, sending over `transport`.
    pub fn spawn(identity: &Identity, addrs: &[SocketAddr], transport: Transport, cfg: TopicsConfig) -> Topics {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (in_tx, in_rx) = mpsc::channel(8192);
        let rate = cfg.peer_frame_rate;
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        let driver = Driver {
            identity: Identity::from_seed(*identity.seed()),
            me: identity.id(),
            contact: encode_contact(addrs),
            transport,
            cfg,
            topics: HashMap::new(),
            links: HashMap::new(),
            contacts: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_items: HashMap::new(),
            timer_seq: 0,
            link_gen: 0,
            epoch: unix_ms(),
            stats: TopicStats::default(),
            input_tx: in_tx.clone(),
            seed,
            keys: KeyCache::default(),
            verdicts: HashMap::new(),
            last_gossip: None,
        };
        tokio::spawn(driver.run(cmd_rx, in_rx));
        Topics { cmd: cmd_tx, input: in_tx, rate, buckets: Arc::default() }
    }

    /// Subscribes to `topic` (creating our state for it); events arrive on the receiver.
    pub async fn subscribe(&self, topic: TopicId) -> Result<mpsc::Receiver<TopicEvent>, TopicError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Subscribe(topic, tx)).await.map_err(|_| TopicError::Stopped)?;
        rx.await.map_err(|_| TopicError::Stopped)?
    }

    /// Joins `topic`'s overlay through `contacts`.
    pub async fn join(&self, topic: TopicId, contacts: Vec<(NodeId, Vec<SocketAddr>)>) -> Result<(), TopicError> {
        self.cmd.send(Command::Join(topic, contacts)).await.map_err(|_| TopicError::Stopped)
    }

    /// Members of `topic` read from its DHT member set: unknown ones become passive peers, and one
    /// member that is not a neighbour yet is asked to become one if some were unknown or `mix`
    /// (see `hyparview::In::Members`).
    pub async fn members(
        &self,
        topic: TopicId,
        members: Vec<(NodeId, Vec<SocketAddr>)>,
        mix: bool,
    ) -> Result<(), TopicError> {
        self.cmd.send(Command::Members(topic, members, mix)).await.map_err(|_| TopicError::Stopped)
    }

    /// Signs and broadcasts `payload` on `topic`; returns the message id.
    pub async fn publish(&self, topic: TopicId, payload: Vec<u8>) -> Result<MessageId, TopicError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Publish(topic, payload, tx)).await.map_err(|_| TopicError::Stopped)?;
        rx.await.map_err(|_| TopicError::Stopped)?
    }

    /// Leaves `topic`: neighbours are told, state is dropped, subscriptions end.
    pub async fn leave(&self, topic: TopicId) {
        let _ = self.cmd.send(Command::Leave(topic)).await;
    }

    /// Views of `topic`, if we are in it.
    pub async fn info(&self, topic: TopicId) -> Option<TopicInfo> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Info(topic, tx)).await.ok()?;
        rx.await.ok()?
    }

    /// Counters.
    pub async fn stats(&self) -> Result<TopicStats, TopicError> {
        let (tx, rx) = oneshot::channel();
        let limited = self.buckets.limited.load(std::sync::atomic::Ordering::Relaxed);
        self.cmd.send(Command::Stats(tx, limited)).await.map_err(|_| TopicError::Stopped)?;
        rx.await.map_err(|_| TopicError::Stopped)
    }

    /// Stops the driver.
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown).await;
    }

    /// Reads a gossip stream from `from` and feeds its frames to the driver, at most
    /// `peer_frame_rate` per second. Ends at the stream's end or on a malformed frame.
    pub async fn read_stream(&self, from: NodeId, mut recv: RecvStream) {
        let rate = f64::from(self.rate.max(1));
        // Bytes read and not yet parsed: at most one partial frame plus one chunk, so memory
        // grows with what arrived, never with what a length prefix claims.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let mut pos = 0;
            while let Some(prefix) = buf.get(pos..pos + 4).and_then(|p| <[u8; 4]>::try_from(p).ok()) {
                let n = u32::from_be_bytes(prefix) as usize;
                if n > MAX_FRAME {
                    let _ = self.input.send(Input::BadFrame).await;
                    let _ = recv.stop(1u32.into());
                    return;
                }
                let Some(body) = buf.get(pos + 4..pos + 4 + n) else { break };
                pos += 4 + n;
                // One budget per peer, however many streams it opens; over it, frames are
                // dropped here, without touching the driver's queue.
                if !self.buckets.take(from, rate, Instant::now()) {
                    continue;
                }
                let Some(frame) = decode_frame(body) else {
                    // A peer that sends garbage gets no more of our attention on this stream.
                    let _ = self.input.send(Input::BadFrame).await;
                    let _ = recv.stop(1u32.into());
                    return;
                };
                if self.input.send(Input::Frame(from, frame)).await.is_err() {
                    return;
                }
            }
            buf.drain(..pos);
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// Per-origin delivery order.
struct OriginOrder {
    epoch: u64,
    /// Next sequence number to deliver (`None` until the first message's wait is over).
    next: Option<u64>,
    pending: BTreeMap<u64, Envelope>,
    /// When the current gap (or the first wait) began.
    waiting_since: Option<Instant>,
    last_used: Instant,
}

struct Topic {
    hpv: HyParView<NodeId>,
    pt: Plumtree<NodeId>,
    subscribers: Vec<mpsc::Sender<TopicEvent>>,
    next_seq: u64,
    origins: HashMap<NodeId, OriginOrder>,
    /// Payload bytes held out of order, all origins together.
    pending_bytes: usize,
}

#[derive(Clone, Debug)]
enum TimerItem {
    Hpv(TopicId, hyparview::Timer<NodeId>),
    Pt(TopicId, plumtree::Timer),
    Order(TopicId, NodeId),
}

struct Link {
    tx: mpsc::Sender<Arc<Vec<u8>>>,
    generation: u64,
}

struct Driver {
    identity: Identity,
    me: NodeId,
    contact: Vec<u8>,
    transport: Transport,
    cfg: TopicsConfig,
    topics: HashMap<TopicId, Topic>,
    links: HashMap<NodeId, Link>,
    contacts: HashMap<NodeId, Vec<SocketAddr>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_items: HashMap<u64, TimerItem>,
    timer_seq: u64,
    link_gen: u64,
    epoch: u64,
    stats: TopicStats,
    input_tx: mpsc::Sender<Input>,
    seed: [u8; 32],
    /// Decompressed signer keys.
    keys: KeyCache,
    /// Signature verdicts for the broadcasts of the batch being worked through, by message id
    /// (an id is BLAKE3 of the envelope, so a verdict holds for every copy of it).
    verdicts: HashMap<MessageId, Result<(), EnvelopeError>>,
    /// The last `Gossip` frame encoded, reused for the next eager peer.
    last_gossip: Option<(GossipKey, Arc<Vec<u8>>)>,
}

/// Which `Gossip` frame: topic, message id, round.
type GossipKey = (TopicId, MessageId, u16);

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, mut inputs: mpsc::Receiver<Input>) {
        loop {
            let deadline = self.timers.peek().map(|Reverse((t, _))| tokio::time::Instant::from_std(*t));
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = cmds.recv() => match c {
                    Some(Command::Shutdown) | None => {
                        self.shutdown();
                        return;
                    }
                    Some(c) => self.command(c),
                },
                Some(i) = inputs.recv() => {
                    // Work through what is queued before timers: a graft timer must not fire for
                    // a message that already sits in our own queue (under load that turned every
                    // announcement into a graft). Bounded, so timers still run under a flood.
                    let mut batch = vec![i];
                    while batch.len() < 4096 {
                        match inputs.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    // Every new broadcast in the batch is verified at once (batch verification).
                    self.verify_batch(&batch);
                    for i in batch {
                        self.input(i);
                    }
                    self.verdicts.clear();
                }
                () = sleep => {}
            }
            self.fire_timers();
        }
    }

    /// Checks the signatures of the broadcasts in `batch` that are new, from a neighbour, and whose
    /// id is the hash of their envelope, all at once; `input` then uses the verdicts.
    fn verify_batch(&mut self, batch: &[Input]) {
        let ttl_ms = u64::try_from(self.cfg.ttl.as_millis()).unwrap_or(u64::MAX);
        let now_ms = unix_ms();
        let mut pending: Vec<(MessageId, Envelope, Vec<u8>)> = Vec::new();
        let mut queued: std::collections::HashSet<MessageId> = std::collections::HashSet::new();
        for i in batch {
            let Input::Frame(from, Frame::Broadcast { topic, msg: plumtree::Message::Gossip { id, payload, .. } }) = i
            else {
                continue;
            };
            let Some(t) = self.topics.get(topic) else { continue };
            if t.pt.has_seen(id)
                || self.verdicts.contains_key(id)
                || queued.contains(id)
                || !t.hpv.active().any(|a| a == from)
                || blake3::hash(payload).as_bytes() != id
            {
                continue;
            }
            queued.insert(*id);
            match Envelope::decode_unverified(payload, topic, now_ms, ttl_ms) {
                Ok((e, signed)) => pending.push((*id, e, signed)),
                Err(e) => drop(self.verdicts.insert(*id, Err(e))),
            }
        }
        if pending.is_empty() {
            return;
        }
        let checks: Vec<SigCheck<'_>> =
            pending.iter().map(|(_, e, m)| (&e.origin, m.as_slice(), &e.signature)).collect();
        let ok = verify_many(&checks, &mut self.keys);
        for ((id, _, _), good) in pending.iter().zip(ok) {
            self.verdicts.insert(*id, if good { Ok(()) } else { Err(EnvelopeError::BadSignature) });
        }
    }

    fn shutdown(&mut self) {
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for t in topics {
            self.leave(t);
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Subscribe(topic, reply) => {
                if !self.topics.contains_key(&topic) && self.topics.len() >= self.cfg.max_topics {
                    let _ = reply.send(Err(TopicError::TooManyTopics));
                    return;
                }
                let (tx, rx) = mpsc::channel(self.cfg.subscriber_queue);
                self.topic_mut(topic).subscribers.push(tx);
                let _ = reply.send(Ok(rx));
            }
            Command::Join(topic, contacts) => {
                let Some(t) = self.topics.get_mut(&topic) else { return };
                for (id, addrs) in contacts {
                    if id == self.me {
                        continue;
                    }
                    let data = encode_contact(&addrs);
                    self.contacts.insert(id, addrs);
                    t.hpv.handle(hyparview::In::Join(PeerInfo { id, data }));
                }
                self.flush(topic, now);
            }
            Command::Members(topic, members, mix) => {
                let Some(t) = self.topics.get_mut(&topic) else { return };
                let mut peers = Vec::new();
                for (id, addrs) in members {
                    if id == self.me || addrs.is_empty() {
                        continue;
                    }
                    peers.push(PeerInfo { id, data: encode_contact(&addrs) });
                    self.contacts.insert(id, addrs);
                }
                t.hpv.handle(hyparview::In::Members { peers, mix });
                self.flush(topic, now);
            }
            Command::Publish(topic, payload, reply) => {
                if payload.len() > crate::wire::MAX_BROADCAST_PAYLOAD {
                    let _ = reply.send(Err(TopicError::TooLarge(payload.len())));
                    return;
                }
                let epoch = self.epoch;
                let Some(t) = self.topics.get_mut(&topic) else {
                    let _ = reply.send(Err(TopicError::NotSubscribed));
                    return;
                };
                let seq = t.next_seq;
                let env = match Envelope::sign(&self.identity, &topic, epoch, seq, unix_ms(), payload) {
                    Ok(e) => e,
                    Err(_) => {
                        let _ = reply.send(Err(TopicError::TooLarge(crate::wire::MAX_BROADCAST_PAYLOAD + 1)));
                        return;
                    }
                };
                t.next_seq += 1;
                let bytes = env.encode();
                let id = *blake3::hash(&bytes).as_bytes();
                t.pt.handle(now, plumtree::In::Broadcast(bytes));
                self.flush(topic, now);
                let _ = reply.send(Ok(id));
            }
            Command::Leave(topic) => self.leave(topic),
            Command::Info(topic, reply) => {
                let info = self.topics.get(&topic).map(|t| TopicInfo {
                    active: t.hpv.active().copied().collect(),
                    passive: t.hpv.view_sizes().1,
                    eager: t.pt.eager().count(),
                    lazy: t.pt.lazy().count(),
                });
                let _ = reply.send(info);
            }
            Command::Stats(reply, limited) => {
                let mut s = self.stats.clone();
                s.rate_limited = limited;
                for t in self.topics.values() {
                    let p = t.pt.stats();
                    s.gossip_received += p.gossip_received;
                    s.duplicates += p.duplicates;
                    s.grafts += p.grafts_sent;
                    s.prunes += p.prunes_sent;
                }
                let _ = reply.send(s);
            }
            Command::Shutdown => {}
        }
    }

    fn topic_mut(&mut self, topic: TopicId) -> &mut Topic {
        let me = self.me;
        let contact = self.contact.clone();
        let cfg = &self.cfg;
        let mut seed = self.seed;
        for (s, t) in seed.iter_mut().zip(topic.0) {
            *s ^= t;
        }
        self.topics.entry(topic).or_insert_with(|| Topic {
            hpv: HyParView::new(PeerInfo { id: me, data: contact }, cfg.hyparview.clone(), seed),
            pt: Plumtree::new(cfg.plumtree.clone()),
            subscribers: Vec::new(),
            next_seq: 0,
            origins: HashMap::new(),
            pending_bytes: 0,
        })
    }

    fn leave(&mut self, topic: TopicId) {
        let Some(t) = self.topics.remove(&topic) else { return };
        for p in t.hpv.active().copied().collect::<Vec<_>>() {
            let frame = Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: false } };
            self.send_frame(p, &frame);
            self.release_link(p);
        }
        // Subscribers see their channel close when `t` drops.
    }

    fn input(&mut self, i: Input) {
        let now = Instant::now();
        match i {
            Input::BadFrame => self.stats.bad_frames += 1,
            Input::LinkLost(peer, generation) => {
                if self.links.get(&peer).is_some_and(|l| l.generation == generation) {
                    self.links.remove(&peer);
                    self.stats.links_lost += 1;
                    let topics: Vec<TopicId> = self.topics.keys().copied().collect();
                    for topic in topics {
                        if let Some(t) = self.topics.get_mut(&topic) {
                            t.hpv.handle(hyparview::In::ConnectionLost(peer));
                        }
                        self.flush(topic, now);
                    }
                }
            }
            Input::Frame(from, Frame::KeepAlive) => {
                let _ = from;
            }
            Input::Frame(from, Frame::Membership { topic, msg }) => {
                let Some(t) = self.topics.get_mut(&topic) else {
                    self.stats.unknown_topic += 1;
                    if matches!(msg, hyparview::Message::Join(_) | hyparview::Message::Neighbor { .. }) {
                        // Tell the peer we are not in the topic, so it does not count on us.
                        let frame = Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: false } };
                        self.send_frame(from, &frame);
                        self.release_link(from);
                    }
                    return;
                };
                t.hpv.handle(hyparview::In::Message { from, msg });
                self.flush(topic, now);
            }
            Input::Frame(from, Frame::Broadcast { topic, msg }) => {
                let ttl_ms = u64::try_from(self.cfg.ttl.as_millis()).unwrap_or(u64::MAX);
                let Some(t) = self.topics.get(&topic) else {
                    self.stats.unknown_topic += 1;
                    return;
                };
                if !t.hpv.active().any(|a| *a == from) {
                    // Only neighbours take part in the tree: anyone else could graft itself into
                    // our eager set for good. The sender believes we are its neighbour (views got
                    // out of step: an eviction crossed a message, or two evictions crossed): tell
                    // it we are not, so it drops us and finds a working neighbour instead of
                    // pushing into a link we ignore. A full message (signed, checked below) is
                    // still taken: it cannot graft its sender (Plumtree grafts only lazy peers),
                    // and dropping it could lose the only copy sent during a churn.
                    self.stats.not_neighbor += 1;
                    if !matches!(msg, plumtree::Message::Prune) {
                        let frame = Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: true } };
                        self.send_frame(from, &frame);
                    }
                    if !matches!(msg, plumtree::Message::Gossip { .. }) {
                        self.release_link(from);
                        return;
                    }
                }
                let Some(t) = self.topics.get_mut(&topic) else { return };
                if let plumtree::Message::Gossip { id, payload, .. } = &msg
                    && !t.pt.has_seen(id)
                {
                    // Verify before the message can be delivered or relayed (usually done already
                    // for the whole batch).
                    let verdict = match self.verdicts.get(id) {
                        Some(v) => *v,
                        None => Envelope::decode_unverified(payload, &topic, unix_ms(), ttl_ms).and_then(|(e, m)| {
                            if self.keys.verify_strict(&e.origin, &m, &e.signature) {
                                Ok(())
                            } else {
                                Err(EnvelopeError::BadSignature)
                            }
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
                t.pt.handle(now, plumtree::In::Message { from, msg });
                self.flush(topic, now);
            }
        }
    }

    fn schedule(&mut self, after: Duration, item: TimerItem) {
        self.timer_seq += 1;
        self.timers.push(Reverse((Instant::now() + after, self.timer_seq)));
        self.timer_items.insert(self.timer_seq, item);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
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
                        t.pt.handle(now, plumtree::In::Timer(timer));
                        self.flush(topic, now);
                    }
                }
                TimerItem::Order(topic, origin) => self.order_timer(topic, origin, now),
            }
        }
    }

    /// Carries out everything the cores of `topic` asked for, until both are quiet.
    fn flush(&mut self, topic: TopicId, now: Instant) {
        for _ in 0..100_000 {
            let Some(t) = self.topics.get_mut(&topic) else { return };
            if let Some(out) = t.hpv.poll() {
                match out {
                    hyparview::Out::Send { to, data, msg } => {
                        let addrs = decode_contact(&data);
                        // Contact data may be relayed by third parties: it never replaces what
                        // we already know (dialling proves the id anyway).
                        if !addrs.is_empty() && !self.contacts.contains_key(&to) {
                            if self.contacts.len() >= MAX_CONTACTS {
                                self.contacts.clear();
                            }
                            self.contacts.insert(to, addrs);
                        }
                        self.send_frame(to, &Frame::Membership { topic, msg });
                        // A link to a peer that is no neighbour anywhere carries this frame and
                        // closes (no keep-alives, so the connection can go idle).
                        self.release_link(to);
                    }
                    hyparview::Out::NeighborUp(p) => {
                        t.pt.handle(now, plumtree::In::NeighborUp(p));
                        notify(&mut self.stats, t, TopicEvent::NeighborUp(p));
                    }
                    hyparview::Out::NeighborDown(p) => {
                        t.pt.handle(now, plumtree::In::NeighborDown(p));
                        notify(&mut self.stats, t, TopicEvent::NeighborDown(p));
                    }
                    hyparview::Out::Disconnect(p) => self.release_link(p),
                    hyparview::Out::ScheduleTimer { after, timer } => {
                        self.schedule(after, TimerItem::Hpv(topic, timer))
                    }
                }
                continue;
            }
            if let Some(out) = t.pt.poll() {
                match out {
                    plumtree::Out::Send { to, msg } => {
                        let is_gossip = matches!(msg, plumtree::Message::Gossip { .. });
                        let sent = match &msg {
                            // The same message goes to every eager peer: encode it once.
                            plumtree::Message::Gossip { id, round, .. } => {
                                let key = (topic, *id, *round);
                                let bytes = match &self.last_gossip {
                                    Some((k, b)) if *k == key => Some(b.clone()),
                                    _ => encode_frame(&Frame::Broadcast { topic, msg }).map(Arc::new),
                                };
                                match bytes {
                                    Some(b) => {
                                        self.last_gossip = Some((key, b.clone()));
                                        self.send_bytes(to, b)
                                    }
                                    None => false,
                                }
                            }
                            _ => self.send_frame(to, &Frame::Broadcast { topic, msg }),
                        };
                        if !sent && is_gossip {
                            // A slow peer leaves the tree; it will catch up from announcements.
                            if let Some(t) = self.topics.get_mut(&topic) {
                                t.pt.handle(now, plumtree::In::Message { from: to, msg: plumtree::Message::Prune });
                            }
                        }
                    }
                    plumtree::Out::Deliver { payload, from, .. } => {
                        if from.is_some() {
                            self.deliver(topic, &payload, now);
                        }
                    }
                    plumtree::Out::ScheduleTimer { after, timer } => self.schedule(after, TimerItem::Pt(topic, timer)),
                }
                continue;
            }
            return;
        }
    }

    /// Queues a frame for `to`, opening a link if needed; `false` if it could not be queued.
    fn send_frame(&mut self, to: NodeId, frame: &Frame) -> bool {
        let Some(bytes) = encode_frame(frame) else { return false };
        self.send_bytes(to, Arc::new(bytes))
    }

    /// Queues an encoded frame for `to`, opening the link if needed.
    fn send_bytes(&mut self, to: NodeId, bytes: Arc<Vec<u8>>) -> bool {
        let link = match self.links.get(&to) {
            Some(l) if !l.tx.is_closed() => l,
            _ => {
                self.open_link(to);
                match self.links.get(&to) {
                    Some(l) => l,
                    None => return false,
                }
            }
        };
        if link.tx.try_send(bytes).is_err() {
            self.stats.peer_queue_full += 1;
            return false;
        }
        true
    }

    fn open_link(&mut self, to: NodeId) {
        self.link_gen += 1;
        let generation = self.link_gen;
        let (tx, rx) = mpsc::channel(self.cfg.peer_queue);
        self.links.insert(to, Link { tx, generation });
        let addrs = self.contacts.get(&to).cloned().unwrap_or_default();
        let transport = self.transport.clone();
        let lost = self.input_tx.clone();
        let keepalive = self.cfg.keepalive;
        tokio::spawn(async move {
            link_task(transport, to, addrs, rx, keepalive).await;
            let _ = lost.send(Input::LinkLost(to, generation)).await;
        });
    }

    /// Drops the link to `p` unless a topic still has it as an active neighbour.
    fn release_link(&mut self, p: NodeId) {
        if self.topics.values().any(|t| t.hpv.active().any(|a| *a == p)) {
            return;
        }
        self.links.remove(&p);
    }

    fn deliver(&mut self, topic: TopicId, payload: &[u8], now: Instant) {
        // Checked (canonical, signed) on entry; a plain decode suffices here.
        let Ok(env) = postcard::from_bytes::<Envelope>(payload) else { return };
        let origin = env.origin_id();
        let max_pending = self.cfg.max_pending_per_origin;
        let max_origins = self.cfg.max_origins;
        let Some(t) = self.topics.get_mut(&topic) else { return };
        if !t.origins.contains_key(&origin) && t.origins.len() >= max_origins {
            // Forget the origin heard from least recently.
            if let Some(old) = t.origins.iter().min_by_key(|(_, o)| o.last_used).map(|(k, _)| *k)
                && let Some(gone) = t.origins.remove(&old)
            {
                t.pending_bytes = t.pending_bytes.saturating_sub(held(&gone));
            }
        }
        let o = t.origins.entry(origin).or_insert_with(|| OriginOrder {
            epoch: env.epoch,
            next: None,
            pending: BTreeMap::new(),
            waiting_since: None,
            last_used: now,
        });
        if env.epoch < o.epoch {
            self.stats.late += 1;
            return;
        }
        if env.epoch > o.epoch {
            t.pending_bytes = t.pending_bytes.saturating_sub(held(o));
            *o = OriginOrder {
                epoch: env.epoch,
                next: None,
                pending: BTreeMap::new(),
                waiting_since: None,
                last_used: now,
            };
        }
        o.last_used = now;
        if o.next.is_none() && env.seq == 0 {
            o.next = Some(0);
        }
        if o.next.is_some_and(|n| env.seq < n) {
            self.stats.late += 1;
            return;
        }
        let len = env.payload.len();
        if o.next != Some(env.seq) && t.pending_bytes.saturating_add(len) > MAX_PENDING_BYTES {
            // The hold buffer is full: this one cannot wait for its gap.
            self.stats.hold_full += 1;
            return;
        }
        t.pending_bytes += len;
        o.pending.insert(env.seq, env);
        let mut schedule = false;
        if o.pending.len() > max_pending {
            // Too far ahead: give up on the gap.
            self.stats.skipped += skip_gap(o);
        }
        let events = drain_order(o, &mut t.pending_bytes);
        let first_wait = o.next.is_none();
        if !o.pending.is_empty() && o.waiting_since.is_none() {
            o.waiting_since = Some(now);
            schedule = true;
        } else if o.pending.is_empty() {
            o.waiting_since = None;
        }
        for e in events {
            self.stats.delivered += 1;
            notify(&mut self.stats, t, e);
        }
        if schedule {
            let wait = if first_wait { self.cfg.first_message_wait } else { self.cfg.reorder_timeout };
            self.schedule(wait, TimerItem::Order(topic, origin));
        }
    }

    fn order_timer(&mut self, topic: TopicId, origin: NodeId, now: Instant) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let Some(o) = t.origins.get_mut(&origin) else { return };
        let timeout = if o.next.is_none() { self.cfg.first_message_wait } else { self.cfg.reorder_timeout };
        let Some(since) = o.waiting_since else { return };
        if now.duration_since(since) < timeout {
            let left = timeout - now.duration_since(since);
            self.schedule(left, TimerItem::Order(topic, origin));
            return;
        }
        self.stats.skipped += skip_gap(o);
        let events = drain_order(o, &mut t.pending_bytes);
        o.waiting_since = None;
        let again = !o.pending.is_empty();
        if again {
            o.waiting_since = Some(now);
        }
        for e in events {
            self.stats.delivered += 1;
            notify(&mut self.stats, t, e);
        }
        if again {
            self.schedule(timeout, TimerItem::Order(topic, origin));
        }
    }
}

/// Payload bytes an origin holds out of order.
fn held(o: &OriginOrder) -> usize {
    o.pending.values().map(|e| e.payload.len()).sum()
}

/// Gives up on the current gap: the next position becomes the first held message. Returns the
/// sequence numbers skipped.
fn skip_gap(o: &mut OriginOrder) -> u64 {
    let first = o.pending.keys().next().copied();
    let skipped = match (o.next, first) {
        (Some(n), Some(f)) => f.saturating_sub(n),
        _ => 0,
    };
    o.next = first;
    skipped
}

/// Takes every message that is next in order, releasing its bytes from the topic's hold budget.
fn drain_order(o: &mut OriginOrder, held_bytes: &mut usize) -> Vec<TopicEvent> {
    let mut out = Vec::new();
    while let Some(n) = o.next {
        let Some(env) = o.pending.remove(&n) else { break };
        *held_bytes = held_bytes.saturating_sub(env.payload.len());
        out.push(TopicEvent::Message { origin: env.origin_id(), seq: env.seq, payload: env.payload });
        o.next = n.checked_add(1);
        // A gap that closed restarts the wait for the next one.
        o.waiting_since = None;
    }
    out
}

fn notify(stats: &mut TopicStats, t: &mut Topic, e: TopicEvent) {
    t.subscribers.retain(|s| !s.is_closed());
    for s in &t.subscribers {
        if s.try_send(e.clone()).is_err() {
            stats.subscriber_lagged += 1;
        }
    }
}

/// Sends queued frames to `peer` on one gossip stream, with keep-alives while idle. Returns when
/// the link is dropped or fails.
async fn link_task(
    transport: Transport,
    peer: NodeId,
    addrs: Vec<SocketAddr>,
    mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
    keepalive: Duration,
) {
    let Ok(conn) = transport.connect(peer, &addrs).await else { return };
    let Ok(mut send) = conn.open_uni().await else { return };
    if send.write_all(&[kind::GOSSIP]).await.is_err() {
        return;
    }
    let ka = encode_frame(&Frame::KeepAlive).unwrap_or_default();
    let mut batch: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(bytes) => {
                    // Whatever else is queued goes in the same write (up to 64 KiB), so QUIC packs
                    // several frames per packet and the connection is woken once.
                    batch.clear();
                    batch.extend_from_slice(&bytes);
                    while batch.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Ok(more) => batch.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    if send.write_all(&batch).await.is_err() {
                        return;
                    }
                    if batch.capacity() > 256 * 1024 {
                        batch = Vec::new();
                    }
                }
                None => {
                    let _ = send.finish();
                    // Dropped by the driver: not a failure, but report it so the generation ends.
                    return;
                }
            },
            () = tokio::time::sleep(keepalive) => {
                if send.write_all(&ka).await.is_err() {
                    return;
                }
            }
            _ = conn.closed() => return,
        }
    }
}
