//! The devnet's report: what every phase measured (`--report json` prints it) and its text
//! form. A leaf beside the phases: it imports their figures, never the devnet itself.

use serde::Serialize;

use super::devnet_agents::AgentsReport;
use super::devnet_common::Latency;
use super::devnet_dht::{Boot, KindFigures};
use super::devnet_gossip::{Blob, Broadcast};
use super::devnet_mesh::MeshReport;

/// A ping phase.
#[derive(Serialize, Default, Clone)]
pub struct Pings {
    /// Pings sent.
    pub sent: usize,
    /// Pings answered.
    pub answered: usize,
    /// Wall time of the phase.
    pub elapsed_ms: f64,
    /// Answers per second.
    pub per_s: f64,
    /// Round trips.
    pub rtt: Latency,
}

/// The failure phase: a third of the nodes stop.
#[derive(Serialize, Default, Clone)]
pub struct Failure {
    /// Nodes stopped.
    pub stopped: usize,
    /// Nodes still running.
    pub survivors: usize,
    /// Seconds until every survivor's topic neighbours were all alive again.
    pub repair_s: Option<f64>,
    /// Records in the sample (up to 200 of each kind).
    pub records_checked: usize,
    /// Of those, records whose every replica was among the stopped nodes (not read).
    pub records_lost_with_every_replica: usize,
    /// Records with a surviving replica read back intact (all of them, unless something is wrong).
    pub records_readable: usize,
    /// Of the records with a surviving replica, those left with fewer than r copies.
    pub records_below_r_at_stop: usize,
    /// Of the records with a surviving replica, those with r live copies again at the end.
    pub records_with_r_replicas: usize,
    /// Seconds from the stop until every record with a surviving replica had r live copies.
    pub replicas_restored_s: Option<f64>,
    /// Latency of those reads.
    pub get: Latency,
    /// The broadcast among survivors.
    pub broadcast: Broadcast,
}

/// Memory.
#[derive(Serialize, Default, Clone)]
pub struct Memory {
    /// Peak resident set of the process, MB.
    pub peak_rss_mb: f64,
    /// (peak − resident set before the nodes started) / nodes, MB.
    pub per_node_mb: f64,
}

/// Everything the devnet measured; `--report json` prints it.
#[derive(Serialize, Default)]
pub struct Report {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// Nodes started.
    pub nodes: usize,
    /// CPUs the process could use.
    pub cpus: usize,
    /// Seconds from start to report.
    pub total_s: f64,
    /// Time to start every node.
    pub startup_ms: f64,
    /// Each node handshakes with its sample of peers, all at once.
    pub handshake: Pings,
    /// Pings one at a time.
    pub ping_sequential: Pings,
    /// Pings all at once.
    pub ping_load: Pings,
    /// Joining through one seed.
    pub bootstrap: Boot,
    /// Puts and gets per record kind.
    pub records: Vec<KindFigures>,
    /// A flood of broadcasts to every node.
    pub broadcast: Broadcast,
    /// Broadcasts at a fixed rate (latency without queueing).
    pub paced_broadcast: Broadcast,
    /// A blob from two providers.
    pub blob: Blob,
    /// The mesh: 7 members (2 byzantine), certified rounds, get_state, spatial queries.
    pub mesh: Option<super::devnet_mesh::MeshReport>,
    /// The agents: announce, discover, messages, proposals, knowledge.
    pub agents: Option<super::devnet_agents::AgentsReport>,
    /// A third of the nodes stop.
    pub failure: Failure,
    /// Memory.
    pub memory: Memory,
    /// Totals of the encrypted channel.
    pub handshakes_completed: u64,
    /// Sessions, both sides counted.
    pub sessions: usize,
    /// DHT datagrams.
    pub packets_in: u64,
    /// DHT datagrams sent.
    pub packets_out: u64,
    /// DHT drops by reason.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Everything that failed.
    pub failures: Vec<String>,
}

/// One line of a ping phase.
fn ping_line(name: &str, p: &Pings, what: &str) {
    println!(
        "  {name:<22}{}/{} answered in {:.1} ms ({:.0} {what}/s); rtt p50 {:.3} ms, p99 {:.3} ms",
        p.answered, p.sent, p.elapsed_ms, p.per_s, p.rtt.p50_ms, p.rtt.p99_ms
    );
}

