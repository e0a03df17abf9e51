//! Command-line interface: argument parsing and the subcommands.

mod client;
mod config;
mod control;
mod devnet;
mod devnet_agents;
mod devnet_common;
mod devnet_dht;
mod devnet_gossip;
mod devnet_mesh;
mod devnet_report;
mod http;
mod mesh;
mod node;
mod world;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::keyfile;

/// Suprnova: a peer-to-peer stack for autonomous agents.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Log format: text or json (default text; `log_format` in a node's config file).
    #[arg(long, global = true, value_parser = ["text", "json"], env = "SUPRNOVA_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print this node's id and keys (creates the identity if needed).
    #[command(after_help = "Example:\n  suprnova id --data-dir /var/lib/suprnova")]
    Id {
        /// Directory holding the identity key (mode 0700; key file 0600).
        #[arg(long, env = "SUPRNOVA_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a node (DHT, topics, direct messages, blobs) on one UDP port until interrupted.
    #[command(
        after_help = "Examples:\n  suprnova node --listen 0.0.0.0:4433 --data-dir /var/lib/suprnova --bootstrap 3f2a…c1@203.0.113.7:4433 --advertise 198.51.100.4:4433\n  suprnova node --config /etc/suprnova.toml --metrics 127.0.0.1:9464\n  suprnova node --data-dir /var/lib/suprnova      # a restart rejoins from the saved routing table"
    )]
    Node(node::NodeArgs),
    /// Show a running node's state: peers per bucket, sessions, topics, traffic.
    #[command(after_help = "Examples:\n  suprnova status --data-dir /tmp/sn1\n  suprnova status --json | jq .peers")]
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: client::Via,
    },
    /// Handshake with a node and measure ping round trips (through a running node, or
    /// `--ephemeral`).
    #[command(
        after_help = "Examples:\n  suprnova ping 3f2a…c1@127.0.0.1:4433 --data-dir /tmp/sn1\n  suprnova ping 127.0.0.1:4433 --count 5 --ephemeral"
    )]
    Ping {
        /// NODEID@HOST:PORT, or HOST:PORT to accept whichever node answers there.
        target: String,
        /// Pings to send.
        #[arg(long, short = 'c', default_value_t = 3)]
        count: u32,
        #[command(flatten)]
        via: client::Via,
    },
    /// Store a record in the DHT: immutable (default), mutable (`--salt`), or a set entry (`--set`).
    #[command(
        after_help = "Examples:\n  suprnova put 'hello world'                     # immutable; prints its key (BLAKE3 of the value)\n  suprnova put --salt profile --seq 7 'v7'       # mutable, signed by the node; higher seq wins\n  suprnova put --set chess-lobby 'ready'         # our entry in a multi-writer set\n  suprnova put --file weights.json --ephemeral --bootstrap 127.0.0.1:4433"
    )]
    Put(client::PutArgs),
    /// Read a record from the DHT by key, by `--writer` and `--salt`, or a set by `--set NAME`.
    #[command(
        after_help = "Examples:\n  suprnova get 5d1c…9a\n  suprnova get --writer 7be0…21 --salt profile\n  suprnova get --set chess-lobby --json"
    )]
    Get(client::GetArgs),
    /// Broadcast a signed message on a topic.
    #[command(after_help = "Example:\n  suprnova publish chess 'e2e4'")]
    Publish {
        /// Topic name.
        topic: String,
        /// Message (or use --file).
        message: Option<String>,
        /// Read the message from a file (`-`: stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print the answer as JSON (topic, id, bytes, neighbors).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: client::Via,
    },
    /// Print messages of a topic as they arrive, until interrupted.
    #[command(after_help = "Examples:\n  suprnova subscribe chess\n  suprnova subscribe chess --json --count 10")]
    Subscribe {
        /// Topic name.
        topic: String,
        /// Print each message as a JSON line (data in hex).
        #[arg(long)]
        json: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        via: client::Via,
    },
    /// Send a one-way direct message to a node.
    #[command(
        after_help = "Examples:\n  suprnova send 3f2a…c1 'hello'\n  suprnova send 3f2a…c1@127.0.0.1:4434 'hello'    # with an address: no DHT lookup"
    )]
    Send(client::DirectArgs),
    /// Send a request to a node and print its answer (a `suprnova node` answers with the request's
    /// own bytes).
    #[command(after_help = "Example:\n  suprnova request 3f2a…c1 'are you there?'")]
    Request(client::DirectArgs),
    /// Print direct messages and requests reaching a running node, until interrupted.
    #[command(after_help = "Example:\n  suprnova listen --data-dir /tmp/sn2")]
    Listen {
        /// Print JSON lines (data in hex).
        #[arg(long)]
        json: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        via: client::Via,
    },
    /// Share and fetch blobs (files) in BLAKE3-verified chunks.
    #[command(subcommand)]
    Blob(client::BlobCmd),
    /// Run and read meshes (replicated, certified state; the built-in world is Game of Life).
    #[command(subcommand)]
    Mesh(mesh::MeshCmd),
    /// Example worlds where agents organise themselves on a mesh (chess, universe, layout).
    #[command(subcommand)]
    World(world::WorldCmd),
    /// The main job: start N nodes on 127.0.0.1 in one process, exercise every layer, and
    /// report figures (bootstrap, puts/gets, broadcast, blob, a third of the nodes failing, memory).
    #[command(
        after_help = "Examples:\n  suprnova devnet\n  suprnova devnet --nodes 256 --report json > devnet-256.json"
    )]
    Devnet {
        /// Nodes to start.
        #[arg(long, default_value_t = 64)]
        nodes: usize,
        /// Peers each node handshakes with and pings.
        #[arg(long, default_value_t = 8)]
        sample: usize,
        /// Ping rounds over all pairs at once.
        #[arg(long, default_value_t = 5)]
        pings: usize,
        /// Puts and gets of each record kind (immutable, mutable, set entry).
        #[arg(long, default_value_t = 1000)]
        records: usize,
        /// Messages of 256 bytes flooded on one topic to every node.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Messages broadcast at 20 per second (latency without queueing).
        #[arg(long, default_value_t = 60)]
        paced: u64,
        /// Rounds the mesh phase runs (7 members, 2 byzantine; 0 skips the phase).
        #[arg(long, default_value_t = 200)]
        mesh_rounds: u64,
        /// Agents of the agents phase (0 skips it), and positioned agents the mesh phase
        /// announces and queries.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Report format: text, or json (one object on stdout; progress stays on stderr).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        report: String,
        /// Every 10 s, print what the DHT did (queries, requests, failures, retransmissions,
        /// repair, drops), summed over the nodes, on stderr: to see where a slow run spends it.
        #[arg(long)]
        trace: bool,
    },
}

