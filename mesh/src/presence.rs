//! The spatial index on the network: agents' signed presence in the cells of a mesh's space,
//! and radius queries that read a bounded number of cells.
//!
//! An agent at position p writes one entry per indexed level, in the set of the cell that holds
//! p at that level (wire-spec §13.9). The entry is a DHT set entry signed by the **agent's** key
//! with a TTL, its value a [`Presence`]. Moving writes `Here` in the new cells and `Gone` over
//! the entry in each cell it left; a [`Spatial`] re-writes its agents' entries before they
//! expire, and [`Spatial::withdraw`] removes one.
//!
//! A set holds at most 64 writers (wire-spec §7.3). When more agents crowd a coarse cell, the
//! oldest entries are evicted or newcomers refused, so a coarse cell may miss agents; they are
//! still present at every finer level. A query therefore treats a cell that returns
//! `dense_at` or more entries as *dense* and also reads its children at the next finer level
//! that meet the ball, within its read budget. A dense cell at the finest level, or one the
//! budget cannot descend into, makes the answer `complete: false`, never silently short.
//!
//! The stack design's spatial calls map here: `hash_position` is [`Space::cell`] and
//! [`Space::cell_key`]; `query_local_agents(position, radius)` is [`Spatial::query_local`];
//! an agent's announcement of where it is, is [`Spatial::announce_position`].
//! (`store_state` and `retrieve_state` are the members' store worker and [`crate::net::get_state`].)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Key, Record, SetEntry};
use suprnova_node::{Node, NodeError};
use tokio::task::JoinSet;

use crate::simplex::Digest;
use crate::spatial::{Cell, MAX_INFO, Neighbour, Position, Presence, PresenceDrops, Sifter, Space, SpatialError};

/// Tuning of a [`Spatial`].
#[derive(Clone, Debug)]
pub struct SpatialConfig {
    /// Lifetime of a presence entry; entries are re-written after a third of it.
    pub ttl: Duration,
    /// Lifetime of a `Gone` entry (it only has to outlive the entry it replaced on replicas
    /// that missed the replacement, so it can be short; it occupies a slot meanwhile).
    pub gone_ttl: Duration,
    /// Cells a query reads at its first level, at most (it picks the finest level that fits).
    pub max_cells: u64,
    /// Cells a query reads in all, descents into dense cells included.
    pub max_reads: u64,
    /// Entries at which a cell counts as dense (the DHT holds at most 64 per set).
    pub dense_at: usize,
    /// Agents one `Spatial` announces, at most.
    pub max_agents: usize,
    /// DHT writes or reads in flight at once, per call.
    pub parallel: usize,
}

impl Default for SpatialConfig {
    fn default() -> Self {
        SpatialConfig {
            ttl: Duration::from_secs(120),
            gone_ttl: Duration::from_secs(30),
            max_cells: 16,
            max_reads: 64,
            dense_at: 48,
            max_agents: 100_000,
            parallel: 32,
        }
    }
}

/// Why a presence call failed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The position, radius or space is refused.
    #[error(transparent)]
    Spatial(#[from] SpatialError),
    /// The mesh has no space (its world does not position agents).
    #[error("this mesh's world has no space")]
    NoSpace,
    /// `info` is longer than `MAX_INFO` bytes.
    #[error("info of {0} bytes is over {MAX_INFO}")]
    InfoTooLong(usize),
    /// This handle already announces `max_agents` agents.
    #[error("too many agents on this handle ({0})")]
    TooManyAgents(usize),
    /// Every replica of the agent's finest cell refused it as full (writers with longer-lived
    /// entries hold all 64 slots). The agent is not findable there until that changes.
    #[error("cell at level {level} is full")]
    CellFull {
        /// The finest level.
        level: u8,
    },
    /// No replica stored the agent's finest-level entry.
    #[error("presence at level {level} not stored: {why}")]
    NotStored {
        /// The level.
        level: u8,
        /// Why.
        #[source]
        why: WriteFailure,
    },
}

