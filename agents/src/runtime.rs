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
//! - **shares knowledge** ([`crate::knowledge`]).
//!
//! Every refusal is counted by reason in [`AgentStats`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::{Key, Record, SetEntry, WireAddr};
use suprnova_mesh::presence::Spatial;
use suprnova_mesh::world::SignedInput;
use suprnova_node::{Direct, Node, NodeError, TopicEvent};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::agent::{Action, Agent, AgentAddr, Ctx, Discovery, Event, Profile, RequestId, SendError, Ticket};
use crate::discovery::{Criteria, Sifter};
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

/// Remembers `(sender, nonce)` of recent envelopes.
struct Replay {
    seen: HashMap<(AgentId, u64), u64>,
    order: VecDeque<(u64, AgentId, u64)>,
}

type Submitter =
    Arc<dyn Fn(SignedInput) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) node: Node,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) agents: Mutex<HashMap<AgentId, Arc<Hosted>>>,
    pub(crate) counters: Counters,
    replay: Mutex<Replay>,
    ballots: Mutex<Ballots>,
    ballot_wake: Notify,
    /// Local agents interested in a proposal (its proposer and voters hosted here).
    interest: Mutex<HashMap<Digest, Vec<AgentId>>>,
    pending: Mutex<HashMap<(AgentId, u64), Pending>>,
    next_request: AtomicU64,
    /// When unanswered requests were last swept.
    last_sweep: AtomicU64,
    swarms: Mutex<HashMap<String, Vec<AgentId>>>,
    spatial: Mutex<Option<Spatial>>,
    mesh: Mutex<Option<(Digest, Submitter)>>,
    foreign: Mutex<Option<mpsc::Sender<Direct>>>,
    pub(crate) knowledge: crate::knowledge::Store,
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

