//! The tokio driver: a [`MeshCore`] on a running [`Node`], reaching the network only through it.
//!
//! Every mesh has a topic, `"suprnova/mesh/v1/" + hex(mesh id)`. Members and observers subscribe;
//! agreement messages and inputs travel on it as signed broadcasts ([`Wire`]), so an observer
//! follows the certified rounds as they happen. One task owns the core; [`Mesh`] is its handle.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use suprnova_dht::identity::Identity;
use suprnova_node::{Node, NodeError, TopicEvent};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::core::{Certified, MeshConfig, MeshCore, MeshError, MeshOut, MeshStats};
use crate::simplex::{self, Digest, Evidence, Message};
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

/// Why a mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The genesis, world or initial state disagree.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The node refused the subscription.
    #[error("node: {0}")]
    Node(#[from] NodeError),
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
}

enum Cmd {
    Submit(SignedInput, oneshot::Sender<Result<Digest, InputError>>),
    Status(oneshot::Sender<MeshStatus>),
}

/// Handle to a running mesh. Cheap to clone.
pub struct Mesh<S> {
    id: Digest,
    cmd: mpsc::Sender<Cmd>,
    rounds: broadcast::Sender<Arc<Certified<S>>>,
    task: Arc<JoinHandle<()>>,
}

impl<S> Clone for Mesh<S> {
    fn clone(&self) -> Self {
        Mesh { id: self.id, cmd: self.cmd.clone(), rounds: self.rounds.clone(), task: self.task.clone() }
    }
}

impl<S: Send + Sync + 'static> Mesh<S> {
    /// Starts the mesh born from `genesis` with initial state `s0` on `node`: as a member if
    /// `identity` holds one of the genesis' member keys, else as an observer.
    pub async fn start<W: World<State = S>>(
        node: Node,
        world: W,
        genesis: Genesis,
        s0: S,
        identity: Option<Identity>,
        cfg: MeshConfig,
    ) -> Result<Mesh<S>, StartError> {
        let core = MeshCore::new(world, genesis, s0, identity, cfg, Instant::now())?;
        let id = core.mesh_id();
        let topic = topic_name(&id);
        let sub = node.subscribe(&topic).await?;
        let (cmd, rx) = mpsc::channel(256);
        let (rounds, _) = broadcast::channel(1024);
        let driver = Driver { node, topic, core, rounds: rounds.clone(), undecodable: 0 };
        let task = tokio::spawn(driver.run(sub, rx));
        Ok(Mesh { id, cmd, rounds, task: Arc::new(task) })
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
        rx.await.ok()
    }

    /// Stops the mesh task (the node keeps running).
    pub fn stop(&self) {
        self.task.abort();
    }
}

struct Driver<W: World> {
    node: Node,
    topic: String,
    core: MeshCore<W>,
    rounds: broadcast::Sender<Arc<Certified<W::State>>>,
    undecodable: u64,
}

impl<W: World> Driver<W> {
    async fn run(mut self, mut sub: suprnova_node::Subscription, mut cmds: mpsc::Receiver<Cmd>) {
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
                    Some(Cmd::Status(reply)) => {
                        let _ = reply.send(MeshStatus {
                            mesh_id: self.core.mesh_id(),
                            round: self.core.final_round(),
                            pool: self.core.pool_len(),
                            stats: self.core.stats().clone(),
                            agreement: self.core.agreement_stats(),
                            undecodable: self.undecodable,
                        });
                    }
                    None => return,
                },
                () = sleep => self.core.handle_timeout(Instant::now()),
            }
            self.flush().await;
        }
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
                MeshOut::Send(m) => self.publish(&Wire::Agreement(m)).await,
                MeshOut::Certified(c) => {
                    let _ = self.rounds.send(Arc::new(c));
                }
                MeshOut::Evidence(e) => {
                    tracing::warn!(signer = e.signer, height = e.height, "mesh: a member equivocated");
                    self.publish(&Wire::Evidence(e)).await;
                }
                MeshOut::Gap { from, to } => tracing::info!(from, to, "mesh: final blocks missed"),
            }
        }
    }
}