/// What one level's write achieved.
#[derive(Clone, Debug)]
pub enum LevelWrite {
    /// Stored on this many replicas.
    Stored(usize),
    /// Every replica that answered refused the cell as full.
    Full,
    /// Not stored, for this reason.
    Failed(WriteFailure),
}

/// Why a level's entry was not stored.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteFailure {
    /// The put went through but no replica stored the entry.
    #[error("no replica stored it")]
    NoReplica,
    /// The write was not made (the announcement stopped first).
    #[error("not written")]
    NotWritten,
    /// The node's put failed (or a replica refused), with the reason.
    #[error("{0}")]
    Node(#[source] Arc<NodeError>),
}

/// What an announcement wrote.
#[derive(Clone, Debug)]
pub struct Announced {
    /// The entries' sequence number.
    pub seq: u64,
    /// Per indexed level, coarse to fine: the cell and what its write achieved.
    pub levels: Vec<(Cell, LevelWrite)>,
    /// `Gone` entries written in cells the agent left.
    pub left: usize,
}

/// Agents within a radius.
#[derive(Clone, Debug)]
pub struct Nearby {
    /// The agents, nearest first.
    pub agents: Vec<Neighbour>,
    /// The level the query started at.
    pub level: u8,
    /// Cells read (descents included).
    pub cells_read: u64,
    /// Cells that were dense and read again at a finer level.
    pub descended: u64,
    /// False if a dense cell could not be descended into (finest level, or the read budget),
    /// or a cell could not be read: agents may be missing.
    pub complete: bool,
    /// Entries dropped, by reason.
    pub drops: PresenceDrops,
}

/// Counters of a [`Spatial`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpatialStats {
    /// Announcements (first, moves and refreshes).
    pub announces: u64,
    /// Entries written (`Here` and `Gone`).
    pub writes: u64,
    /// Level writes refused because the cell was full.
    pub cells_full: u64,
    /// Level writes that failed otherwise.
    pub write_failures: u64,
    /// Queries answered.
    pub queries: u64,
    /// Queries whose answer was incomplete.
    pub incomplete: u64,
    /// Cells read by queries.
    pub cells_read: u64,
    /// Entries dropped by queries because they did not decode.
    pub dropped_undecodable: u64,
    /// Entries dropped because their position was outside the box.
    pub dropped_outside: u64,
    /// Entries dropped because their position was not in the cell they were found in.
    pub dropped_misplaced: u64,
    /// Agents announced by this handle now.
    pub agents: u64,
}

#[derive(Default)]
struct Counters {
    announces: AtomicU64,
    writes: AtomicU64,
    cells_full: AtomicU64,
    write_failures: AtomicU64,
    queries: AtomicU64,
    incomplete: AtomicU64,
    cells_read: AtomicU64,
    undecodable: AtomicU64,
    outside: AtomicU64,
    misplaced: AtomicU64,
}

/// One entry to write: the level slot it reports to (None for `Gone`), key, entry, lifetime.
type Job = (Option<usize>, Key, SetEntry, Duration);

struct Agent {
    seed: [u8; 32],
    position: Position,
    info: Vec<u8>,
    seq: u64,
    cells: Vec<Cell>,
    written: Instant,
}

struct Inner {
    node: Node,
    mesh: Digest,
    space: Space,
    cfg: SpatialConfig,
    agents: Mutex<HashMap<[u8; 32], Agent>>,
    counters: Counters,
}

