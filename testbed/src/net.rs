//! The bed's network: one namespace per host, one switch namespace that holds the bridge (a LAN on
//! one /24) or routes between one /24 per host, and the nftables rules that inject faults.
//!
//! Nothing here touches the machine's own namespace except creating and deleting namespaces: the
//! veth pairs are created straight into the namespaces they join, and every address lives inside a
//! namespace the bed made. Every namespace carries the run's prefix, so `cleanup` can find and remove
//! whatever a crashed run left behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Every namespace the bed creates starts with this.
pub const NS_PREFIX: &str = "snbed";

/// How the hosts are wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// All hosts on one bridge, one private /24 (10.99.0.0/24): a LAN.
    Lan,
    /// Each host on its own /24 behind one router, on public-looking addresses (198.18.0.0/15, the
    /// benchmarking range, never routed outside these namespaces): the IP-diversity limits apply.
    Routed,
}

impl Topology {
    /// The address of host `i` (0-based).
    pub fn host_ip(self, i: usize) -> Ipv4Addr {
        let i = u8::try_from(i).unwrap_or(u8::MAX);
        match self {
            Topology::Lan => Ipv4Addr::new(10, 99, 0, i.saturating_add(1)),
            Topology::Routed => Ipv4Addr::new(198, 18, i, 2),
        }
    }
}

/// Runs a command and fails with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip netns exec NS program args…`.
pub fn ns_run(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Checks that the tools the bed needs are here and that this process may create namespaces.
pub fn preflight() -> Result<()> {
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !found {
            bail!("`{tool}` is missing: install iproute2 and nftables (the bed needs root)");
        }
    }
    Ok(())
}

/// How a NAT router maps a host's outgoing flows (RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Linux `masquerade`: keeps the source port when it is free, so one mapping serves every
    /// destination (endpoint-independent mapping); conntrack filters inbound to what was sent to.
    Cone,
    /// `masquerade fully-random`: a new random port for every destination (endpoint-dependent
    /// mapping), the NAT that hole punching cannot cross.
    Symmetric,
}

/// The nftables rules of a NAT router whose LAN is `lan` (a /24) and whose WAN side is `wan0`:
/// outgoing flows are masqueraded, inbound ones pass only as replies.
pub fn nat_ruleset(kind: NatKind, lan: Ipv4Addr) -> String {
    let how = match kind {
        NatKind::Cone => "masquerade",
        NatKind::Symmetric => "masquerade fully-random",
    };
    format!(
        "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip saddr {lan}/24 oifname \"wan0\" {how}\n  }}\n}}\ntable inet fw {{\n  chain forward {{\n    \
         type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n    \
         iifname \"lan0\" oifname \"wan0\" accept\n  }}\n}}\n"
    )
}

/// The namespaces of one bed: a switch and `hosts` hosts, wired as `topology`, and any hosts
/// added behind NAT routers.
pub struct Network {
    /// This run's namespace prefix (`snbed<pid>`).
    pub prefix: String,
    /// How the hosts are wired.
    pub topology: Topology,
    /// One namespace name per host.
    pub hosts: Vec<String>,
    /// Each host's address (a NATed host's is on its router's LAN).
    pub ips: Vec<Ipv4Addr>,
    /// The NAT routers, in the order their hosts were added.
    pub routers: Vec<String>,
    switch: String,
}

