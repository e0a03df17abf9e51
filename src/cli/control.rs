//! The control endpoint of a running node: HTTP/1.1 + JSON on 127.0.0.1, every request carrying
//! `Authorization: Bearer TOKEN` (the token lives in `DATA_DIR/control.token`, mode 0600). The
//! subcommands (`status`, `put`, `publish`, `blob get` …) are clients of it; so is curl.
//!
//! Binary fields (`data`, `salt`, keys, hashes) are lowercase hex. Streams (`subscribe`,
//! `listen`, `blob/fetch`) answer with newline-delimited JSON.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use suprnova_dht::NodeId;
use suprnova_dht::identity::Identity;
use suprnova_dht::proto::Target;
use suprnova_dht::wire::{Key, Record};
use suprnova_mesh::core::MeshConfig;
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::net::{Mesh, get_state};
use suprnova_mesh::world::{Genesis, Limits, SignedInput};
use suprnova_node::{BlobHash, BlobProgress, Direct, Node, NodeError};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

mod status;
mod topics;

use super::http::{self, Body, Control, NdjsonTx, error, json as reply};
use super::parse_target;

/// Largest blob accepted by `POST /v1/blob/add` (blobs are held in memory).
pub const MAX_BLOB_UPLOAD: usize = 1 << 30;

struct State {
    node: Node,
    token: String,
    started: Instant,
    /// Topics joined through this endpoint: name → open subscribe streams, and whether a
    /// publish joined it (then it stays joined).
    topics: Mutex<HashMap<String, (usize, bool)>>,
    /// Direct messages and requests received, for `listen` streams.
    inbox: broadcast::Sender<Value>,
    /// The node's identity seed, for mesh membership and inputs (None: an ephemeral node).
    member: Option<[u8; 32]>,
    /// Where mesh signing guards are kept (None: no data dir).
    data_dir: Option<PathBuf>,
    /// Meshes this node runs, by id.
    meshes: tokio::sync::Mutex<HashMap<[u8; 32], Mesh<Board>>>,
}

/// Meshes one node runs through its control endpoint, at most.
const MAX_MESHES: usize = 16;

/// A running control endpoint.
pub struct ControlServer {
    /// How clients reach it.
    pub control: Control,
    task: JoinHandle<()>,
    inbox_task: JoinHandle<()>,
    files: Option<PathBuf>,
}

