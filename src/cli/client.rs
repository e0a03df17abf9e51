//! Subcommands that talk to a node: a running one through its control endpoint, or, with
//! `--ephemeral`, a short-lived one started here that joins, does the job and leaves. Both go
//! through the same control calls (the ephemeral node serves them on 127.0.0.1 in-process).

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use suprnova_dht::proto::Target;
use suprnova_dht::wire::Key;
use suprnova_node::{Node, NodeConfig};

use super::control::{self, ControlServer};
use super::default_data_dir;
use super::http::{self, Control};

/// Which node a subcommand uses.
#[derive(Args, Debug, Clone)]
pub struct Via {
    /// Data dir of the running node to use (its control.addr and control.token are read there)
    /// [default: $XDG_DATA_HOME/suprnova or ~/.local/share/suprnova].
    #[arg(long, env = "SUPRNOVA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The running node's control endpoint (127.0.0.1:PORT), instead of DATA_DIR/control.addr.
    #[arg(long = "control", env = "SUPRNOVA_CONTROL")]
    pub control: Option<SocketAddr>,
    /// Token file for --control [default: DATA_DIR/control.token].
    #[arg(long, env = "SUPRNOVA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Start a short-lived node for this command: it joins through --bootstrap, does the job and
    /// leaves.
    #[arg(long)]
    pub ephemeral: bool,
    /// With --ephemeral: node to join through (NODEID@HOST:PORT or HOST:PORT). Repeatable.
    #[arg(long, value_delimiter = ',', env = "SUPRNOVA_BOOTSTRAP")]
    pub bootstrap: Vec<String>,
}

/// A connection to a node, and the node itself if it was started here.
struct Session {
    control: Control,
    own: Option<(Node, ControlServer)>,
}

impl Session {
    async fn open(via: &Via) -> Result<Session> {
        if via.ephemeral {
            return Session::ephemeral(via).await;
        }
        let dir = match &via.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        let control = match via.control {
            Some(addr) => {
                let token_path = via.token_file.clone().unwrap_or_else(|| dir.join(http::TOKEN_FILE));
                Control { addr, token: http::read_token(&token_path)?, data_dir: None }
            }
            None => Control::from_data_dir(&dir)?,
        };
        Ok(Session { control, own: None })
    }

    async fn ephemeral(via: &Via) -> Result<Session> {
        if via.bootstrap.is_empty() {
            bail!("--ephemeral needs --bootstrap NODEID@HOST:PORT (or HOST:PORT) to join through");
        }
        let seeds = super::parse_seeds(&via.bootstrap)?;
        let first = match seeds.first() {
            Some(Target::Addr { addr, .. }) => *addr,
            _ => bail!("no bootstrap address"),
        };
        let bind = SocketAddr::new(local_ip_towards(first), 0);
        let node = Node::spawn(NodeConfig::ephemeral(bind)).await.with_context(|| format!("cannot bind {bind}"))?;
        let peers = match node.bootstrap(seeds).await {
            Ok(p) => p,
            Err(e) => {
                node.shutdown().await;
                bail!("cannot join through {}: {e}", via.bootstrap.join(", "));
            }
        };
        tracing::info!(peers, "ephemeral node joined");
        let server = match control::start(node.clone(), SocketAddr::from(([127, 0, 0, 1], 0)), None, None).await {
            Ok(s) => s,
            Err(e) => {
                node.shutdown().await;
                return Err(e);
            }
        };
        Ok(Session { control: server.control.clone(), own: Some((node, server)) })
    }

    async fn close(self) {
        if let Some((node, server)) = self.own {
            server.stop();
            node.shutdown().await;
        }
    }

    /// Runs `f` and closes the session whatever it returned.
    async fn run<T>(via: &Via, f: impl AsyncFnOnce(&Control) -> Result<T>) -> Result<T> {
        let s = Session::open(via).await?;
        let r = f(&s.control).await;
        s.close().await;
        r
    }
}

