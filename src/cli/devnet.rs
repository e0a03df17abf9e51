//! `suprnova devnet`: the main job. Starts N nodes on 127.0.0.1 in one process and measures the
//! encrypted channel in three phases: every node handshakes with a sample of peers at once; pings
//! one at a time across the devnet (round-trip time without queueing); then every node pings its
//! peers at once (throughput under load). Then the DHT (bootstrap, puts and gets of every record
//! kind), a broadcast to every node over QUIC, and a 10 MiB blob from two providers. Ends with
//! drops by reason.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use suprnova_dht::NodeId;
use suprnova_dht::identity::NodeRecord;
use suprnova_dht::proto::{DhtConfig, Target};
use suprnova_dht::stats::Drops;
use suprnova_node::{Node, NodeError, PingReply};
use tokio::task::JoinSet;

use super::devnet_common::{Latency, rss_kb};
use super::devnet_dht::Item;
use super::devnet_gossip::{Plan, Subs};
use super::devnet_report::{Failure, Memory, Pings, Report, print_text};
use super::random_seed;

/// Every devnet node shares 127.0.0.1 (loopback is exempt from the per-subnet limits by default
/// anyway). Its 64 nodes share one process on two cores, where a round trip is queueing (10 to
/// 150 ms in bursts) rather than a path: a 15 ms retransmission floor resends most requests of a
/// burst for nothing, so the devnet floors the RTO at 100 ms (real nodes keep the default).
fn devnet_config() -> DhtConfig {
    let mut cfg = DhtConfig::default();
    cfg.routing.exempt_local = true;
    cfg.rto_min = std::time::Duration::from_millis(100);
    cfg
}

/// Node i talks to i+1 .. i+sample (mod n), so every node both initiates and responds.
fn sample_of(i: usize, n: usize, sample: usize) -> Vec<usize> {
    (1..=sample.min(n.saturating_sub(1))).map(|k| (i + k) % n).collect()
}

/// (node, peer record) for every ordered pair in the sample.
fn pairs(nodes: &[Node], sample: usize) -> Vec<(Node, NodeRecord)> {
    let n = nodes.len();
    let mut out = Vec::new();
    for (i, me) in nodes.iter().enumerate() {
        for j in sample_of(i, n, sample) {
            if let Some(peer) = nodes.get(j) {
                out.push((me.clone(), peer.record().clone()));
            }
        }
    }
    out
}

struct Phase {
    rtts_ms: Vec<f64>,
    failures: Vec<String>,
    elapsed: Duration,
}

impl Pings {
    fn of(p: &mut Phase, sent: usize) -> Pings {
        let answered = p.rtts_ms.len();
        Pings {
            sent,
            answered,
            elapsed_ms: p.elapsed.as_secs_f64() * 1e3,
            per_s: answered as f64 / p.elapsed.as_secs_f64().max(1e-9),
            rtt: Latency::of(&mut p.rtts_ms),
        }
    }
}

/// What `suprnova devnet` does.
pub struct Options {
    /// Nodes.
    pub nodes: usize,
    /// Peers each node pings.
    pub sample: usize,
    /// Rounds of the loaded ping phase.
    pub pings: usize,
    /// Puts and gets per record kind.
    pub records: usize,
    /// Flood broadcasts.
    pub messages: u64,
    /// Paced broadcasts (20 per second).
    pub paced: u64,
    /// Rounds of the mesh phase (0: skip it).
    pub mesh_rounds: u64,
    /// Positioned agents of the mesh phase.
    pub agents: usize,
    /// Print JSON instead of text.
    pub json: bool,
    /// Print the DHT's counters summed over the nodes every 10 s (on stderr).
    pub trace: bool,
}

/// Sends `rounds` pings over every pair, all pairs concurrently (each pair's pings in sequence).
async fn concurrent(pairs: &[(Node, NodeRecord)], rounds: usize) -> Result<Phase> {
    let t = Instant::now();
    let mut set = JoinSet::new();
    for (me, rec) in pairs {
        let (me, rec) = (me.clone(), rec.clone());
        set.spawn(async move {
            let mut out: Vec<Result<PingReply, NodeError>> = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                out.push(me.ping(Target::Record(rec.clone())).await);
            }
            out
        });
    }
    let mut phase = Phase { rtts_ms: Vec::new(), failures: Vec::new(), elapsed: Duration::ZERO };
    while let Some(r) = set.join_next().await {
        for p in r? {
            match p {
                Ok(r) => phase.rtts_ms.push(r.rtt.as_secs_f64() * 1e3),
                Err(e) => phase.failures.push(e.to_string()),
            }
        }
    }
    phase.elapsed = t.elapsed();
    Ok(phase)
}