impl ControlServer {
    /// Stops serving and removes the address file.
    pub fn stop(self) {
        self.task.abort();
        self.inbox_task.abort();
        if let Some(dir) = self.files {
            // Only our own: a node started since on the same data dir may have written its own.
            let path = dir.join(http::ADDR_FILE);
            let ours = std::fs::read_to_string(&path).is_ok_and(|a| a.trim() == self.control.addr.to_string());
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Starts the control endpoint for `node` on `bind` (a loopback address). With `data_dir`, the
/// address and a fresh token are written there for the subcommands to find.
pub async fn start(
    node: Node,
    bind: SocketAddr,
    data_dir: Option<&Path>,
    member: Option<[u8; 32]>,
) -> Result<ControlServer> {
    if !bind.ip().is_loopback() {
        bail!("the control endpoint listens on a loopback address only (got {bind}); use 127.0.0.1:PORT");
    }
    let listener = TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind} for control"))?;
    let addr = listener.local_addr()?;
    let token = hex::encode(super::random_seed()?);
    if let Some(dir) = data_dir {
        http::write_private(&dir.join(http::TOKEN_FILE), &format!("{token}\n"))?;
        http::write_private(&dir.join(http::ADDR_FILE), &format!("{addr}\n"))?;
    }
    let (inbox, _) = broadcast::channel(1024);
    let inbox_task = tokio::spawn(answer_incoming(node.clone(), inbox.clone()));
    let state = Arc::new(State {
        node,
        token: token.clone(),
        started: Instant::now(),
        topics: Mutex::default(),
        inbox,
        member,
        data_dir: data_dir.map(Path::to_path_buf),
        meshes: tokio::sync::Mutex::default(),
    });
    let task = tokio::spawn(http::serve(listener, 64, move |req| {
        let st = state.clone();
        async move { handle(st, req).await }
    }));
    Ok(ControlServer {
        control: Control { addr, token, data_dir: None },
        task,
        inbox_task,
        files: data_dir.map(Path::to_path_buf),
    })
}

/// The node's counters in Prometheus text format (served here and by `--metrics`).
pub async fn metrics_response(node: &Node) -> Response<Body> {
    match node.metrics().await {
        Ok(m) => {
            let mut r = Response::new(http::full(m.to_prometheus()));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Direct messages and requests go to `listen` streams; requests are answered with their own
/// bytes (an echo, so `suprnova request` works against any node).
async fn answer_incoming(node: Node, inbox: broadcast::Sender<Value>) {
    let Some(mut rx) = node.incoming().await else { return };
    while let Some(d) = rx.recv().await {
        match d {
            Direct::Message { from, data } => {
                let _ = inbox.send(json!({ "kind": "message", "from": from.to_string(), "data": hex::encode(&data) }));
            }
            Direct::Request { from, data, responder } => {
                let _ = inbox.send(json!({ "kind": "request", "from": from.to_string(), "data": hex::encode(&data) }));
                responder.respond(data);
            }
        }
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| http::token_eq(t.trim().as_bytes(), st.token.as_bytes()));
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong control token (see DATA_DIR/control.token)");
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let result = match (method, path.as_str()) {
        (Method::GET, "/v1/status") => status::status(&st).await,
        (Method::GET, "/metrics") => return metrics_response(&st.node).await,
        (Method::POST, "/v1/ping") => with_json(req, |v| ping(&st, v)).await,
        (Method::POST, "/v1/put") => with_json(req, |v| put(&st, v)).await,
        (Method::POST, "/v1/get") => with_json(req, |v| get(&st, v)).await,
        (Method::POST, "/v1/publish") => with_json(req, |v| topics::publish(&st, v)).await,
        (Method::POST, "/v1/subscribe") => with_json(req, |v| topics::subscribe(st.clone(), v)).await,
        (Method::POST, "/v1/leave") => with_json(req, |v| topics::leave(&st, v)).await,
        (Method::POST, "/v1/send") => with_json(req, |v| send(&st, v, false)).await,
        (Method::POST, "/v1/request") => with_json(req, |v| send(&st, v, true)).await,
        (Method::POST, "/v1/listen") => Ok(listen(&st)),
        (Method::POST, "/v1/blob/add") => match http::read_body(req, MAX_BLOB_UPLOAD).await {
            Ok(b) => blob_add(&st, b).await,
            Err(r) => return r,
        },
        (Method::POST, "/v1/blob/fetch") => with_json(req, |v| blob_fetch(st.clone(), v)).await,
        (Method::GET, p) if p.starts_with("/v1/blob/") => blob_read(&st, p.trim_start_matches("/v1/blob/")),
        (Method::POST, "/v1/mesh/create") => with_json(req, |v| mesh_create(&st, v)).await,
        (Method::POST, "/v1/mesh/join") => with_json(req, |v| mesh_join(&st, v)).await,
        (Method::POST, "/v1/mesh/status") => with_json(req, |v| mesh_status(&st, v)).await,
        (Method::POST, "/v1/mesh/state") => with_json(req, |v| mesh_state(&st, v)).await,
        (Method::POST, "/v1/mesh/submit") => with_json(req, |v| mesh_submit(&st, v)).await,
        _ => return error(StatusCode::NOT_FOUND, format!("no such control call: {} {path}", req.method())),
    };
    match result {
        Ok(r) => r,
        Err(Fail::Bad(msg)) => error(StatusCode::BAD_REQUEST, msg),
        Err(Fail::Node(e)) => {
            let code = match &e {
                NodeError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                NodeError::UnknownPeer(_)
                | NodeError::NoRelayPath { .. }
                | NodeError::Unreachable { .. }
                | NodeError::WrongPeer(_)
                | NodeError::Refused { .. }
                | NodeError::Busy => StatusCode::BAD_GATEWAY,
                NodeError::NotFound | NodeError::Blob(suprnova_node::BlobError::NotFound) => StatusCode::NOT_FOUND,
                NodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, e)
        }
    }
}

enum Fail {
    Bad(String),
    Node(NodeError),
}

impl From<NodeError> for Fail {
    fn from(e: NodeError) -> Self {
        Fail::Node(e)
    }
}

type Answer = Result<Response<Body>, Fail>;

async fn with_json<F, Fut>(req: Request<Incoming>, f: F) -> Answer
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    match http::read_json(req).await {
        Ok(v) => f(v).await,
        Err(r) => Ok(r),
    }
}

fn ok(v: Value) -> Answer {
    Ok(reply(StatusCode::OK, &v))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Fail> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| Fail::Bad(format!("missing string field '{name}'")))
}

fn hex_field(v: &Value, name: &str) -> Result<Vec<u8>, Fail> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => hex::decode(s).map_err(|_| Fail::Bad(format!("field '{name}' is not hex"))),
        Some(_) => Err(Fail::Bad(format!("field '{name}' must be a hex string"))),
    }
}

fn key_field(v: &Value, name: &str) -> Result<Key, Fail> {
    let b = hex_field(v, name)?;
    let k: [u8; 32] = b.try_into().map_err(|_| Fail::Bad(format!("field '{name}' must be 64 hex digits")))?;
    Ok(Key(k))
}

/// `ID` or `ID@HOST:PORT` (the address is remembered for dialling).
fn peer_field(st: &State, v: &Value) -> Result<NodeId, Fail> {
    let s = field(v, "peer")?;
    match s.split_once('@') {
        Some(_) => {
            let (id, addr) = parse_target(s).map_err(|e| Fail::Bad(format!("{e:#}")))?;
            let id = id.ok_or_else(|| Fail::Bad("peer must name a node id".into()))?;
            st.node.add_address(id, vec![addr]);
            Ok(id)
        }
        None => s.parse::<NodeId>().map_err(|_| Fail::Bad(format!("'{s}' is not a node id (64 hex digits)"))),
    }
}

async fn ping(st: &State, v: Value) -> Answer {
    let (expect, addr) = parse_target(field(&v, "target")?).map_err(|e| Fail::Bad(format!("{e:#}")))?;
    let r = match st.node.ping(Target::Addr { addr, expect }).await {
        Ok(r) => r,
        Err(e @ (NodeError::Timeout | NodeError::Unreachable { .. })) => {
            return Ok(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer from {addr} ({e}); is a suprnova node listening there?"),
            ));
        }
        Err(e) => return Err(Fail::Node(e)),
    };
    ok(json!({
        "peer": r.peer.to_string(),
        "addr": r.addr.to_string(),
        "rtt_ms": r.rtt.as_secs_f64() * 1e3,
        "observed": r.observed.to_socket_addr().to_string(),
    }))
}

