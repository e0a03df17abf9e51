//! Example worlds where agents organise themselves on a mesh: distributed chess whose pieces are
//! agents ([`chess`]), a particle universe whose particles are agents ([`universe`]), and an
//! SVG layout whose elements are agents ([`layout`]).
//!
//! Each world's F and ⊕ are a [`suprnova_mesh::world::World`] (sans-IO, deterministic); its
//! agents are [`crate::agent::Agent`]s; and (feature `net`) a runner starts N nodes on
//! 127.0.0.1, a mesh whose members are those nodes, and the agents spread over them:
//! `suprnova world chess|universe|layout --nodes N --seed S --out DIR`.

pub mod chess;
#[cfg(feature = "net")]
pub mod chess_game;
pub mod layout;
#[cfg(feature = "net")]
pub mod layout_game;
pub mod universe;
#[cfg(feature = "net")]
pub mod universe_game;

#[cfg(feature = "net")]
pub use cluster::{Cluster, follow, identity};

#[cfg(feature = "net")]
mod cluster {
    use std::sync::Arc;
    use std::time::Duration;

    use suprnova_dht::identity::Identity;
    use suprnova_mesh::net::Mesh;
    use suprnova_node::{Node, NodeConfig};
    use tokio::sync::watch;

    use crate::runtime::{Runtime, RuntimeConfig};

    /// A key derived from a world's seed: `BLAKE3-derive_key("suprnova world key", purpose ‖
    /// u64_le(seed) ‖ u64_le(i))`.
    pub fn identity(purpose: &str, seed: u64, i: u64) -> Identity {
        let mut h = blake3::Hasher::new_derive_key("suprnova world key");
        h.update(purpose.as_bytes());
        h.update(&seed.to_le_bytes());
        h.update(&i.to_le_bytes());
        Identity::from_seed(*h.finalize().as_bytes())
    }

    /// N nodes on 127.0.0.1, each bootstrapped from the first, each with an agent runtime.
    pub struct Cluster {
        /// The nodes.
        pub nodes: Vec<Node>,
        /// Their runtimes.
        pub runtimes: Vec<Runtime>,
    }

    impl Cluster {
        /// Starts `n` nodes (keys from `seed`) and their runtimes.
        pub async fn start(n: usize, seed: u64, cfg: RuntimeConfig) -> Result<Cluster, String> {
            let mut nodes: Vec<Node> = Vec::new();
            for i in 0..n {
                let mut c = NodeConfig::with_seed(*identity("node", seed, i as u64).seed(), ([127, 0, 0, 1], 0).into());
                c.dht.routing.exempt_local = true;
                let node = Node::spawn(c).await.map_err(|e| e.to_string())?;
                if let Some(first) = nodes.first() {
                    node.bootstrap(vec![first.target()]).await.map_err(|e| e.to_string())?;
                }
                nodes.push(node);
            }
            // A second pass fills routing tables beyond the first node.
            for node in nodes.iter().skip(1) {
                let _ = node.find_peers(node.id()).await;
            }
            let mut runtimes = Vec::new();
            for node in &nodes {
                runtimes.push(Runtime::start(node.clone(), cfg.clone()).await.map_err(|e| e.to_string())?);
            }
            Ok(Cluster { nodes, runtimes })
        }

        /// Stops the runtimes and the nodes.
        pub async fn stop(self) {
            for r in &self.runtimes {
                r.shutdown();
            }
            for n in &self.nodes {
                tokio::time::timeout(Duration::from_secs(5), n.shutdown()).await.ok();
            }
        }
    }

    /// The newest certified round of `mesh` (round number and state), kept current by a task.
    pub type View<S> = watch::Receiver<Option<(u64, Arc<S>)>>;

    /// Follows `mesh`'s certified rounds.
    pub fn follow<S>(mesh: &Mesh<S>) -> View<S>
    where
        S: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let (tx, rx) = watch::channel(None);
        let mut rounds = mesh.rounds();
        tokio::spawn(async move {
            loop {
                match rounds.recv().await {
                    Ok(c) => {
                        if tx.send(Some((c.round, c.state.clone()))).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        rx
    }
}
