//! The small HTTP/1.1 layer (hyper) under the control and metrics endpoints, and the client the
//! subcommands use to reach a running node.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

/// A response body: a whole buffer or a stream of chunks.
pub type Body = BoxBody<Bytes, Infallible>;

/// A whole-buffer body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A JSON response.
pub fn json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// A JSON error response `{"error": msg}`.
pub fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

/// A body fed from a channel: one chunk per message, ends when every sender is gone. Used for
/// streams of newline-delimited JSON; the sender sees the channel close when the client leaves.
pub struct ChanBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A streaming response of newline-delimited JSON; returns it and the sender to feed it.
pub fn ndjson_stream() -> (Response<Body>, NdjsonTx) {
    let (tx, rx) = mpsc::channel(256);
    let mut r = Response::new(ChanBody(rx).boxed());
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-ndjson"));
    (r, NdjsonTx(tx))
}

/// Feeds a newline-delimited JSON stream.
#[derive(Clone)]
pub struct NdjsonTx(mpsc::Sender<Bytes>);

impl NdjsonTx {
    /// Sends one line; false once the client is gone.
    pub async fn send(&self, v: &Value) -> bool {
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.push(b'\n');
        self.0.send(Bytes::from(line)).await.is_ok()
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until the task is dropped; at most `max_conns`
/// connections at once (more wait in the kernel's backlog).
pub async fn serve<H, F>(listener: TcpListener, max_conns: usize, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_conns.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let fut = h(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Reads a request body of at most `max` bytes.
pub async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Response<Body>> {
    match http_body_util::Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {max} bytes")))
            } else {
                Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")))
            }
        }
    }
}

/// Reads a JSON request body (at most 4 MiB: a direct message of 1 MiB travels hex-encoded).
pub async fn read_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let b = read_body(req, 4 << 20).await?;
    if b.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&b).map_err(|e| error(StatusCode::BAD_REQUEST, format!("request is not JSON: {e}")))
}

// ---- client ------------------------------------------------------------------------------------

/// Where a running node's control endpoint is, and the token it wants.
#[derive(Clone, Debug)]
pub struct Control {
    /// The endpoint.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: String,
    /// The data dir whose `control.addr` named the endpoint, if one did.
    pub data_dir: Option<PathBuf>,
}

/// Name of the file in the data dir holding the control endpoint's address.
pub const ADDR_FILE: &str = "control.addr";
/// Name of the file in the data dir holding the control token (mode 0600).
pub const TOKEN_FILE: &str = "control.token";

impl Control {
    /// Finds the control endpoint of the node running with data dir `dir`.
    pub fn from_data_dir(dir: &Path) -> Result<Control> {
        let addr_path = dir.join(ADDR_FILE);
        let addr = std::fs::read_to_string(&addr_path).map_err(|e| {
            anyhow!(
                "no running node found: cannot read {} ({e}); start `suprnova node --data-dir {}`, or pass --ephemeral --bootstrap ADDR",
                addr_path.display(),
                dir.display()
            )
        })?;
        let addr: SocketAddr =
            addr.trim().parse().with_context(|| format!("{} does not hold an address", addr_path.display()))?;
        Ok(Control { addr, token: read_token(&dir.join(TOKEN_FILE))?, data_dir: Some(dir.to_path_buf()) })
    }

    /// Sends one request; returns the status and the response body (not yet read).
    pub async fn send(&self, method: &str, path: &str, body: Bytes, content_type: &str) -> Result<Response<Incoming>> {
        let stream = match TcpStream::connect(self.addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && self.data_dir.is_some() => {
                let dir = self.data_dir.as_deref().unwrap_or(Path::new("."));
                bail!(
                    "the node is not running: {} names {}, where nothing listens (the node stopped without \
                     cleaning up, e.g. it was killed); start it with `suprnova node --data-dir {}`",
                    dir.join(ADDR_FILE).display(),
                    self.addr,
                    dir.display()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot reach the node's control endpoint at {} (is the node still running?)", self.addr)
                });
            }
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("control endpoint: HTTP handshake failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .context("bad request")?;
        sender.send_request(req).await.context("control endpoint: request failed")
    }

    /// POSTs JSON and reads a JSON answer; a non-2xx answer becomes its `error` message.
    pub async fn call(&self, path: &str, req: &Value) -> Result<Value> {
        let body = Bytes::from(serde_json::to_vec(req)?);
        let resp = self.send("POST", path, body, "application/json").await?;
        read_json_response(resp).await
    }

    /// GETs a JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.send("GET", path, Bytes::new(), "application/json").await?;
        read_json_response(resp).await
    }
}

/// Reads a whole JSON response; a non-2xx status becomes an error with the server's message.
pub async fn read_json_response(resp: Response<Incoming>) -> Result<Value> {
    let status = resp.status();
    let body = resp.into_body().collect().await.context("control endpoint: response cut short")?.to_bytes();
    let v: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    if !status.is_success() {
        let msg = v.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
        bail!("{msg}");
    }
    Ok(v)
}

/// Reads newline-delimited JSON from a streaming response, calling `f` per line until the stream
/// ends or `f` returns false.
pub async fn read_ndjson(resp: Response<Incoming>, mut f: impl FnMut(Value) -> Result<bool>) -> Result<()> {
    let status = resp.status();
    if !status.is_success() {
        return read_json_response(resp).await.map(|_| ());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("control endpoint: stream broken")?;
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_slice(line).context("control endpoint: bad stream line")?;
            if !f(v)? {
                return Ok(());
            }
        }
        if buf.len() > 1 << 20 {
            bail!("control endpoint: stream line over 1 MiB");
        }
    }
    Ok(())
}

/// Reads a token file (trimmed).
pub fn read_token(path: &Path) -> Result<String> {
    let t =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the control token {}", path.display()))?;
    Ok(t.trim().to_string())
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    {
        use std::io::Write as _;
        let mut f = o.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Compares two tokens in time independent of where they differ.
pub fn token_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