async fn put(st: &State, v: Value) -> Answer {
    let data = hex_field(&v, "data")?;
    match v.get("kind").and_then(Value::as_str).unwrap_or("immutable") {
        "immutable" => {
            let (key, out) = st.node.store_immutable(data).await?;
            ok(json!({ "kind": "immutable", "key": hex::encode(key.0), "stored": out.stored, "replicas": out.remote }))
        }
        "mutable" => {
            let salt = hex_field(&v, "salt")?;
            let seq = v.get("seq").and_then(Value::as_u64).ok_or_else(|| Fail::Bad("missing 'seq'".into()))?;
            let (key, out) = st.node.store_mutable(&salt, seq, &data, None).await?;
            ok(json!({
                "kind": "mutable",
                "key": hex::encode(key.0),
                "writer": hex::encode(st.node.record().public_key),
                "seq": seq,
                "stored": out.stored,
                "replicas": out.remote,
            }))
        }
        "set" => {
            let key = key_field(&v, "key")?;
            let ttl = v.get("ttl_s").and_then(Value::as_u64).unwrap_or(3600);
            let out = st.node.put_set_entry(key, &data, Duration::from_secs(ttl)).await?;
            ok(json!({ "kind": "set", "key": hex::encode(key.0), "stored": out.stored, "replicas": out.remote }))
        }
        k => Err(Fail::Bad(format!("unknown record kind '{k}' (immutable, mutable, set)"))),
    }
}

