//! A running bed: the network, its hosts, and the figures and checks the scenarios record.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::host::{Host, Output, hex};
use crate::net::{Faults, NatKind, Network, Topology};

/// One line of the report: a figure, and whether the check it carries passed.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Scenario name.
    pub scenario: String,
    /// What was measured or checked.
    pub what: String,
    /// The figure as printed.
    pub value: String,
    /// `None` for a figure only; `Some(passed)` for a checked one.
    pub check: Option<bool>,
}

/// The bed: namespaces, hosts, and the report so far.
pub struct Bed {
    /// The hosts, index = position.
    pub hosts: Vec<Host>,
    /// Everything recorded so far.
    pub figures: Vec<Figure>,
    /// Flags every node starts with (after the bed's own).
    pub node_flags: Vec<String>,
    /// The scenario being run (labels the figures).
    pub scenario: String,
    rng: u64,
    net: Network,
    bin: PathBuf,
    run_dir: PathBuf,
}

impl Bed {
    /// Creates `n` hosts wired as `topology`; nodes are not started yet.
    pub fn create(n: usize, topology: Topology, bin: &Path, run_dir: &Path, seed: u64) -> Result<Bed> {
        let net = Network::create(n, topology)?;
        let hosts = net
            .hosts
            .iter()
            .enumerate()
            .map(|(i, ns)| Host::new(i, ns.clone(), topology.host_ip(i), run_dir, bin))
            .collect();
        Ok(Bed {
            hosts,
            figures: Vec::new(),
            node_flags: Vec::new(),
            scenario: String::new(),
            rng: seed | 1,
            net,
            bin: bin.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
        })
    }

    /// Adds a host behind its own NAT router of `kind`; returns its index (not started yet).
    pub fn add_nat_host(&mut self, kind: NatKind) -> Result<usize> {
        let i = self.net.add_nat_host(kind)?;
        let ns = self.net.hosts.get(i).context("no such host")?.clone();
        let ip = *self.net.ips.get(i).context("no such host")?;
        self.hosts.push(Host::new(i, ns, ip, &self.run_dir, &self.bin));
        Ok(i)
    }

    /// The hosts' count.
    pub fn n(&self) -> usize {
        self.hosts.len()
    }

    /// A pseudo-random index below `n` (xorshift; the bed's choices repeat with the seed).
    pub fn pick(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        usize::try_from(self.rng % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// Records a figure with no check.
    pub fn figure(&mut self, what: &str, value: impl Into<String>) {
        let value = value.into();
        println!("  {:<11} {what}: {value}", self.scenario);
        self.figures.push(Figure { scenario: self.scenario.clone(), what: what.into(), value, check: None });
    }

    /// Records a checked figure.
    pub fn check(&mut self, what: &str, passed: bool, value: impl Into<String>) {
        let value = value.into();
        let mark = if passed { "ok  " } else { "FAIL" };
        println!("  {:<11} [{mark}] {what}: {value}", self.scenario);
        self.figures.push(Figure { scenario: self.scenario.clone(), what: what.into(), value, check: Some(passed) });
    }

    /// The address list used as `--bootstrap` (host 0).
    pub fn seed_addr(&self) -> Vec<String> {
        self.hosts.first().map(Host::addr).into_iter().collect()
    }

    /// Starts host `i`'s node with `bootstrap` (empty: none, as after a restart from its data dir).
    pub fn start(&mut self, i: usize, bootstrap: &[String]) -> Result<()> {
        let flags = self.node_flags.clone();
        let host = self.hosts.get_mut(i).context("no such host")?;
        host.start(bootstrap, &flags)
    }

    /// Starts every node: host 0 first with no bootstrap, then the rest through it.
    pub fn start_all(&mut self) -> Result<()> {
        self.start(0, &[])?;
        let seed = self.seed_addr();
        for i in 1..self.n() {
            self.start(i, &seed)?;
        }
        Ok(())
    }

    /// Table sizes of the hosts that are up (`None` where a node did not answer).
    pub fn tables(&self) -> Vec<Option<u64>> {
        self.hosts.iter().map(|h| if h.is_up() { h.peers() } else { None }).collect()
    }

    /// Polls until every host in `who` has at least `want` peers, for at most `limit`; returns
    /// how long it took, or `None` if it never happened.
    pub fn wait_tables(&self, who: &[usize], want: u64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let all = who.iter().all(|&i| self.hosts.get(i).and_then(Host::peers).is_some_and(|p| p >= want));
            if all {
                return Some(start.elapsed());
            }
            thread::sleep(Duration::from_millis(250));
        }
        None
    }

    /// Puts an immutable value from host `i`; returns its key, the call and whether it succeeded.
    pub fn put(&self, i: usize, value: &str) -> Result<(String, Output)> {
        let host = self.hosts.get(i).context("no such host")?;
        let out = host.cli(&["put", value])?;
        let key = out.stdout.trim().to_owned();
        Ok((key, out))
    }

    /// Gets `key` from host `i` and checks the value is `value`.
    pub fn get(&self, i: usize, key: &str, value: &str) -> Result<(bool, Output)> {
        let host = self.hosts.get(i).context("no such host")?;
        let out = host.cli(&["get", key, "--json"])?;
        let ok = out.ok
            && serde_json::from_str::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["data"].as_str().map(|d| d == hex(value.as_bytes())))
                .unwrap_or(false);
        Ok((ok, out))
    }

