//! The devnet's agents phase: an agent runtime on every node and 1,000 agents spread over them.
//! They announce; discovery by capability is measured against ground truth; 10,000 direct
//! requests travel between random agents; 20 proposals go to 64 voters each, a third of them
//! malicious (half silent, half equivocating); and one agent shares a 10 MiB bundle with 10
//! others.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;
use suprnova_agents::agent::{Agent, AgentAddr, Ctx, Event, Profile};
use suprnova_agents::discovery::Criteria;
use suprnova_agents::runtime::{Runtime, RuntimeConfig};
use suprnova_agents::vote::Decision;
use suprnova_agents::wire::{AgentId, Resources};
use suprnova_dht::identity::Identity;
use suprnova_node::Node;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::devnet_common::{Latency, picker};

const CAPABILITIES: [&str; 10] =
    ["vision", "planning", "speech", "search", "code", "math", "chess", "physics", "layout", "memory"];
const KINDS: [&str; 4] = ["researcher", "coder", "tester", "analyst"];
const QUERIES: usize = 200;
const MESSAGES: usize = 10_000;
const PROPOSALS: usize = 20;
const VOTERS: usize = 64;
const SHARE_PEERS: usize = 10;

/// What the agents phase measured.
#[derive(Serialize, Default, Clone)]
pub struct AgentsReport {
    /// Agents hosted.
    pub agents: usize,
    /// Nodes hosting them.
    pub nodes: usize,
    /// Time to spawn and announce them all.
    pub announce_s: f64,
    /// Set entries stored for the announcements.
    pub announce_writes: u64,
    /// Discovery queries (capability, sometimes with a kind or a memory minimum).
    pub discovery_queries: usize,
    /// Latency of a discovery (16 set reads in one parallel round), one query at a time.
    pub discovery: Latency,
    /// Agents found that match, over agents that match (ground truth), in all queries.
    pub discovery_recall: f64,
    /// Agents found that match, over agents found.
    pub discovery_precision: f64,
    /// Queries answered incomplete.
    pub discovery_incomplete: usize,
    /// Direct requests sent between random agents on different nodes.
    pub messages: usize,
    /// Of those, answered by the right agent.
    pub messages_answered: usize,
    /// Round-trip latency of a request.
    pub message_rtt: Latency,
    /// Requests per second (64 in flight).
    pub messages_per_s: f64,
    /// Proposals made.
    pub proposals: usize,
    /// Eligible voters per proposal.
    pub voters: usize,
    /// Malicious voters per proposal (half silent, half equivocating).
    pub malicious_voters: usize,
    /// Proposals certified, with a certificate that verifies offline.
    pub certified: usize,
    /// Proposals that expired.
    pub expired: usize,
    /// Time from proposing to the certificate at the proposer's node (a third of the voters
    /// malicious: the certificate needs every honest vote).
    pub decision: Latency,
    /// The same with 64 honest voters (the certificate needs the first 43 votes).
    pub decision_honest: Latency,
    /// Equivocating voters caught with evidence (distinct voter and proposal), over those
    /// that equivocated.
    pub equivocations_caught: usize,
    /// Equivocations made.
    pub equivocations_made: usize,
    /// Bytes of a certificate with 64 voters (postcard), largest.
    pub certificate_bytes: usize,
    /// 10 MiB shared with one agent on another node: time until it acknowledged (fetched and
    /// verified), ms.
    pub knowledge_one_ms: f64,
    /// 10 MiB shared with 10 agents on 10 nodes: time until all acknowledged, ms.
    pub knowledge_ten_ms: f64,
    /// Receivers whose copy is hash-exact.
    pub knowledge_exact: usize,
    /// Why shares failed, if any did.
    pub knowledge_errors: Vec<String>,
    /// Refusals counted by the runtimes, by reason (summed over nodes).
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Honest,
    Silent,
    Equivocate,
}

/// A devnet agent: answers requests with their bytes, votes by its role, and reports outcomes.
struct Worker {
    role: Role,
    tx: mpsc::UnboundedSender<(AgentId, Event)>,
}