/// One ping at a time over every pair, `rounds` times.
async fn sequential(pairs: &[(Node, NodeRecord)], rounds: usize) -> Phase {
    let t = Instant::now();
    let mut phase = Phase { rtts_ms: Vec::new(), failures: Vec::new(), elapsed: Duration::ZERO };
    for _ in 0..rounds {
        for (me, rec) in pairs {
            match me.ping(Target::Record(rec.clone())).await {
                Ok(r) => phase.rtts_ms.push(r.rtt.as_secs_f64() * 1e3),
                Err(e) => phase.failures.push(e.to_string()),
            }
        }
    }
    phase.elapsed = t.elapsed();
    phase
}

/// Progress bars on stderr, one per phase (hidden when stderr is not a terminal).
struct Bars {
    n: usize,
    i: usize,
}

impl Bars {
    fn next(&mut self, name: &str, len: u64) -> indicatif::ProgressBar {
        self.i += 1;
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>7} {msg:<22} {bar:30} {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("[{}/{}]", self.i, self.n));
        bar.set_message(name.to_string());
        bar
    }
}

/// Runs the devnet and prints the report.
pub async fn run(o: Options) -> Result<()> {
    let n = o.nodes;
    if n < 3 {
        bail!("--nodes must be at least 3");
    }
    if n > 2000 {
        bail!("--nodes above 2000 is more than one process on this machine should host");
    }
    let t0 = Instant::now();
    let base_rss = rss_kb("VmRSS:");
    let mut report = Report {
        date: utc_now(),
        nodes: n,
        cpus: std::thread::available_parallelism().map_or(1, |c| c.get()),
        ..Report::default()
    };
    let mut bars = Bars { n: 12, i: 0 };
    if !o.json {
        eprintln!("devnet: {n} nodes on 127.0.0.1, one process");
    }

    let bar = bars.next("start nodes", n as u64);
    let (full, seeds) = start_nodes(n, &bar).await?;
    bar.finish();
    report.startup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let nodes: Vec<Node> = full.clone();
    let pairs = pairs(&nodes, o.sample);
    if o.trace {
        tokio::spawn(super::devnet_dht::trace(nodes.clone()));
    }

    ping_phases(&mut report, &pairs, o.pings, &mut bars).await?;
    let items = dht_phases(&mut report, &nodes, o.records, &mut bars).await?;
    let mut subs = gossip_phases(&mut report, &full, &o, &mut bars).await?;
    if o.mesh_rounds > 0 && n > super::devnet_mesh::MEMBERS {
        mesh_phase(&mut report, &full, &seeds, &o, &mut bars).await?;
    }
    if o.agents > 0 {
        agents_phase(&mut report, &full, o.agents, &mut bars).await?;
    }

    // A third of the nodes stop (never the seed or the publisher).
    let stop_from = n - n / 3;
    let survivors = failure_phase(&mut report, &full, &items, &mut subs, stop_from, &mut bars).await?;

    channel_totals(&mut report, &survivors).await?;
    let peak = rss_kb("VmHWM:").unwrap_or(0);
    report.memory = Memory {
        peak_rss_mb: peak as f64 / 1024.0,
        per_node_mb: peak.saturating_sub(base_rss.unwrap_or(0)) as f64 / 1024.0 / n as f64,
    };
    let mut stopping = JoinSet::new();
    for f in full.into_iter().take(stop_from) {
        stopping.spawn(async move { f.shutdown().await });
    }
    while stopping.join_next().await.is_some() {}

    delivery_failures(&mut report);
    report.total_s = t0.elapsed().as_secs_f64();
    conclude(&report, o.json, pairs.len())
}

/// Starts `n` nodes with fresh identity seeds; returns the nodes and their seeds.
async fn start_nodes(n: usize, bar: &indicatif::ProgressBar) -> Result<(Vec<Node>, Vec<[u8; 32]>)> {
    let mut full: Vec<suprnova_node::Node> = Vec::with_capacity(n);
    let mut seeds: Vec<[u8; 32]> = Vec::with_capacity(n);
    for _ in 0..n {
        seeds.push(random_seed()?);
        let mut cfg = suprnova_node::NodeConfig::with_seed(*seeds.last().unwrap_or(&[0; 32]), "127.0.0.1:0".parse()?);
        cfg.dht = devnet_config();
        full.push(suprnova_node::Node::spawn(cfg).await?);
        bar.inc(1);
    }
    Ok((full, seeds))
}