/// The local address the OS would use to reach `to` (loopback for loopback), so that an
/// ephemeral node advertises something its peers can dial.
fn local_ip_towards(to: SocketAddr) -> std::net::IpAddr {
    let unspecified: SocketAddr =
        if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    UdpSocket::bind(unspecified)
        .and_then(|s| s.connect(to).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(unspecified.ip())
}

/// The message of a command: the argument, else `--file` (`-` = stdin); at most `max` bytes.
fn message(arg: Option<String>, file: Option<&Path>, max: usize) -> Result<Vec<u8>> {
    let data = match (arg, file) {
        (Some(_), Some(_)) => bail!("give the message as an argument or with --file, not both"),
        (Some(m), None) => m.into_bytes(),
        (None, Some(p)) if p == Path::new("-") => {
            let mut v = Vec::new();
            std::io::stdin().take(max as u64 + 1).read_to_end(&mut v).context("cannot read stdin")?;
            v
        }
        (None, Some(p)) => {
            let len = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?.len();
            if len > max as u64 {
                bail!("{} is {len} bytes; at most {max} fit", p.display());
            }
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        (None, None) => bail!("no message: give it as an argument or with --file"),
    };
    if data.len() > max {
        bail!("the message is over {max} bytes");
    }
    Ok(data)
}

/// Bytes for a terminal: the text if it is printable UTF-8, else hex.
fn show(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => s.to_string(),
        _ => format!("0x{}", hex::encode(data)),
    }
}

fn hex_of(v: &Value, name: &str) -> Vec<u8> {
    v.get(name).and_then(Value::as_str).and_then(|s| hex::decode(s).ok()).unwrap_or_default()
}

fn text(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
        None => String::new(),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Set keys given by name are derived; 64 hex digits are taken as the key itself.
fn set_key(name: &str) -> Key {
    let raw = hex::decode(name).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    Key(raw.unwrap_or_else(|| blake3::derive_key("suprnova v1 named set", name.as_bytes())))
}

fn parse_key(s: &str) -> Result<Key> {
    let b = hex::decode(s).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    b.map(Key).ok_or_else(|| anyhow!("'{s}' is not a key (64 hex digits)"))
}

/// POSTs `req` to `path` on the node `via` names (the mesh subcommands use it).
pub async fn call(via: &Via, path: &str, req: &Value) -> Result<Value> {
    Session::run(via, async |c: &Control| c.call(path, req).await).await
}

// ---- status, ping ----------------------------------------------------------------------------

/// The reachability lines of `status`: how peers reach this node, what it relays.
fn print_reach(r: &Value) {
    let short = |s: &str| s.get(..8).unwrap_or(s).to_string();
    let relays: Vec<String> = at(r, "relays")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let state = if at(h, "reserved").as_bool() == Some(true) { "reserved" } else { "asking" };
                    format!("{} @ {} ({state})", short(text(h, "id").as_str()), text(h, "addr"))
                })
                .collect()
        })
        .unwrap_or_default();
    if text(r, "state") == "private" {
        println!(
            "reach     behind NAT: reached through relays {}",
            if relays.is_empty() { "(none yet)".into() } else { relays.join(", ") }
        );
    } else {
        let rel = at(r, "relay");
        println!(
            "reach     public; relaying {} reservation(s), {} circuit(s), {} bytes forwarded",
            text(rel, "reservations"),
            text(rel, "circuits"),
            text(rel, "bytes_forwarded")
        );
    }
    for p in at(r, "paths").as_array().into_iter().flatten() {
        let peer = at(p, "peer").as_str().map_or("(incoming)".to_string(), short);
        println!(
            "path      {peer} via relay {} ({} bytes in, {} out)",
            text(p, "relay_addr"),
            text(p, "bytes_in"),
            text(p, "bytes_out")
        );
    }
}