/// One line of a broadcast phase.
fn broadcast_line(name: &str, b: &Broadcast) {
    println!(
        "  {name:<22}{}/{} delivered ({} × {} B to {} subscribers) in {:.2} s; slowest subscriber {:.0} msg/s; latency p50 {:.1} ms, p99 {:.1} ms; RMR {:.2}; {:.2} CPU-s per 1000 deliveries",
        b.delivered,
        b.expected,
        b.messages,
        b.message_bytes,
        b.receivers,
        b.all_delivered_s,
        b.slowest_msgs_s,
        b.latency.p50_ms,
        b.latency.p99_ms,
        b.rmr,
        b.cpu_s_per_1000_deliveries
    );
}

/// Prints the report as text; `pairs` ping pairs, `copies` the replication factor.
pub fn print_text(r: &Report, pairs: usize, copies: usize) {
    println!();
    println!(
        "devnet report: {} nodes, {pairs} pairs, {:.2} s in all ({}; {} CPUs)",
        r.nodes, r.total_s, r.date, r.cpus
    );
    println!("  start                 {} nodes up in {:.1} ms", r.nodes, r.startup_ms);
    ping_line("handshake + ping", &r.handshake, "handshakes");
    ping_line("ping, one at a time", &r.ping_sequential, "pings");
    ping_line("ping, all at once", &r.ping_load, "pings");
    let b = &r.bootstrap;
    println!(
        "  bootstrap             {} nodes joined through one seed in {:.2} s; every table held ≥ {} peers after {}; tables hold {}..{}",
        b.joined,
        b.all_joined_s,
        b.table_goal,
        b.until_goal_s.map_or("never".into(), |s| format!("{s:.2} s")),
        b.table_min,
        b.table_max
    );
    for k in &r.records {
        println!(
            "  put {:<18}{}/{} stored; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            k.kind, k.puts_ok, k.count, k.put.p50_ms, k.put.p95_ms, k.put.p99_ms
        );
        println!(
            "  get {:<18}{}/{} read back; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms; hops p50 {:.0}, max {:.0}",
            k.kind, k.gets_ok, k.count, k.get.p50_ms, k.get.p95_ms, k.get.p99_ms, k.hops_p50, k.hops_max
        );
    }
    broadcast_line("broadcast", &r.broadcast);
    broadcast_line("paced, 20 msg/s", &r.paced_broadcast);
    println!(
        "  blob                  {} MiB found in the DHT ({:.1} ms) and fetched from {} providers ({:.1} ms), {}",
        r.blob.bytes >> 20,
        r.blob.lookup_ms,
        r.blob.providers,
        r.blob.fetch_ms,
        if r.blob.verified { "every 256 KiB chunk verified" } else { "NOT VERIFIED" }
    );
    if let Some(m) = &r.mesh {
        print_mesh(m);
    }
    if let Some(a) = &r.agents {
        print_agents(a);
    }
    print_failure_and_totals(r, copies);
}

/// The mesh phase's lines.
fn print_mesh(m: &MeshReport) {
    println!(
        "  mesh                  {} members ({} byzantine: {}), {} observers: {} rounds in {:.1} s ({:.1} rounds/s, a round every {} ms asked); round gap p50 {:.1} ms, p99 {:.1} ms; {} timeouts of {} ms, {} equivocations caught",
        m.members,
        m.byzantine.len(),
        m.byzantine.join(", "),
        m.observers,
        m.rounds,
        m.elapsed_s,
        m.rounds_per_s,
        m.round_interval_ms,
        m.round_gap.p50_ms,
        m.round_gap.p99_ms,
        m.timeouts,
        m.timeout_ms,
        m.equivocations_detected
    );
    println!(
        "  mesh inputs           {}/{} applied once, from 100 authors; submit to certified p50 {:.1} ms, p99 {:.1} ms; certificate {} bytes",
        m.inputs_applied, m.inputs_submitted, m.input_finality.p50_ms, m.input_finality.p99_ms, m.certificate_bytes
    );
    println!(
        "  mesh agreement        {} rounds compared across honest members and observers: {}",
        m.rounds_compared,
        if m.hash_agreement { "one state hash each".to_string() } else { format!("{} DISAGREE", m.disagreements) }
    );
    println!(
        "  mesh get_state        {}/{} from non-members verified; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        m.get_state_ok, m.get_state_reads, m.get_state.p50_ms, m.get_state.p95_ms, m.get_state.p99_ms
    );
    let sp = &m.spatial;
    println!(
        "  mesh spatial          {} agents announced in {:.2} s; {}/{} queries exact vs brute force ({} incomplete); p50 {:.2} ms, p99 {:.2} ms; {:.0} cells read (p50)",
        sp.agents,
        sp.announce_s,
        sp.exact,
        sp.queries,
        sp.incomplete,
        sp.query.p50_ms,
        sp.query.p99_ms,
        sp.cells_read_p50
    );
}