async fn get(st: &State, v: Value) -> Answer {
    let key = key_field(&v, "key")?;
    let got = match st.node.get(key).await {
        Ok(g) => g,
        Err(NodeError::NotFound) => {
            return Ok(error(StatusCode::NOT_FOUND, "no node holds a record under this key"));
        }
        Err(e) => return Err(e.into()),
    };
    match got.record {
        Record::Immutable { value } => ok(json!({
            "kind": "immutable",
            "data": hex::encode(&value[..]),
            "from": got.from.to_string(),
            "hop": got.hop,
        })),
        Record::Mutable(_) => {
            let m = st.node.get_mutable(key).await?;
            ok(json!({
                "kind": "mutable",
                "writer": hex::encode(m.public_key),
                "salt": hex::encode(&m.salt[..]),
                "seq": m.seq,
                "data": hex::encode(&m.value[..]),
            }))
        }
        Record::SetEntry(_) => {
            let mut entries = st.node.get_set(key).await?;
            entries.sort_by_key(|e| e.public_key);
            ok(json!({
                "kind": "set",
                "entries": entries.iter().map(|e| json!({
                    "writer": hex::encode(e.public_key),
                    "seq": e.seq,
                    "ttl_s": e.ttl_s,
                    "data": hex::encode(&e.value[..]),
                })).collect::<Vec<_>>(),
            }))
        }
        Record::Reach(r) => ok(json!({
            "kind": "reach",
            "node": r.node.id.to_string(),
            "seq": r.seq,
            "relays": r.relays.iter().map(|x| json!({
                "id": x.id.to_string(),
                "addr": x.addr.to_socket_addr().to_string(),
            })).collect::<Vec<_>>(),
            "from": got.from.to_string(),
        })),
    }
}

async fn send(st: &State, v: Value, request: bool) -> Answer {
    let peer = peer_field(st, &v)?;
    let data = hex_field(&v, "data")?;
    if request {
        let t0 = Instant::now();
        let resp = st.node.request(peer, &data).await?;
        ok(json!({ "peer": peer.to_string(), "data": hex::encode(resp), "rtt_ms": t0.elapsed().as_secs_f64() * 1e3 }))
    } else {
        st.node.send(peer, &data).await?;
        ok(json!({ "peer": peer.to_string(), "sent": data.len() }))
    }
}

fn listen(st: &State) -> Response<Body> {
    let mut rx = st.inbox.subscribe();
    let (resp, tx) = http::ndjson_stream();
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                m = rx.recv() => m,
                () = tx.closed() => break,
            };
            let line = match line {
                Ok(l) => l,
                Err(broadcast::error::RecvError::Lagged(n)) => json!({ "missed": n }),
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if !tx.send(&line).await {
                break;
            }
        }
    });
    resp
}

async fn blob_add(st: &State, body: Bytes) -> Answer {
    let size = body.len();
    // Takes the buffer over without a copy when nothing else holds it.
    let hash = st.node.add_blob(Vec::from(body));
    let (announced, warning) = match st.node.provide_blob(hash).await {
        Ok(n) => (n, None),
        Err(e) => (0, Some(format!("not announced in the DHT ({e}); fetchers must name this node"))),
    };
    ok(json!({ "hash": hash.to_string(), "size": size, "announced": announced, "warning": warning }))
}