/// Handshakes, pings one at a time and pings all at once over the sampled pairs.
async fn ping_phases(report: &mut Report, pairs: &[(Node, NodeRecord)], pings: usize, bars: &mut Bars) -> Result<()> {
    let bar = bars.next("handshakes + pings", 3);
    let mut hs = concurrent(pairs, 1).await?;
    bar.inc(1);
    let mut seq = sequential(pairs, 1).await;
    bar.inc(1);
    let mut load = concurrent(pairs, pings).await?;
    bar.finish();
    report.handshake = Pings::of(&mut hs, pairs.len());
    report.ping_sequential = Pings::of(&mut seq, pairs.len());
    report.ping_load = Pings::of(&mut load, pairs.len() * pings);
    report
        .failures
        .extend(hs.failures.into_iter().chain(seq.failures).chain(load.failures).map(|e| format!("ping: {e}")));
    Ok(())
}

/// The DHT: bootstrap through one seed, then puts and gets of every record kind; returns the
/// records put, for reading back after the failure.
async fn dht_phases(report: &mut Report, nodes: &[Node], count: usize, bars: &mut Bars) -> Result<Vec<Item>> {
    let bar = bars.next("bootstrap", nodes.len() as u64);
    report.bootstrap = super::devnet_dht::bootstrap(nodes, &bar).await?;
    bar.finish();

    let bar = bars.next("puts and gets", 0);
    let (records, items) = super::devnet_dht::records(nodes, count, &bar).await?;
    bar.finish();
    for k in &records {
        report.failures.extend(k.failures.iter().map(|f| format!("{}: {f}", k.kind)));
    }
    report.records = records;
    Ok(items)
}

/// Every node subscribes; the paced broadcast, the flood and the blob. Returns the subscriptions.
async fn gossip_phases(report: &mut Report, full: &[Node], o: &Options, bars: &mut Bars) -> Result<Subs> {
    let bar = bars.next("subscribe", 1);
    let mut subs = Subs::join(full).await?;
    bar.finish();
    let everyone: Vec<usize> = (0..full.len()).collect();
    // Paced first: its latency is the network's, not the tail of the flood's queues.
    let bar = bars.next("paced broadcast", 0);
    let plan = Plan { live: &everyone, publisher: 1, msgs: o.paced, size: 256, pace: Some(Duration::from_millis(50)) };
    report.paced_broadcast = super::devnet_gossip::broadcast(&mut subs, full, plan, &bar).await?;
    bar.finish();

    let bar = bars.next("broadcast", 0);
    let plan = Plan { live: &everyone, publisher: 1, msgs: o.messages, size: 256, pace: None };
    report.broadcast = super::devnet_gossip::broadcast(&mut subs, full, plan, &bar).await?;
    bar.finish();
    let bar = bars.next("blob 10 MiB", 1);
    report.blob = super::devnet_gossip::blob(full, 10 << 20).await?;
    bar.finish();
    Ok(subs)
}

/// The mesh phase: 7 members (2 byzantine), certified rounds, get_state, spatial queries.
async fn mesh_phase(
    report: &mut Report,
    full: &[Node],
    seeds: &[[u8; 32]],
    o: &Options,
    bars: &mut Bars,
) -> Result<()> {
    let bar = bars.next("mesh: 7 members, 2 byzantine", o.mesh_rounds);
    let m = super::devnet_mesh::run(full, seeds, o.mesh_rounds, o.agents, &bar).await?;
    bar.finish();
    if m.rounds < o.mesh_rounds {
        report.failures.push(format!("mesh: {} of {} rounds certified in time", m.rounds, o.mesh_rounds));
    }
    if !m.hash_agreement {
        report.failures.push(format!("mesh: {} rounds with different state hashes", m.disagreements));
    }
    if m.inputs_applied < m.inputs_submitted || m.inputs_applied_twice > 0 {
        report.failures.push(format!(
            "mesh: {} of {} inputs applied, {} twice",
            m.inputs_applied, m.inputs_submitted, m.inputs_applied_twice
        ));
    }
    if m.get_state_ok < m.get_state_reads {
        report.failures.push(format!(
            "mesh: {} of {} get_state reads checked out ({})",
            m.get_state_ok,
            m.get_state_reads,
            m.get_state_errors.first().map_or("", String::as_str)
        ));
    }
    if m.spatial.exact < m.spatial.queries || m.spatial.agents < o.agents {
        report.failures.push(format!(
            "mesh: {} of {} spatial queries exact, {} of {} agents announced",
            m.spatial.exact, m.spatial.queries, m.spatial.agents, o.agents
        ));
    }
    report.mesh = Some(m);
    Ok(())
}

