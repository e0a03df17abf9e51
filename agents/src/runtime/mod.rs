//! The runtime: hosts many agents on one [`Node`] and carries out what they ask.
//!
//! Each agent has its own ed25519 identity (kept in `DATA_DIR/agents/NAME.key` when the runtime
//! has a data directory), a bounded mailbox and a task that runs its steps. The runtime:
//!
//! - **announces** each agent that wants it: a set entry signed by the agent in its bucket of
//!   its kind's set and of each capability's set, re-written before it expires, plus its
//!   presence in the mesh's spatial index when it has a position and the runtime a mesh, and a
//!   signed announcement on the announce topic;
//! - **discovers** from the DHT in one parallel round of set reads ([`crate::discovery`]);
//! - **routes** messages: an agent frame in a node's direct message or request is checked
//!   (signature, time, replay) and put in the recipient's mailbox; answers are signed by the
//!   answering agent;
//! - runs the **votes** topic through a [`Ballots`] state machine, publishing the certificates
//!   and evidence it forms;
//! - **shares knowledge** ([`knowledge`]).
//!
//! Every refusal is counted by reason in [`AgentStats`].

mod announce;
mod discover;
mod host;
pub mod knowledge;
mod messages;
mod votes;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::{Key, Record, SetEntry, WireAddr};
use suprnova_mesh::presence::Spatial;
use suprnova_mesh::world::{InputError, SignedInput};
use suprnova_node::{Direct, Node, NodeError, TopicEvent};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::agent::{
    Action, Agent, AgentAddr, Ctx, Discovery, DiscoveryFailed, Event, Profile, RequestId, SendError, SubmitError,
    Ticket,
};
use crate::discovery::{Criteria, Sifter};
use crate::router::{Refusal, Route, Router, Transport};
use crate::vote::{BallotConfig, BallotStats, Ballots, Decision, Output};
use crate::wire::{
    self, AgentId, Announcement, Digest, Envelope, EnvelopeKind, Reply, SignedAnnouncement, VoteWire, WireError,
    bucket, capability_key, kind_key,
};

/// Unanswered requests held at most (per runtime).
const MAX_PENDING: usize = 65_536;

/// The topic agents' announcements are published on.
pub const ANNOUNCE_TOPIC: &str = "suprnova/agents/v1/announce";
/// The topic proposals, votes, certificates and evidence travel on.
pub const VOTES_TOPIC: &str = "suprnova/agents/v1/votes";

/// The topic of swarm `name`.
pub fn swarm_topic(name: &str) -> String {
    format!("suprnova/agents/v1/swarm/{name}")
}