async fn blob_fetch(st: Arc<State>, v: Value) -> Answer {
    let hash: BlobHash = field(&v, "hash")?.parse().map_err(|e: &str| Fail::Bad(e.to_string()))?;
    let mut providers = Vec::new();
    if let Some(list) = v.get("providers").and_then(Value::as_array) {
        for p in list {
            providers.push(peer_field(&st, &json!({ "peer": p }))?);
        }
    }
    let (resp, tx) = http::ndjson_stream();
    tokio::spawn(async move {
        let found = if providers.is_empty() {
            match st.node.find_blob_providers(hash).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(&json!({ "error": format!("provider lookup failed: {e}") })).await;
                    return;
                }
            }
        } else {
            providers
        };
        if found.is_empty() && st.node.blob(&hash).is_none() {
            let _ = tx.send(&json!({ "error": "no provider of this blob found in the DHT" })).await;
            return;
        }
        let _ = tx.send(&json!({ "providers": found.iter().map(|p| p.to_string()).collect::<Vec<_>>() })).await;
        let (ptx, prx) = mpsc::unbounded_channel();
        let forward = tokio::spawn(forward_progress(prx, tx.clone()));
        let result = st.node.fetch_blob(hash, &found, Some(ptx)).await;
        let _ = forward.await;
        let last = match result {
            Ok((data, report)) => json!({
                "done": true,
                "size": data.len(),
                "resumed": report.resumed,
                "per_provider": report.per_provider.iter().map(|(p, n)| json!({ "provider": p.to_string(), "chunks": n })).collect::<Vec<_>>(),
                "corrupt": report.corrupt.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let _ = tx.send(&last).await;
    });
    Ok(resp)
}

async fn forward_progress(mut rx: mpsc::UnboundedReceiver<BlobProgress>, tx: NdjsonTx) {
    let mut last_sent = Instant::now();
    let mut pending: Option<Value> = None;
    while let Some(p) = rx.recv().await {
        let line = match p {
            BlobProgress::Started { size, chunks, held } => json!({ "size": size, "chunks": chunks, "held": held }),
            BlobProgress::Chunk { done, .. } => {
                // At most ~20 progress lines a second.
                pending = Some(json!({ "bytes": done }));
                if last_sent.elapsed() < Duration::from_millis(50) {
                    continue;
                }
                last_sent = Instant::now();
                match pending.take() {
                    Some(v) => v,
                    None => continue,
                }
            }
            BlobProgress::Corrupt { provider, index } => json!({ "corrupt": provider.to_string(), "chunk": index }),
            BlobProgress::ProviderFailed { provider, reason } => {
                json!({ "provider_failed": provider.to_string(), "reason": reason })
            }
        };
        if !tx.send(&line).await {
            return;
        }
    }
    if let Some(v) = pending {
        let _ = tx.send(&v).await;
    }
}

/// The bytes of a blob, shared without copying.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

fn blob_read(st: &State, hash: &str) -> Answer {
    let hash: BlobHash = hash.parse().map_err(|e: &str| Fail::Bad(e.to_string()))?;
    match st.node.blob(&hash) {
        Some(data) => {
            let mut r = Response::new(http::full(Bytes::from_owner(Shared(data))));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        None => Err(Fail::Node(suprnova_node::BlobError::NotFound.into())),
    }
}

// ---- meshes (the Life world) -----------------------------------------------------------------

fn u64_field(v: &Value, name: &str, default: u64) -> Result<u64, Fail> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_u64().ok_or_else(|| Fail::Bad(format!("field '{name}' must be a non-negative integer"))),
    }
}

fn mesh_id_field(v: &Value) -> Result<[u8; 32], Fail> {
    key_field(v, "mesh_id").map(|k| k.0)
}

fn mesh_fail(e: impl std::fmt::Display) -> Fail {
    Fail::Bad(e.to_string())
}