impl Agent for Worker {
    fn step(&mut self, ctx: &mut Ctx) {
        for e in ctx.take_events() {
            match &e {
                Event::Request { id, body, .. } => ctx.respond(*id, body.clone()),
                // A voter votes on every proposal it is eligible for, its own included.
                Event::Proposal { proposal } => match self.role {
                    Role::Honest => {
                        ctx.vote(proposal, b"yes");
                    }
                    Role::Silent => {}
                    Role::Equivocate => {
                        ctx.vote(proposal, b"yes");
                        ctx.vote(proposal, b"no");
                    }
                },
                Event::Decided { .. } | Event::Equivocation { .. } => {
                    let _ = self.tx.send((ctx.me(), e));
                }
                _ => {}
            }
        }
    }
}

struct Hosted {
    key: [u8; 32],
    addr: AgentAddr,
    profile: Profile,
    role: Role,
    rt: usize,
}

fn cap(i: u64) -> &'static str {
    CAPABILITIES.get((i % 10) as usize).copied().unwrap_or("vision")
}

fn kind(i: u64) -> &'static str {
    KINDS.get((i % 4) as usize).copied().unwrap_or("researcher")
}

fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    *x >> 33
}

/// The runtimes, the hosted agents and the progress bar every step of the phase shares.
struct Env<'a> {
    rts: &'a [Runtime],
    hosted: &'a [Hosted],
    bar: &'a indicatif::ProgressBar,
}

/// Receives the outcomes the agents report.
type Outcomes = mpsc::UnboundedReceiver<(AgentId, Event)>;