impl Network {
    /// Creates the namespaces and links. On error, what was made is removed by `Drop`.
    pub fn create(hosts: usize, topology: Topology) -> Result<Network> {
        let prefix = format!("{NS_PREFIX}{}", std::process::id());
        let switch = format!("{prefix}-sw");
        let mut net = Network {
            prefix: prefix.clone(),
            topology,
            hosts: Vec::new(),
            ips: Vec::new(),
            routers: Vec::new(),
            switch,
        };
        run("ip", &["netns", "add", &net.switch])?;
        ns_run(&net.switch, "ip", &["link", "set", "lo", "up"])?;
        if topology == Topology::Lan {
            // No multicast snooping: the bridge floods the LAN beacon (wire-spec §15.6) to every port.
            ns_run(&net.switch, "ip", &["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
            ns_run(&net.switch, "ip", &["link", "set", "br0", "up"])?;
        } else {
            ns_run(&net.switch, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        }
        for i in 0..hosts {
            let ns = format!("{prefix}-h{i}");
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(ns);
            net.ips.push(topology.host_ip(i));
            net.wire_host(i)?;
        }
        Ok(net)
    }

    /// Adds a host behind its own NAT router of `kind` (routed topology only): the router's WAN
    /// side is 198.18.(100+j).2 on the switch, its LAN 10.99.(10+j).0/24, the host .2 on it.
    /// Returns the host's index.
    pub fn add_nat_host(&mut self, kind: NatKind) -> Result<usize> {
        if self.topology != Topology::Routed {
            bail!("NAT routers need the routed topology");
        }
        let j = u8::try_from(self.routers.len()).context("too many routers")?;
        let (i, sw) = (self.hosts.len(), self.switch.clone());
        let router = format!("{}-r{j}", self.prefix);
        let host = format!("{}-h{i}", self.prefix);
        run("ip", &["netns", "add", &router])?;
        self.routers.push(router.clone());
        run("ip", &["netns", "add", &host])?;
        self.hosts.push(host.clone());
        let lan = Ipv4Addr::new(10, 99, 10 + j, 0);
        let ip = Ipv4Addr::new(10, 99, 10 + j, 2);
        self.ips.push(ip);
        let (gw, wan) = (format!("198.18.{}.1", 100 + j), format!("198.18.{}.2", 100 + j));
        let port = format!("w{j}");
        run(
            "ip",
            &["link", "add", "name", &port, "netns", &sw, "type", "veth", "peer", "name", "wan0", "netns", &router],
        )?;
        ns_run(&sw, "ip", &["addr", "add", &format!("{gw}/24"), "dev", &port])?;
        ns_run(&sw, "ip", &["link", "set", &port, "up"])?;
        for l in ["lo", "wan0"] {
            ns_run(&router, "ip", &["link", "set", l, "up"])?;
        }
        ns_run(&router, "ip", &["addr", "add", &format!("{wan}/24"), "dev", "wan0"])?;
        ns_run(&router, "ip", &["route", "add", "default", "via", &gw])?;
        run(
            "ip",
            &["link", "add", "name", "lan0", "netns", &router, "type", "veth", "peer", "name", "eth0", "netns", &host],
        )?;
        ns_run(&router, "ip", &["addr", "add", &format!("10.99.{}.1/24", 10 + j), "dev", "lan0"])?;
        ns_run(&router, "ip", &["link", "set", "lan0", "up"])?;
        ns_run(&host, "ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        for l in ["lo", "eth0"] {
            ns_run(&host, "ip", &["link", "set", l, "up"])?;
        }
        ns_run(&host, "ip", &["route", "add", "default", "via", &format!("10.99.{}.1", 10 + j)])?;
        ns_run(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        nft_load(&router, &nat_ruleset(kind, lan))?;
        Ok(i)
    }

    fn wire_host(&self, i: usize) -> Result<()> {
        let ns = self.hosts.get(i).context("no such host")?;
        let sw = &self.switch;
        let port = format!("p{i}");
        run("ip", &["link", "add", "name", &port, "netns", sw, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        let ip = self.topology.host_ip(i);
        ns_run(ns, "ip", &["link", "set", "lo", "up"])?;
        match self.topology {
            Topology::Lan => {
                ns_run(sw, "ip", &["link", "set", &port, "master", "br0"])?;
                ns_run(ns, "ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            }
            Topology::Routed => {
                let gw = Ipv4Addr::new(198, 18, ip.octets()[2], 1);
                ns_run(sw, "ip", &["addr", "add", &format!("{gw}/24"), "dev", &port])?;
                ns_run(ns, "ip", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            }
        }
        ns_run(sw, "ip", &["link", "set", &port, "up"])?;
        ns_run(ns, "ip", &["link", "set", "eth0", "up"])?;
        if self.topology == Topology::Routed {
            let gw = Ipv4Addr::new(198, 18, ip.octets()[2], 1);
            ns_run(ns, "ip", &["route", "add", "default", "via", &gw.to_string()])?;
        }
        Ok(())
    }

    /// Replaces host `i`'s fault rules with `faults` (an empty set removes every fault).
    pub fn set_faults(&self, i: usize, faults: &Faults) -> Result<()> {
        let ns = self.hosts.get(i).context("no such host")?;
        nft_load(ns, &faults.ruleset())
    }

    /// Removes every fault from every host.
    pub fn clear_faults(&self) -> Result<()> {
        for i in 0..self.hosts.len() {
            self.set_faults(i, &Faults::default())?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        cleanup(&self.prefix);
    }
}

/// The faults of one host, rendered as one nftables table (`inet testbed`) on its `eth0`.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Per cent of datagrams dropped on the way in (0–100).
    pub loss_in_pct: u32,
    /// Per cent of datagrams dropped on the way out (0–100).
    pub loss_out_pct: u32,
    /// Addresses this host can neither send to nor hear from.
    pub cut: BTreeSet<Ipv4Addr>,
    /// Addresses this host cannot send to (it still hears them): a one-way cut.
    pub cut_out: BTreeSet<Ipv4Addr>,
}

impl Faults {
    fn ruleset(&self) -> String {
        let mut input = Vec::new();
        let mut output = Vec::new();
        let cut = set_literal(&self.cut);
        if let Some(cut) = &cut {
            input.push(format!("ip saddr {cut} drop"));
            output.push(format!("ip daddr {cut} drop"));
        }
        if let Some(out) = set_literal(&self.cut_out) {
            output.push(format!("ip daddr {out} drop"));
        }
        if self.loss_in_pct > 0 {
            input.push(format!("numgen random mod 100 < {} drop", self.loss_in_pct));
        }
        if self.loss_out_pct > 0 {
            output.push(format!("numgen random mod 100 < {} drop", self.loss_out_pct));
        }
        let rules =
            |dir: &str, rules: &[String]| rules.iter().map(|r| format!("    {dir} \"eth0\" {r}\n")).collect::<String>();
        format!(
            "table inet testbed\ndelete table inet testbed\ntable inet testbed {{\n  chain input {{\n    \
             type filter hook input priority 0; policy accept;\n{}  }}\n  chain output {{\n    \
             type filter hook output priority 0; policy accept;\n{}  }}\n}}\n",
            rules("iifname", &input),
            rules("oifname", &output),
        )
    }
}

fn set_literal(addrs: &BTreeSet<Ipv4Addr>) -> Option<String> {
    if addrs.is_empty() {
        return None;
    }
    let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    Some(format!("{{ {} }}", list.join(", ")))
}

fn nft_load(ns: &str, ruleset: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns} failed: {}\n{ruleset}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Kills every process in every namespace whose name starts with `prefix`, then deletes them.
/// Never fails: it is what runs on the way out, including after errors.
pub fn cleanup(prefix: &str) -> usize {
    let Ok(list) = run("ip", &["netns", "list"]) else { return 0 };
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    for ns in &names {
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-9", pid]);
            }
        }
    }
    for ns in &names {
        let _ = run("ip", &["netns", "delete", ns]);
    }
    names.len()
}