pub async fn status(via: &Via, as_json: bool) -> Result<()> {
    let v = Session::run(via, async |c: &Control| c.get("/v1/status").await).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node      {}", text(&v, "id"));
    println!("key       {} (ed25519 public key)", text(&v, "public_key"));
    println!(
        "listen    udp {} (contact {})",
        text(&v, "listen"),
        at(&v, "contact")
            .as_array()
            .map_or(String::new(), |a| { a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ") })
    );
    println!("uptime    {} s", text(&v, "uptime_s"));
    println!(
        "peers     {} in the routing table, {} sessions, {} QUIC connections",
        text(&v, "peers"),
        text(&v, "sessions"),
        text(&v, "connections")
    );
    let r = &at(&v, "rejoin");
    if at(r, "rejoining").as_bool() == Some(true) {
        println!(
            "rejoining the routing table is below its floor: attempt {} through {} seed(s) and {} former peer(s)",
            text(r, "attempts"),
            text(r, "seeds"),
            text(r, "dormant")
        );
    } else if at(r, "dormant").as_u64().unwrap_or(0) > 0 {
        println!("former    {} peer(s) that stopped answering, probed in turn", text(r, "dormant"));
    }
    if let Some(b) = at(&v, "buckets").as_array().filter(|b| !b.is_empty()) {
        let parts: Vec<String> = b.iter().map(|x| format!("{}:{}", text(x, "bucket"), text(x, "peers"))).collect();
        println!("buckets   {}   (bucket:peers; bucket i holds distances in [2^i, 2^(i+1)))", parts.join(" "));
    }
    print_reach(at(&v, "reach"));
    println!("records   {} held, {} blobs", text(&v, "records"), text(&v, "blobs"));
    match at(&v, "topics").as_array().filter(|t| !t.is_empty()) {
        Some(ts) => {
            for t in ts {
                let n = at(t, "active").as_array().map_or(0, Vec::len);
                println!(
                    "topic     {}: {n} neighbours ({} eager, {} lazy), {} passive",
                    text(t, "name"),
                    text(t, "eager"),
                    text(t, "lazy"),
                    text(t, "passive")
                );
            }
        }
        None => println!("topics    none"),
    }
    let t = &at(&v, "traffic");
    println!(
        "traffic   dht {} in / {} out packets; quic {} datagrams in; gossip {} delivered, {} duplicates; blobs {} B served, {} B fetched",
        text(t, "dht_packets_in"),
        text(t, "dht_packets_out"),
        text(t, "quic_datagrams_in"),
        text(t, "gossip_delivered"),
        text(t, "gossip_duplicates"),
        text(t, "blob_bytes_served"),
        text(t, "blob_bytes_fetched")
    );
    if let Some(d) = at(&v, "drops").as_object().filter(|d| !d.is_empty()) {
        let parts: Vec<String> = d.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("drops     {}", parts.join(" "));
    }
    if let Some(l) = at(&v, "limits").as_object() {
        let hit: Vec<String> = l
            .iter()
            .filter(|(_, x)| x["refused"].as_u64().unwrap_or(0) > 0)
            .map(|(k, x)| format!("{k}={}", x["refused"]))
            .collect();
        if !hit.is_empty() {
            println!("limited   {}", hit.join(" "));
        }
    }
    Ok(())
}

pub async fn ping(via: &Via, target: &str, count: u32) -> Result<()> {
    Session::run(via, async |c: &Control| {
        let mut rtts = Vec::new();
        let mut target = target.to_string();
        for seq in 1..=count {
            let r =
                c.call("/v1/ping", &json!({ "target": target })).await.map_err(|e| anyhow!("ping {target}: {e}"))?;
            let rtt = at(&r, "rtt_ms").as_f64().unwrap_or(f64::NAN);
            let note = if seq == 1 { " (incl. record fetch + handshake if new)" } else { "" };
            println!(
                "pong from {} at {}: seq={seq} rtt={rtt:.3} ms{note} observed={}",
                short(&text(&r, "peer")),
                text(&r, "addr"),
                text(&r, "observed")
            );
            rtts.push(rtt);
            // Later pings name the node that answered.
            if !target.contains('@') {
                target = format!("{}@{}", text(&r, "peer"), text(&r, "addr"));
            }
        }
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len().max(1) as f64;
        println!("{count} sent, {} answered, rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms", rtts.len());
        Ok(())
    })
    .await
}

// ---- records ---------------------------------------------------------------------------------

/// `suprnova put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The value (or use --file).
    pub value: Option<String>,
    /// Read the value from a file (`-`: stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Store a mutable record under this salt, signed by the node (key = BLAKE3(public key ‖ salt)).
    #[arg(long, conflicts_with = "set")]
    pub salt: Option<String>,
    /// Sequence number of the mutable record; higher wins [default: now in Unix ms].
    #[arg(long, requires = "salt")]
    pub seq: Option<u64>,
    /// Add the node's entry to a multi-writer set: a set name, or its key (64 hex digits).
    #[arg(long)]
    pub set: Option<String>,
    /// Lifetime of a set entry, in seconds.
    #[arg(long, default_value_t = 3600, requires = "set")]
    pub ttl: u64,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub via: Via,
}

pub async fn put(a: &PutArgs) -> Result<()> {
    use suprnova_dht::wire::limits::{MAX_SET_VALUE_LEN, MAX_VALUE_LEN};
    let max = if a.set.is_some() { MAX_SET_VALUE_LEN } else { MAX_VALUE_LEN };
    let data = message(a.value.clone(), a.file.as_deref(), max)?;
    let req = match (&a.salt, &a.set) {
        (Some(salt), _) => {
            let seq = a.seq.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0)
            });
            json!({ "kind": "mutable", "data": hex::encode(&data), "salt": hex::encode(salt), "seq": seq })
        }
        (None, Some(set)) => {
            json!({ "kind": "set", "data": hex::encode(&data), "key": hex::encode(set_key(set).0), "ttl_s": a.ttl })
        }
        (None, None) => json!({ "kind": "immutable", "data": hex::encode(&data) }),
    };
    let r = Session::run(&a.via, async |c: &Control| c.call("/v1/put", &req).await).await?;
    if at(&r, "replicas").as_u64() == Some(0) {
        eprintln!(
            "warning: no other node took a copy (stored on this node only): it has no reachable peers; \
             the record is republished when peers come back"
        );
    }
    if a.json {
        println!("{r}");
        return Ok(());
    }
    match text(&r, "kind").as_str() {
        "mutable" => println!(
            "stored mutable record seq {} under {}\n  read it with: suprnova get --writer {} --salt {}",
            text(&r, "seq"),
            text(&r, "key"),
            text(&r, "writer"),
            a.salt.as_deref().unwrap_or_default()
        ),
        "set" => println!("added an entry to set {} (stored on {} nodes)", text(&r, "key"), text(&r, "stored")),
        _ => println!("{}", text(&r, "key")),
    }
    Ok(())
}