/// Tuning of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where agents' keys are kept (`DIR/agents/NAME.key`); `None`: keys live in memory only.
    pub data_dir: Option<PathBuf>,
    /// Lifetime of an announcement; re-written after a third of it.
    pub announce_ttl: Duration,
    /// Clock difference tolerated on announcements and messages.
    pub max_skew: Duration,
    /// Events an agent's mailbox holds.
    pub mailbox: usize,
    /// Agents hosted at most.
    pub max_agents: usize,
    /// Publish announcements on [`ANNOUNCE_TOPIC`] too.
    pub announce_topic: bool,
    /// Subscribe to [`VOTES_TOPIC`] (needed to propose, vote or see outcomes).
    pub votes: bool,
    /// Bounds of the ballots.
    pub ballots: BallotConfig,
    /// Remembered message ids (replay protection) at most.
    pub max_replay: usize,
    /// DHT writes in flight at once when announcing.
    pub parallel: usize,
    /// Largest knowledge bundle (sum of an index's items) accepted, bytes.
    pub max_bundle: u64,
    /// Largest index blob accepted, bytes.
    pub max_index: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            data_dir: None,
            announce_ttl: Duration::from_secs(120),
            max_skew: Duration::from_secs(60),
            mailbox: 256,
            max_agents: 100_000,
            announce_topic: true,
            votes: true,
            ballots: BallotConfig::default(),
            max_replay: 262_144,
            parallel: 32,
            max_bundle: 256 << 20,
            max_index: 256 << 10,
        }
    }
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Another user took the node's incoming direct messages.
    #[error("the node's incoming messages were already taken")]
    IncomingTaken,
    /// The agent name cannot name a key file.
    #[error("bad agent name {name:?} (1..=64 of letters, digits, '-', '_', '.'; not starting with '.')")]
    BadAgentName {
        /// The name given.
        name: String,
    },
    /// The agents' key directory could not be made.
    #[error("agent key directory: {0}")]
    KeyDir(#[source] std::io::Error),
    /// The agent's key file could not be read or written.
    #[error("agent key: {0}")]
    Key(#[source] suprnova_dht::keyfile::KeyFileError),
    /// The runtime hosts `max_agents` agents.
    #[error("too many agents ({0})")]
    TooManyAgents(usize),
    /// An agent with this key is hosted already.
    #[error("agent already hosted")]
    Duplicate,
    /// The profile breaks a rule (names too long, too many capabilities, …).
    #[error("bad profile: {0}")]
    Profile(#[source] ProfileError),
    /// The runtime stopped.
    #[error("runtime stopped")]
    Stopped,
}

/// Why a discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The criteria name neither a capability, a kind nor a position with a spatial index.
    #[error("criteria name no capability, kind or (with a spatial index) position")]
    TooBroad,
    /// Every lookup failed (the last failure says why).
    #[error("no set could be read: {0}")]
    Unreachable(#[source] NodeError),
    /// The spatial index could not be read.
    #[error("spatial index: {0}")]
    Spatial(#[source] suprnova_mesh::presence::PresenceError),
}

/// Which rule a profile breaks.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The kind is empty or too long.
    #[error("kind must be 1 ..= {} bytes", wire::MAX_KIND)]
    Kind,
    /// Too many capabilities.
    #[error("at most {} capabilities", wire::MAX_CAPABILITIES)]
    TooManyCapabilities,
    /// A capability is empty or too long.
    #[error("capabilities must be 1 ..= {} bytes", wire::MAX_CAPABILITY)]
    Capability,
    /// A swarm name is empty or too long.
    #[error("swarm names must be 1 ..= {} bytes", wire::MAX_SWARM)]
    Swarm,
    /// A coordinate is not finite.
    #[error("position not finite")]
    Position,
}

#[derive(Default)]
pub(crate) struct Counters {
    spawned: AtomicU64,
    announced: AtomicU64,
    announce_writes: AtomicU64,
    announce_failures: AtomicU64,
    discoveries: AtomicU64,
    sent: AtomicU64,
    send_failures: AtomicU64,
    delivered: AtomicU64,
    requests_answered: AtomicU64,
    broadcasts: AtomicU64,
    drop_malformed: AtomicU64,
    drop_bad_signature: AtomicU64,
    drop_stale: AtomicU64,
    drop_replayed: AtomicU64,
    drop_no_such_agent: AtomicU64,
    drop_mailbox_full: AtomicU64,
    drop_wrong_transport: AtomicU64,
    drop_replay_full: AtomicU64,
    drop_not_agent_frame: AtomicU64,
    drop_bad_announcement: AtomicU64,
    drop_bad_vote_wire: AtomicU64,
    discovery_malformed: AtomicU64,
    discovery_stale: AtomicU64,
    discovery_misplaced: AtomicU64,
    pub(crate) knowledge_oversized: AtomicU64,
    pub(crate) knowledge_bad_index: AtomicU64,
    pub(crate) knowledge_fetched: AtomicU64,
    pub(crate) knowledge_skipped: AtomicU64,
    pub(crate) knowledge_bytes: AtomicU64,
    pub(crate) knowledge_busy: AtomicU64,
    announcements_seen: AtomicU64,
    submits: AtomicU64,
}

/// Counters of a runtime. Every `drop_*` is a refusal by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Agents hosted now.
    pub agents: u64,
    /// Agents spawned since start.
    pub spawned: u64,
    /// Announcements made (first ones and refreshes).
    pub announced: u64,
    /// Set entries written for them.
    pub announce_writes: u64,
    /// Set entries no replica stored.
    pub announce_failures: u64,
    /// Discoveries run.
    pub discoveries: u64,
    /// Messages, requests and answers sent to other nodes.
    pub sent: u64,
    /// Of those, failed.
    pub send_failures: u64,
    /// Messages and requests put in a local mailbox.
    pub delivered: u64,
    /// Requests answered by local agents.
    pub requests_answered: u64,
    /// Broadcasts published.
    pub broadcasts: u64,
    /// Agent frames or topic messages that did not decode.
    pub drop_malformed: u64,
    /// Envelopes or announcements whose signature did not verify.
    pub drop_bad_signature: u64,
    /// Envelopes outside the allowed clock window.
    pub drop_stale: u64,
    /// Envelopes seen before (same sender and nonce).
    pub drop_replayed: u64,
    /// Envelopes for an agent not hosted here.
    pub drop_no_such_agent: u64,
    /// Envelopes refused because the mailbox was full.
    pub drop_mailbox_full: u64,
    /// A request sent as a one-way message, or the reverse.
    pub drop_wrong_transport: u64,
    /// Envelopes refused because the replay memory was full.
    pub drop_replay_full: u64,
    /// Direct messages that were not agent frames, with nobody taking them.
    pub drop_not_agent_frame: u64,
    /// Announcements on the topic that did not verify.
    pub drop_bad_announcement: u64,
    /// Votes-topic messages that did not decode.
    pub drop_bad_vote_wire: u64,
    /// Discovery entries that did not decode or broke the rules.
    pub discovery_malformed: u64,
    /// Discovery entries too old, too new, or not matching their seq.
    pub discovery_stale: u64,
    /// Discovery entries in a set they do not belong to.
    pub discovery_misplaced: u64,
    /// Knowledge offers refused as larger than `max_bundle` (or an index over `max_index`).
    pub knowledge_oversized: u64,
    /// Knowledge indexes that did not decode, verify or match their offer.
    pub knowledge_bad_index: u64,
    /// Knowledge items fetched.
    pub knowledge_fetched: u64,
    /// Knowledge items already held.
    pub knowledge_skipped: u64,
    /// Knowledge bytes fetched.
    pub knowledge_bytes: u64,
    /// Knowledge offers refused because `MAX_OFFERS` (8) were being fetched.
    pub knowledge_busy: u64,
    /// Verified announcements seen on the topic.
    pub announcements_seen: u64,
    /// Mesh inputs submitted.
    pub submits: u64,
    /// The ballots.
    pub ballots: BallotStats,
}

pub(crate) struct Hosted {
    pub(crate) identity: Arc<Identity>,
    tx: mpsc::Sender<Event>,
    profile: Mutex<Profile>,
    nonce: AtomicU64,
    stop: watch::Sender<bool>,
}

impl Hosted {
    /// Puts `e` in the mailbox; false if it is full.
    pub(crate) fn tx_event(&self, e: Event) -> bool {
        self.tx.try_send(e).is_ok()
    }
}

type Submitter =
    Arc<dyn Fn(SignedInput) -> std::pin::Pin<Box<dyn Future<Output = Result<(), InputError>> + Send>> + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) node: Node,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) agents: Mutex<HashMap<AgentId, Arc<Hosted>>>,
    pub(crate) counters: Counters,
    /// Admission of incoming envelopes and the requests awaiting an answer (sans-IO).
    router: Mutex<Router<Pending>>,
    ballots: Mutex<Ballots>,
    ballot_wake: Notify,
    /// Local agents interested in a proposal (its proposer and voters hosted here).
    interest: Mutex<HashMap<Digest, Vec<AgentId>>>,
    next_request: AtomicU64,
    swarms: Mutex<HashMap<String, Vec<AgentId>>>,
    spatial: Mutex<Option<Spatial>>,
    mesh: Mutex<Option<(Digest, Submitter)>>,
    foreign: Mutex<Option<mpsc::Sender<Direct>>>,
    pub(crate) knowledge: knowledge::Store,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Certificates and evidence this node formed but does not publish at once (it hosts
    /// neither the proposer nor the voter concerned): published when due unless someone else's
    /// copy arrived first.
    deferred: Mutex<Vec<(u64, WireKey, VoteWire)>>,
    /// Certificates and evidence seen on the topic (bounded).
    seen_wire: Mutex<VecDeque<WireKey>>,
    announcements: tokio::sync::broadcast::Sender<Arc<SignedAnnouncement>>,
}