/// The agents phase's lines.
fn print_agents(a: &AgentsReport) {
    println!(
        "  agents                {} on {} nodes announced in {:.2} s ({} set entries)",
        a.agents, a.nodes, a.announce_s, a.announce_writes
    );
    println!(
        "  agents discovery      {} queries, one at a time: recall {:.1} %, precision {:.1} %, {} incomplete; p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        a.discovery_queries,
        a.discovery_recall * 100.0,
        a.discovery_precision * 100.0,
        a.discovery_incomplete,
        a.discovery.p50_ms,
        a.discovery.p95_ms,
        a.discovery.p99_ms
    );
    println!(
        "  agents messages       {}/{} requests answered by the right agent ({:.0}/s, 64 in flight); rtt p50 {:.2} ms, p99 {:.2} ms",
        a.messages_answered, a.messages, a.messages_per_s, a.message_rtt.p50_ms, a.message_rtt.p99_ms
    );
    println!(
        "  agents votes          {}/{} proposals certified ({} expired), {} voters with {} malicious; decision p50 {:.1} ms, p99 {:.1} ms; {}/{} equivocations caught; certificate {} bytes",
        a.certified,
        a.proposals,
        a.expired,
        a.voters,
        a.malicious_voters,
        a.decision.p50_ms,
        a.decision.p99_ms,
        a.equivocations_caught,
        a.equivocations_made,
        a.certificate_bytes
    );
    println!(
        "  agents votes, honest  {} proposals to {} honest voters: decision p50 {:.1} ms, p99 {:.1} ms",
        a.proposals, a.voters, a.decision_honest.p50_ms, a.decision_honest.p99_ms
    );
    println!(
        "  agents knowledge      10 MiB to 1 agent in {:.1} ms, to 10 agents in {:.1} ms; {}/11 copies hash-exact",
        a.knowledge_one_ms, a.knowledge_ten_ms, a.knowledge_exact
    );
}

/// The failure phase's lines, then memory, the channel's totals and the drops.
fn print_failure_and_totals(r: &Report, copies: usize) {
    let f = &r.failure;
    println!(
        "  failure               {} of {} nodes stopped; topic repaired after {}; {}/{} records with a surviving replica read back (get p50 {:.2} ms, p99 {:.2} ms); {} lost every replica",
        f.stopped,
        r.nodes,
        f.repair_s.map_or("never".into(), |s| format!("{s:.2} s")),
        f.records_readable,
        f.records_checked - f.records_lost_with_every_replica,
        f.get.p50_ms,
        f.get.p99_ms,
        f.records_lost_with_every_replica
    );
    println!(
        "  replica repair        {} of those left with fewer than {copies} copies; {}/{} back to {copies} {}",
        f.records_below_r_at_stop,
        f.records_with_r_replicas,
        f.records_checked - f.records_lost_with_every_replica,
        f.replicas_restored_s
            .map_or("by the 45 s limit".into(), |s| format!("after {s:.2} s (neighbour check every 10 s)"))
    );
    broadcast_line("  broadcast after", &f.broadcast);
    println!(
        "  memory                peak RSS {:.0} MB, {:.2} MB per node",
        r.memory.peak_rss_mb, r.memory.per_node_mb
    );
    println!(
        "  channel               {} handshakes completed; {} sessions; {} packets in, {} out",
        r.handshakes_completed, r.sessions, r.packets_in, r.packets_out
    );
    if r.drops.is_empty() {
        println!("  dropped               none");
    } else {
        for (reason, c) in &r.drops {
            println!("  dropped {reason:<14} {c}");
        }
    }
}