/// The spatial index of one mesh, on a node. Cheap to clone; a background task re-writes the
/// announced agents' entries until the last clone is dropped.
#[derive(Clone)]
pub struct Spatial {
    inner: Arc<Inner>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Writes one signed set entry and reports what the replicas said.
async fn write_entry(node: Node, key: Key, entry: SetEntry, ttl: Duration) -> LevelWrite {
    // Not republished by the DHT: the handle re-writes live agents itself, and `Gone` entries
    // must lapse.
    let (r, answers) = node.put_reported(key, Record::SetEntry(entry), ttl, false).await;
    let mut full = 0usize;
    let mut other = None;
    for (_, answer) in answers {
        match answer {
            Ok(()) => {}
            Err(NodeError::Quota) => full += 1,
            Err(e) => other = Some(e),
        }
    }
    match r {
        Ok(o) if o.stored > 0 => LevelWrite::Stored(o.stored),
        _ if full > 0 && other.is_none() => LevelWrite::Full,
        Err(NodeError::Quota) => LevelWrite::Full,
        Ok(_) => LevelWrite::Failed(other.map_or(WriteFailure::NoReplica, |e| WriteFailure::Node(Arc::new(e)))),
        Err(e) => LevelWrite::Failed(WriteFailure::Node(Arc::new(e))),
    }
}

impl Spatial {
    /// The spatial index of mesh `mesh` (whose genesis defines `space`) on `node`.
    pub fn new(node: Node, mesh: Digest, space: Space, cfg: SpatialConfig) -> Result<Spatial, PresenceError> {
        space.check()?;
        let inner = Arc::new(Inner {
            node,
            mesh,
            space,
            cfg,
            agents: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        });
        tokio::spawn(refresher(Arc::downgrade(&inner)));
        Ok(Spatial { inner })
    }

    /// The space.
    pub fn space(&self) -> &Space {
        &self.inner.space
    }

    /// Announces that `agent` is at `position` (hosted by this node), with `info`: writes its
    /// entry in the cell holding `position` at every level, and `Gone` in the cells it left.
    /// The entries are re-written before they expire until [`Spatial::withdraw`]. Fails if
    /// the finest level's entry was not stored (a coarser level that is full is reported in
    /// [`Announced::levels`] but not an error: queries descend past crowded cells).
    pub async fn announce_position(
        &self,
        agent: &Identity,
        position: Position,
        info: &[u8],
    ) -> Result<Announced, PresenceError> {
        let space = &self.inner.space;
        let cells = space.presence_cells(&position)?;
        if info.len() > MAX_INFO {
            return Err(PresenceError::InfoTooLong(info.len()));
        }
        let pk = agent.public_key();
        let (seq, old) = {
            let mut agents = self.inner.agents.lock().unwrap_or_else(|e| e.into_inner());
            let known = agents.get(&pk);
            if known.is_none() && agents.len() >= self.inner.cfg.max_agents {
                return Err(PresenceError::TooManyAgents(agents.len()));
            }
            let seq = unix_ms().max(known.map_or(0, |a| a.seq + 1));
            let old = known.map(|a| a.cells.clone()).unwrap_or_default();
            // Reserve the seq now so that concurrent calls for one agent never reuse it.
            agents.insert(
                pk,
                Agent {
                    seed: *agent.seed(),
                    position,
                    info: info.to_vec(),
                    seq,
                    cells: cells.clone(),
                    written: Instant::now(),
                },
            );
            (seq, old)
        };
        self.write(agent, position, info, seq, &cells, &old).await
    }

    async fn write(
        &self,
        agent: &Identity,
        position: Position,
        info: &[u8],
        seq: u64,
        cells: &[Cell],
        old: &[Cell],
    ) -> Result<Announced, PresenceError> {
        let inner = &self.inner;
        let pos = if inner.space.dims == 2 { [position[0], position[1], 0.0] } else { position };
        let here = Presence::Here {
            position: pos,
            node: *inner.node.id().as_bytes(),
            info: BoundedBytes::try_from(info).map_err(|_| PresenceError::InfoTooLong(info.len()))?,
        };
        let here = postcard::to_allocvec(&here).unwrap_or_default();
        let ttl_s = u32::try_from(inner.cfg.ttl.as_secs()).unwrap_or(u32::MAX);
        let mut jobs: Vec<Job> = Vec::new();
        for (i, c) in cells.iter().enumerate() {
            let key = Key(inner.space.cell_key(&inner.mesh, *c));
            if let Ok(e) = SetEntry::sign(agent, &key, seq, ttl_s, &here) {
                jobs.push((Some(i), key, e, inner.cfg.ttl));
            }
        }
        let left: Vec<Cell> = old.iter().filter(|c| !cells.contains(c)).copied().collect();
        jobs.extend(self.gone_jobs(agent, seq, &left));
        inner.counters.announces.fetch_add(1, Ordering::Relaxed);
        let mut results: Vec<Option<LevelWrite>> = vec![None; cells.len()];
        for (slot, w) in self.run(jobs).await {
            if let Some(r) = slot.and_then(|i| results.get_mut(i)) {
                *r = Some(w);
            }
        }
        let levels: Vec<(Cell, LevelWrite)> = cells
            .iter()
            .zip(results)
            .map(|(c, w)| (*c, w.unwrap_or(LevelWrite::Failed(WriteFailure::NotWritten))))
            .collect();
        match levels.last() {
            Some((c, LevelWrite::Full)) => Err(PresenceError::CellFull { level: c.level }),
            Some((c, LevelWrite::Failed(why))) => Err(PresenceError::NotStored { level: c.level, why: why.clone() }),
            _ => Ok(Announced { seq, levels, left: left.len() }),
        }
    }