/// Agents on one node. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

/// A hosted agent.
#[derive(Clone)]
pub struct AgentHandle {
    /// Its id.
    pub id: AgentId,
    /// Where it lives.
    pub addr: AgentAddr,
    stop: watch::Sender<bool>,
}

impl AgentHandle {
    /// Stops the agent after its current step.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks a profile's names and normalises its capabilities (sorted, distinct).
pub fn normalise(mut p: Profile) -> Result<Profile, RuntimeError> {
    if p.kind.is_empty() || p.kind.len() > wire::MAX_KIND {
        return Err(RuntimeError::Profile(ProfileError::Kind));
    }
    p.capabilities.sort();
    p.capabilities.dedup();
    if p.capabilities.len() > wire::MAX_CAPABILITIES {
        return Err(RuntimeError::Profile(ProfileError::TooManyCapabilities));
    }
    if p.capabilities.iter().any(|c| c.is_empty() || c.len() > wire::MAX_CAPABILITY) {
        return Err(RuntimeError::Profile(ProfileError::Capability));
    }
    if p.swarms.iter().any(|s| s.is_empty() || s.len() > wire::MAX_SWARM) {
        return Err(RuntimeError::Profile(ProfileError::Swarm));
    }
    if p.position.is_some_and(|q| q.iter().any(|v| !v.is_finite())) {
        return Err(RuntimeError::Profile(ProfileError::Position));
    }
    Ok(p)
}

impl Runtime {
    /// Starts a runtime on `node`. It takes the node's incoming direct messages; those that are
    /// not agent frames go to [`Runtime::foreign`].
    pub async fn start(node: Node, cfg: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let incoming = node.incoming().await.ok_or(RuntimeError::IncomingTaken)?;
        let (announcements, _) = tokio::sync::broadcast::channel(1024);
        let router = Router::new(ms(cfg.max_skew), cfg.max_replay, MAX_PENDING);
        let inner = Arc::new(Inner {
            ballots: Mutex::new(Ballots::new(cfg.ballots.clone())),
            node,
            cfg,
            agents: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            router: Mutex::new(router),
            ballot_wake: Notify::new(),
            interest: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            swarms: Mutex::new(HashMap::new()),
            spatial: Mutex::new(None),
            mesh: Mutex::new(None),
            foreign: Mutex::new(None),
            knowledge: knowledge::Store::default(),
            tasks: Mutex::new(Vec::new()),
            deferred: Mutex::new(Vec::new()),
            seen_wire: Mutex::new(VecDeque::new()),
            announcements,
        });
        let rt = Runtime { inner };
        let mut tasks = vec![tokio::spawn(rt.clone().receive(incoming)), tokio::spawn(rt.clone().refresher())];
        if rt.inner.cfg.votes {
            let sub = rt.inner.node.subscribe(VOTES_TOPIC).await?;
            tasks.push(tokio::spawn(rt.clone().votes_reader(sub)));
            tasks.push(tokio::spawn(rt.clone().ballot_driver()));
        }
        if rt.inner.cfg.announce_topic {
            let sub = rt.inner.node.subscribe(ANNOUNCE_TOPIC).await?;
            tasks.push(tokio::spawn(rt.clone().announce_reader(sub)));
        }
        lock(&rt.inner.tasks).extend(tasks);
        Ok(rt)
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Direct messages and requests to this node that are not agent frames (once; later calls
    /// get `None`). Until taken, they are dropped and counted.
    pub fn foreign(&self) -> Option<mpsc::Receiver<Direct>> {
        let mut f = lock(&self.inner.foreign);
        if f.is_some() {
            return None;
        }
        let (tx, rx) = mpsc::channel(256);
        *f = Some(tx);
        Some(rx)
    }

    /// Gives the runtime a mesh: agents' [`Ctx::submit`] goes to it, and agents with a
    /// position are also announced in its spatial index (if its world has a space).
    pub fn attach_mesh<S>(&self, mesh: &suprnova_mesh::net::Mesh<S>)
    where
        S: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let m = mesh.clone();
        let submit: Submitter = Arc::new(move |input| {
            let m = m.clone();
            Box::pin(async move { m.submit(input).await.map(|_| ()) })
        });
        *lock(&self.inner.mesh) = Some((mesh.id(), submit));
        *lock(&self.inner.spatial) = mesh.spatial().cloned();
    }

    /// Verified announcements seen on the announce topic from now on.
    pub fn announcements(&self) -> tokio::sync::broadcast::Receiver<Arc<SignedAnnouncement>> {
        self.inner.announcements.subscribe()
    }

    /// Loads (or creates) the key of agent `name` from the data directory, or, without one,
    /// makes a fresh key.
    pub fn identity_for(&self, name: &str) -> Result<Identity, RuntimeError> {
        let fresh = || {
            let mut seed = [0u8; 32];
            let _ = getrandom::fill(&mut seed);
            seed
        };
        match &self.inner.cfg.data_dir {
            None => Ok(Identity::from_seed(fresh())),
            Some(dir) => {
                if name.is_empty()
                    || name.len() > 64
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                    || name.starts_with('.')
                {
                    return Err(RuntimeError::BadAgentName { name: name.to_string() });
                }
                let path = dir.join("agents").join(format!("{name}.key"));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(RuntimeError::KeyDir)?;
                }
                suprnova_dht::keyfile::load_or_create(&path, fresh).map(|(id, _)| id).map_err(RuntimeError::Key)
            }
        }
    }

