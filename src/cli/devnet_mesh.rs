//! The devnet's mesh phase: 7 members run a Game-of-Life world with a 2-D space, two of them
//! byzantine through send filters (one silent, one equivocating); 100 input authors
//! submit through observer nodes; then non-members read the certified state from the DHT and
//! 1,000 positioned agents are queried by radius from every kind of node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use suprnova_dht::identity::Identity;
use suprnova_mesh::core::{MeshConfig, SendFilter};
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::net::{Mesh, read_state};
use suprnova_mesh::presence::{Spatial, SpatialConfig};
use suprnova_mesh::spatial::{Position, Space, distance};
use suprnova_mesh::testing::{EquivocateVotes, Silent};
use suprnova_mesh::world::{Batch, Genesis, Limits, SignedInput, WithSpace};
use suprnova_node::Node;
use tokio::task::JoinSet;

use super::devnet_common::{Latency, picker};

/// Members of the devnet mesh; the last two are byzantine.
pub const MEMBERS: usize = 7;
const OBSERVERS: usize = 8;
const AUTHORS: usize = 100;
const ROUND_INTERVAL_MS: u32 = 50;
/// Inputs every 20 ms.
const INPUTS_PER_TICK: usize = 2;
/// Simplex's timeout (3Δ) on loopback: a silent leader's height costs this.
const TIMEOUT_MS: u64 = 500;

/// What the mesh phase measured.
#[derive(Serialize, Default, Clone)]
pub struct MeshReport {
    /// Members of the mesh.
    pub members: usize,
    /// The byzantine members' faults (test-only switch).
    pub byzantine: Vec<String>,
    /// Observer nodes (non-members following the topic; the authors submit through them).
    pub observers: usize,
    /// Target time between rounds.
    pub round_interval_ms: u32,
    /// Simplex's timeout (3Δ): what a silent leader's height costs.
    pub timeout_ms: u64,
    /// Rounds certified by every honest member.
    pub rounds: u64,
    /// Wall time until then.
    pub elapsed_s: f64,
    /// Rounds per second.
    pub rounds_per_s: f64,
    /// Time between consecutive certified rounds at an honest member.
    pub round_gap: Latency,
    /// From an author's submit to the certified round that applies the input, at the node the
    /// author submitted through.
    pub input_finality: Latency,
    /// Bytes of a round's certificate (postcard), largest seen.
    pub certificate_bytes: usize,
    /// Inputs submitted by the authors.
    pub inputs_submitted: usize,
    /// Of those, applied in a certified round (each once).
    pub inputs_applied: usize,
    /// Inputs applied more than once (must be 0).
    pub inputs_applied_twice: usize,
    /// ⊥ votes (timeouts) at honest member 0: the silent member's heights cost one each.
    pub timeouts: u64,
    /// Heights at which an honest member caught the equivocator (the most of any).
    pub equivocations_detected: u64,
    /// Rounds whose state hash was compared across the honest members and observers.
    pub rounds_compared: u64,
    /// Rounds where two of them hold different state hashes (must be 0).
    pub disagreements: u64,
    /// Every honest member and observer holds the same state hash for every round it saw.
    pub hash_agreement: bool,
    /// `get_state` from non-member nodes: reads, and those that returned a state whose hash
    /// is the one the members certified for its round.
    pub get_state_reads: usize,
    /// Reads that checked out.
    pub get_state_ok: usize,
    /// Why the others did not (first few).
    pub get_state_errors: Vec<String>,
    /// Their latency (the genesis already read: heads, one record, checks).
    pub get_state: Latency,
    /// The spatial index.
    pub spatial: SpatialReport,
}

/// Spatial figures.
#[derive(Serialize, Default, Clone)]
pub struct SpatialReport {
    /// Agents announced (spread over every node).
    pub agents: usize,
    /// Wall time to announce them all (3 levels each, 64 at a time).
    pub announce_s: f64,
    /// Queries from random nodes.
    pub queries: usize,
    /// Queries whose answer equals the brute-force set.
    pub exact: usize,
    /// Queries that reported themselves incomplete.
    pub incomplete: usize,
    /// Query latency.
    pub query: Latency,
    /// Cells a query read, median.
    pub cells_read_p50: f64,
}

