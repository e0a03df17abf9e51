//! The topic driver: one task runs the topic core (`proto::topic::TopicCore`) and carries out
//! what it asks — frames to peers over per-peer links, events to subscribers, member-set work to
//! whoever holds the DHT (`MemberWork`) — and feeds it frames from peers, commands, the clocks and
//! signature verdicts. Every protocol decision is the core's; this file only moves bytes.
//!
//! Every queue is bounded: a peer whose link queue is full is reported to the core (which moves it
//! out of the broadcast tree), a subscriber whose queue is full misses messages (counted), and
//! neither stalls anyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::RecvStream;
use suprnova_dht::{Identity, NodeId};
use tokio::sync::{mpsc, oneshot};

use super::transport::{Transport, kind};
use crate::proto::plumtree::{self, MessageId};
use crate::proto::topic::{Ed25519Verifier, Now, Out, TopicCore};
pub use crate::proto::topic::{MembershipConfig, TopicError, TopicEvent, TopicInfo, TopicStats, TopicsConfig};
use crate::proto::{Frame, decode_frame, encode_frame};
use crate::wire::{MAX_FRAME, TopicId};
pub use crate::wire::{decode_contact, encode_contact};

/// Member-set work the core asks for, for the node (which holds the DHT) to carry out.
#[derive(Debug)]
pub enum MemberWork {
    /// Write our entry into the topic's member set.
    Announce(TopicId),
    /// Read the topic's member set and answer with [`Topics::members_read`]; `done` (if any) is
    /// dropped or fired once the answer was given (a new subscription waits for its first read).
    Read(TopicId, Option<oneshot::Sender<()>>),
}

/// Member-set work queued for the node at most (beyond it, reads are answered empty).
const MEMBER_WORK_QUEUE: usize = 1024;

enum Command {
    Subscribe(TopicId, oneshot::Sender<Result<mpsc::Receiver<TopicEvent>, TopicError>>),
    Join(TopicId, Vec<(NodeId, Vec<SocketAddr>)>),
    MembersRead(TopicId, Vec<(NodeId, Vec<SocketAddr>)>),
    Revived,
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

fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Now { at: Instant::now(), unix_ms }
}

impl Topics {
    /// Starts the driver for `identity`, reachable at `addrs`, sending over `transport`. The
    /// receiver carries the member-set work the core asks for; whoever holds the DHT carries it
    /// out (dropping it leaves topics to explicit joins).
    pub fn spawn(
        identity: &Identity,
        addrs: &[SocketAddr],
        transport: Transport,
        cfg: TopicsConfig,
    ) -> (Topics, mpsc::Receiver<MemberWork>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (in_tx, in_rx) = mpsc::channel(8192);
        let (work_tx, work_rx) = mpsc::channel(MEMBER_WORK_QUEUE);
        let rate = cfg.peer_frame_rate;
        let mut seed = [0u8; 32];
        let _ = getrandom::fill(&mut seed);
        let queues = (cfg.peer_queue, cfg.subscriber_queue, cfg.keepalive);
        let driver = Driver {
            core: TopicCore::new(identity, addrs, cfg, seed, now()),
            verifier: Ed25519Verifier::default(),
            transport,
            queues,
            links: HashMap::new(),
            subscribers: HashMap::new(),
            link_gen: 0,
            lagged: 0,
            queue_full: 0,
            input_tx: in_tx.clone(),
            work: work_tx,
            first_read: None,
            last_gossip: None,
        };
        tokio::spawn(driver.run(cmd_rx, in_rx));
        (Topics { cmd: cmd_tx, input: in_tx, rate, buckets: Arc::default() }, work_rx)
    }