/// Starts (or finds, if already running) a Life mesh: `width`, `height` (1–256, default 32),
/// `members` (hex keys in order; default this node alone), `round_interval_ms` (10–60000,
/// default 1000), `cells` ([[x, y], …] alive at round 0).
async fn mesh_create(st: &State, v: Value) -> Answer {
    let me = st.member.map(Identity::from_seed).ok_or_else(|| Fail::Bad("an ephemeral node runs no mesh".into()))?;
    let w = u64_field(&v, "width", 32)?;
    let h = u64_field(&v, "height", 32)?;
    let (Ok(w @ 1..=256), Ok(h @ 1..=256)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(Fail::Bad("width and height must be 1 ..= 256".into()));
    };
    let interval = u64_field(&v, "round_interval_ms", 1000)?;
    let Ok(interval @ 10..=60_000) = u32::try_from(interval) else {
        return Err(Fail::Bad("round_interval_ms must be 10 ..= 60000".into()));
    };
    let mut members: Vec<[u8; 32]> = Vec::new();
    for m in v.get("members").and_then(Value::as_array).into_iter().flatten() {
        let k = m.as_str().and_then(|s| hex::decode(s).ok()).and_then(|b| <[u8; 32]>::try_from(b).ok());
        members.push(k.ok_or_else(|| Fail::Bad(format!("member {m} is not a public key (64 hex digits)")))?);
    }
    if members.is_empty() {
        members.push(me.public_key());
    }
    let mut board = Board::empty(w, h);
    for c in v.get("cells").and_then(Value::as_array).into_iter().flatten() {
        let xy: Vec<u64> = c.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        let (Some(x), Some(y)) = (xy.first(), xy.get(1)) else {
            return Err(Fail::Bad(format!("cell {c} must be [x, y]")));
        };
        if *x >= u64::from(w) || *y >= u64::from(h) {
            return Err(Fail::Bad(format!("cell {c} is outside the {w}×{h} board")));
        }
        board.set(*x as i64, *y as i64, true);
    }
    let genesis = Genesis::for_world(&Life, &board, members, interval, Limits::default())
        .ok_or_else(|| Fail::Bad("too many members (at most 256)".into()))?;
    let id = genesis.mesh_id();
    let member = genesis.members.contains(&me.public_key());
    let mut meshes = st.meshes.lock().await;
    if !meshes.contains_key(&id) {
        if meshes.len() >= MAX_MESHES {
            return Err(Fail::Bad(format!("this node already runs {MAX_MESHES} meshes")));
        }
        let mesh = Mesh::start(st.node.clone(), Life, genesis.clone(), board, Some(me), mesh_config(st, &id)?)
            .await
            .map_err(mesh_fail)?;
        meshes.insert(id, mesh);
    }
    ok(json!({
        "mesh_id": hex::encode(id),
        "member": member,
        "members": genesis.members.iter().map(hex::encode).collect::<Vec<_>>(),
        "topic": suprnova_mesh::net::topic_name(&id),
        "width": w, "height": h, "round_interval_ms": interval,
    }))
}

/// A member keeps its signing guard in DATA_DIR/mesh/ID.guard.
fn mesh_config(st: &State, id: &[u8; 32]) -> Result<MeshConfig, Fail> {
    let mut cfg = MeshConfig::default();
    if let Some(dir) = &st.data_dir {
        let dir = dir.join("mesh");
        std::fs::create_dir_all(&dir).map_err(|e| Fail::Bad(format!("cannot create {}: {e}", dir.display())))?;
        cfg.guard_file = Some(dir.join(format!("{}.guard", hex::encode(id))));
    }
    Ok(cfg)
}

/// Joins a running Life mesh by id (as a member if this node's key is one).
async fn mesh_join(st: &State, v: Value) -> Answer {
    let id = mesh_id_field(&v)?;
    let me = st.member.map(Identity::from_seed);
    let mut meshes = st.meshes.lock().await;
    if !meshes.contains_key(&id) {
        if meshes.len() >= MAX_MESHES {
            return Err(Fail::Bad(format!("this node already runs {MAX_MESHES} meshes")));
        }
        let mesh = Mesh::join(st.node.clone(), Life, id, me, mesh_config(st, &id)?).await.map_err(mesh_fail)?;
        meshes.insert(id, mesh);
    }
    let g = meshes.get(&id).map(|m| m.genesis().clone());
    let member =
        g.as_ref().is_some_and(|g| st.member.is_some_and(|s| g.members.contains(&Identity::from_seed(s).public_key())));
    ok(json!({ "mesh_id": hex::encode(id), "member": member }))
}