/// `suprnova get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The record's key (64 hex digits).
    #[arg(required_unless_present_any = ["writer", "set"])]
    pub key: Option<String>,
    /// Writer's public key (64 hex digits, `suprnova id` prints it) of a mutable record.
    #[arg(long, requires = "salt", conflicts_with_all = ["key", "set"])]
    pub writer: Option<String>,
    /// Salt of the mutable record.
    #[arg(long)]
    pub salt: Option<String>,
    /// A set by name (or key).
    #[arg(long, conflicts_with = "key")]
    pub set: Option<String>,
    /// Print the record as JSON (values in hex).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub via: Via,
}

pub async fn get(a: &GetArgs) -> Result<()> {
    let key = match (&a.key, &a.writer, &a.set) {
        (Some(k), _, _) => parse_key(k)?,
        (None, Some(w), _) => {
            let pk = hex::decode(w).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            let pk = pk.ok_or_else(|| anyhow!("--writer: '{w}' is not a public key (64 hex digits)"))?;
            Key::for_mutable(&pk, a.salt.as_deref().unwrap_or_default().as_bytes())
        }
        (None, None, Some(s)) => set_key(s),
        (None, None, None) => bail!("give a key, --writer and --salt, or --set"),
    };
    let r = Session::run(&a.via, async |c: &Control| c.call("/v1/get", &json!({ "key": hex::encode(key.0) })).await)
        .await
        .map_err(|e| anyhow!("get {}: {e}", hex::encode(key.0)))?;
    if a.json {
        println!("{r}");
        return Ok(());
    }
    match text(&r, "kind").as_str() {
        "set" => {
            let entries = at(&r, "entries").as_array().cloned().unwrap_or_default();
            for e in &entries {
                println!("{}  {}", short(&text(e, "writer")), show(&hex_of(e, "data")));
            }
            eprintln!("{} entries", entries.len());
        }
        "mutable" => {
            println!("{}", show(&hex_of(&r, "data")));
            eprintln!("mutable record, seq {}", text(&r, "seq"));
        }
        _ => {
            let data = hex_of(&r, "data");
            if std::io::stdout().is_terminal() {
                println!("{}", show(&data));
            } else {
                std::io::stdout().write_all(&data)?;
            }
        }
    }
    Ok(())
}

// ---- topics and direct messages --------------------------------------------------------------

pub async fn publish(via: &Via, topic: &str, msg: Option<String>, file: Option<PathBuf>, as_json: bool) -> Result<()> {
    let data = message(msg, file.as_deref(), 65_536)?;
    let ephemeral = via.ephemeral;
    let r = Session::run(via, async |c: &Control| {
        let r = c.call("/v1/publish", &json!({ "topic": topic, "data": hex::encode(&data) })).await?;
        if ephemeral {
            // Let the broadcast leave before the short-lived node does.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(r)
    })
    .await
    .map_err(|e| anyhow!("publish on {topic}: {e}"))?;
    let n = text(&r, "neighbors");
    if n == "0" {
        eprintln!("warning: {topic} has no neighbour: no other node received the message now");
    }
    if as_json {
        println!("{r}");
        return Ok(());
    }
    let plural = if n == "1" { "" } else { "s" };
    println!("published {} bytes on {topic} to {n} neighbour{plural} (id {})", data.len(), short(&text(&r, "id")));
    Ok(())
}

/// Prints a stream of JSON lines with `line` (which says whether the line was a message) until
/// the stream ends, `count` messages were printed, or Ctrl-C.
async fn print_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    count: Option<u64>,
    mut line: impl FnMut(&Value) -> Result<bool>,
) -> Result<()> {
    let mut seen = 0u64;
    let stream = http::read_ndjson(resp, |v| {
        if line(&v)? {
            seen += 1;
        }
        let _ = std::io::stdout().flush();
        Ok(count.is_none_or(|n| seen < n))
    });
    tokio::select! {
        r = stream => r,
        () = super::node::wait_for_signal() => Ok(()),
    }
}

