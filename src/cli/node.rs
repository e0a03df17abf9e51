//! `suprnova node`: the daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::config::FileConfig;
use super::{control, http, load_identity};

/// Flags of `suprnova node`; each has an environment variable and a config-file key.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// TOML file with any of the settings below (keys: listen, data_dir, bootstrap, advertise,
    /// control, metrics, log_format, replication, ip_limits_local, reachability, relay,
    /// lan_discovery). Flags
    /// and environment variables win over it.
    #[arg(long, env = "SUPRNOVA_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:4433].
    #[arg(long, env = "SUPRNOVA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory holding the identity key, the node database (routing table, records) and the
    /// control token [default: $XDG_DATA_HOME/suprnova or ~/.local/share/suprnova].
    #[arg(long, env = "SUPRNOVA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node to join through: NODEID@HOST:PORT, or HOST:PORT. Repeatable. Remembered in the data
    /// dir (DATA_DIR/bootstrap): without any, a node rejoins through the ones it was last given
    /// and the routing table it saved. A node whose table runs low rejoins through them too.
    #[arg(long, value_delimiter = ',', env = "SUPRNOVA_BOOTSTRAP")]
    pub bootstrap: Vec<String>,
    /// Address other nodes should dial (HOST:PORT), put in topic membership entries. Needed
    /// when listening on a wildcard address. Repeatable.
    #[arg(long, value_delimiter = ',', env = "SUPRNOVA_ADVERTISE")]
    pub advertise: Vec<SocketAddr>,
    /// Control endpoint (HTTP + JSON, token in DATA_DIR/control.token) on a loopback address,
    /// or `off` [default: 127.0.0.1:0, a free port, written to DATA_DIR/control.addr].
    #[arg(long, env = "SUPRNOVA_CONTROL")]
    pub control: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, env = "SUPRNOVA_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Replicas per record (r): a put stores on the r closest nodes and replica repair keeps r
    /// copies. Raise it to survive more nodes failing at once (each put costs r stores)
    /// [default: 3].
    #[arg(long, env = "SUPRNOVA_REPLICATION", value_parser = clap::value_parser!(u16).range(1..=20))]
    pub replication: Option<u16>,
    /// Apply the routing table's IP-diversity limits (2 nodes per /24 per bucket, 10 per table)
    /// to private, link-local and ULA addresses too. By default they apply to public addresses
    /// only, so that the nodes of one LAN all fit.
    #[arg(long, env = "SUPRNOVA_IP_LIMITS_LOCAL")]
    pub ip_limits_local: bool,
    /// Whether peers can dial this node: `auto` (private when bound to a private address and
    /// seen by peers at a public one: behind NAT), `public`, or `private` (always reached
    /// through relays) [default: auto].
    #[arg(long, env = "SUPRNOVA_REACHABILITY", value_parser = ["auto", "public", "private"])]
    pub reachability: Option<String>,
    /// Serve as a relay for nodes behind NAT while publicly reachable (`on`), or never (`off`)
    /// [default: on]. A relay forwards at most 2 MiB/s per circuit and 32 MiB/s in all.
    #[arg(long, env = "SUPRNOVA_RELAY", value_parser = ["on", "off"])]
    pub relay: Option<String>,
    /// Do not look for nodes on the LAN. By default a node bound to a private, link-local or
    /// wildcard address announces itself on 239.255.83.78:4434 and dials the nodes it hears, so
    /// nodes on one LAN need no --bootstrap.
    #[arg(long, env = "SUPRNOVA_NO_LAN_DISCOVERY")]
    pub no_lan_discovery: bool,
}

/// The settings after flags, environment, config file and defaults are merged.
#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    bootstrap: Vec<String>,
    advertise: Vec<SocketAddr>,
    control: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    replication: Option<u16>,
    ip_limits_local: bool,
    reachability: suprnova_dht::proto::ReachMode,
    relay: bool,
    lan_discovery: bool,
}