    /// Hosts agent `name` (its key from [`Runtime::identity_for`]) with `profile`.
    pub async fn spawn(&self, name: &str, profile: Profile, agent: impl Agent) -> Result<AgentHandle, RuntimeError> {
        let id = self.identity_for(name)?;
        self.spawn_with(id, profile, agent).await
    }

    /// Hosts `agent` under `identity` with `profile`: announces it (if the profile says so),
    /// joins its swarms and starts its steps with [`Event::Started`].
    pub async fn spawn_with(
        &self,
        identity: Identity,
        profile: Profile,
        agent: impl Agent,
    ) -> Result<AgentHandle, RuntimeError> {
        let profile = normalise(profile)?;
        let id = identity.public_key();
        let identity = Arc::new(identity);
        let (tx, rx) = mpsc::channel(self.inner.cfg.mailbox);
        let (stop, stop_rx) = watch::channel(false);
        {
            let mut agents = lock(&self.inner.agents);
            if agents.len() >= self.inner.cfg.max_agents {
                return Err(RuntimeError::TooManyAgents(agents.len()));
            }
            if agents.contains_key(&id) {
                return Err(RuntimeError::Duplicate);
            }
            agents.insert(
                id,
                Arc::new(Hosted {
                    identity: identity.clone(),
                    tx: tx.clone(),
                    profile: Mutex::new(profile.clone()),
                    nonce: AtomicU64::new(unix_ms().saturating_mul(1000)),
                    stop: stop.clone(),
                }),
            );
        }
        self.inner.counters.spawned.fetch_add(1, Ordering::Relaxed);
        for s in &profile.swarms {
            self.join_swarm(id, s).await?;
        }
        if profile.announce {
            self.announce(&identity, &profile).await;
        }
        let _ = tx.try_send(Event::Started);
        tokio::spawn(self.clone().run_agent(identity, Box::new(agent), rx, stop_rx, profile.tick));
        Ok(AgentHandle { id, addr: AgentAddr { agent: id, node: self.inner.node.id() }, stop })
    }