/// One subscriber's view: round → (state hash, when certified here, input ids applied).
type View = BTreeMap<u64, ([u8; 32], Instant, Vec<[u8; 32]>)>;

fn watch(mesh: &Mesh<Board>) -> Arc<Mutex<View>> {
    let view = Arc::new(Mutex::new(View::new()));
    let mut rx = mesh.rounds();
    let v = view.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(c) => {
                    let ids = postcard::from_bytes::<Batch>(c.proposal.body.as_slice())
                        .map(|b| b.inputs.iter().map(SignedInput::id).collect())
                        .unwrap_or_default();
                    if let Ok(mut v) = v.lock() {
                        v.insert(c.round, (c.state_hash, Instant::now(), ids));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    view
}

fn agreement() -> suprnova_mesh::simplex::Config {
    suprnova_mesh::simplex::Config { timeout: Duration::from_millis(TIMEOUT_MS), ..Default::default() }
}

fn last_round(v: &Arc<Mutex<View>>) -> u64 {
    v.lock().ok().and_then(|v| v.keys().next_back().copied()).unwrap_or(0)
}

/// Runs the phase on `nodes` (at least `MEMBERS` + 1), whose identity seeds are `seeds`.
pub async fn run(
    nodes: &[Node],
    seeds: &[[u8; 32]],
    rounds: u64,
    agents: usize,
    bar: &indicatif::ProgressBar,
) -> Result<MeshReport> {
    let members: Vec<Identity> = seeds.iter().take(MEMBERS).map(|s| Identity::from_seed(*s)).collect();
    let space = Space::new(2, [0.0; 3], [1000.0, 1000.0, 0.0], vec![2, 4, 6]).map_err(|e| anyhow!("{e}"))?;
    let world = WithSpace { world: Life, space: space.clone() };
    let s0 = Board::empty(32, 32);
    let limits = Limits { max_inputs_per_round: 256, max_input_bytes: 64, max_inputs_per_author: 4 };
    let genesis =
        Genesis::for_world(&world, &s0, members.iter().map(Identity::public_key).collect(), ROUND_INTERVAL_MS, limits)
            .context("genesis")?;
    let id = genesis.mesh_id();
    // The last two members are byzantine: one silent, one signing a second vote at each height.
    let byzantine = 2;
    let Started { meshes, observers, obs_meshes } = start_meshes(nodes, &members, &world, &genesis, &s0).await?;
    let honest = MEMBERS - byzantine;
    let views: Vec<Arc<Mutex<View>>> = meshes.iter().take(honest).chain(obs_meshes.iter()).map(watch).collect();
    let watched = Watched { views: &views, obs_meshes: &obs_meshes, honest };
    let (submitted, elapsed) = drive(&watched, &id, rounds, bar).await?;
    // Let the last rounds reach every view.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut r = MeshReport {
        members: MEMBERS,
        byzantine: vec!["silent".into(), "equivocating".into()],
        observers: observers.len(),
        round_interval_ms: ROUND_INTERVAL_MS,
        timeout_ms: TIMEOUT_MS,
        rounds: views.iter().take(honest).map(last_round).min().unwrap_or(0),
        elapsed_s: elapsed.as_secs_f64(),
        ..MeshReport::default()
    };
    r.rounds_per_s = r.rounds as f64 / r.elapsed_s.max(1e-9);
    let snapshot: Vec<View> = views.iter().map(|v| v.lock().map(|v| v.clone()).unwrap_or_default()).collect();
    agreement_figures(&mut r, &snapshot);
    input_figures(&mut r, &snapshot, &submitted);
    status_figures(&mut r, &meshes, honest).await;

    get_state_figures(&mut r, nodes, &genesis, &views).await;
    for m in meshes.iter().chain(obs_meshes.iter()) {
        m.stop();
    }
    r.spatial = spatial(nodes, id, &space, agents).await?;
    Ok(r)
}

/// The running meshes: members (honest first) and observers.
struct Started {
    meshes: Vec<Mesh<Board>>,
    observers: Vec<usize>,
    obs_meshes: Vec<Mesh<Board>>,
}

/// Starts the members' meshes (the last two byzantine) and the observers' on the next nodes.
async fn start_meshes(
    nodes: &[Node],
    members: &[Identity],
    world: &WithSpace<Life>,
    genesis: &Genesis,
    s0: &Board,
) -> Result<Started> {
    let n = nodes.len();
    let mut meshes = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let send_filter: Option<Arc<dyn SendFilter>> = match MEMBERS - i {
            2 => Some(Arc::new(Silent)),
            1 => Some(Arc::new(EquivocateVotes { identity: Identity::from_seed_with(*m.seed(), m.crypto()) })),
            _ => None,
        };
        let cfg = MeshConfig { send_filter, simplex: agreement(), ..MeshConfig::default() };
        let node = nodes.get(i).context("node")?.clone();
        meshes.push(
            Mesh::start(
                node,
                world.clone(),
                genesis.clone(),
                s0.clone(),
                Some(Identity::from_seed_with(*m.seed(), m.crypto())),
                cfg,
            )
            .await?,
        );
    }
    let observers: Vec<usize> = (MEMBERS..n.min(MEMBERS + OBSERVERS)).collect();
    let mut obs_meshes = Vec::new();
    for &i in &observers {
        let node = nodes.get(i).context("node")?.clone();
        obs_meshes
            .push(Mesh::start(node, world.clone(), genesis.clone(), s0.clone(), None, MeshConfig::default()).await?);
    }
    Ok(Started { meshes, observers, obs_meshes })
}

