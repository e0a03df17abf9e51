//! The tokio driver: a [`MeshCore`] on a running [`Node`], reaching the network only through it.
//!
//! Every mesh has a topic, `"suprnova/mesh/v1/" + hex(mesh id)`. Members and observers subscribe;
//! agreement messages and inputs travel on it as signed broadcasts ([`Wire`]), so an observer
//! follows the certified rounds as they happen. One task owns the core; [`Mesh`] is its handle.

mod driver;
mod publish;
mod state;

use driver::{Driver, Latest};
use publish::store_worker;
pub use state::{FetchedState, GetStateError, HeadRejection, get_genesis, get_state, read_state};

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
            identity.as_ref().map(|i| Identity::from_seed_with(*i.seed(), i.crypto())),
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
        let id = identity.as_ref().map(|i| Identity::from_seed_with(*i.seed(), i.crypto()));
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
        let driver = Driver {
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