    /// Ids of the agents hosted now.
    pub fn agents(&self) -> Vec<AgentId> {
        lock(&self.inner.agents).keys().copied().collect()
    }

    /// Counters.
    pub fn stats(&self) -> AgentStats {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AgentStats {
            agents: lock(&self.inner.agents).len() as u64,
            spawned: g(&c.spawned),
            announced: g(&c.announced),
            announce_writes: g(&c.announce_writes),
            announce_failures: g(&c.announce_failures),
            discoveries: g(&c.discoveries),
            sent: g(&c.sent),
            send_failures: g(&c.send_failures),
            delivered: g(&c.delivered),
            requests_answered: g(&c.requests_answered),
            broadcasts: g(&c.broadcasts),
            drop_malformed: g(&c.drop_malformed),
            drop_bad_signature: g(&c.drop_bad_signature),
            drop_stale: g(&c.drop_stale),
            drop_replayed: g(&c.drop_replayed),
            drop_no_such_agent: g(&c.drop_no_such_agent),
            drop_mailbox_full: g(&c.drop_mailbox_full),
            drop_wrong_transport: g(&c.drop_wrong_transport),
            drop_replay_full: g(&c.drop_replay_full),
            drop_not_agent_frame: g(&c.drop_not_agent_frame),
            drop_bad_announcement: g(&c.drop_bad_announcement),
            drop_bad_vote_wire: g(&c.drop_bad_vote_wire),
            discovery_malformed: g(&c.discovery_malformed),
            discovery_stale: g(&c.discovery_stale),
            discovery_misplaced: g(&c.discovery_misplaced),
            knowledge_oversized: g(&c.knowledge_oversized),
            knowledge_bad_index: g(&c.knowledge_bad_index),
            knowledge_fetched: g(&c.knowledge_fetched),
            knowledge_skipped: g(&c.knowledge_skipped),
            knowledge_bytes: g(&c.knowledge_bytes),
            knowledge_busy: g(&c.knowledge_busy),
            announcements_seen: g(&c.announcements_seen),
            submits: g(&c.submits),
            ballots: lock(&self.inner.ballots).stats(),
        }
    }