pub async fn subscribe(via: &Via, topic: &str, as_json: bool, count: Option<u64>) -> Result<()> {
    Session::run(via, async |c: &Control| {
        let body = Bytes::from(serde_json::to_vec(&json!({ "topic": topic }))?);
        let resp = c.send("POST", "/v1/subscribe", body, "application/json").await?;
        print_stream(resp, count, |v| {
            if let Some(e) = v.get("error") {
                bail!("{}", e.as_str().unwrap_or_default());
            }
            if v.get("subscribed").is_some() {
                eprintln!("subscribed to {topic}; waiting for messages (Ctrl-C to stop)");
                return Ok(false);
            }
            if v.get("origin").is_none() {
                if let Some(p) = v.get("neighbor_up").and_then(Value::as_str) {
                    eprintln!("neighbour up: {}", short(p));
                }
                if let Some(p) = v.get("neighbor_down").and_then(Value::as_str) {
                    eprintln!("neighbour down: {}", short(p));
                }
                return Ok(false);
            }
            if as_json {
                println!("{v}");
            } else {
                println!("{} #{}: {}", short(&text(v, "origin")), text(v, "seq"), show(&hex_of(v, "data")));
            }
            Ok(true)
        })
        .await
    })
    .await
    .map_err(|e| anyhow!("subscribe {topic}: {e}"))
}

/// `suprnova send` and `suprnova request`.
#[derive(Args, Debug)]
pub struct DirectArgs {
    /// NODEID, or NODEID@HOST:PORT.
    pub peer: String,
    /// Message (or use --file).
    pub message: Option<String>,
    /// Read the message from a file (`-`: stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub via: Via,
}

pub async fn send(a: DirectArgs, request: bool) -> Result<()> {
    let DirectArgs { peer, message: msg, file, via } = a;
    let data = message(msg, file.as_deref(), 1 << 20)?;
    let path = if request { "/v1/request" } else { "/v1/send" };
    let r = Session::run(&via, async |c: &Control| {
        c.call(path, &json!({ "peer": peer, "data": hex::encode(&data) })).await
    })
    .await
    .map_err(|e| anyhow!("{} {peer}: {e}", if request { "request to" } else { "send to" }))?;
    if request {
        println!("{}", show(&hex_of(&r, "data")));
        eprintln!("answered in {:.1} ms", at(&r, "rtt_ms").as_f64().unwrap_or(f64::NAN));
    } else {
        println!("sent {} bytes to {}", data.len(), short(&text(&r, "peer")));
    }
    Ok(())
}

pub async fn listen(via: &Via, as_json: bool, count: Option<u64>) -> Result<()> {
    Session::run(via, async |c: &Control| {
        let resp = c.send("POST", "/v1/listen", Bytes::from_static(b"{}"), "application/json").await?;
        eprintln!("listening for direct messages and requests (Ctrl-C to stop)");
        print_stream(resp, count, |v| {
            if as_json {
                println!("{v}");
            } else if let Some(n) = v.get("missed") {
                println!("({n} messages missed: this listener was too slow)");
            } else {
                println!("{} from {}: {}", text(v, "kind"), short(&text(v, "from")), show(&hex_of(v, "data")));
            }
            Ok(true)
        })
        .await
    })
    .await
}

// ---- blobs -----------------------------------------------------------------------------------

