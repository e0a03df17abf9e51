//! The tokio driver: a [`MeshCore`] on a running [`Node`], reaching the network only through it.
//!
//! Every mesh has a topic, `"suprnova/mesh/v1/" + hex(mesh id)`. Members and observers subscribe;
//! agreement messages and inputs travel on it as signed broadcasts ([`Wire`]), so an observer
//! follows the certified rounds as they happen. One task owns the core; [`Mesh`] is its handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::Key;
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_node::{BlobHash, Node, NodeError, TopicEvent};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::core::{Certified, MeshConfig, MeshCore, MeshError, MeshOut, MeshStats};
use crate::simplex::{self, Digest, Evidence, Message};
use crate::store::{self, Head, MAX_IMMUTABLE, RecordError, Ref, RoundRecord, StateRef};
use crate::world::{Genesis, InputError, SignedInput, World};

/// What a mesh's topic carries (postcard).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Wire {
    /// A Simplex message (wire-spec §13.3).
    Agreement(Message),
    /// An input for the pool (§13.5).
    Input(SignedInput),
    /// Proof that a member equivocated (§13.3).
    Evidence(Evidence),
}

/// The topic of mesh `id`.
pub fn topic_name(id: &Digest) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("suprnova/mesh/v1/{hex}")
}

/// Why a mesh could not start or join.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The genesis, world or initial state disagree.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The node refused the subscription.
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// The signing guard file cannot be read.
    #[error("signing guard: {0}")]
    Guard(#[source] std::io::Error),
    /// Joining: the genesis could not be read, or no certified state checked out.
    #[error("joining: {0}")]
    Join(#[from] GetStateError),
    /// The genesis defines a space this node cannot index (never for a genesis that passed
    /// `MeshCore::new`).
    #[error("spatial index: {0}")]
    Spatial(#[from] crate::presence::PresenceError),
}

/// Heights reserved at a time by the signing guard (a restart costs this member at most this
/// many heights of votes).
const GUARD_STEP: u64 = 100;

/// The guard file holds one decimal number: the highest height this member may have signed at.
/// A missing file is a member that never signed.
fn read_guard(path: &std::path::Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Writes `up_to` to the guard file durably: a temporary file, synced, renamed over it.
fn write_guard(path: &std::path::Path, up_to: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{up_to}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A snapshot of a running mesh.
#[derive(Clone, Debug)]
pub struct MeshStatus {
    /// The mesh id.
    pub mesh_id: Digest,
    /// Last certified round.
    pub round: u64,
    /// Inputs pending.
    pub pool: usize,
    /// Mesh counters.
    pub stats: MeshStats,
    /// Agreement counters.
    pub agreement: simplex::Stats,
    /// Topic messages that did not decode.
    pub undecodable: u64,
    /// Certified rounds written to the DHT (record and head).
    pub stored: u64,
    /// Certified rounds not written because a newer one was ready first.
    pub store_skipped: u64,
    /// Writes that failed.
    pub store_failed: u64,
    /// The last write failure, if any.
    pub last_store_error: Option<String>,
    /// Times this mesh caught up from a state read from the DHT.
    pub caught_up: u64,
    /// The spatial index's counters, if the world has a space.
    pub spatial: Option<crate::presence::SpatialStats>,
}

#[derive(Default)]
struct StoreCounters {
    stored: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

enum Cmd<S> {
    Submit(SignedInput, oneshot::Sender<Result<Digest, InputError>>),
    Status(oneshot::Sender<MeshStatus>),
    /// A catch-up read from the DHT finished.
    Fetched(Result<FetchedState<S>, String>),
}

/// Handle to a running mesh. Cheap to clone.
///
/// Three in-process nodes run one Game-of-Life mesh; a member reads the certified state back
/// from the DHT:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// use std::time::Duration;
/// use suprnova_dht::identity::Identity;
/// use suprnova_mesh::core::MeshConfig;
/// use suprnova_mesh::life::{Board, Life};
/// use suprnova_mesh::net::Mesh;
/// use suprnova_mesh::world::{Genesis, Limits};
/// use suprnova_node::{Node, NodeConfig};
///
/// let mut nodes: Vec<Node> = Vec::new();
/// for i in 0..3u8 {
///     let node = Node::spawn(NodeConfig::with_seed([i + 1; 32], "127.0.0.1:0".parse()?)).await?;
///     if let Some(first) = nodes.first() {
///         node.bootstrap(vec![first.target()]).await?;
///     }
///     nodes.push(node);
/// }
/// // Each node's identity is a member key.
/// let ids: Vec<Identity> = (0..3u8).map(|i| Identity::from_seed([i + 1; 32])).collect();
/// let s0 = Board::empty(16, 16);
/// let members = ids.iter().map(Identity::public_key).collect();
/// let genesis = Genesis::for_world(&Life, &s0, members, 50, Limits::default()).ok_or("genesis")?;
/// let mut meshes = Vec::new();
/// for (node, id) in nodes.iter().zip(ids) {
///     let cfg = MeshConfig::default();
///     meshes.push(Mesh::start(node.clone(), Life, genesis.clone(), s0.clone(), Some(id), cfg).await?);
/// }
/// // Certified rounds as they happen: (round, state hash, state).
/// let mut rounds = meshes[0].rounds();
/// let r = rounds.recv().await?;
/// assert!(r.round >= 1);
/// // Anyone, member or not, reads the newest certified state from the DHT and checks it
/// // against the genesis (the members store each round shortly after it is certified).
/// let mut fetched = None;
/// for _ in 0..100 {
///     if let Ok(f) = meshes[1].get_state().await {
///         fetched = Some(f);
///         break;
///     }
///     tokio::time::sleep(Duration::from_millis(50)).await;
/// }
/// assert!(fetched.ok_or("no state in the DHT")?.round >= 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
pub struct Mesh<S> {
    id: Digest,
    cmd: mpsc::Sender<Cmd<S>>,
    rounds: broadcast::Sender<Arc<Certified<S>>>,
    task: Arc<JoinHandle<()>>,
    node: Node,
    genesis: Arc<Genesis>,
    spatial: Option<crate::presence::Spatial>,
}

impl<S> Clone for Mesh<S> {
    fn clone(&self) -> Self {
        Mesh {
            id: self.id,
            cmd: self.cmd.clone(),
            rounds: self.rounds.clone(),
            task: self.task.clone(),
            node: self.node.clone(),
            genesis: self.genesis.clone(),
            spatial: self.spatial.clone(),
        }
    }
}

/// Reads mesh `mesh`'s genesis from the DHT and checks that it hashes to the id: the immutable
/// record under the id, or, for a genesis too large for one, a blob named in the locator set
/// (at most 4 entries tried).
pub async fn get_genesis(node: &Node, mesh: Digest) -> Result<Genesis, GetStateError> {
    let bytes = match node.get_immutable(Key(mesh)).await {
        Ok(b) => b,
        Err(e) => {
            let located = node.get_set(Key(store::genesis_locator_key(&mesh))).await.unwrap_or_default();
            let mut found = None;
            for entry in located.iter().take(4) {
                let Ok(h) = <[u8; 32]>::try_from(entry.value.as_slice()) else { continue };
                if let Ok(b) = fetch(node, Ref::Blob(h), Some(MAX_GENESIS_BLOB)).await
                    && *blake3::hash(&b).as_bytes() == mesh
                {
                    found = Some(b);
                    break;
                }
            }
            found.ok_or(GetStateError::NoGenesis(e))?
        }
    };
    let genesis: Genesis = postcard::from_bytes(&bytes).map_err(|_| GetStateError::BadGenesis)?;
    if genesis.mesh_id() != mesh {
        return Err(GetStateError::BadGenesis);
    }
    Ok(genesis)
}

impl<S: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Mesh<S> {
    /// Starts the mesh born from `genesis` with initial state `s0` on `node`: as a member if
    /// `identity` holds one of the genesis' member keys, else as an observer. Every member
    /// starts it this way (the same genesis gives the same mesh id); a member restarted with
    /// its guard file catches up from the DHT.
    pub async fn start<W: World<State = S>>(
        node: Node,
        world: W,
        genesis: Genesis,
        s0: S,
        identity: Option<Identity>,
        mut cfg: MeshConfig,
    ) -> Result<Mesh<S>, StartError> {
        // The topic is a reliable broadcast: see `simplex::Config::forward_notarizations`.
        cfg.simplex.forward_notarizations = false;
        let core = MeshCore::new(
            world,
            genesis,
            s0,
            identity.as_ref().map(|i| Identity::from_seed(*i.seed())),
            cfg.clone(),
            Instant::now(),
        )?;
        Self::launch(node, core, identity, cfg).await
    }

    /// Joins the running mesh `mesh` by its id: reads its genesis and newest certified state
    /// from the DHT (both checked) and starts from there, as a member if `identity` holds one
    /// of the member keys, else as an observer. Fails if the mesh has stored no round yet
    /// (then start it from its genesis and S(0) with [`Mesh::start`]).
    pub async fn join<W: World<State = S>>(
        node: Node,
        world: W,
        mesh: Digest,
        identity: Option<Identity>,
        mut cfg: MeshConfig,
    ) -> Result<Mesh<S>, StartError> {
        cfg.simplex.forward_notarizations = false;
        let genesis = get_genesis(&node, mesh).await?;
        let f = get_state::<W>(&node, mesh).await?;
        let certified = (f.round, f.state, f.proposal, f.certificate);
        let id = identity.as_ref().map(|i| Identity::from_seed(*i.seed()));
        let core = MeshCore::from_certified(world, genesis, certified, id, cfg.clone(), Instant::now())?;
        Self::launch(node, core, identity, cfg).await
    }

    async fn launch<W: World<State = S>>(
        node: Node,
        mut core: MeshCore<W>,
        identity: Option<Identity>,
        cfg: MeshConfig,
    ) -> Result<Mesh<S>, StartError> {
        let genesis = core.genesis().clone();
        let member = identity.as_ref().is_some_and(|i| genesis.members.contains(&i.public_key()));
        let guard_file = cfg.guard_file.clone();
        if member && let Some(path) = &guard_file {
            // Never sign at a height the previous run may have signed at.
            let signed_up_to = read_guard(path).map_err(StartError::Guard)?;
            core.guard(Instant::now(), signed_up_to, GUARD_STEP);
        }
        let id = core.mesh_id();
        let spatial = match &genesis.space {
            Some(space) => Some(crate::presence::Spatial::new(
                node.clone(),
                id,
                space.clone(),
                crate::presence::SpatialConfig::default(),
            )?),
            None => None,
        };
        let topic = topic_name(&id);
        let sub = node.subscribe(&topic).await?;
        let (cmd, rx) = mpsc::channel(256);
        let (rounds, _) = broadcast::channel(1024);
        let counters = Arc::new(StoreCounters::default());
        let (latest, watcher) = watch::channel(None);
        if member {
            tokio::spawn(store_worker(node.clone(), genesis.clone(), watcher, counters.clone()));
        }
        let fault = match (cfg.fault, &identity) {
            (Some(f), Some(id)) if member => Some((f, Identity::from_seed(*id.seed()))),
            _ => None,
        };
        let driver = Driver {
            fault,
            guard_file: if member { guard_file } else { None },
            node: node.clone(),
            topic,
            core,
            rounds: rounds.clone(),
            undecodable: 0,
            latest,
            counters,
            member,
            cmd: cmd.clone(),
            fetching: false,
            warned: Default::default(),
            last_fetch: None,
            caught_up: 0,
        };
        let task = tokio::spawn(driver.run(sub, rx));
        Ok(Mesh { id, cmd, rounds, task: Arc::new(task), node, genesis: Arc::new(genesis), spatial })
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The spatial index of this mesh, if its world has a space.
    pub fn spatial(&self) -> Option<&crate::presence::Spatial> {
        self.spatial.as_ref()
    }

    /// Announces that `agent` is at `position` in this mesh's space (see
    /// [`crate::presence::Spatial::announce_position`]).
    pub async fn announce_position(
        &self,
        agent: &Identity,
        position: crate::spatial::Position,
        info: &[u8],
    ) -> Result<crate::presence::Announced, crate::presence::PresenceError> {
        let s = self.spatial.as_ref().ok_or(crate::presence::PresenceError::NoSpace)?;
        s.announce_position(agent, position, info).await
    }

    /// The agents within `radius` of `position` (see [`crate::presence::Spatial::query_local`]).
    pub async fn query_local(
        &self,
        position: crate::spatial::Position,
        radius: f64,
    ) -> Result<crate::presence::Nearby, crate::presence::PresenceError> {
        let s = self.spatial.as_ref().ok_or(crate::presence::PresenceError::NoSpace)?;
        s.query_local(position, radius).await
    }

    /// The newest certified state in the DHT, checked against the genesis (as
    /// [`get_state`] from any node).
    pub async fn get_state(&self) -> Result<FetchedState<S>, GetStateError> {
        read_state::<S>(&self.node, &self.genesis).await
    }

    /// The mesh id.
    pub fn id(&self) -> Digest {
        self.id
    }

    /// Certified rounds from now on (a slow receiver misses rounds rather than holding the mesh).
    pub fn rounds(&self) -> broadcast::Receiver<Arc<Certified<S>>> {
        self.rounds.subscribe()
    }

    /// Pools `input` here and gossips it to the other members.
    pub async fn submit(&self, input: SignedInput) -> Result<Digest, InputError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Submit(input, tx)).await.map_err(|_| InputError::PoolFull)?;
        rx.await.unwrap_or(Err(InputError::PoolFull))
    }

    /// Counters and the last certified round; `None` if the mesh stopped.
    pub async fn status(&self) -> Option<MeshStatus> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Status(tx)).await.ok()?;
        let mut st = rx.await.ok()?;
        st.spatial = self.spatial.as_ref().map(crate::presence::Spatial::stats);
        Some(st)
    }

    /// Stops the mesh task (the node keeps running).
    pub fn stop(&self) {
        self.task.abort();
    }
}

type Latest<S> = Option<Arc<Certified<S>>>;

struct Driver<W: World> {
    node: Node,
    topic: String,
    core: MeshCore<W>,
    rounds: broadcast::Sender<Arc<Certified<W::State>>>,
    undecodable: u64,
    /// The newest certified round with its own certificate, for the store worker.
    latest: watch::Sender<Latest<W::State>>,
    counters: Arc<StoreCounters>,
    member: bool,
    /// For catch-up reads to report back.
    cmd: mpsc::Sender<Cmd<W::State>>,
    guard_file: Option<std::path::PathBuf>,
    /// The test-only fault switch, with the key an equivocator signs with.
    fault: Option<(crate::core::Fault, Identity)>,
    fetching: bool,
    /// Members whose equivocation was logged already.
    warned: std::collections::BTreeSet<u16>,
    last_fetch: Option<Instant>,
    caught_up: u64,
}

impl<W: World> Driver<W> {
    async fn run(mut self, mut sub: suprnova_node::Subscription, mut cmds: mpsc::Receiver<Cmd<W::State>>) {
        // A restarted member, or one that joins a running mesh, starts from the newest state in
        // the DHT (if there is one yet).
        self.fetch_state();
        loop {
            let wake = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = sub.recv() => match ev {
                    Some(TopicEvent::Message { payload, .. }) => self.on_wire(&payload),
                    Some(_) => {}
                    None => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Submit(input, reply)) => {
                        let r = self.core.submit(input.clone());
                        if r.is_ok() {
                            self.publish(&Wire::Input(input)).await;
                        }
                        let _ = reply.send(r);
                    }
                    Some(Cmd::Fetched(r)) => {
                        self.fetching = false;
                        match r {
                            Ok(f) => {
                                let p = f.proposal.clone();
                                if self.core.catch_up(Instant::now(), f.round, f.state, p, f.certificate) {
                                    self.caught_up += 1;
                                    tracing::info!(round = f.round, "mesh: caught up from the DHT");
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "mesh: catch-up read failed"),
                        }
                    }
                    Some(Cmd::Status(reply)) => {
                        let _ = reply.send(MeshStatus {
                            mesh_id: self.core.mesh_id(),
                            round: self.core.final_round(),
                            pool: self.core.pool_len(),
                            stats: self.core.stats().clone(),
                            agreement: self.core.agreement_stats(),
                            undecodable: self.undecodable,
                            stored: self.counters.stored.load(Ordering::Relaxed),
                            store_skipped: self.counters.skipped.load(Ordering::Relaxed),
                            store_failed: self.counters.failed.load(Ordering::Relaxed),
                            last_store_error: self.counters.last_error.lock().ok().and_then(|e| e.clone()),
                            caught_up: self.caught_up,
                            spatial: None,
                        });
                    }
                    None => return,
                },
                () = sleep => self.core.handle_timeout(Instant::now()),
            }
            self.flush().await;
            if self.core.behind() {
                self.fetch_state();
            }
        }
    }

    /// Starts one read of the newest certified state from the DHT (at most one at a time, at
    /// most one every 500 ms); the result comes back as `Cmd::Fetched`.
    fn fetch_state(&mut self) {
        let now = Instant::now();
        if self.fetching
            || self.last_fetch.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(500))
        {
            return;
        }
        self.fetching = true;
        self.last_fetch = Some(now);
        let (node, mesh, tx) = (self.node.clone(), self.core.mesh_id(), self.cmd.clone());
        tokio::spawn(async move {
            let r = get_state::<W>(&node, mesh).await.map_err(|e| e.to_string());
            let _ = tx.send(Cmd::Fetched(r)).await;
        });
    }

    fn on_wire(&mut self, payload: &[u8]) {
        match postcard::from_bytes::<Wire>(payload) {
            Ok(Wire::Agreement(m)) => self.core.handle_message(Instant::now(), m),
            Ok(Wire::Input(i)) => {
                // Refusals are counted by the core; a duplicate is the usual case.
                let _ = self.core.submit(i);
            }
            Ok(Wire::Evidence(_)) => {}
            Err(_) => self.undecodable += 1,
        }
    }

    async fn publish(&self, w: &Wire) {
        let Ok(bytes) = postcard::to_allocvec(w) else { return };
        if let Err(e) = self.node.publish(&self.topic, bytes).await {
            tracing::debug!(error = %e, "mesh: publish failed");
        }
    }

    async fn flush(&mut self) {
        while let Some(o) = self.core.poll() {
            match o {
                // An observer has nothing to say: members send every vote and block.
                MeshOut::Send(_) if !self.member => {}
                MeshOut::Send(m) => match &self.fault {
                    None => self.publish(&Wire::Agreement(m)).await,
                    Some((crate::core::Fault::Silent, _)) => {}
                    Some((crate::core::Fault::Equivocate, id)) => {
                        let twin = match &m {
                            Message::Vote { height, choice: Some(d), signer, .. } => {
                                let mut other = *d;
                                other[0] ^= 0xff;
                                let bytes = simplex::vote_message(&self.core.mesh_id(), *height, &Some(other));
                                Some(Message::Vote {
                                    height: *height,
                                    choice: Some(other),
                                    signer: *signer,
                                    sig: simplex::Sig(id.sign(&bytes)),
                                })
                            }
                            _ => None,
                        };
                        self.publish(&Wire::Agreement(m)).await;
                        if let Some(t) = twin {
                            self.publish(&Wire::Agreement(t)).await;
                        }
                    }
                },
                MeshOut::Certified(c) => {
                    let c = Arc::new(c);
                    if self.member && c.certificate.is_some() {
                        let replaced = self.latest.send_replace(Some(c.clone()));
                        if replaced.is_some() {
                            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = self.rounds.send(c);
                }
                MeshOut::Evidence(e) => {
                    // Counted by the agreement each time; logged and published by members once
                    // per equivocator (one proof convicts it; a copy per height from every node
                    // would be a flood).
                    if self.member && self.warned.insert(e.signer) {
                        tracing::warn!(signer = e.signer, height = e.height, "mesh: a member equivocated");
                        self.publish(&Wire::Evidence(e)).await;
                    }
                }
                MeshOut::Gap { from, to } => tracing::debug!(from, to, "mesh: final blocks missed; catching up"),
                MeshOut::Reserve { up_to } => match self.guard_file.as_deref().map(|p| write_guard(p, up_to)) {
                    Some(Ok(())) => self.core.reserved(up_to),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "mesh: cannot record the signing guard; not signing past it")
                    }
                    None => self.core.reserved(up_to),
                },
            }
        }
    }
}

