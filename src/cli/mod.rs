//! Command-line interface: argument parsing and the subcommands.

mod devnet;
mod devnet_dht;
mod devnet_gossip;
mod node;

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
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "SUPRNOVA_LOG_FORMAT")]
    pub log_format: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Print this node's id and signed record (creates the identity if needed).
    #[command(after_help = "Example:\n  suprnova id --data-dir /var/lib/suprnova")]
    Id {
        /// Directory holding the identity key (mode 0700; key file 0600).
        #[arg(long, env = "SUPRNOVA_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run a node (DHT, topics, direct messages, blobs) on one UDP port until interrupted.
    #[command(
        after_help = "Examples:\n  suprnova node --listen 0.0.0.0:4433 --data-dir /var/lib/suprnova --bootstrap 3f2a…c1@203.0.113.7:4433\n  suprnova node --data-dir /var/lib/suprnova      # a restart rejoins from the saved routing table"
    )]
    Node {
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4433", env = "SUPRNOVA_LISTEN")]
        listen: SocketAddr,
        /// Directory holding the identity key and the node database (routing table, records).
        #[arg(long, env = "SUPRNOVA_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Node to join through: NODEID@HOST:PORT, or HOST:PORT. Repeatable. Without any, a node
        /// rejoins from the routing table saved in its data dir.
        #[arg(long, value_delimiter = ',', env = "SUPRNOVA_BOOTSTRAP")]
        bootstrap: Vec<String>,
        /// Address other nodes should dial (HOST:PORT), put in topic membership entries. Needed
        /// when listening on a wildcard address. Repeatable.
        #[arg(long, value_delimiter = ',', env = "SUPRNOVA_ADVERTISE")]
        advertise: Vec<SocketAddr>,
    },
    /// Handshake with a node and measure ping round trips.
    #[command(
        after_help = "Examples:\n  suprnova ping 3f2a…c1@127.0.0.1:4433\n  suprnova ping 127.0.0.1:4433 --count 5"
    )]
    Ping {
        /// NODEID@HOST:PORT, or HOST:PORT to accept whichever node answers there.
        target: String,
        /// Pings to send.
        #[arg(long, short = 'c', default_value_t = 3)]
        count: u32,
    },
    /// Start N nodes on 127.0.0.1 in one process, connect them, and report figures.
    #[command(after_help = "Example:\n  suprnova devnet --nodes 64 --sample 8")]
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
        #[arg(long, default_value_t = 200)]
        records: usize,
        /// Messages of 256 bytes broadcast on one topic to every node.
        #[arg(long, default_value_t = 500)]
        messages: u64,
    },
}

/// Sets up tracing from `RUST_LOG` (default `warn`) and `--log-format`.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
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
        Cmd::Node { listen, data_dir, bootstrap, advertise } => {
            node::run_node(listen, data_dir, &bootstrap, advertise).await
        }
        Cmd::Ping { target, count } => node::run_ping(&target, count).await,
        Cmd::Devnet { nodes, sample, pings, records, messages } => {
            devnet::run(nodes, sample, pings, records, messages).await
        }
    }
}

/// Random 32 bytes from the OS.
pub fn random_seed() -> Result<[u8; 32]> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    Ok(s)
}

fn default_data_dir() -> Result<PathBuf> {
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

/// Median, p99 and friends of a sample, in milliseconds.
pub fn percentiles_ms<const N: usize>(v: &mut [f64], ps: [f64; N]) -> [f64; N] {
    v.sort_by(f64::total_cmp);
    ps.map(|p| {
        let rank = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v.get(rank.min(v.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    })
}