fn settings(a: NodeArgs) -> Result<Settings> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let control = match a.control.or(file.control).as_deref() {
        Some("off") => None,
        Some(s) => Some(s.parse::<SocketAddr>().with_context(|| format!("--control: '{s}' is not HOST:PORT or off"))?),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    if let Some(c) = control
        && !c.ip().is_loopback()
    {
        bail!("--control must be a loopback address such as 127.0.0.1:PORT (got {c}); the endpoint is for local use");
    }
    Ok(Settings {
        listen: a.listen.or(file.listen).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 4433))),
        data_dir: a.data_dir.or(file.data_dir),
        bootstrap: if a.bootstrap.is_empty() { file.bootstrap.unwrap_or_default() } else { a.bootstrap },
        advertise: if a.advertise.is_empty() { file.advertise.unwrap_or_default() } else { a.advertise },
        control,
        metrics: a.metrics.or(file.metrics),
        replication: a.replication.or(file.replication),
        ip_limits_local: a.ip_limits_local || file.ip_limits_local.unwrap_or(false),
        reachability: reach_mode(a.reachability.or(file.reachability).as_deref())?,
        lan_discovery: !a.no_lan_discovery && file.lan_discovery.unwrap_or(true),
        relay: match a.relay.or(file.relay).as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => bail!("relay must be \"on\" or \"off\", not {other:?}"),
        },
    })
}

fn reach_mode(s: Option<&str>) -> Result<suprnova_dht::proto::ReachMode> {
    use suprnova_dht::proto::ReachMode;
    Ok(match s {
        None | Some("auto") => ReachMode::Auto,
        Some("public") => ReachMode::Public,
        Some("private") => ReachMode::Private,
        Some(other) => bail!("reachability must be \"auto\", \"public\" or \"private\", not {other:?}"),
    })
}

/// File in the data dir holding the bootstrap addresses a node was last given, one per line.
pub const BOOTSTRAP_FILE: &str = "bootstrap";