    /// Subscribes to `topic` (entering it if we are not in it: our entry goes into its member
    /// set and the set is read to join through members; this returns once that first read was
    /// answered). Events arrive on the receiver.
    pub async fn subscribe(&self, topic: TopicId) -> Result<mpsc::Receiver<TopicEvent>, TopicError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Subscribe(topic, tx)).await.map_err(|_| TopicError::Stopped)?;
        rx.await.map_err(|_| TopicError::Stopped)?
    }

    /// Joins `topic`'s overlay through `contacts`.
    pub async fn join(&self, topic: TopicId, contacts: Vec<(NodeId, Vec<SocketAddr>)>) -> Result<(), TopicError> {
        self.cmd.send(Command::Join(topic, contacts)).await.map_err(|_| TopicError::Stopped)
    }

    /// The answer to [`MemberWork::Read`]: the members found in `topic`'s set (empty if the read
    /// failed).
    pub async fn members_read(
        &self,
        topic: TopicId,
        members: Vec<(NodeId, Vec<SocketAddr>)>,
    ) -> Result<(), TopicError> {
        self.cmd.send(Command::MembersRead(topic, members)).await.map_err(|_| TopicError::Stopped)
    }

    /// The DHT saw a former peer answer again (a partition may have healed).
    pub async fn revived(&self) {
        let _ = self.cmd.send(Command::Revived).await;
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

struct Link {
    tx: mpsc::Sender<Arc<Vec<u8>>>,
    generation: u64,
}

struct Driver {
    core: TopicCore,
    verifier: Ed25519Verifier,
    transport: Transport,
    /// Per-peer link queue, per-subscriber queue, keep-alive interval.
    queues: (usize, usize, Duration),
    links: HashMap<NodeId, Link>,
    subscribers: HashMap<TopicId, Vec<mpsc::Sender<TopicEvent>>>,
    link_gen: u64,
    /// Events full subscriber queues missed.
    lagged: u64,
    /// Frames not queued because a link was full.
    queue_full: u64,
    input_tx: mpsc::Sender<Input>,
    work: mpsc::Sender<MemberWork>,
    /// A new subscription waiting for its first member-set read.
    first_read: Option<(TopicId, oneshot::Sender<()>)>,
    /// The last `Gossip` frame encoded, reused for the next eager peer.
    last_gossip: Option<(GossipKey, Arc<Vec<u8>>)>,
}

/// Which `Gossip` frame: topic, message id, round.
type GossipKey = (TopicId, MessageId, u16);

impl Driver {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, mut inputs: mpsc::Receiver<Input>) {
        loop {
            let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = cmds.recv() => match c {
                    Some(Command::Shutdown) | None => {
                        self.core.shutdown();
                        self.pump();
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
                    self.inputs(batch);
                }
                () = sleep => {}
            }
            self.core.handle_timeout(now());
            self.pump();
        }
    }

    fn inputs(&mut self, batch: Vec<Input>) {
        let now = now();
        let mut frames = Vec::with_capacity(batch.len());
        for i in batch {
            match i {
                Input::Frame(from, frame) => frames.push((from, frame)),
                Input::BadFrame => self.core.bad_frame(),
                Input::LinkLost(peer, generation) => {
                    if self.links.get(&peer).is_some_and(|l| l.generation == generation) {
                        self.links.remove(&peer);
                        self.core.link_lost(now, peer);
                    }
                }
            }
        }
        self.core.frames(now, frames, &mut self.verifier);
    }

    fn command(&mut self, c: Command) {
        let now = now();
        match c {
            Command::Subscribe(topic, reply) => {
                if let Err(e) = self.core.subscribe(now, topic) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let (tx, rx) = mpsc::channel(self.queues.1);
                self.subscribers.entry(topic).or_default().push(tx);
                let (done_tx, done_rx) = oneshot::channel();
                self.first_read = Some((topic, done_tx));
                self.pump();
                // Answered once the first read was (or at once if none was asked).
                self.first_read = None;
                tokio::spawn(async move {
                    let _ = done_rx.await;
                    let _ = reply.send(Ok(rx));
                });
            }
            Command::Join(topic, contacts) => self.core.join(now, topic, contacts),
            Command::MembersRead(topic, members) => self.core.members_read(now, topic, members),
            Command::Revived => self.core.revived(),
            Command::Publish(topic, payload, reply) => {
                let _ = reply.send(self.core.publish(now, topic, payload));
            }
            Command::Leave(topic) => self.core.leave(topic),
            Command::Info(topic, reply) => {
                let _ = reply.send(self.core.info(&topic));
            }
            Command::Stats(reply, limited) => {
                let mut s = self.core.stats();
                s.rate_limited = limited;
                s.subscriber_lagged = self.lagged;
                s.peer_queue_full = self.queue_full;
                let _ = reply.send(s);
            }
            Command::Shutdown => {}
        }
    }

    /// Carries out what the core asked for.
    fn pump(&mut self) {
        while let Some(out) = self.core.poll() {
            match out {
                Out::Send { to, frame } => self.send(to, frame),
                Out::Release(p) => drop(self.links.remove(&p)),
                Out::Event { topic, event } => self.notify(topic, &event),
                Out::Closed(topic) => drop(self.subscribers.remove(&topic)),
                Out::Announce(topic) => drop(self.work.try_send(MemberWork::Announce(topic))),
                Out::ReadMembers(topic) => {
                    let done = match self.first_read.take() {
                        Some((t, done)) if t == topic => Some(done),
                        other => {
                            self.first_read = other;
                            None
                        }
                    };
                    if let Err(e) = self.work.try_send(MemberWork::Read(topic, done)) {
                        // Nobody to read the set (or too much queued): answer "none found".
                        drop(e);
                        self.core.members_read(now(), topic, Vec::new());
                    }
                }
            }
        }
    }

    fn send(&mut self, to: NodeId, frame: Frame) {
        let gossip = match &frame {
            Frame::Broadcast { topic, msg: plumtree::Message::Gossip { id, round, .. } } => Some((*topic, *id, *round)),
            _ => None,
        };
        let bytes = match (&gossip, &self.last_gossip) {
            // The same message goes to every eager peer: encode it once.
            (Some(key), Some((k, b))) if k == key => Some(b.clone()),
            _ => encode_frame(&frame).map(Arc::new),
        };
        let Some(bytes) = bytes else { return };
        if let Some(key) = gossip {
            self.last_gossip = Some((key, bytes.clone()));
        }
        if !self.send_bytes(to, bytes)
            && let Some((topic, _, _)) = gossip
        {
            // A slow peer leaves the tree; it will catch up from announcements.
            self.core.send_failed(now(), topic, to);
        }
    }

    /// Queues an encoded frame for `to`, opening the link if needed; `false` if it could not be
    /// queued.
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
            self.queue_full += 1;
            return false;
        }
        true
    }

    fn open_link(&mut self, to: NodeId) {
        self.link_gen += 1;
        let generation = self.link_gen;
        let (tx, rx) = mpsc::channel(self.queues.0);
        self.links.insert(to, Link { tx, generation });
        let addrs = self.core.contact(&to).map(<[SocketAddr]>::to_vec).unwrap_or_default();
        let transport = self.transport.clone();
        let lost = self.input_tx.clone();
        let keepalive = self.queues.2;
        tokio::spawn(async move {
            link_task(transport, to, addrs, rx, keepalive).await;
            let _ = lost.send(Input::LinkLost(to, generation)).await;
        });
    }

    fn notify(&mut self, topic: TopicId, event: &TopicEvent) {
        let Some(subs) = self.subscribers.get_mut(&topic) else { return };
        subs.retain(|s| !s.is_closed());
        for s in subs.iter() {
            if s.try_send(event.clone()).is_err() {
                self.lagged += 1;
            }
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