/// The meshes this node runs (all, or `mesh_id`), with their counters.
async fn mesh_status(st: &State, v: Value) -> Answer {
    let want = match v.get("mesh_id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(mesh_id_field(&v)?),
    };
    let meshes: Vec<Mesh<Board>> = st
        .meshes
        .lock()
        .await
        .iter()
        .filter(|(id, _)| want.is_none_or(|w| w == **id))
        .map(|(_, m)| m.clone())
        .collect();
    if let Some(w) = want
        && meshes.is_empty()
    {
        return Err(Fail::Bad(format!("this node runs no mesh {} (see `suprnova mesh status`)", hex::encode(w))));
    }
    let me = st.member.map(|s| Identity::from_seed(s).public_key());
    let mut out = Vec::new();
    for m in meshes {
        let Some(s) = m.status().await else { continue };
        let g = m.genesis();
        out.push(json!({
            "mesh_id": hex::encode(s.mesh_id),
            "world": g.world.as_str(),
            "member": me.is_some_and(|k| g.members.contains(&k)),
            "members": g.members.len(),
            "round_interval_ms": g.round_interval_ms,
            "round": s.round,
            "pool": s.pool,
            "certified": s.stats.certified,
            "inputs_accepted": s.stats.inputs_accepted,
            "inputs_applied": s.stats.inputs_applied,
            "inputs_refused": s.stats.inputs_refused,
            "batches_refused": s.stats.batches_refused,
            "proposed": s.stats.proposed,
            "timeouts": s.agreement.timeouts,
            "equivocations": s.agreement.equivocations,
            "stored": s.stored,
            "store_failed": s.store_failed,
            "last_store_error": s.last_store_error,
            "caught_up": s.caught_up,
            "undecodable": s.undecodable,
        }));
    }
    ok(json!({ "meshes": out }))
}

/// Reads a Life mesh's newest certified state from the DHT (any mesh, run here or not) and
/// checks it against its genesis.
async fn mesh_state(st: &State, v: Value) -> Answer {
    let id = mesh_id_field(&v)?;
    let t = Instant::now();
    let f = get_state::<Life>(&st.node, id).await.map_err(mesh_fail)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let b = &f.state;
    let rows: Vec<String> = if b.w <= 128 && b.h <= 128 {
        (0..i64::from(b.h))
            .map(|y| (0..i64::from(b.w)).map(|x| if b.alive(x, y) { '#' } else { '.' }).collect())
            .collect()
    } else {
        Vec::new()
    };
    ok(json!({
        "mesh_id": hex::encode(id),
        "round": f.round,
        "state_hash": hex::encode(f.state_hash),
        "certificate_signers": f.certificate.votes.len(),
        "width": b.w, "height": b.h,
        "population": b.population(),
        "rows": rows,
        "rejected_heads": f.rejected.iter().map(|(w, why)| json!({"writer": hex::encode(w), "why": why.to_string()})).collect::<Vec<_>>(),
        "read_ms": ms,
    }))
}

/// Submits `SetCell{x, y, alive}` to a mesh this node runs, signed by this node.
async fn mesh_submit(st: &State, v: Value) -> Answer {
    let id = mesh_id_field(&v)?;
    let me = st.member.map(Identity::from_seed).ok_or_else(|| Fail::Bad("an ephemeral node signs no input".into()))?;
    let mesh = st.meshes.lock().await.get(&id).cloned();
    let mesh = mesh.ok_or_else(|| Fail::Bad(format!("this node runs no mesh {}", hex::encode(id))))?;
    let x = u16::try_from(u64_field(&v, "x", 0)?).map_err(mesh_fail)?;
    let y = u16::try_from(u64_field(&v, "y", 0)?).map_err(mesh_fail)?;
    let alive = v.get("alive").and_then(Value::as_bool).unwrap_or(true);
    let round = mesh.status().await.map_or(0, |s| s.round) + 1;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let input = SignedInput::sign(&me, &id, round, nonce, &SetCell { x, y, alive }).map_err(mesh_fail)?;
    let input_id = mesh.submit(input).await.map_err(mesh_fail)?;
    ok(json!({ "mesh_id": hex::encode(id), "input_id": hex::encode(input_id), "round": round }))
}