    /// Removes `agent`'s presence: `Gone` in every cell it is in; no more refreshes.
    pub async fn withdraw(&self, agent: &Identity) -> usize {
        let pk = agent.public_key();
        let Some(a) = self.inner.agents.lock().unwrap_or_else(|e| e.into_inner()).remove(&pk) else { return 0 };
        let seq = unix_ms().max(a.seq + 1);
        // No new cells: every cell it was in gets `Gone`.
        let gone = self.write_gone(agent, seq, &a.cells).await;
        self.inner.counters.announces.fetch_add(1, Ordering::Relaxed);
        gone
    }

    async fn write_gone(&self, agent: &Identity, seq: u64, cells: &[Cell]) -> usize {
        let done = self.run(self.gone_jobs(agent, seq, cells)).await;
        done.iter().filter(|(_, w)| matches!(w, LevelWrite::Stored(_))).count()
    }

    /// `Gone` entries over `cells`.
    fn gone_jobs(&self, agent: &Identity, seq: u64, cells: &[Cell]) -> Vec<Job> {
        let inner = &self.inner;
        let gone = postcard::to_allocvec(&Presence::Gone).unwrap_or_default();
        let ttl_s = u32::try_from(inner.cfg.gone_ttl.as_secs()).unwrap_or(u32::MAX);
        cells
            .iter()
            .filter_map(|c| {
                let key = Key(inner.space.cell_key(&inner.mesh, *c));
                let e = SetEntry::sign(agent, &key, seq, ttl_s, &gone).ok()?;
                Some((None, key, e, inner.cfg.gone_ttl))
            })
            .collect()
    }

    /// Writes `jobs`, at most `parallel` at once, counting refusals; each job's slot and outcome.
    async fn run(&self, jobs: Vec<Job>) -> Vec<(Option<usize>, LevelWrite)> {
        let inner = &self.inner;
        inner.counters.writes.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(jobs.len());
        let mut set = JoinSet::new();
        let mut jobs = jobs.into_iter();
        loop {
            while set.len() < inner.cfg.parallel.max(1) {
                let Some((slot, key, e, ttl)) = jobs.next() else { break };
                let node = inner.node.clone();
                set.spawn(async move { (slot, write_entry(node, key, e, ttl).await) });
            }
            let Some(done) = set.join_next().await else { break };
            let Ok((slot, w)) = done else { continue };
            match &w {
                LevelWrite::Full => inner.counters.cells_full.fetch_add(1, Ordering::Relaxed),
                LevelWrite::Failed(_) => inner.counters.write_failures.fetch_add(1, Ordering::Relaxed),
                LevelWrite::Stored(_) => 0,
            };
            out.push((slot, w));
        }
        out
    }

