//! One host of the bed: a namespace, its address, its data dir, and the `suprnova node` process
//! running in it, driven only through the `suprnova` CLI run inside the same namespace (the control
//! endpoint listens on the namespace's own 127.0.0.1).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The UDP port every node listens on (each host has its own address).
pub const PORT: u16 = 4433;
/// How long one CLI call may take before the bed kills it and counts it failed.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to come up (control endpoint answering).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What a finished CLI call returned.
#[derive(Debug)]
pub struct Output {
    /// Whether it exited 0.
    pub ok: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long it took, process start to exit.
    pub took: Duration,
}

/// One host and its node.
pub struct Host {
    /// The namespace it lives in.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The node's id (hex), known once it has started.
    pub id: String,
    bin: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Host {
    /// A host whose node is not started yet.
    pub fn new(index: usize, ns: String, ip: Ipv4Addr, run_dir: &Path, bin: &Path) -> Host {
        Host {
            ns,
            ip,
            data_dir: run_dir.join(format!("h{index}")),
            id: String::new(),
            bin: bin.to_path_buf(),
            child: None,
            starts: 0,
        }
    }

    /// `IP:PORT` of the node.
    pub fn addr(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }

    /// Whether the node process is running (as far as the bed knows).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Starts `suprnova node` with `bootstrap` addresses (empty: none) and `extra` flags, and
    /// waits until its control endpoint answers.
    pub fn start(&mut self, bootstrap: &[String], extra: &[String]) -> Result<()> {
        fs::create_dir_all(&self.data_dir)?;
        let _ = fs::remove_file(self.data_dir.join("control.addr"));
        self.starts += 1;
        let log = File::create(self.data_dir.join(format!("node-{}.log", self.starts)))?;
        let mut args: Vec<String> = vec![
            "node".into(),
            "--listen".into(),
            self.addr(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
        ];
        if !bootstrap.is_empty() {
            args.push("--bootstrap".into());
            args.push(bootstrap.join(","));
        }
        args.extend(extra.iter().cloned());
        let child =
            self.command(&args).stdout(log.try_clone()?).stderr(log).spawn().context("cannot start suprnova node")?;
        self.child = Some(child);
        self.wait_started()
    }

    fn wait_started(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(code) = child.try_wait()?
            {
                self.child = None;
                bail!("node on {} exited at start ({code}); see {}", self.ns, self.log_hint());
            }
            if self.data_dir.join("control.addr").exists()
                && let Ok(status) = self.status()
            {
                self.id = status["id"].as_str().unwrap_or_default().to_owned();
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("node on {} did not come up in {START_TIMEOUT:?}; see {}", self.ns, self.log_hint())
    }

    /// What the node printed (stdout and stderr) since its last start.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_hint()).unwrap_or_default()
    }

    /// Removes the data dir (identity, database, bootstrap list): the next start is a new node.
    pub fn wipe(&mut self) -> Result<()> {
        if self.data_dir.exists() {
            fs::remove_dir_all(&self.data_dir)?;
        }
        Ok(())
    }

    fn log_hint(&self) -> String {
        self.data_dir.join(format!("node-{}.log", self.starts)).display().to_string()
    }

    /// `kill -9` the node (no clean shutdown, no last snapshot).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the node and wait (bounded) for it to exit; `kill -9` if it does not.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(&self.bin).args(args);
        for var in ["SUPRNOVA_CONTROL", "SUPRNOVA_DATA_DIR", "SUPRNOVA_BOOTSTRAP", "RUST_LOG"] {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "info");
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `suprnova ARGS --data-dir DIR` in the host's namespace, bounded by [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.push("--data-dir".into());
        all.push(self.data_dir.display().to_string());
        let started = Instant::now();
        let mut child = self.command(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        let deadline = started + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(2));
        };
        let took = started.elapsed();
        let stdout = out.join().unwrap_or_default();
        let mut stderr = err.join().unwrap_or_default();
        if status.is_none() {
            stderr.push_str("\n(the bed killed this call after its timeout)");
        }
        Ok(Output { ok: status.is_some_and(|s| s.success()), stdout, stderr, took })
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let out = self.cli(&["status", "--json"])?;
        if !out.ok {
            bail!("status on {}: {}", self.ns, out.stderr.trim());
        }
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// The routing table's size, or `None` if the node does not answer.
    pub fn peers(&self) -> Option<u64> {
        self.status().ok().and_then(|s| s["peers"].as_u64())
    }

    /// Starts `subscribe TOPIC --json` in the background; its message lines land in the returned
    /// log as they arrive.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription> {
        let args: Vec<String> = ["subscribe", topic, "--json", "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([self.data_dir.display().to_string()])
            .collect();
        let mut child = self.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().context("no stdout")?;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(data) = v["data"].as_str()
                    && let Ok(mut l) = sink.lock()
                {
                    l.push((Instant::now(), data.to_owned()));
                }
            }
        });
        Ok(Subscription { child, lines })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running `subscribe` process and what it has printed.
pub struct Subscription {
    child: Child,
    /// (arrival, data as hex) per message line.
    pub lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Subscription {
    /// How many times each of `wanted` (hex data) arrived.
    pub fn counts(&self, wanted: &[String]) -> Vec<usize> {
        let Ok(lines) = self.lines.lock() else { return vec![0; wanted.len()] };
        wanted.iter().map(|w| lines.iter().filter(|(_, d)| d == w).count()).collect()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