/// The log format: the flag, else a node's config file, else text.
pub fn log_format(cli: &Cli) -> String {
    if let Some(f) = &cli.log_format {
        return f.clone();
    }
    if let Cmd::Node(args) = &cli.cmd
        && let Some(path) = &args.config
        && let Ok(c) = config::FileConfig::load(path)
        && let Some(f) = c.log_format
    {
        return f;
    }
    "text".into()
}

/// Sets up tracing from `RUST_LOG` (default `warn`) and the log format.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if log_format(cli) == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Id { data_dir } => {
            let (ident, _) = load_identity(data_dir)?;
            let rec = ident.make_record(0, 0, &[])?;
            println!("node id      {}", ident.id());
            println!("public key   {}", hex::encode(rec.public_key));
            println!("noise key    {}", hex::encode(rec.noise_key));
            Ok(())
        }
        Cmd::Node(args) => node::run_node(args).await,
        Cmd::Status { json, via } => client::status(&via, json).await,
        Cmd::Ping { target, count, via } => client::ping(&via, &target, count).await,
        Cmd::Put(args) => client::put(&args).await,
        Cmd::Get(args) => client::get(&args).await,
        Cmd::Publish { topic, message, file, json, via } => client::publish(&via, &topic, message, file, json).await,
        Cmd::Subscribe { topic, json, count, via } => client::subscribe(&via, &topic, json, count).await,
        Cmd::Send(a) => client::send(a, false).await,
        Cmd::Request(a) => client::send(a, true).await,
        Cmd::Listen { json, count, via } => client::listen(&via, json, count).await,
        Cmd::Blob(cmd) => client::blob(cmd).await,
        Cmd::Mesh(cmd) => mesh::run(cmd).await,
        Cmd::World(cmd) => world::run(cmd).await,
        Cmd::Devnet { nodes, sample, pings, records, messages, paced, mesh_rounds, agents, report, trace } => {
            let json = report == "json";
            let o =
                devnet::Options { nodes, sample, pings, records, messages, paced, mesh_rounds, agents, json, trace };
            devnet::run(o).await
        }
    }
}

/// Random 32 bytes from the OS.
pub fn random_seed() -> Result<[u8; 32]> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    Ok(s)
}

/// The data directory used when none is given: `$XDG_DATA_HOME/suprnova` or
/// `~/.local/share/suprnova`.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(x).join("suprnova"));
    }
    let home = std::env::var_os("HOME").context("no --data-dir given and $HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/suprnova"))
}

/// Loads (or creates) the identity in the data directory; returns it and the directory.
pub fn load_identity(data_dir: Option<PathBuf>) -> Result<(Identity, PathBuf)> {
    let dir = match data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    let seed = random_seed()?;
    let (ident, created) = keyfile::load_or_create(&dir.join("identity.key"), || seed)?;
    if created {
        tracing::info!(path = %dir.display(), "created a new identity");
    }
    Ok((ident, dir))
}

/// Parses `NODEID@HOST:PORT` or `HOST:PORT`.
pub fn parse_target(s: &str) -> Result<(Option<NodeId>, SocketAddr)> {
    let (id, addr) = match s.split_once('@') {
        Some((id, addr)) => (Some(id.parse::<NodeId>().with_context(|| format!("bad node id in '{s}'"))?), addr),
        None => (None, s),
    };
    use std::net::ToSocketAddrs;
    let mut addrs = addr.to_socket_addrs().with_context(|| format!("cannot resolve '{addr}' (expected HOST:PORT)"))?;
    let Some(sa) = addrs.next() else { bail!("'{addr}' resolves to no address") };
    Ok((id, sa))
}

/// Parses bootstrap arguments (`NODEID@HOST:PORT` or `HOST:PORT`) into DHT targets.
pub fn parse_seeds(args: &[String]) -> Result<Vec<suprnova_dht::proto::Target>> {
    args.iter()
        .map(|b| parse_target(b).map(|(expect, addr)| suprnova_dht::proto::Target::Addr { addr, expect }))
        .collect()
}

/// Median, p99 and friends of a sample, in milliseconds.
pub fn percentiles_ms<const N: usize>(v: &mut [f64], ps: [f64; N]) -> [f64; N] {
    v.sort_by(f64::total_cmp);
    ps.map(|p| {
        let rank = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v.get(rank.min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    })
}