fn not_found(e: &NodeError) -> bool {
    matches!(e, NodeError::NotFound)
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
        let inner = Arc::new(Inner {
            ballots: Mutex::new(Ballots::new(cfg.ballots.clone())),
            node,
            cfg,
            agents: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            replay: Mutex::new(Replay { seen: HashMap::new(), order: VecDeque::new() }),
            ballot_wake: Notify::new(),
            interest: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            last_sweep: AtomicU64::new(0),
            swarms: Mutex::new(HashMap::new()),
            spatial: Mutex::new(None),
            mesh: Mutex::new(None),
            foreign: Mutex::new(None),
            knowledge: crate::knowledge::Store::default(),
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
            Box::pin(async move { m.submit(input).await.map(|_| ()).map_err(|e| e.to_string()) })
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

    async fn run_agent(
        self,
        me: Arc<Identity>,
        mut agent: Box<dyn Agent>,
        mut rx: mpsc::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
        tick: Option<Duration>,
    ) {
        let id = me.public_key();
        let mut next_ticket: Ticket = 0;
        let mut wake: Option<tokio::time::Instant> = tick.map(|t| tokio::time::Instant::now() + t);
        loop {
            let mut events = Vec::new();
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(e) => events.push(e),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or(far)) => events.push(Event::Tick),
                _ = stop.changed() => break,
            }
            while events.len() < 256 {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            let Some(hosted) = self.hosted(&id) else { break };
            let mut ctx = Ctx::new(me.clone(), unix_ms(), events, next_ticket);
            ctx.nonce = hosted.nonce.load(Ordering::Relaxed);
            ctx.mesh = lock(&self.inner.mesh).as_ref().map(|(m, _)| *m);
            agent.step(&mut ctx);
            next_ticket = ctx.next_ticket;
            hosted.nonce.store(ctx.nonce, Ordering::Relaxed);
            let actions = ctx.take_actions();
            for a in actions {
                self.execute(&hosted, a).await;
            }
            if ctx.stop {
                break;
            }
            wake = match (ctx.wake, tick) {
                (Some(w), Some(t)) => Some(tokio::time::Instant::now() + w.min(t)),
                (Some(w), None) => Some(tokio::time::Instant::now() + w),
                (None, Some(t)) => Some(tokio::time::Instant::now() + t),
                (None, None) => None,
            };
        }
        lock(&self.inner.agents).remove(&id);
        lock(&self.inner.pending).retain(|(a, _), _| *a != id);
    }

    async fn execute(&self, me: &Arc<Hosted>, action: Action) {
        let rt = self.clone();
        let me = me.clone();
        match action {
            Action::Send { to, body } => {
                tokio::spawn(async move {
                    if let Err(error) = rt.send_from(&me, to, &body).await {
                        let _ = me.tx.try_send(Event::SendFailed { to: to.agent, error });
                    }
                });
            }
            Action::Request { ticket, to, body } => {
                tokio::spawn(async move {
                    let result = rt.request_from(&me, to, &body).await;
                    let _ = me.tx.send(Event::Response { ticket, result }).await;
                });
            }
            Action::Respond { id, body } => self.respond(&me, id, &body),
            Action::Broadcast { swarm, body } => {
                tokio::spawn(async move {
                    let _ = rt.broadcast_from(&me, &swarm, &body).await;
                });
            }
            Action::Discover { ticket, criteria } => {
                tokio::spawn(async move {
                    let result = rt.discover(&criteria).await.map(Arc::new).map_err(|e| e.to_string());
                    let _ = me.tx.send(Event::Discovered { ticket, result }).await;
                });
            }
            Action::Propose(p) => self.propose(me.identity.public_key(), p).await,
            Action::Vote(v) => self.vote(v).await,
            Action::Announce(profile) => match normalise(profile) {
                Ok(p) => {
                    let old = std::mem::replace(&mut *lock(&me.profile), p.clone());
                    tokio::spawn(async move {
                        rt.withdraw_from(&me.identity, &old, &p).await;
                        rt.announce(&me.identity, &p).await
                    });
                }
                Err(e) => tracing::debug!(error = %e, "agent announced a bad profile"),
            },
            Action::MoveTo { position, info } => {
                lock(&me.profile).position = Some(position);
                let spatial = lock(&self.inner.spatial).clone();
                if let Some(s) = spatial {
                    tokio::spawn(async move {
                        if let Err(e) = s.announce_position(&me.identity, position, &info).await {
                            tracing::debug!(error = %e, "position not announced");
                        }
                    });
                }
            }
            Action::Share { ticket, peers, domain, items } => {
                tokio::spawn(async move {
                    let results = match rt.share_knowledge(&me.identity, &peers, &domain, items).await {
                        Ok(r) => r,
                        Err(e) => peers.iter().map(|p| (p.agent, Err(e.clone()))).collect(),
                    };
                    let _ = me.tx.send(Event::Shared { ticket, results }).await;
                });
            }
            Action::Sync { ticket, domain } => {
                tokio::spawn(async move {
                    let result = rt.sync_knowledge(&domain).await;
                    let _ = me.tx.send(Event::Synced { ticket, result }).await;
                });
            }
            Action::Submit(input) => {
                let submit = lock(&self.inner.mesh).as_ref().map(|(_, s)| s.clone());
                tokio::spawn(async move {
                    let error = match submit {
                        None => Some("no mesh attached".to_string()),
                        Some(s) => s(input).await.err(),
                    };
                    match error {
                        None => {
                            rt.inner.counters.submits.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(error) => {
                            let _ = me.tx.try_send(Event::SubmitFailed { error });
                        }
                    }
                });
            }
        }
    }

    // ---- announcements ------------------------------------------------------------------------

    fn announcement(&self, p: &Profile) -> Option<Announcement> {
        let addrs: Vec<WireAddr> =
            self.inner.node.contact_addrs().into_iter().take(wire::MAX_ADDRS).map(WireAddr::from).collect();
        let caps = p.capabilities.iter().map(|c| wire::bounded(c)).collect::<Option<Vec<_>>>()?;
        let a = Announcement {
            node: self.inner.node.id().0,
            addrs: addrs.try_into().ok()?,
            kind: wire::bounded(&p.kind)?,
            capabilities: caps.try_into().ok()?,
            resources: p.resources,
            position: p.position,
            time_ms: unix_ms(),
        };
        a.check().ok()?;
        Some(a)
    }

    /// Writes `agent`'s announcement in its kind's and capabilities' sets (and its presence in
    /// the spatial index, and on the announce topic). Returns how many set entries were stored.
    pub async fn announce(&self, agent: &Identity, profile: &Profile) -> usize {
        let Some(a) = self.announcement(profile) else {
            tracing::debug!("announcement over its size limit");
            return 0;
        };
        self.inner.counters.announced.fetch_add(1, Ordering::Relaxed);
        let pk = agent.public_key();
        let b = bucket(&pk);
        let value = wire::encode(&a);
        let ttl = self.inner.cfg.announce_ttl;
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let mut keys = vec![kind_key(&profile.kind, b)];
        keys.extend(profile.capabilities.iter().map(|c| capability_key(c, b)));
        let mut set = JoinSet::new();
        for k in keys {
            let Ok(entry) = SetEntry::sign(agent, &Key(k), a.time_ms, ttl_s, &value) else { continue };
            let node = self.inner.node.clone();
            set.spawn(async move { node.put_once(Key(k), Record::SetEntry(entry), ttl).await });
        }
        let mut stored = 0;
        while let Some(r) = set.join_next().await {
            self.inner.counters.announce_writes.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(Ok(o)) if o.stored > 0 => stored += 1,
                _ => {
                    self.inner.counters.announce_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let spatial = lock(&self.inner.spatial).clone();
        if let (Some(s), Some(p)) = (spatial, profile.position) {
            let info = profile.kind.as_bytes();
            if let Err(e) = s.announce_position(agent, p, info).await {
                tracing::debug!(error = %e, "presence not announced");
            }
        }
        if self.inner.cfg.announce_topic {
            let signed = SignedAnnouncement::sign(agent, a);
            let _ = self.inner.node.publish(ANNOUNCE_TOPIC, wire::encode(&signed)).await;
        }
        stored
    }

    /// Re-announces hosted agent `agent` with `profile` (as [`Ctx::announce`] does), withdrawing
    /// it from the sets it no longer belongs to; returns the set entries stored.
    pub async fn reannounce(&self, agent: &AgentId, profile: Profile) -> Result<usize, RuntimeError> {
        let h = self.hosted(agent).ok_or(RuntimeError::Stopped)?;
        let p = normalise(profile)?;
        let old = std::mem::replace(&mut *lock(&h.profile), p.clone());
        self.withdraw_from(&h.identity, &old, &p).await;
        Ok(if p.announce { self.announce(&h.identity, &p).await } else { 0 })
    }

    /// Writes withdrawals (empty values) over the agent's entries in the sets of `old` that
    /// `new` no longer names (a kind or capabilities it dropped, or all when it stops
    /// announcing).
    async fn withdraw_from(&self, agent: &Identity, old: &Profile, new: &Profile) {
        if !old.announce {
            return;
        }
        let b = bucket(&agent.public_key());
        let mut keys = Vec::new();
        if !new.announce || old.kind != new.kind {
            keys.push(kind_key(&old.kind, b));
        }
        for c in &old.capabilities {
            if !new.announce || !new.capabilities.contains(c) {
                keys.push(capability_key(c, b));
            }
        }
        let ttl = self.inner.cfg.announce_ttl;
        let ttl_s = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let seq = unix_ms();
        let mut set = JoinSet::new();
        for k in keys {
            let Ok(entry) = SetEntry::sign(agent, &Key(k), seq, ttl_s, &[]) else { continue };
            let node = self.inner.node.clone();
            set.spawn(async move { node.put_once(Key(k), Record::SetEntry(entry), ttl).await });
        }
        while set.join_next().await.is_some() {}
    }

    async fn refresher(self) {
        let every = self.inner.cfg.announce_ttl / 3;
        let mut interval = tokio::time::interval(every.max(Duration::from_secs(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let hosted: Vec<Arc<Hosted>> = lock(&self.inner.agents).values().cloned().collect();
            let mut set = JoinSet::new();
            for h in hosted {
                let p = lock(&h.profile).clone();
                if !p.announce {
                    continue;
                }
                while set.len() >= self.inner.cfg.parallel {
                    let _ = set.join_next().await;
                }
                let rt = self.clone();
                set.spawn(async move { rt.announce(&h.identity, &p).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    async fn announce_reader(self, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let c = &self.inner.counters;
            match wire::decode::<SignedAnnouncement>(&payload) {
                Err(_) => {
                    c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(s) => match s.verify() {
                    Err(_) => {
                        c.drop_bad_announcement.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {
                        c.announcements_seen.fetch_add(1, Ordering::Relaxed);
                        let _ = self.inner.announcements.send(Arc::new(s));
                    }
                },
            }
        }
    }

    // ---- discovery ----------------------------------------------------------------------------

    /// Finds the agents matching `criteria`: reads the 16 buckets of its first capability's set
    /// (or its kind's) in parallel, one round of lookups, and sifts them. A query that names
    /// only a position reads the mesh's spatial index instead (agents are then reported with
    /// their kind only).
    pub async fn discover(&self, criteria: &Criteria) -> Result<Discovery, DiscoverError> {
        self.inner.counters.discoveries.fetch_add(1, Ordering::Relaxed);
        let Some(keys) = criteria.keys() else {
            return self.discover_near(criteria).await;
        };
        let mut set = JoinSet::new();
        for (b, k) in keys.into_iter().enumerate() {
            let node = self.inner.node.clone();
            set.spawn(async move { (b, node.get_set(Key(k)).await) });
        }
        let mut sifter = Sifter::new(criteria, unix_ms(), ms(self.inner.cfg.announce_ttl), ms(self.inner.cfg.max_skew));
        let mut d = Discovery { complete: true, ..Discovery::default() };
        let mut last_err = None;
        let mut read = 0;
        while let Some(r) = set.join_next().await {
            let Ok((b, r)) = r else { continue };
            d.lookups += 1;
            match r {
                Ok(entries) => {
                    read += 1;
                    d.entries += entries.len();
                    // A set keeps 64 writers; one this full may have evicted some.
                    if entries.len() >= 60 {
                        d.complete = false;
                    }
                    sifter.add(u8::try_from(b).unwrap_or(u8::MAX), &entries);
                }
                Err(e) if not_found(&e) => read += 1,
                Err(e) => {
                    d.complete = false;
                    last_err = Some(e);
                }
            }
        }
        if read == 0 {
            return Err(DiscoverError::Unreachable(last_err.unwrap_or(NodeError::NoPeers)));
        }
        d.drops = sifter.drops;
        let c = &self.inner.counters;
        c.discovery_malformed.fetch_add(d.drops.malformed, Ordering::Relaxed);
        c.discovery_stale.fetch_add(d.drops.stale, Ordering::Relaxed);
        c.discovery_misplaced.fetch_add(d.drops.misplaced, Ordering::Relaxed);
        d.agents = sifter.finish();
        for f in &d.agents {
            let addrs: Vec<_> = f.announcement.addrs.iter().map(WireAddr::to_socket_addr).collect();
            if !addrs.is_empty() {
                self.inner.node.add_address(NodeId(f.announcement.node), addrs);
            }
        }
        Ok(d)
    }

    async fn discover_near(&self, criteria: &Criteria) -> Result<Discovery, DiscoverError> {
        let spatial = lock(&self.inner.spatial).clone();
        let (Some(s), Some((centre, radius))) = (spatial, criteria.near) else {
            return Err(DiscoverError::TooBroad);
        };
        let near = s.query_local(centre, radius).await.map_err(DiscoverError::Spatial)?;
        let mut d = Discovery { complete: near.complete, lookups: near.cells_read as usize, ..Discovery::default() };
        d.entries = near.agents.len();
        for n in near.agents {
            let kind = String::from_utf8_lossy(&n.info).into_owned();
            let Some(kind_b) = wire::bounded(&kind) else { continue };
            let a = Announcement {
                node: n.node,
                addrs: Default::default(),
                kind: kind_b,
                capabilities: Default::default(),
                resources: Default::default(),
                position: Some(n.position),
                time_ms: n.seq,
            };
            d.agents.push(crate::discovery::Found { agent: n.agent, announcement: a });
        }
        if criteria.limit > 0 {
            d.agents.truncate(criteria.limit);
        }
        Ok(d)
    }

    // ---- messages -----------------------------------------------------------------------------

    fn envelope(&self, me: &Hosted, kind: EnvelopeKind, to: AgentId, body: &[u8]) -> Result<Envelope, SendError> {
        let nonce = me.nonce.fetch_add(1, Ordering::Relaxed);
        Envelope::sign(&me.identity, kind, to, nonce, unix_ms(), body).map_err(|_| SendError::TooLarge(body.len()))
    }

    async fn send_from(&self, me: &Hosted, to: AgentAddr, body: &[u8]) -> Result<(), SendError> {
        let e = self.envelope(me, EnvelopeKind::Message, to.agent, body)?;
        if to.node == self.inner.node.id() {
            return self.deliver(e, None).map_err(|r| reply_error(&r));
        }
        self.inner.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.inner.node.send(to.node, &wire::frame(&e)).await.map_err(|err| {
            self.inner.counters.send_failures.fetch_add(1, Ordering::Relaxed);
            SendError::Network(std::sync::Arc::new(err))
        })
    }

    /// Sends `body` from hosted agent `from` to `to` (for drivers outside an agent's step).
    pub async fn send(&self, from: &AgentId, to: AgentAddr, body: &[u8]) -> Result<(), SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.send_from(&me, to, body).await
    }

    /// Sends a request from hosted agent `from` to `to` and waits for the answer.
    pub async fn request(&self, from: &AgentId, to: AgentAddr, body: &[u8]) -> Result<Vec<u8>, SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.request_from(&me, to, body).await
    }

    async fn request_from(&self, me: &Hosted, to: AgentAddr, body: &[u8]) -> Result<Vec<u8>, SendError> {
        let e = self.envelope(me, EnvelopeKind::Request, to.agent, body)?;
        let id = e.id();
        let reply = if to.node == self.inner.node.id() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.deliver(e, Some(LocalOrRemote::Local(tx))) {
                Err(r) => r,
                Ok(()) => match tokio::time::timeout(Duration::from_secs(30), rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Reply::Refused,
                    Err(_) => return Err(SendError::Timeout),
                },
            }
        } else {
            self.inner.counters.sent.fetch_add(1, Ordering::Relaxed);
            let bytes = self.inner.node.request(to.node, &wire::frame(&e)).await.map_err(|err| {
                self.inner.counters.send_failures.fetch_add(1, Ordering::Relaxed);
                match err {
                    NodeError::Timeout => SendError::Timeout,
                    NodeError::Refused { .. } => SendError::Refused,
                    other => SendError::Network(std::sync::Arc::new(other)),
                }
            })?;
            wire::decode::<Reply>(&bytes).map_err(|_| SendError::BadAnswer)?
        };
        match reply {
            Reply::Answer { body, sig } => {
                if suprnova_dht::identity::verify_strict(&to.agent, &Reply::signed_bytes(&id, &body), &sig.0) {
                    Ok(body.to_vec())
                } else {
                    Err(SendError::BadAnswer)
                }
            }
            other => Err(reply_error(&other)),
        }
    }

    fn respond(&self, me: &Hosted, id: RequestId, body: &[u8]) {
        let Some((responder, request, _)) = lock(&self.inner.pending).remove(&(me.identity.public_key(), id.0)) else {
            return;
        };
        let reply = Reply::answer(&me.identity, &request, body).unwrap_or(Reply::Refused);
        self.inner.counters.requests_answered.fetch_add(1, Ordering::Relaxed);
        responder.send(reply);
    }

    async fn broadcast_from(&self, me: &Hosted, swarm: &str, body: &[u8]) -> Result<(), SendError> {
        let e = self.envelope(me, EnvelopeKind::Broadcast, [0; 32], body)?;
        self.inner.counters.broadcasts.fetch_add(1, Ordering::Relaxed);
        // Local members first (a node does not receive its own broadcasts).
        self.deliver_broadcast(swarm, &e);
        self.inner
            .node
            .publish(&swarm_topic(swarm), wire::encode(&e))
            .await
            .map_err(|err| SendError::Network(std::sync::Arc::new(err)))?;
        Ok(())
    }

    /// Broadcasts `body` from hosted agent `from` to swarm `swarm`.
    pub async fn broadcast(&self, from: &AgentId, swarm: &str, body: &[u8]) -> Result<(), SendError> {
        let me = self.hosted(from).ok_or(SendError::NoSuchAgent)?;
        self.broadcast_from(&me, swarm, body).await
    }

    async fn join_swarm(&self, agent: AgentId, swarm: &str) -> Result<(), RuntimeError> {
        let first = {
            let mut s = lock(&self.inner.swarms);
            let members = s.entry(swarm.to_string()).or_default();
            let first = members.is_empty();
            if !members.contains(&agent) {
                members.push(agent);
            }
            first
        };
        if first {
            let sub = self.inner.node.subscribe(&swarm_topic(swarm)).await?;
            let rt = self.clone();
            let name = swarm.to_string();
            let t = tokio::spawn(async move { rt.swarm_reader(name, sub).await });
            lock(&self.inner.tasks).push(t);
        }
        Ok(())
    }

    async fn swarm_reader(self, swarm: String, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let c = &self.inner.counters;
            let Ok(e) = wire::decode::<Envelope>(&payload) else {
                c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if e.kind != EnvelopeKind::Broadcast || e.to != [0; 32] {
                c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !e.verify() {
                c.drop_bad_signature.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(r) = self.fresh(&e) {
                drop(r);
                continue;
            }
            self.deliver_broadcast(&swarm, &e);
        }
    }

    fn deliver_broadcast(&self, swarm: &str, e: &Envelope) {
        let members = lock(&self.inner.swarms).get(swarm).cloned().unwrap_or_default();
        for m in members {
            if m == e.from {
                continue;
            }
            if let Some(h) = self.hosted(&m) {
                let ev = Event::Broadcast { swarm: swarm.to_string(), from: e.from, body: e.body.to_vec() };
                if h.tx.try_send(ev).is_err() {
                    self.inner.counters.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.inner.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Checks an envelope's time and that it was not seen before (and remembers it).
    fn fresh(&self, e: &Envelope) -> Result<(), Reply> {
        let now = unix_ms();
        let skew = ms(self.inner.cfg.max_skew);
        let c = &self.inner.counters;
        if e.time_ms.saturating_add(skew) < now || e.time_ms > now.saturating_add(skew) {
            c.drop_stale.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        let mut r = lock(&self.inner.replay);
        // Forget what is too old to be accepted anyway.
        while let Some(&(t, from, nonce)) = r.order.front() {
            if t.saturating_add(2 * skew) >= now {
                break;
            }
            r.order.pop_front();
            r.seen.remove(&(from, nonce));
        }
        if r.seen.contains_key(&(e.from, e.nonce)) {
            c.drop_replayed.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        if r.seen.len() >= self.inner.cfg.max_replay {
            c.drop_replay_full.fetch_add(1, Ordering::Relaxed);
            return Err(Reply::Rejected);
        }
        r.seen.insert((e.from, e.nonce), e.time_ms);
        r.order.push_back((e.time_ms.max(now), e.from, e.nonce));
        Ok(())
    }

    async fn receive(self, mut incoming: mpsc::Receiver<Direct>) {
        while let Some(d) = incoming.recv().await {
            let (from_node, data, responder) = match d {
                Direct::Message { from, data } => (from, data, None),
                Direct::Request { from, data, responder } => (from, data, Some(responder)),
            };
            let c = &self.inner.counters;
            let reject = |responder: Option<suprnova_node::Responder>| {
                if let Some(r) = responder {
                    r.respond(wire::encode(&Reply::Rejected));
                }
            };
            let envelope = match wire::unframe(&data) {
                None => {
                    let foreign = lock(&self.inner.foreign).clone();
                    match foreign {
                        Some(tx) => {
                            let d = match responder {
                                None => Direct::Message { from: from_node, data },
                                Some(responder) => Direct::Request { from: from_node, data, responder },
                            };
                            let _ = tx.try_send(d);
                        }
                        None => {
                            c.drop_not_agent_frame.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                Some(Err(_)) => {
                    c.drop_malformed.fetch_add(1, Ordering::Relaxed);
                    reject(responder);
                    continue;
                }
                Some(Ok(e)) => e,
            };
            let expected = if responder.is_some() { EnvelopeKind::Request } else { EnvelopeKind::Message };
            if envelope.kind != expected {
                c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                reject(responder);
                continue;
            }
            if !envelope.verify() {
                c.drop_bad_signature.fetch_add(1, Ordering::Relaxed);
                reject(responder);
                continue;
            }
            if envelope.body.starts_with(wire::SYSTEM_TAG) {
                // Runtime-level requests (knowledge offers) are answered by the runtime.
                let Some(r) = responder else {
                    c.drop_wrong_transport.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match self.fresh(&envelope) {
                    Ok(()) => {
                        let rt = self.clone();
                        tokio::spawn(async move { rt.system(from_node, envelope, r).await });
                    }
                    Err(reply) => r.respond(wire::encode(&reply)),
                }
                continue;
            }
            let _ = self.deliver(envelope, responder.map(LocalOrRemote::Remote));
        }
    }

    /// Puts a verified envelope in its recipient's mailbox.
    fn deliver(&self, e: Envelope, responder: Option<LocalOrRemote>) -> Result<(), Reply> {
        let c = &self.inner.counters;
        let refuse = |responder: Option<LocalOrRemote>, reply: Reply| {
            if let Some(r) = responder {
                r.send(reply.clone());
            }
            Err(reply)
        };
        if let Err(reply) = self.fresh(&e) {
            return refuse(responder, reply);
        }
        let Some(h) = self.hosted(&e.to) else {
            c.drop_no_such_agent.fetch_add(1, Ordering::Relaxed);
            return refuse(responder, Reply::NoSuchAgent);
        };
        let ev = match responder {
            None => Event::Message { from: e.from, body: e.body.to_vec() },
            Some(r) => {
                let rid = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
                let mut pending = lock(&self.inner.pending);
                // Bound what unanswered requests hold: forget those older than a minute (at most
                // one sweep a second, so a flood at the cap costs no sweep per request).
                let now = unix_ms();
                if pending.len() >= MAX_PENDING && self.inner.last_sweep.swap(now, Ordering::Relaxed) + 1000 <= now {
                    let cutoff = unix_ms().saturating_sub(60_000);
                    pending.retain(|_, (_, _, t)| *t >= cutoff);
                }
                if pending.len() >= MAX_PENDING {
                    drop(pending);
                    c.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                    return refuse(Some(r), Reply::MailboxFull);
                }
                pending.insert((e.to, rid), (r, e.id(), unix_ms()));
                Event::Request { id: RequestId(rid), from: e.from, body: e.body.to_vec() }
            }
        };
        let is_request = matches!(ev, Event::Request { .. });
        let rid = if let Event::Request { id, .. } = &ev { Some(id.0) } else { None };
        match h.tx.try_send(ev) {
            Ok(()) => {
                c.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                c.drop_mailbox_full.fetch_add(1, Ordering::Relaxed);
                if is_request
                    && let Some(rid) = rid
                    && let Some((resp, _, _)) = lock(&self.inner.pending).remove(&(e.to, rid))
                {
                    resp.send(Reply::MailboxFull);
                }
                Err(Reply::MailboxFull)
            }
        }
    }

    // ---- proposals and votes ------------------------------------------------------------------

    /// Publishes proposal `p` (signed by hosted agent `proposer`) and opens its ballot here.
    async fn propose(&self, proposer: AgentId, p: Proposal) {
        let id = p.id();
        let local = self.register_interest(id, &p, Some(proposer));
        let opened = lock(&self.inner.ballots).on_proposal(unix_ms(), p.clone());
        if opened.is_err() {
            lock(&self.inner.interest).remove(&id);
            return;
        }
        self.notify_proposal(&local, &p);
        let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&VoteWire::Proposal(p))).await;
    }

    async fn vote(&self, v: Vote) {
        lock(&self.inner.ballots).on_vote(unix_ms(), v.clone());
        self.inner.ballot_wake.notify_one();
        let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&VoteWire::Vote(v))).await;
    }

    /// Proposes `body` from hosted agent `proposer` to `voters`, open for `deadline`.
    pub async fn propose_from(
        &self,
        proposer: &AgentId,
        body: &[u8],
        voters: Vec<AgentId>,
        deadline: Duration,
    ) -> Result<Proposal, WireError> {
        let me = self.hosted(proposer).ok_or(WireError::Invalid("no such agent"))?;
        let nonce = me.nonce.fetch_add(1, Ordering::Relaxed);
        let p = Proposal::sign(&me.identity, nonce, unix_ms().saturating_add(ms(deadline)), voters, body)?;
        self.propose(*proposer, p.clone()).await;
        Ok(p)
    }

    /// Casts hosted agent `voter`'s vote `choice` on `proposal`; false if it is not eligible.
    pub async fn vote_from(&self, voter: &AgentId, proposal: &Proposal, choice: &[u8]) -> bool {
        let Some(me) = self.hosted(voter) else { return false };
        let Some(v) = Vote::sign(&me.identity, proposal, choice) else { return false };
        self.vote(v).await;
        true
    }

    /// How proposal `id` ended, if it did (as seen here).
    pub fn decision(&self, id: &Digest) -> Option<Decision> {
        lock(&self.inner.ballots).decision(id).cloned()
    }

    /// Publishes `vote` as it is (for tests of hostile voters: replays, forged votes).
    pub async fn publish_raw_vote(&self, vote: Vote) {
        self.vote(vote).await;
    }

    /// Records which local agents care about proposal `p` (before its ballot opens, so no
    /// outcome can come before the interest) and returns them.
    fn register_interest(&self, id: Digest, p: &Proposal, proposer: Option<AgentId>) -> Vec<AgentId> {
        let agents = lock(&self.inner.agents);
        let mut local: Vec<AgentId> = p.voters.iter().filter(|v| agents.contains_key(*v)).copied().collect();
        if let Some(x) = proposer.or_else(|| agents.contains_key(&p.proposer).then_some(p.proposer))
            && !local.contains(&x)
        {
            local.push(x);
        }
        drop(agents);
        if !local.is_empty() {
            let mut i = lock(&self.inner.interest);
            if i.len() < self.inner.cfg.ballots.max_open * 2 && !i.contains_key(&id) {
                i.insert(id, local.clone());
            }
        }
        local
    }

    /// Hands proposal `p` to the local agents that may vote on it (and its proposer).
    fn notify_proposal(&self, local: &[AgentId], p: &Proposal) {
        let proposal = Arc::new(p.clone());
        for a in local {
            if let Some(h) = self.hosted(a) {
                let _ = h.tx.try_send(Event::Proposal { proposal: proposal.clone() });
            }
        }
    }

    async fn votes_reader(self, mut sub: suprnova_node::Subscription) {
        while let Some(ev) = sub.recv().await {
            let TopicEvent::Message { payload, .. } = ev else { continue };
            let Ok(w) = wire::decode::<VoteWire>(&payload) else {
                self.inner.counters.drop_bad_vote_wire.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let now = unix_ms();
            match w {
                VoteWire::Proposal(p) => {
                    let id = p.id();
                    let known = lock(&self.inner.interest).contains_key(&id);
                    let local = self.register_interest(id, &p, None);
                    let opened = lock(&self.inner.ballots).on_proposal(now, p.clone());
                    match opened {
                        Ok(true) => {
                            self.notify_proposal(&local, &p);
                            self.inner.ballot_wake.notify_one();
                        }
                        Ok(false) => {}
                        Err(_) if !known => {
                            lock(&self.inner.interest).remove(&id);
                        }
                        Err(_) => {}
                    }
                }
                VoteWire::Vote(v) => {
                    lock(&self.inner.ballots).on_vote(now, v);
                    self.inner.ballot_wake.notify_one();
                }
                VoteWire::Certificate(c) => {
                    self.seen(WireKey::Certificate(c.proposal.id()));
                    lock(&self.inner.ballots).on_certificate(c);
                    self.inner.ballot_wake.notify_one();
                }
                VoteWire::Evidence(e) => {
                    self.seen(WireKey::Evidence(e.proposal, e.voter));
                    lock(&self.inner.ballots).on_evidence(e);
                    self.inner.ballot_wake.notify_one();
                }
            }
        }
    }

    fn hosts(&self, agent: &AgentId) -> bool {
        lock(&self.inner.agents).contains_key(agent)
    }

    fn seen(&self, key: WireKey) {
        let mut s = lock(&self.inner.seen_wire);
        if !s.contains(&key) {
            s.push_back(key);
            while s.len() > 8192 {
                s.pop_front();
            }
        }
    }

    fn defer(&self, key: WireKey, w: VoteWire) {
        let jitter = u64::from(self.inner.node.id().0[0]) * DEFER_MS / 256;
        let mut d = lock(&self.inner.deferred);
        if d.len() < 4096 {
            d.push((unix_ms() + DEFER_MS + jitter, key, w));
        }
    }

    /// Publishes deferred certificates and evidence that are due and nobody else published.
    async fn publish_due(&self) {
        let now = unix_ms();
        let due: Vec<VoteWire> = {
            let mut d = lock(&self.inner.deferred);
            let seen = lock(&self.inner.seen_wire);
            let mut out = Vec::new();
            d.retain(|(at, key, w)| {
                if seen.contains(key) {
                    return false;
                }
                if *at <= now {
                    out.push(w.clone());
                    return false;
                }
                true
            });
            out
        };
        for w in due {
            let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
        }
    }

    async fn ballot_driver(self) {
        loop {
            self.publish_due().await;
            let next = lock(&self.inner.ballots).next_deadline();
            let next = match lock(&self.inner.deferred).iter().map(|(at, _, _)| *at).min() {
                Some(d) => Some(next.map_or(d, |n| n.min(d))),
                None => next,
            };
            let sleep = next.map_or(Duration::from_secs(1), |d| Duration::from_millis(d.saturating_sub(unix_ms())));
            tokio::select! {
                _ = self.inner.ballot_wake.notified() => {}
                _ = tokio::time::sleep(sleep.min(Duration::from_secs(1))) => {}
            }
            let outputs = {
                let mut b = lock(&self.inner.ballots);
                b.poll(unix_ms());
                let mut out = Vec::new();
                while let Some(o) = b.next_output() {
                    out.push(o);
                }
                // Interest lasts while the ballot is held (certified ones until their deadline,
                // so late equivocation still reaches the proposer).
                lock(&self.inner.interest).retain(|id, _| {
                    b.proposal(id).is_some()
                        || out.iter().any(|o| matches!(o, Output::Decided { id: d, .. } if d == id))
                });
                out
            };
            for o in outputs {
                match o {
                    Output::Decided { id, decision, formed } => {
                        if formed && let Decision::Certified(c) = &decision {
                            let w = VoteWire::Certificate((**c).clone());
                            if self.hosts(&c.proposal.proposer) {
                                let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
                            } else {
                                self.defer(WireKey::Certificate(id), w);
                            }
                        }
                        let local = lock(&self.inner.interest).get(&id).cloned().unwrap_or_default();
                        let decision = Arc::new(decision);
                        for a in local {
                            if let Some(h) = self.hosted(&a) {
                                let _ = h.tx.try_send(Event::Decided { id, decision: decision.clone() });
                            }
                        }
                    }
                    Output::Evidence { evidence, found } => {
                        if found {
                            let w = VoteWire::Evidence(evidence.clone());
                            let proposer = lock(&self.inner.ballots).proposal(&evidence.proposal).map(|p| p.proposer);
                            if self.hosts(&evidence.voter) || proposer.is_some_and(|p| self.hosts(&p)) {
                                let _ = self.inner.node.publish(VOTES_TOPIC, wire::encode(&w)).await;
                            } else {
                                self.defer(WireKey::Evidence(evidence.proposal, evidence.voter), w);
                            }
                        }
                        let local = lock(&self.inner.interest).get(&evidence.proposal).cloned().unwrap_or_default();
                        let evidence = Arc::new(evidence);
                        for a in local {
                            if let Some(h) = self.hosted(&a) {
                                let _ = h.tx.try_send(Event::Equivocation { evidence: evidence.clone() });
                            }
                        }
                    }
                }
            }
        }
    }
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
type Pending = (LocalOrRemote, Digest, u64);

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