/// Runs the phase on `nodes` (which must not have given their incoming messages away).
pub async fn run(nodes: &[Node], count: usize, bar: &indicatif::ProgressBar) -> Result<AgentsReport> {
    let n = nodes.len();
    let mut report = AgentsReport { agents: count, nodes: n, ..AgentsReport::default() };
    let mut rts = Vec::with_capacity(n);
    for node in nodes {
        rts.push(Runtime::start(node.clone(), RuntimeConfig::default()).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    bar.set_length((count + QUERIES + MESSAGES / 100 + PROPOSALS + 2) as u64);
    let hosted = host(&rts, count, &tx, bar).await?;
    report.announce_s = t.elapsed().as_secs_f64();
    report.announce_writes = rts.iter().map(|r| r.stats().announce_writes - r.stats().announce_failures).sum();

    let env = Env { rts: &rts, hosted: &hosted, bar };
    discovery(&env, &mut report).await?;
    messages(&env, &mut report).await?;
    let honest: Vec<&Hosted> = hosted.iter().filter(|h| h.role == Role::Honest).collect();
    votes(&env, &honest, &mut rx, &mut report).await?;
    knowledge(&env, &honest, &mut report).await?;
    report.drops = runtime_drops(&rts);
    Ok(report)
}

/// Spawns `count` agents over the runtimes, 64 at a time; every third is malicious
/// (alternately silent and equivocating).
async fn host(
    rts: &[Runtime],
    count: usize,
    tx: &mpsc::UnboundedSender<(AgentId, Event)>,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Hosted>> {
    let n = rts.len();
    let mut seed = 0x5eed_a6e7u64;
    let mut hosted: Vec<Hosted> = Vec::with_capacity(count);
    let mut set = JoinSet::new();
    for i in 0..count {
        let caps: BTreeSet<&str> = (0..1 + lcg(&mut seed) % 3).map(|_| cap(lcg(&mut seed))).collect();
        let profile = Profile {
            kind: kind(lcg(&mut seed)).into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            resources: Resources { cpu_milli: 500, memory_mb: 256 * (1 + (lcg(&mut seed) % 16) as u32), storage_mb: 0 },
            position: Some([(lcg(&mut seed) % 1000) as f64, (lcg(&mut seed) % 1000) as f64, 0.0]),
            announce: true,
            ..Profile::default()
        };
        let role = match i % 6 {
            2 => Role::Silent,
            5 => Role::Equivocate,
            _ => Role::Honest,
        };
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s[8..16].copy_from_slice(&seed.to_le_bytes());
        let id = Identity::from_seed(s);
        let rt_i = i % n;
        let rt = rts.get(rt_i).ok_or_else(|| anyhow!("no runtime"))?.clone();
        let node_id = rt.node().id();
        let worker = Worker { role, tx: tx.clone() };
        let p = profile.clone();
        while set.len() >= 64 {
            if let Some(r) = set.join_next().await {
                r??;
                bar.inc(1);
            }
        }
        set.spawn(async move { rt.spawn_with(id, p, worker).await.map(|_| ()) });
        hosted.push(Hosted {
            key: s,
            addr: AgentAddr { agent: Identity::from_seed(s).public_key(), node: node_id },
            profile,
            role,
            rt: rt_i,
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
        bar.inc(1);
    }
    Ok(hosted)
}

/// Discovery against ground truth, one query at a time, from random nodes.
async fn discovery(env: &Env<'_>, report: &mut AgentsReport) -> Result<()> {
    let (rts, hosted, bar) = (env.rts, env.hosted, env.bar);
    let n = rts.len();
    let mut pick = picker()?;
    let mut lat = Vec::new();
    let (mut found_ok, mut truth_total, mut found_total) = (0usize, 0usize, 0usize);
    let mut queries = Vec::new();
    for q in 0..QUERIES {
        let mut c = Criteria::capability(cap(q as u64));
        if q % 3 == 1 {
            c.kind = Some(kind(q as u64).to_string());
        }
        if q % 4 == 2 {
            c.min.memory_mb = 2048;
        }
        queries.push(c);
    }
    let truth = |c: &Criteria| -> BTreeSet<AgentId> {
        hosted
            .iter()
            .filter(|h| {
                c.capabilities.iter().all(|x| h.profile.capabilities.contains(x))
                    && c.kind.as_ref().is_none_or(|k| *k == h.profile.kind)
                    && h.profile.resources.memory_mb >= c.min.memory_mb
            })
            .map(|h| h.addr.agent)
            .collect()
    };
    // One query at a time: the latency of a discovery, not of a queue of them.
    for (qi, c) in queries.iter().enumerate() {
        let rt = rts.get(pick(n)).ok_or_else(|| anyhow!("no runtime"))?;
        let t = Instant::now();
        let d = rt.discover(c).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        collect(&truth, &queries, qi, ms, d, &mut lat, &mut found_ok, &mut truth_total, &mut found_total, report);
        bar.inc(1);
    }
    report.discovery_queries = QUERIES;
    report.discovery = Latency::of(&mut lat);
    report.discovery_recall = if truth_total > 0 { found_ok as f64 / truth_total as f64 } else { 1.0 };
    report.discovery_precision = if found_total > 0 { found_ok as f64 / found_total as f64 } else { 1.0 };
    Ok(())
}

/// 10,000 requests between random agents on different nodes, 64 in flight.
async fn messages(env: &Env<'_>, report: &mut AgentsReport) -> Result<()> {
    let (rts, hosted, bar) = (env.rts, env.hosted, env.bar);
    let t = Instant::now();
    let mut rtts = Vec::with_capacity(MESSAGES);
    let mut mset = JoinSet::new();
    let mut answered = 0usize;
    let mut x = 0x00ab_cdefu64;
    for m in 0..MESSAGES {
        let a = (lcg(&mut x) as usize) % hosted.len().max(1);
        let mut b = (lcg(&mut x) as usize) % hosted.len().max(1);
        if hosted.get(a).map(|h| h.rt) == hosted.get(b).map(|h| h.rt) {
            b = (b + 1) % hosted.len().max(1);
        }
        let (Some(ha), Some(hb)) = (hosted.get(a), hosted.get(b)) else { continue };
        let rt = rts.get(ha.rt).ok_or_else(|| anyhow!("no runtime"))?.clone();
        let (from, to) = (ha.addr.agent, hb.addr);
        while mset.len() >= 64 {
            if let Some(r) = mset.join_next().await {
                let (ok, ms): (bool, f64) = r?;
                if ok {
                    answered += 1;
                    rtts.push(ms);
                }
            }
        }
        let body = (m as u64).to_le_bytes().to_vec();
        mset.spawn(async move {
            let t = Instant::now();
            let r = rt.request(&from, to, &body).await;
            (r.is_ok_and(|b| b == body), t.elapsed().as_secs_f64() * 1e3)
        });
        if m % 100 == 99 {
            bar.inc(1);
        }
    }
    while let Some(r) = mset.join_next().await {
        let (ok, ms) = r?;
        if ok {
            answered += 1;
            rtts.push(ms);
        }
    }
    report.messages = MESSAGES;
    report.messages_answered = answered;
    report.messages_per_s = MESSAGES as f64 / t.elapsed().as_secs_f64();
    report.message_rtt = Latency::of(&mut rtts);
    Ok(())
}

/// 20 proposals to 64 voters each (43 honest, 11 silent, 10 equivocating), then the same with
/// every voter honest.
async fn votes(env: &Env<'_>, honest: &[&Hosted], rx: &mut Outcomes, report: &mut AgentsReport) -> Result<()> {
    let (rts, hosted, bar) = (env.rts, env.hosted, env.bar);
    report.proposals = PROPOSALS;
    report.voters = VOTERS;
    report.malicious_voters = VOTERS / 3;
    let silent: Vec<&Hosted> = hosted.iter().filter(|h| h.role == Role::Silent).collect();
    let equiv: Vec<&Hosted> = hosted.iter().filter(|h| h.role == Role::Equivocate).collect();
    let mut decisions = Vec::new();
    let mut made = 0usize;
    let mut caught: BTreeSet<([u8; 32], AgentId)> = BTreeSet::new();
    while rx.try_recv().is_ok() {}
    for p in 0..PROPOSALS {
        let take = |v: &[&Hosted], k: usize, off: usize| -> Vec<AgentId> {
            (0..k).filter_map(|j| v.get((off + j * 7) % v.len().max(1)).map(|h| h.addr.agent)).collect()
        };
        let n_silent = (VOTERS / 3) / 2 + 1;
        let n_equiv = VOTERS / 3 - n_silent;
        let mut voters = take(honest, VOTERS - VOTERS / 3, p * 13);
        voters.extend(take(&silent, n_silent, p * 5));
        let eq = take(&equiv, n_equiv, p * 3);
        made += eq.len();
        voters.extend(eq);
        let proposer = honest.get((p * 31 + 1) % honest.len().max(1)).ok_or_else(|| anyhow!("no proposer"))?;
        let rt = rts.get(proposer.rt).ok_or_else(|| anyhow!("no runtime"))?;
        match decide(rx, rt, proposer.addr.agent, format!("proposal {p}"), voters, &mut caught).await? {
            Some((ms, Decision::Certified(c))) => {
                decisions.push(ms);
                if c.verify().is_ok() {
                    report.certified += 1;
                }
                report.certificate_bytes = report.certificate_bytes.max(suprnova_agents::wire::encode(&*c).len());
            }
            Some((_, Decision::Expired)) | None => report.expired += 1,
        }
        bar.inc(1);
    }
    late_evidence(rx, &mut caught).await;
    report.decision = Latency::of(&mut decisions);
    let mut honest_decisions = honest_votes(rts, honest, rx, &mut caught).await?;
    report.decision_honest = Latency::of(&mut honest_decisions);
    report.equivocations_made = made;
    report.equivocations_caught = caught.len();
    Ok(())
}

/// Late evidence: equivocations reported in the next 2 s.
async fn late_evidence(rx: &mut Outcomes, caught: &mut BTreeSet<([u8; 32], AgentId)>) {
    let until = Instant::now() + Duration::from_secs(2);
    while let Ok(Some((_, e))) = tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.recv()).await
    {
        if let Event::Equivocation { evidence } = e
            && evidence.verify()
        {
            caught.insert((evidence.proposal, evidence.voter));
        }
    }
}

/// The same proposals with every voter honest: milliseconds to each verified certificate.
async fn honest_votes(
    rts: &[Runtime],
    honest: &[&Hosted],
    rx: &mut Outcomes,
    caught: &mut BTreeSet<([u8; 32], AgentId)>,
) -> Result<Vec<f64>> {
    let mut honest_decisions = Vec::new();
    for p in 0..PROPOSALS {
        let voters: Vec<AgentId> = (0..VOTERS)
            .filter_map(|j| honest.get((p * 17 + j * 5) % honest.len().max(1)).map(|h| h.addr.agent))
            .collect();
        let proposer = honest.get((p * 29 + 3) % honest.len().max(1)).ok_or_else(|| anyhow!("no proposer"))?;
        let rt = rts.get(proposer.rt).ok_or_else(|| anyhow!("no runtime"))?;
        if let Some((ms, Decision::Certified(c))) =
            decide(rx, rt, proposer.addr.agent, format!("honest {p}"), voters, caught).await?
            && c.verify().is_ok()
        {
            honest_decisions.push(ms);
        }
    }
    Ok(honest_decisions)
}

/// Up to `SHARE_PEERS` + 1 honest agents, each on a node of its own other than `sharer_rt`.
fn share_peers<'a>(honest: &[&'a Hosted], sharer_rt: usize) -> Vec<&'a Hosted> {
    let mut seen_nodes = vec![sharer_rt];
    let mut peers: Vec<&Hosted> = Vec::new();
    for &h in honest {
        if !seen_nodes.contains(&h.rt) {
            seen_nodes.push(h.rt);
            peers.push(h);
        }
        if peers.len() > SHARE_PEERS {
            break;
        }
    }
    peers
}

/// Knowledge: 10 MiB with one agent, then with ten, each on another node; counts exact copies.
async fn knowledge(env: &Env<'_>, honest: &[&Hosted], report: &mut AgentsReport) -> Result<()> {
    let (rts, hosted, bar) = (env.rts, env.hosted, env.bar);
    let weights: Arc<Vec<u8>> =
        Arc::new((0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect());
    let sharer = honest.first().ok_or_else(|| anyhow!("no sharer"))?;
    let sharer_rt = rts.get(sharer.rt).ok_or_else(|| anyhow!("no runtime"))?;
    let peers = share_peers(honest, sharer.rt);
    let seed_of = |h: &Hosted| Identity::from_seed(h.key);
    let sharer_id = seed_of(sharer);
    let first = peers.first().ok_or_else(|| anyhow!("no peer"))?;
    let t = Instant::now();
    let one = sharer_rt
        .share_knowledge(&sharer_id, &[first.addr], "devnet-one", vec![("weights".into(), weights.clone())])
        .await
        .map_err(|e| anyhow!(e))?;
    report.knowledge_one_ms = t.elapsed().as_secs_f64() * 1e3;
    bar.inc(1);
    // Ten other agents, a fresh domain and fresh bytes (so nothing is held yet).
    let weights2: Arc<Vec<u8>> = Arc::new(weights.iter().map(|b| b ^ 0x5a).collect());
    let ten: Vec<AgentAddr> = peers.iter().skip(1).take(SHARE_PEERS).map(|h| h.addr).collect();
    let t = Instant::now();
    let results = sharer_rt
        .share_knowledge(&sharer_id, &ten, "devnet-ten", vec![("weights".into(), weights2.clone())])
        .await
        .map_err(|e| anyhow!(e))?;
    report.knowledge_ten_ms = t.elapsed().as_secs_f64() * 1e3;
    bar.inc(1);
    let mut exact = 0;
    for (_, r) in one.iter().chain(results.iter()) {
        if let Err(e) = r
            && report.knowledge_errors.len() < 4
        {
            report.knowledge_errors.push(e.to_string());
        }
    }
    if one.iter().all(|(_, r)| r.is_ok()) {
        let rt = rts.get(first.rt).ok_or_else(|| anyhow!("no runtime"))?;
        if let Some(item) = rt.knowledge("devnet-one").first()
            && rt.knowledge_bytes(item).is_some_and(|b| *b == *weights)
        {
            exact += 1;
        }
    }
    for (agent, r) in &results {
        if r.is_err() {
            continue;
        }
        let Some(h) = hosted.iter().find(|h| h.addr.agent == *agent) else { continue };
        let rt = rts.get(h.rt).ok_or_else(|| anyhow!("no runtime"))?;
        if let Some(item) = rt.knowledge("devnet-ten").first()
            && rt.knowledge_bytes(item).is_some_and(|b| *b == *weights2)
        {
            exact += 1;
        }
    }
    report.knowledge_exact = exact;
    Ok(())
}

/// Refusals counted by the runtimes, by reason (summed, zeros left out); shuts the runtimes down.
fn runtime_drops(rts: &[Runtime]) -> std::collections::BTreeMap<String, u64> {
    let mut drops: HashMap<&str, u64> = HashMap::new();
    for r in rts {
        let s = r.stats();
        for (k, v) in [
            ("malformed", s.drop_malformed),
            ("bad_signature", s.drop_bad_signature),
            ("stale", s.drop_stale),
            ("replayed", s.drop_replayed),
            ("no_such_agent", s.drop_no_such_agent),
            ("mailbox_full", s.drop_mailbox_full),
            ("vote_bad_signature", s.ballots.drops.bad_signature),
            ("vote_excluded", s.ballots.drops.excluded),
            ("vote_late", s.ballots.drops.late),
            ("vote_duplicate", s.ballots.drops.duplicate),
        ] {
            *drops.entry(k).or_default() += v;
        }
        r.shutdown();
    }
    drops.into_iter().filter(|(_, v)| *v > 0).map(|(k, v)| (k.to_string(), v)).collect()
}

/// Proposes `body` from hosted agent `proposer` to `voters` (30 s deadline) and waits for the
/// outcome at the proposer: milliseconds and the decision (`None` if none came in 35 s).
/// Equivocation evidence seen meanwhile is noted in `caught`.
async fn decide(
    rx: &mut mpsc::UnboundedReceiver<(AgentId, Event)>,
    rt: &Runtime,
    proposer: AgentId,
    body: String,
    voters: Vec<AgentId>,
    caught: &mut BTreeSet<([u8; 32], AgentId)>,
) -> Result<Option<(f64, Decision)>> {
    let t = Instant::now();
    let prop = rt
        .propose_from(&proposer, body.as_bytes(), voters, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!("propose: {e}"))?;
    let id = prop.id();
    let deadline = Instant::now() + Duration::from_secs(35);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((who, Event::Decided { id: d, decision }))) if d == id && who == proposer => {
                return Ok(Some((t.elapsed().as_secs_f64() * 1e3, (*decision).clone())));
            }
            Ok(Some((_, Event::Equivocation { evidence }))) => {
                if evidence.verify() {
                    caught.insert((evidence.proposal, evidence.voter));
                }
            }
            Ok(Some(_)) => {}
            _ => return Ok(None),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn collect(
    truth: &dyn Fn(&Criteria) -> BTreeSet<AgentId>,
    queries: &[Criteria],
    qi: usize,
    ms: f64,
    d: Result<suprnova_agents::agent::Discovery, suprnova_agents::runtime::DiscoverError>,
    lat: &mut Vec<f64>,
    found_ok: &mut usize,
    truth_total: &mut usize,
    found_total: &mut usize,
    report: &mut AgentsReport,
) {
    let Some(c) = queries.get(qi) else { return };
    let want = truth(c);
    *truth_total += want.len();
    if let Ok(d) = d {
        lat.push(ms);
        if !d.complete {
            report.discovery_incomplete += 1;
        }
        *found_total += d.agents.len();
        *found_ok += d.agents.iter().filter(|f| want.contains(&f.agent)).count();
    }
}