/// The agents phase: announce, discover, messages, proposals, knowledge.
async fn agents_phase(report: &mut Report, full: &[Node], agents: usize, bars: &mut Bars) -> Result<()> {
    let bar = bars.next("agents", 0);
    let a = super::devnet_agents::run(full, agents, &bar).await?;
    bar.finish();
    if a.discovery_recall < 1.0 || a.discovery_precision < 1.0 {
        report.failures.push(format!(
            "agents: discovery recall {:.4}, precision {:.4}",
            a.discovery_recall, a.discovery_precision
        ));
    }
    if a.messages_answered < a.messages {
        report.failures.push(format!("agents: {} of {} requests answered", a.messages_answered, a.messages));
    }
    if a.certified < a.proposals {
        report.failures.push(format!("agents: {} of {} proposals certified", a.certified, a.proposals));
    }
    if a.equivocations_caught < a.equivocations_made {
        report
            .failures
            .push(format!("agents: {} of {} equivocations caught", a.equivocations_caught, a.equivocations_made));
    }
    if a.knowledge_exact < 11 {
        report.failures.push(format!(
            "agents: {} of 11 knowledge copies hash-exact ({})",
            a.knowledge_exact,
            a.knowledge_errors.join("; ")
        ));
    }
    report.agents = Some(a);
    Ok(())
}

/// The nodes from `stop_from` on stop, all at once; returns their ids and when they began to.
async fn stop_third(full: &[Node], stop_from: usize) -> (HashSet<NodeId>, Instant) {
    let dead: HashSet<NodeId> = full.get(stop_from..).unwrap_or(&[]).iter().map(|f| f.id()).collect();
    let t_stop = Instant::now();
    let mut stopping = JoinSet::new();
    for f in full.get(stop_from..).unwrap_or(&[]) {
        let f = f.clone();
        stopping.spawn(async move { f.shutdown().await });
    }
    while stopping.join_next().await.is_some() {}
    (dead, t_stop)
}

/// The failure phase: the nodes from `stop_from` on stop; topic repair, reads through the
/// survivors, replicas restored and a broadcast among the survivors. Returns the survivors.
async fn failure_phase(
    report: &mut Report,
    full: &[Node],
    items: &[Item],
    subs: &mut Subs,
    stop_from: usize,
    bars: &mut Bars,
) -> Result<Vec<Node>> {
    let n = full.len();
    let bar = bars.next("failure: a third stop", 0);
    let (dead, t_stop) = stop_third(full, stop_from).await;
    let survivors: Vec<Node> = full.get(..stop_from).unwrap_or(&[]).to_vec();
    // Up to 200 records of each kind are read back through random survivors, 16 at a time. A
    // record whose every replica stopped is counted as lost, not read: with r replicas and a
    // third of the nodes gone at once, about (1/3)^r of records are expected to be.
    let sample: Vec<&Item> = ["immutable", "mutable", "set entry"]
        .iter()
        .flat_map(|k| items.iter().filter(move |i| i.kind == *k).take(200))
        .collect();
    let lost = sample.iter().filter(|i| i.replicas.iter().all(|r| dead.contains(r))).count();
    // Meanwhile the survivors' neighbour checks notice the stopped replicas and the holders
    // restore r copies of every record that kept one (wire-spec §7.5).
    let mut kept: Vec<suprnova_dht::wire::Key> =
        sample.iter().filter(|i| !i.replicas.iter().all(|r| dead.contains(r))).map(|i| i.key).collect();
    kept.sort_unstable();
    kept.dedup();
    let restoring = {
        let (survivors, r) = (survivors.clone(), devnet_config().replication);
        tokio::spawn(async move {
            super::devnet_dht::replicas_restored(&survivors, kept, r, t_stop, Duration::from_secs(45)).await
        })
    };
    let live: Vec<usize> = (0..stop_from).collect();
    let repaired = super::devnet_gossip::repaired(full, &live, &dead, Duration::from_secs(30)).await;
    let repair_s = repaired.map(|_| t_stop.elapsed().as_secs_f64());
    bar.set_length(sample.len() as u64);
    let (readable, mut get_ms) = read_sample(&mut report.failures, &survivors, &sample, &dead, &bar).await?;
    bar.finish();
    let bar = bars.next("broadcast after failure", 0);
    let plan = Plan { live: &live, publisher: 1, msgs: 200, size: 256, pace: None };
    let after = super::devnet_gossip::broadcast(subs, full, plan, &bar).await?;
    bar.finish();
    let bar = bars.next("failure: replicas restored", 0);
    let restored = restoring.await?;
    bar.finish();
    report.failure = Failure {
        stopped: n - stop_from,
        survivors: stop_from,
        repair_s,
        records_checked: sample.len(),
        records_lost_with_every_replica: lost,
        records_readable: readable,
        records_below_r_at_stop: restored.below_at_start,
        records_with_r_replicas: restored.restored,
        replicas_restored_s: restored.all_restored_s,
        get: Latency::of(&mut get_ms),
        broadcast: after,
    };
    Ok(survivors)
}