    /// Publishes `msg` on `topic` from host `i`.
    pub fn publish(&self, i: usize, topic: &str, msg: &str) -> Result<Output> {
        let host = self.hosts.get(i).context("no such host")?;
        host.cli(&["publish", topic, msg])
    }

    /// Cuts the hosts into `a` and the rest: neither side hears the other.
    pub fn partition(&self, a: &[usize]) -> Result<()> {
        for i in 0..self.n() {
            let other: Vec<usize> = (0..self.n()).filter(|j| a.contains(&i) != a.contains(j)).collect();
            let faults = Faults {
                cut: other.iter().filter_map(|&j| self.hosts.get(j)).map(|h| h.ip).collect(),
                ..Faults::default()
            };
            self.net.set_faults(i, &faults)?;
        }
        Ok(())
    }

    /// Cuts host `h` off from every other host (both ways).
    pub fn isolate(&self, h: usize) -> Result<()> {
        let ip = self.hosts.get(h).context("no such host")?.ip;
        for i in 0..self.n() {
            let cut = if i == h {
                self.hosts.iter().filter(|x| x.ip != ip).map(|x| x.ip).collect()
            } else {
                std::iter::once(ip).collect()
            };
            self.net.set_faults(i, &Faults { cut, ..Faults::default() })?;
        }
        Ok(())
    }

    /// Drops `pct` per cent of datagrams each way on every host.
    pub fn loss(&self, pct: u32) -> Result<()> {
        let faults = Faults { loss_in_pct: pct, loss_out_pct: pct, ..Faults::default() };
        for i in 0..self.n() {
            self.net.set_faults(i, &faults)?;
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&self) -> Result<()> {
        self.net.clear_faults()
    }

    /// Kills every node.
    pub fn stop_all(&mut self) {
        for h in &mut self.hosts {
            h.kill9();
        }
    }
}

/// Where this run keeps its data dirs and logs.
pub fn run_dir(base: Option<PathBuf>) -> PathBuf {
    base.unwrap_or_else(|| std::env::temp_dir().join(format!("suprnova-testbed-{}", std::process::id())))
}

/// The median of `v` (sorted in place), or zero for an empty slice.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `min..max` of the known table sizes, `-` for hosts that did not answer.
pub fn table_range(tables: &[Option<u64>]) -> String {
    let known: Vec<u64> = tables.iter().flatten().copied().collect();
    let missing = tables.len() - known.len();
    let (lo, hi) = (known.iter().min().copied(), known.iter().max().copied());
    match (lo, hi) {
        (Some(lo), Some(hi)) if missing == 0 => format!("{lo}..{hi}"),
        (Some(lo), Some(hi)) => format!("{lo}..{hi} ({missing} not answering)"),
        _ => "none answering".into(),
    }
}