/// The views of the honest members then the observers, and the observers' meshes.
struct Watched<'a> {
    views: &'a [Arc<Mutex<View>>],
    obs_meshes: &'a [Mesh<Board>],
    honest: usize,
}

/// Input id → (view it was submitted through, when).
type Submitted = HashMap<[u8; 32], (usize, Instant)>;

/// Waits until every honest member certified `rounds` rounds (or the deadline), authors
/// submitting through the observers meanwhile; returns the inputs and the wall time.
async fn drive(
    w: &Watched<'_>,
    id: &[u8; 32],
    rounds: u64,
    bar: &indicatif::ProgressBar,
) -> Result<(Submitted, Duration)> {
    let (views, obs_meshes, honest) = (w.views, w.obs_meshes, w.honest);
    let t0 = Instant::now();
    bar.set_length(rounds);

    // Authors submit through the observers until 20 rounds before the end.
    let authors: Vec<Identity> = (0..AUTHORS)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s[8] = 0xa7;
            Identity::from_seed(s)
        })
        .collect();
    let mut pick = picker()?;
    let mut submitted: Submitted = HashMap::new();
    let deadline = t0 + Duration::from_secs(30 + rounds / 2);
    let mut nonce = 0u64;
    let mut done_at = None;
    while Instant::now() < deadline {
        let honest_min = views.iter().take(honest).map(last_round).min().unwrap_or(0);
        bar.set_position(honest_min.min(rounds));
        if honest_min >= rounds {
            done_at = Some(t0.elapsed());
            break;
        }
        if honest_min + 20 < rounds && !obs_meshes.is_empty() {
            // Inputs from random authors through their observer: 100 a second in all.
            for _ in 0..INPUTS_PER_TICK {
                let a = pick(authors.len());
                let k = a % obs_meshes.len();
                let (Some(author), Some(mesh), Some(view)) = (authors.get(a), obs_meshes.get(k), views.get(honest + k))
                else {
                    continue;
                };
                nonce += 1;
                let cell = SetCell { x: (pick(32)) as u16, y: (pick(32)) as u16, alive: true };
                let input =
                    SignedInput::sign(author, id, last_round(view) + 1, nonce, &cell).map_err(|e| anyhow!("{e}"))?;
                let t = Instant::now();
                if let Ok(iid) = mesh.submit(input).await {
                    submitted.insert(iid, (honest + k, t));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = done_at.unwrap_or_else(|| t0.elapsed());
    Ok((submitted, elapsed))
}

/// Hash agreement across every honest member and observer, and round gaps at honest member 0.
fn agreement_figures(r: &mut MeshReport, snapshot: &[View]) {
    // Hash agreement across every honest member and observer.
    let mut by_round: BTreeMap<u64, HashSet<[u8; 32]>> = BTreeMap::new();
    for v in snapshot {
        for (round, (h, _, _)) in v {
            by_round.entry(*round).or_default().insert(*h);
        }
    }
    r.rounds_compared = by_round.len() as u64;
    r.disagreements = by_round.values().filter(|s| s.len() > 1).count() as u64;
    r.hash_agreement = r.disagreements == 0;
    // Round gaps at honest member 0; certificate size there.
    if let Some(v) = snapshot.first() {
        let times: Vec<Instant> = v.values().map(|(_, t, _)| *t).collect();
        let mut gaps: Vec<f64> =
            times.windows(2).filter_map(|w| Some(w.get(1)?.duration_since(*w.first()?).as_secs_f64() * 1e3)).collect();
        r.round_gap = Latency::of(&mut gaps);
    }
}

/// Inputs: applied once each, and their finality at the node they were submitted through.
fn input_figures(r: &mut MeshReport, snapshot: &[View], submitted: &Submitted) {
    let mut applied: HashSet<[u8; 32]> = HashSet::new();
    for v in snapshot {
        let mut here: HashMap<[u8; 32], usize> = HashMap::new();
        for (_, _, ids) in v.values() {
            for i in ids {
                *here.entry(*i).or_insert(0) += 1;
            }
        }
        r.inputs_applied_twice = r.inputs_applied_twice.max(here.values().filter(|c| **c > 1).count());
        applied.extend(here.into_keys());
    }
    let mut finality = Vec::new();
    for (iid, (view, t)) in submitted {
        if let Some(v) = snapshot.get(*view)
            && let Some((_, at, _)) = v.values().find(|(_, _, ids)| ids.contains(iid))
        {
            finality.push(at.saturating_duration_since(*t).as_secs_f64() * 1e3);
        }
    }
    r.inputs_submitted = submitted.len();
    r.inputs_applied = submitted.keys().filter(|i| applied.contains(*i)).count();
    r.input_finality = Latency::of(&mut finality);
}

/// Timeouts at honest member 0, equivocations caught by the honest members, certificate size.
async fn status_figures(r: &mut MeshReport, meshes: &[Mesh<Board>], honest: usize) {
    if let Some(st) = meshes.first().map(Mesh::status)
        && let Some(st) = st.await
    {
        r.timeouts = st.agreement.timeouts;
    }
    for m in meshes.iter().take(honest) {
        if let Some(st) = m.status().await {
            r.equivocations_detected = r.equivocations_detected.max(st.agreement.equivocations);
        }
    }
    r.certificate_bytes = certificate_bytes(meshes.first()).await;
}

/// get_state from non-member nodes (observers included: none of them is a member), checked
/// against what the watchers hold.
async fn get_state_figures(r: &mut MeshReport, nodes: &[Node], genesis: &Genesis, views: &[Arc<Mutex<View>>]) {
    let readers: Vec<&Node> = nodes.iter().skip(MEMBERS).collect();
    let mut lat = Vec::new();
    for k in 0..100 {
        let Some(node) = readers.get((k * 7 + 3) % readers.len().max(1)) else { break };
        let t = Instant::now();
        let got = read_state::<Board>(node, genesis).await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        r.get_state_reads += 1;
        // What the honest members and observers hold for that round now (the mesh runs on).
        let held = |round: u64| -> HashSet<[u8; 32]> {
            views.iter().filter_map(|v| v.lock().ok().and_then(|v| v.get(&round).map(|e| e.0))).collect()
        };
        // A member stores a round as soon as it certifies it; give the watchers a moment to
        // see it too before comparing.
        if let Ok(f) = &got {
            for _ in 0..40 {
                if !held(f.round).is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        match got {
            Ok(f) => {
                let h = held(f.round);
                if h.len() == 1 && h.contains(&f.state_hash) {
                    r.get_state_ok += 1;
                } else {
                    let why = if h.is_empty() { "no watcher saw that round" } else { "hash not the certified one" };
                    r.get_state_errors.push(format!("round {}: {why}", f.round));
                }
            }
            Err(e) => r.get_state_errors.push(e.to_string()),
        }
    }
    r.get_state = Latency::of(&mut lat);
}

async fn certificate_bytes(m: Option<&Mesh<Board>>) -> usize {
    let Some(m) = m else { return 0 };
    let mut rx = m.rounds();
    let mut best = 0;
    for _ in 0..5 {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Ok(c)) => {
                if let Some(cert) = &c.certificate {
                    best = best.max(postcard::to_allocvec(cert).map(|v| v.len()).unwrap_or(0));
                }
            }
            _ => break,
        }
    }
    best
}

/// Announces `agents` agents over every node and checks radius queries against brute force.
async fn spatial(nodes: &[Node], mesh: [u8; 32], space: &Space, agents: usize) -> Result<SpatialReport> {
    let idx: Vec<Spatial> = nodes
        .iter()
        .map(|n| {
            Spatial::new(n.clone(), mesh, space.clone(), SpatialConfig { max_reads: 256, ..SpatialConfig::default() })
        })
        .collect::<Result<_, _>>()?;
    let mut pick = picker()?;
    let unit = |p: &mut dyn FnMut(usize) -> usize| p(1_000_000) as f64 / 1_000_000.0;
    let placed: Vec<(Identity, Position)> = (0..agents)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s[8] = 0x5a;
            (Identity::from_seed(s), [unit(&mut pick) * 1000.0, unit(&mut pick) * 1000.0, 0.0])
        })
        .collect();
    let placed = Arc::new(placed);
    let t = Instant::now();
    let mut set = JoinSet::new();
    let mut failed = 0;
    for i in 0..agents {
        while set.len() >= 64 {
            if let Some(Ok(Err(_))) = set.join_next().await {
                failed += 1;
            }
        }
        let (Some(ix), placed) = (idx.get(i % idx.len().max(1)).cloned(), placed.clone()) else { continue };
        set.spawn(async move {
            let (a, p) = placed.get(i).ok_or(())?;
            ix.announce_position(a, *p, b"").await.map(|_| ()).map_err(|_| ())
        });
    }
    while let Some(r) = set.join_next().await {
        if matches!(r, Ok(Err(_))) {
            failed += 1;
        }
    }
    let mut out =
        SpatialReport { agents: agents - failed, announce_s: t.elapsed().as_secs_f64(), ..SpatialReport::default() };
    let (mut lat, mut cells) = (Vec::new(), Vec::new());
    let radii = [20.0, 60.0, 150.0];
    for q in 0..200 {
        let c: Position = [unit(&mut pick) * 1000.0, unit(&mut pick) * 1000.0, 0.0];
        let radius = radii.get(q % radii.len()).copied().unwrap_or(50.0);
        let Some(ix) = idx.get(pick(idx.len())) else { break };
        let t = Instant::now();
        let Ok(got) = ix.query_local(c, radius).await else { continue };
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        cells.push(got.cells_read as f64);
        out.queries += 1;
        if !got.complete {
            out.incomplete += 1;
        }
        let want: HashSet<[u8; 32]> =
            placed.iter().filter(|(_, p)| distance(&c, p, 2) <= radius).map(|(a, _)| a.public_key()).collect();
        let have: HashSet<[u8; 32]> = got.agents.iter().map(|n| n.agent).collect();
        if want == have {
            out.exact += 1;
        }
    }
    out.query = Latency::of(&mut lat);
    out.cells_read_p50 = Latency::of(&mut cells).p50_ms;
    Ok(out)
}