/// How long heads and round records live in the DHT; the worker rewrites the newest well before.
const RECORD_TTL: Duration = Duration::from_secs(600);

/// Writes the genesis once, then each newest certified round: its record (state inline when it
/// fits, else a blob this member serves) and our head. Rounds certified while a write is under
/// way are coalesced to the newest. The newest is rewritten every 100 s while nothing new comes.
async fn store_worker<S: serde::Serialize + Send + Sync + 'static>(
    node: Node,
    genesis: Genesis,
    mut rx: watch::Receiver<Latest<S>>,
    counters: Arc<StoreCounters>,
) {
    let mesh = genesis.mesh_id();
    if let Err(e) = store_genesis(&node, &genesis).await {
        tracing::warn!(error = %e, "mesh: could not store the genesis");
    }
    // Blobs served for the newest rounds (state or record too large for one DHT value): the
    // last two are kept (a reader may be fetching the one before the newest), older ones
    // dropped, so a long-running mesh with a large state does not grow without bound.
    let mut served: std::collections::VecDeque<Vec<BlobHash>> = std::collections::VecDeque::new();
    loop {
        let changed = tokio::time::timeout(Duration::from_secs(100), rx.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            for b in served.iter().flatten() {
                node.remove_blob(b);
            }
            return;
        }
        let Some(c) = rx.borrow_and_update().clone() else { continue };
        let mut blobs = Vec::new();
        let stored = store_round(&node, &mesh, &c, &mut blobs).await;
        served.push_back(blobs);
        while served.len() > 2 {
            for b in served.pop_front().unwrap_or_default() {
                // The same state (a world at rest) gives the same blob: keep it while it is newer.
                if !served.iter().flatten().any(|k| *k == b) {
                    node.remove_blob(&b);
                }
            }
        }
        match stored {
            Ok(()) => counters.stored.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, round = c.round, "mesh: storing a round failed");
                if let Ok(mut last) = counters.last_error.lock() {
                    *last = Some(format!("round {}: {e}", c.round));
                }
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The genesis as an immutable record under the mesh id when it fits one DHT value (up to
/// about 25 members); else as a blob this member serves, located through the set under
/// `store::genesis_locator_key` (wire-spec §13.8).
async fn store_genesis(node: &Node, genesis: &Genesis) -> Result<(), StoreError> {
    let bytes = postcard::to_allocvec(genesis).map_err(StoreError::Encode)?;
    if bytes.len() <= MAX_IMMUTABLE {
        node.put_immutable(bytes).await?;
        return Ok(());
    }
    let hash = node.add_blob(bytes);
    node.provide_blob(hash).await?;
    node.put_set_entry(Key(store::genesis_locator_key(&genesis.mesh_id())), &hash.0, RECORD_TTL).await?;
    Ok(())
}

async fn store_round<S: serde::Serialize>(
    node: &Node,
    mesh: &Digest,
    c: &Certified<S>,
    blobs: &mut Vec<BlobHash>,
) -> Result<(), StoreError> {
    let Some(certificate) = c.certificate.clone() else { return Ok(()) };
    let bytes = postcard::to_allocvec(&*c.state).map_err(StoreError::Encode)?;
    let base = RoundRecord {
        height: c.proposal.height,
        parent_height: c.proposal.parent_height,
        parent: c.proposal.parent,
        payload: c.proposal.payload.clone(),
        certificate,
        state: StateRef::Blob([0; 32]),
    };
    let inline = BoundedBytes::try_from(bytes.as_slice())
        .ok()
        .map(|b| RoundRecord { state: StateRef::Inline(b), ..base.clone() });
    let fits = |r: &RoundRecord| postcard::to_allocvec(r).ok().filter(|v| v.len() <= MAX_IMMUTABLE);
    let record = match inline.as_ref().and_then(fits) {
        Some(v) => v,
        None => {
            let hash = node.add_blob(bytes);
            blobs.push(hash);
            node.provide_blob(hash).await?;
            postcard::to_allocvec(&RoundRecord { state: StateRef::Blob(hash.0), ..base }).map_err(StoreError::Encode)?
        }
    };
    let at = if record.len() <= MAX_IMMUTABLE {
        let key = Key::for_immutable(&record);
        // Not republished: each round has its own record, and only the newest matters (the
        // worker rewrites it while no newer round comes), so older ones lapse after RECORD_TTL.
        node.put_once(key, immutable(&record)?, RECORD_TTL).await?;
        Ref::Immutable(key.0)
    } else {
        let hash = node.add_blob(record);
        blobs.push(hash);
        node.provide_blob(hash).await?;
        Ref::Blob(hash.0)
    };
    let head = postcard::to_allocvec(&Head { round: c.round, record: at }).map_err(StoreError::Encode)?;
    node.put_set_entry(Key(store::heads_key(mesh)), &head, RECORD_TTL).await?;
    Ok(())
}

fn immutable(bytes: &[u8]) -> Result<suprnova_dht::wire::Record, StoreError> {
    let value = BoundedBytes::try_from(bytes).map_err(|_| StoreError::TooLarge(bytes.len()))?;
    Ok(suprnova_dht::wire::Record::Immutable { value })
}

/// Why a certified round (or the genesis) could not be stored.
#[derive(Debug, thiserror::Error)]
enum StoreError {
    /// It did not encode.
    #[error("encoding: {0}")]
    Encode(#[source] postcard::Error),
    /// Over an immutable record's size.
    #[error("record of {0} bytes, over the {MAX_IMMUTABLE} an immutable value holds")]
    TooLarge(usize),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A state read from the DHT and checked.
#[derive(Clone, Debug)]
pub struct FetchedState<S> {
    /// Its round.
    pub round: u64,
    /// Its hash (as certified).
    pub state_hash: Digest,
    /// The state.
    pub state: S,
    /// The certificate that proves it.
    pub certificate: simplex::Certificate,
    /// Its block's header (the body, the inputs, is not stored).
    pub proposal: simplex::Proposal,
    /// Heads that were not used because they did not check out (writer key, why).
    pub rejected: Vec<([u8; 32], HeadRejection)>,
}

/// Heads examined at most by one `get_state` (a set holds at most 64 writers).
const MAX_HEADS_TRIED: usize = 64;

/// Why `get_state` found nothing.
#[derive(Debug, thiserror::Error)]
pub enum GetStateError {
    /// The genesis is not in the DHT (or not reachable).
    #[error("genesis not found: {0}")]
    NoGenesis(NodeError),
    /// The genesis record does not decode or hash to the mesh id.
    #[error("genesis record is invalid")]
    BadGenesis,
    /// No head led to a record whose certificate and state check out.
    #[error("no valid certified state ({} heads rejected)", .0.len())]
    NoValidHead(Vec<([u8; 32], HeadRejection)>),
}

/// Why a head of a mesh's head set was not used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HeadRejection {
    /// The head does not decode.
    #[error("head does not decode")]
    Undecodable,
    /// A non-member's head points at a blob (only members may make readers fetch blobs).
    #[error("a non-member's head points at a blob")]
    NonMemberHeadBlob,
    /// A non-member's round record points at a blob.
    #[error("a non-member's record points at a blob")]
    NonMemberRecordBlob,
    /// The record or state could not be fetched.
    #[error("fetch failed: {0}")]
    Fetch(#[source] std::sync::Arc<NodeError>),
    /// The record or state does not check out.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Largest genesis blob a reader fetches (256 members need about 8.3 KiB).
const MAX_GENESIS_BLOB: u64 = 16 << 10;
/// Largest round-record blob (a certificate of 256 signatures and a header: about 17 KiB).
const MAX_RECORD_BLOB: u64 = 64 << 10;

/// Reads `r`; a blob only if its manifest says it is at most `max` bytes (None: any size),
/// so a planted reference cannot make the reader download something large.
async fn fetch(node: &Node, r: Ref, max: Option<u64>) -> Result<Vec<u8>, HeadRejection> {
    let failed = |e| HeadRejection::Fetch(std::sync::Arc::new(e));
    match r {
        Ref::Immutable(k) => node.get_immutable(Key(k)).await.map_err(failed),
        Ref::Blob(h) => {
            let hash = BlobHash(h);
            let providers = node.find_blob_providers(hash).await.map_err(failed)?;
            // Refused from the manifest, before any chunk, when over `max`.
            let max = max.unwrap_or(u64::MAX);
            let (data, _) = node.fetch_blob_at_most(hash, &providers, max, None).await.map_err(failed)?;
            Ok(data.to_vec())
        }
    }
}

/// Reads mesh `mesh`'s newest certified state from the DHT, from any node, member or not: the
/// genesis, then the heads, newest first, until one leads to a record whose certificate verifies
/// against the genesis' members and whose state hashes to the certified hash. Heads that fail
/// are reported in `rejected`, with why.
pub async fn get_state<W: World>(node: &Node, mesh: Digest) -> Result<FetchedState<W::State>, GetStateError> {
    let genesis = get_genesis(node, mesh).await?;
    read_state::<W::State>(node, &genesis).await
}

/// [`get_state`] with the genesis already in hand (and checked).
pub async fn read_state<S: Serialize + serde::de::DeserializeOwned>(
    node: &Node,
    genesis: &Genesis,
) -> Result<FetchedState<S>, GetStateError> {
    let mesh = genesis.mesh_id();
    let entries = node.get_set(Key(store::heads_key(&mesh))).await.unwrap_or_default();
    let mut rejected = Vec::new();
    let mut heads: Vec<([u8; 32], Head)> = Vec::new();
    for e in entries {
        match postcard::from_bytes::<Head>(e.value.as_slice()) {
            Ok(h) => heads.push((e.public_key, h)),
            Err(_) => rejected.push((e.public_key, HeadRejection::Undecodable)),
        }
    }
    heads.sort_by_key(|h| std::cmp::Reverse(h.1.round));
    for (writer, head) in heads.into_iter().take(MAX_HEADS_TRIED) {
        // Anyone can write a head. Only members' heads may send us fetching blobs (which can be
        // large); anyone else's must point at an immutable record with the state inline, so
        // that refusing it costs one small read.
        let member = genesis.members.contains(&writer);
        let checked: Result<FetchedState<S>, HeadRejection> = async {
            if !member && matches!(head.record, Ref::Blob(_)) {
                return Err(HeadRejection::NonMemberHeadBlob);
            }
            let rec: RoundRecord = postcard::from_bytes(&fetch(node, head.record, Some(MAX_RECORD_BLOB)).await?)
                .map_err(|_| RecordError::Malformed)?;
            // The round is checked before any signature.
            let header: crate::world::BatchHeader =
                postcard::from_bytes(rec.payload.as_slice()).map_err(|_| RecordError::Header(0))?;
            if header.round != head.round {
                return Err(RecordError::Header(header.round).into());
            }
            let header = store::verify_record(genesis, &rec)?;
            let state_bytes = match &rec.state {
                StateRef::Inline(b) => b.to_vec(),
                StateRef::Blob(_) if !member => return Err(HeadRejection::NonMemberRecordBlob),
                StateRef::Blob(h) => fetch(node, Ref::Blob(*h), None).await?,
            };
            let state = store::verify_state::<S>(&header, &state_bytes)?;
            let proposal = simplex::Proposal {
                height: rec.height,
                parent_height: rec.parent_height,
                parent: rec.parent,
                payload: rec.payload.clone(),
                body: BoundedBytes::default(),
            };
            Ok(FetchedState {
                round: header.round,
                state_hash: header.state_hash,
                state,
                certificate: rec.certificate,
                proposal,
                rejected: Vec::new(),
            })
        }
        .await;
        match checked {
            Ok(mut s) => {
                s.rejected = rejected;
                return Ok(s);
            }
            Err(why) => rejected.push((writer, why)),
        }
    }
    Err(GetStateError::NoValidHead(rejected))
}