/// Reads back the records of `sample` that kept a replica through random survivors, 16 at a
/// time; returns how many came back intact and their latencies (ms), failures noted.
async fn read_sample(
    failures: &mut Vec<String>,
    survivors: &[Node],
    sample: &[&Item],
    dead: &HashSet<NodeId>,
    bar: &indicatif::ProgressBar,
) -> Result<(usize, Vec<f64>)> {
    let mut pick = super::devnet_common::picker()?;
    let (mut readable, mut get_ms) = (0, Vec::new());
    let mut reads = JoinSet::new();
    let mut queue = sample.iter().filter(|i| !i.replicas.iter().all(|r| dead.contains(r)));
    loop {
        while reads.len() < 16 {
            let Some(item) = queue.next() else { break };
            let Some(h) = survivors.get(pick(survivors.len())).cloned() else { break };
            let (kind, key, rec) = (item.kind, item.key, item.record.clone());
            reads.spawn(async move {
                let t = Instant::now();
                let r = super::devnet_dht::read_back(&h, key, &rec).await;
                (kind, r, t.elapsed())
            });
        }
        let Some(done) = reads.join_next().await else { break };
        let (kind, r, took) = done?;
        match r {
            Ok(Some(_)) => {
                readable += 1;
                get_ms.push(took.as_secs_f64() * 1e3);
            }
            Ok(None) => failures.push(format!("after failure, {kind}: a different record came back")),
            Err(e) => failures.push(format!("after failure, {kind}: {e}")),
        }
        bar.inc(1);
    }
    Ok((readable, get_ms))
}

/// Sums the survivors' channel counters and DHT drops into the report.
async fn channel_totals(report: &mut Report, survivors: &[Node]) -> Result<()> {
    let mut drops = Drops::default();
    for h in survivors {
        let s = h.dht_stats().await?;
        drops.merge(&s.channel.drops);
        report.handshakes_completed += s.channel.handshakes_completed;
        report.sessions += s.sessions;
        report.packets_in += s.channel.packets_in;
        report.packets_out += s.channel.packets_out;
    }
    report.drops = drops.nonzero().into_iter().map(|(r, c)| (r.name().to_string(), c)).collect();
    Ok(())
}

/// Notes the broadcasts that missed or duplicated deliveries and a blob that did not verify.
fn delivery_failures(report: &mut Report) {
    for (what, b) in [("broadcast", &report.broadcast), ("paced broadcast", &report.paced_broadcast)] {
        if b.delivered < b.expected {
            report.failures.push(format!("{what}: {} of {} delivered", b.delivered, b.expected));
        }
        if b.duplicate_deliveries > 0 {
            report.failures.push(format!("{what}: {} duplicate deliveries", b.duplicate_deliveries));
        }
    }
    let f = &report.failure;
    if f.broadcast.delivered < f.broadcast.expected {
        report
            .failures
            .push(format!("broadcast after failure: {} of {} delivered", f.broadcast.delivered, f.broadcast.expected));
    }
    if !report.blob.verified {
        report.failures.push("blob did not verify".into());
    }
}

/// Prints the report (JSON or text); fails if anything did, naming up to 5 kinds of failure.
fn conclude(report: &Report, json: bool, pairs: usize) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_text(report, pairs, devnet_config().replication);
    }
    if !report.failures.is_empty() {
        let mut kinds = report.failures.clone();
        kinds.sort();
        kinds.dedup();
        bail!(
            "{} operations failed: {}",
            report.failures.len(),
            kinds.into_iter().take(5).collect::<Vec<_>>().join("; ")
        );
    }
    Ok(())
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