/// `suprnova blob …`.
#[derive(Subcommand, Debug)]
pub enum BlobCmd {
    /// Hand a file to the running node, which serves it and announces itself as a provider.
    #[command(after_help = "Example:\n  suprnova blob add model.safetensors --data-dir /tmp/sn1")]
    Add {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        via: Via,
    },
    /// Fetch a blob from its providers (found in the DHT) in verified chunks, with progress.
    #[command(
        after_help = "Examples:\n  suprnova blob get 9f0e…3b -o model.safetensors\n  suprnova blob get 9f0e…3b -o model.bin --from 3f2a…c1@127.0.0.1:4433 --ephemeral --bootstrap 127.0.0.1:4433"
    )]
    Get {
        /// The blob's hash (64 hex digits).
        hash: String,
        /// Where to write it.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Fetch from these providers (NODEID or NODEID@HOST:PORT) instead of those in the DHT.
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
        #[command(flatten)]
        via: Via,
    },
}

pub async fn blob(cmd: BlobCmd) -> Result<()> {
    match cmd {
        BlobCmd::Add { file, via } => {
            if via.ephemeral {
                bail!("blob add needs a running node: an ephemeral one would stop serving the blob at once");
            }
            let len = std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?.len();
            if len > control::MAX_BLOB_UPLOAD as u64 {
                bail!(
                    "{} is {len} bytes; a node holds blobs of at most {} bytes",
                    file.display(),
                    control::MAX_BLOB_UPLOAD
                );
            }
            let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let r = Session::run(&via, async |c: &Control| {
                let resp = c.send("POST", "/v1/blob/add", Bytes::from(data), "application/octet-stream").await?;
                http::read_json_response(resp).await
            })
            .await
            .map_err(|e| anyhow!("blob add {}: {e}", file.display()))?;
            println!("{}", text(&r, "hash"));
            eprintln!("{} bytes, announced on {} nodes", text(&r, "size"), text(&r, "announced"));
            if let Some(w) = r.get("warning").and_then(Value::as_str) {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        BlobCmd::Get { hash, output, from, via } => {
            let _: suprnova_node::BlobHash = hash.parse().map_err(|e: &str| anyhow!("'{hash}': {e}"))?;
            Session::run(&via, async |c: &Control| fetch_to_file(c, &hash, &output, &from).await)
                .await
                .map_err(|e| anyhow!("blob get {hash}: {e}"))
        }
    }
}

async fn fetch_to_file(c: &Control, hash: &str, output: &Path, from: &[String]) -> Result<()> {
    let body = Bytes::from(serde_json::to_vec(&json!({ "hash": hash, "providers": from }))?);
    let resp = c.send("POST", "/v1/blob/fetch", body, "application/json").await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut outcome: Option<Value> = None;
    let mut failure: Option<String> = None;
    http::read_ndjson(resp, |v| {
        if let Some(e) = v.get("error") {
            failure = Some(e.as_str().unwrap_or_default().to_string());
            return Ok(false);
        }
        if let Some(p) = v.get("providers").and_then(Value::as_array) {
            bar.set_message(format!("from {} providers", p.len()));
        }
        if let Some(size) = v.get("size").and_then(Value::as_u64)
            && v.get("done").is_none()
        {
            bar.set_length(size);
        }
        if let Some(b) = v.get("bytes").and_then(Value::as_u64) {
            bar.set_position(b);
        }
        if let Some(p) = v.get("corrupt").and_then(Value::as_str) {
            bar.println(format!("provider {} sent a corrupt chunk; no longer asked", short(p)));
        }
        if let Some(p) = v.get("provider_failed").and_then(Value::as_str) {
            bar.println(format!("provider {} failed ({}); no longer asked", short(p), text(&v, "reason")));
        }
        if v.get("done").is_some() {
            outcome = Some(v);
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    bar.finish_and_clear();
    if let Some(f) = failure {
        bail!("{f}");
    }
    let Some(done) = outcome else { bail!("the node stopped answering before the blob was complete") };
    // The node verified every chunk; now copy the bytes out.
    let resp = c.send("GET", &format!("/v1/blob/{hash}"), Bytes::new(), "application/octet-stream").await?;
    if !resp.status().is_success() {
        http::read_json_response(resp).await?;
        bail!("the node lost the blob");
    }
    use http_body_util::BodyExt as _;
    let data = resp.into_body().collect().await.context("blob download cut short")?.to_bytes();
    let tmp = output.with_extension("part");
    std::fs::write(&tmp, &data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    let providers = at(&done, "per_provider").as_array().map_or(0, Vec::len);
    let plural = if providers == 1 { "" } else { "s" };
    println!(
        "saved {} bytes to {} (every chunk BLAKE3-verified; from {providers} provider{plural})",
        data.len(),
        output.display()
    );
    Ok(())
}

/// A field of a JSON object, or null.
fn at<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get(name).unwrap_or(&Value::Null)
}