/// The bootstrap addresses to use: `given` (then saved in `dir`, replacing what was there), or,
/// when none are given, the ones saved there last time.
fn remember_bootstrap(dir: &std::path::Path, given: &[String]) -> Result<Vec<String>> {
    let path = dir.join(BOOTSTRAP_FILE);
    if !given.is_empty() {
        let mut text = given.join("\n");
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(given.to_vec());
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).take(64).map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Runs a node until SIGINT/SIGTERM.
pub async fn run_node(args: NodeArgs) -> Result<()> {
    let s = settings(args)?;
    if s.replication.is_some_and(|r| !(1..=20).contains(&r)) {
        bail!("replication must be between 1 and 20 (the lookup's k)");
    }
    let listen = s.listen;
    let (ident, dir) = load_identity(s.data_dir)?;
    let remembered = remember_bootstrap(&dir, &s.bootstrap)?;
    let seeds = super::parse_seeds(&remembered)?;
    let db = dir.join("dht.redb");
    let mut cfg = suprnova_node::NodeConfig::with_seed(*ident.seed(), listen);
    cfg.database = Some(db.clone());
    cfg.advertise = s.advertise;
    if let Some(r) = s.replication {
        cfg.dht.replication = usize::from(r);
    }
    cfg.dht.routing.exempt_local = !s.ip_limits_local;
    cfg.dht.reach.mode = s.reachability;
    // A public address to advertise says the node is dialled there: not behind NAT.
    if s.reachability == suprnova_dht::proto::ReachMode::Auto
        && cfg.advertise.iter().any(|a| !suprnova_dht::proto::is_private_ip(a.ip()) && !a.ip().is_loopback())
    {
        cfg.dht.reach.mode = suprnova_dht::proto::ReachMode::Public;
    }
    cfg.dht.reach.relay.enabled = s.relay;
    cfg.lan_discovery = s.lan_discovery;
    let node = suprnova_node::Node::spawn(cfg)
        .await
        .with_context(|| format!("cannot start a node on {listen} with data dir {}", dir.display()))?;
    println!("node {} listening on udp {} (DHT and QUIC)", node.id(), node.local_addr());
    println!("data dir {}", dir.display());
    let restored = node.restored();
    if let Some(r) = restored.filter(|r| r.peers + r.records > 0) {
        println!("restored {} peers and {} records from {}", r.peers, r.records, db.display());
    }
    let ctl = match s.control {
        Some(bind) => Some(start_control(&node, bind, &dir, *ident.seed()).await?),
        None => None,
    };
    let metrics = match s.metrics {
        Some(addr) => match serve_metrics(node.clone(), addr).await {
            Ok((bound, task)) => {
                println!("metrics on http://{bound}/metrics");
                Some(task)
            }
            Err(e) => {
                if let Some(c) = ctl {
                    c.stop();
                }
                node.shutdown().await;
                return Err(e);
            }
        },
        None => None,
    };
    println!("reach it with: suprnova ping {}@{}", node.id(), node.local_addr());
    let rejoin = s.bootstrap.is_empty() && (restored.is_some_and(|r| r.peers > 0) || !seeds.is_empty());
    join_network(&node, seeds, rejoin, &dir);
    wait_for_signal().await;
    stop_node(&node, ctl, metrics).await
}

/// Starts the control endpoint on `bind` and prints where it is; shuts the node down if it cannot.
async fn start_control(
    node: &suprnova_node::Node,
    bind: SocketAddr,
    dir: &Path,
    seed: [u8; 32],
) -> Result<control::ControlServer> {
    let c = match control::start(node.clone(), bind, Some(dir), Some(seed)).await {
        Ok(c) => c,
        Err(e) => {
            node.shutdown().await;
            return Err(e);
        }
    };
    println!("control on http://{} (token in {})", c.control.addr, dir.join(http::TOKEN_FILE).display());
    Ok(c)
}

/// Warns when there is no one to join through; otherwise joins through `seeds` (or rejoins) in
/// the background.
fn join_network(node: &suprnova_node::Node, seeds: Vec<suprnova_node::Target>, rejoin: bool, dir: &Path) {
    if seeds.is_empty() && !rejoin {
        println!(
            "warning: no --bootstrap given and no saved peers in {}: this node is alone until another node contacts it",
            dir.display()
        );
    }
    if !seeds.is_empty() || rejoin {
        // In the background: Ctrl-C must work while peers are still being contacted.
        let n = seeds.len();
        let joining = node.clone();
        tokio::spawn(async move {
            match joining.bootstrap(seeds).await {
                Ok(0) => println!(
                    "warning: joined no one yet (0 peers); the node keeps trying through its bootstrap nodes and saved peers"
                ),
                Ok(peers) if rejoin => {
                    println!("rejoined from the saved routing table and bootstrap nodes: {peers} peers")
                }
                Ok(peers) => println!("bootstrapped through {n} node(s): {peers} peers in the routing table"),
                Err(e) => eprintln!("warning: bootstrap failed ({e}); the node keeps running and answers peers"),
            }
        });
    }
}

/// Stops the control endpoint, the metrics server and the node, and prints the node's counters.
async fn stop_node(
    node: &suprnova_node::Node,
    ctl: Option<control::ControlServer>,
    metrics: Option<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    if let Some(c) = ctl {
        c.stop();
    }
    if let Some(m) = metrics {
        m.abort();
    }
    let m = node.metrics().await?;
    node.shutdown().await;
    println!(
        "stopped: {} packets in, {} out, {} handshakes answered, {} peers, {} records saved, {} QUIC connections opened; drops {:?}",
        m.dht.channel.packets_in,
        m.dht.channel.packets_out,
        m.dht.channel.handshakes_answered,
        m.dht.table,
        m.dht.records,
        m.connections_opened,
        m.dht.channel.drops
    );
    Ok(())
}

/// Serves `GET /metrics` (Prometheus text format, no token) on `addr`.
async fn serve_metrics(
    node: suprnova_node::Node,
    addr: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hyper::{Method, StatusCode};
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(http::serve(listener, 16, move |req: hyper::Request<hyper::body::Incoming>| {
        let node = node.clone();
        async move {
            if req.method() != Method::GET || req.uri().path() != "/metrics" {
                return http::error(StatusCode::NOT_FOUND, "only GET /metrics here");
            }
            control::metrics_response(&node).await
        }
    }));
    Ok((bound, task))
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
