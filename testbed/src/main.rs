//! `suprnova-testbed`: real hosts for Suprnova. Each host is a Linux network namespace with its own
//! address and one `suprnova node` process, driven only through the `suprnova` CLI run inside the
//! namespace, as a user would. Faults are nftables rules inside the namespaces (`numgen random`
//! loss, partitions); crashes are `kill -9`. Needs root, `ip` (iproute2) and `nft` (nftables).
//!
//! Layout: `net` (namespaces, links, fault rules, cleanup), `host` (one node and its CLI),
//! `bed` (hosts, figures, checks), `scenarios` (what is run and asserted).

// The bed indexes only `serde_json::Value`s, whose index gives `Null` for a missing key instead of
// panicking.
#![allow(clippy::indexing_slicing)]

mod bed;
mod host;
mod net;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::bed::Bed;
use crate::net::{NS_PREFIX, Topology};
use crate::scenarios::Plan;

#[derive(Parser)]
#[command(about = "Real-host test bed for Suprnova: one node per network namespace")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the hosts, run the scenarios, print every figure, remove everything.
    Run(RunArgs),
    /// Remove whatever an interrupted run left behind (its namespaces and their processes).
    Cleanup,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The `suprnova` binary to run on every host.
    #[arg(long, default_value = "target/release/suprnova")]
    bin: PathBuf,
    /// Hosts per session.
    #[arg(long, default_value_t = 12)]
    hosts: usize,
    /// Which sessions to run.
    #[arg(long, value_enum, default_value_t = Session::All)]
    session: Session,
    /// Partition lengths in seconds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "70,300")]
    partitions: Vec<u64>,
    /// How long the loss scenario keeps its 10 % loss, in seconds.
    #[arg(long, default_value_t = 60)]
    loss_hold: u64,
    /// Replication factor the `wan` session's nodes run with.
    #[arg(long, default_value_t = 6)]
    replication: usize,
    /// Where the data dirs and node logs go (default: a new directory under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed for the bed's choices of hosts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Session {
    Lan,
    Wan,
    Nat,
    Discovery,
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let prefix = format!("{NS_PREFIX}{}", std::process::id());
    let handler = prefix.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("interrupted: removing the bed's namespaces");
        net::cleanup(&handler);
        std::process::exit(130);
    });
    let result = match cli.cmd {
        Cmd::Cleanup => {
            let n = net::cleanup(NS_PREFIX);
            println!("removed {n} namespaces");
            Ok(true)
        }
        Cmd::Run(args) => run(&args),
    };
    net::cleanup(&prefix);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("testbed error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &RunArgs) -> Result<bool> {
    net::preflight()?;
    let bin = std::fs::canonicalize(&args.bin)
        .with_context(|| format!("no suprnova binary at {} (build it first)", args.bin.display()))?;
    let dir = bed::run_dir(args.dir.clone());
    std::fs::create_dir_all(&dir)?;
    println!("test bed: {} hosts per session, binary {}, logs in {}", args.hosts, bin.display(), dir.display());
    let plan = Plan { partitions_s: args.partitions.clone(), loss_hold_s: args.loss_hold };
    let mut figures = Vec::new();
    if matches!(args.session, Session::Lan | Session::All) {
        println!("session lan: one /24 (10.99.0.0/24), default replication");
        let mut bed = Bed::create(args.hosts, Topology::Lan, &bin, &dir.join("lan"), args.seed)?;
        let outcome = scenarios::lan_session(&mut bed, &plan);
        bed.stop_all();
        figures.append(&mut bed.figures);
        outcome?;
    }
    if matches!(args.session, Session::Wan | Session::All) {
        println!("session wan: one /24 per host (198.18.i.2/24, routed), --replication {}", args.replication);
        let mut bed = Bed::create(args.hosts, Topology::Routed, &bin, &dir.join("wan"), args.seed)?;
        bed.node_flags = vec!["--replication".into(), args.replication.to_string()];
        let outcome = scenarios::wan_session(&mut bed);
        bed.stop_all();
        figures.append(&mut bed.figures);
        outcome?;
    }
    if matches!(args.session, Session::Discovery | Session::All) {
        println!("session discovery: 6 hosts on one bridge (10.99.0.1-6), no --bootstrap");
        let mut bed = Bed::create(6, Topology::Lan, &bin, &dir.join("discovery"), args.seed)?;
        let outcome = scenarios::discovery_session(&mut bed);
        bed.stop_all();
        figures.append(&mut bed.figures);
        outcome?;
    }
    if matches!(args.session, Session::Nat | Session::All) {
        println!("session nat: 4 public hosts (198.18.i.2/24) and 3 behind NAT routers (10.99.1j.2)");
        let mut bed = Bed::create(4, Topology::Routed, &bin, &dir.join("nat"), args.seed)?;
        let outcome = scenarios::nat_session(&mut bed);
        bed.stop_all();
        figures.append(&mut bed.figures);
        outcome?;
    }
    Ok(report(&figures))
}

/// Prints every figure as a Markdown table; true if every check passed.
fn report(figures: &[bed::Figure]) -> bool {
    println!("\n| scenario | what | figure | check |\n|---|---|---|---|");
    for f in figures {
        let check = match f.check {
            None => "",
            Some(true) => "ok",
            Some(false) => "**FAIL**",
        };
        println!("| {} | {} | {} | {check} |", f.scenario, f.what, f.value);
    }
    let failed = figures.iter().filter(|f| f.check == Some(false)).count();
    let checked = figures.iter().filter(|f| f.check.is_some()).count();
    println!("\n{} of {checked} checks passed", checked - failed);
    failed == 0
}