    /// Stops every agent and the runtime's tasks (the node keeps running). Announcements lapse
    /// within their lifetime.
    pub fn shutdown(&self) {
        for h in lock(&self.inner.agents).drain().map(|(_, h)| h) {
            let _ = h.stop.send(true);
        }
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }

    pub(crate) fn hosted(&self, id: &AgentId) -> Option<Arc<Hosted>> {
        lock(&self.inner.agents).get(id).cloned()
    }

    // ---- the agent loop -----------------------------------------------------------------------
}

use crate::wire::{Proposal, Vote};

/// Who receives the answer to a request: a local requester, or a remote node's stream.
pub(crate) enum LocalOrRemote {
    Local(tokio::sync::oneshot::Sender<Reply>),
    Remote(suprnova_node::Responder),
}

impl LocalOrRemote {
    fn send(self, reply: Reply) {
        match self {
            LocalOrRemote::Remote(r) => r.respond(wire::encode(&reply)),
            LocalOrRemote::Local(tx) => {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Names a certificate (by proposal) or a piece of evidence (by proposal and voter).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WireKey {
    Certificate(Digest),
    Evidence(Digest, AgentId),
}

/// How long a node that formed a certificate or found evidence, but hosts neither the proposer
/// nor the voter concerned, waits for someone else's copy before publishing its own (plus up to
/// the same again, from its node id, so not all publish at once).
const DEFER_MS: u64 = 400;

/// An unanswered request: who answers, the request's id, when it arrived.
/// A request awaiting its agent's answer: how to answer, and the request's id (the answer
/// signs it).
type Pending = (LocalOrRemote, Digest);

fn reply_error(r: &Reply) -> SendError {
    match r {
        Reply::Answer { .. } => SendError::BadAnswer,
        Reply::NoSuchAgent => SendError::NoSuchAgent,
        Reply::MailboxFull => SendError::MailboxFull,
        Reply::Refused => SendError::Refused,
        Reply::Rejected => SendError::Rejected,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