    /// The agents within distance `radius` of `centre`, read from the DHT: the cells covering
    /// the ball at the finest level where at most `max_cells` do, read in parallel, plus the
    /// finer cells inside any dense one, within `max_reads` cells in all; filtered by exact
    /// distance.
    pub async fn query_local(&self, centre: Position, radius: f64) -> Result<Nearby, PresenceError> {
        let inner = &self.inner;
        let space = &inner.space;
        let (level, cells) = space.query_cells(&centre, radius, inner.cfg.max_cells)?;
        let mut sifter = Sifter::new(space, centre, radius);
        let mut wave = cells;
        let (mut read, mut descended, mut complete) = (0u64, 0u64, true);
        while !wave.is_empty() {
            read += wave.len() as u64;
            let mut next: Vec<Cell> = Vec::new();
            let mut set = JoinSet::new();
            let mut cells = wave.into_iter();
            loop {
                while set.len() < inner.cfg.parallel.max(1) {
                    let Some(c) = cells.next() else { break };
                    let node = inner.node.clone();
                    let key = Key(space.cell_key(&inner.mesh, c));
                    set.spawn(async move { (c, node.get_set(key).await) });
                }
                let Some(done) = set.join_next().await else { break };
                let Ok((cell, got)) = done else {
                    complete = false;
                    continue;
                };
                let entries = match got {
                    Ok(v) => v,
                    Err(NodeError::NotFound) => Vec::new(),
                    Err(_) => {
                        complete = false;
                        continue;
                    }
                };
                for e in &entries {
                    sifter.add(cell, e.public_key, e.seq, e.value.as_slice());
                }
                if entries.len() < inner.cfg.dense_at {
                    continue;
                }
                // Dense: agents may have been pushed out; read its children too.
                let budget = inner.cfg.max_reads.saturating_sub(read + next.len() as u64);
                match space.finer(cell.level).and_then(|f| space.children_in(cell, f, &centre, radius, budget)) {
                    Some(children) => {
                        descended += 1;
                        next.extend(children);
                    }
                    None => complete = false,
                }
            }
            wave = next;
        }
        let drops = sifter.drops;
        let c = &inner.counters;
        c.queries.fetch_add(1, Ordering::Relaxed);
        c.cells_read.fetch_add(read, Ordering::Relaxed);
        c.undecodable.fetch_add(drops.undecodable, Ordering::Relaxed);
        c.outside.fetch_add(drops.outside, Ordering::Relaxed);
        c.misplaced.fetch_add(drops.misplaced, Ordering::Relaxed);
        if !complete {
            c.incomplete.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Nearby { agents: sifter.finish(), level, cells_read: read, descended, complete, drops })
    }

    /// Counters.
    pub fn stats(&self) -> SpatialStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SpatialStats {
            announces: l(&c.announces),
            writes: l(&c.writes),
            cells_full: l(&c.cells_full),
            write_failures: l(&c.write_failures),
            queries: l(&c.queries),
            incomplete: l(&c.incomplete),
            cells_read: l(&c.cells_read),
            dropped_undecodable: l(&c.undecodable),
            dropped_outside: l(&c.outside),
            dropped_misplaced: l(&c.misplaced),
            agents: self.inner.agents.lock().map(|a| a.len() as u64).unwrap_or(0),
        }
    }
}

/// Re-writes entries a third of their TTL old, a batch at a time, while the handle lives.
async fn refresher(inner: Weak<Inner>) {
    loop {
        let period = match inner.upgrade() {
            Some(i) => (i.cfg.ttl / 6).max(Duration::from_secs(1)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(strong) = inner.upgrade() else { return };
        let spatial = Spatial { inner: strong };
        let due: Vec<([u8; 32], Position, Vec<u8>)> = {
            let agents = spatial.inner.agents.lock().unwrap_or_else(|e| e.into_inner());
            let age = spatial.inner.cfg.ttl / 3;
            agents
                .iter()
                .filter(|(_, a)| a.written.elapsed() >= age)
                .take(4096)
                .map(|(_, a)| (a.seed, a.position, a.info.clone()))
                .collect()
        };
        for (seed, position, info) in due {
            let id = Identity::from_seed(seed);
            // Still announced (not withdrawn meanwhile)? Then re-announce where it is.
            if spatial.inner.agents.lock().map(|a| a.contains_key(&id.public_key())).unwrap_or(false)
                && let Err(e) = spatial.announce_position(&id, position, &info).await
            {
                tracing::debug!(error = %e, "presence refresh failed");
            }
        }
        drop(spatial);
    }
}
