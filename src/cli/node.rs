//! `suprnova node` and `suprnova ping`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use suprnova_dht::identity::Identity;
use suprnova_dht::net::{self, NodeError};
use suprnova_dht::proto::{DhtConfig, RequestError, Target};

use super::{load_identity, parse_target, random_seed};

/// Runs a node until SIGINT/SIGTERM.
pub async fn run_node(
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    bootstrap: &[String],
    advertise: Vec<SocketAddr>,
) -> Result<()> {
    let seeds = bootstrap
        .iter()
        .map(|s| parse_target(s).map(|(expect, addr)| Target::Addr { addr, expect }))
        .collect::<Result<Vec<_>>>()?;
    let (ident, dir) = load_identity(data_dir)?;
    let db = dir.join("dht.redb");
    let mut cfg = suprnova_node::NodeConfig::with_seed(*ident.seed(), listen);
    cfg.database = Some(db.clone());
    cfg.advertise = advertise;
    let node = suprnova_node::Node::spawn(cfg)
        .await
        .with_context(|| format!("cannot start a node on {listen} with data dir {}", dir.display()))?;
    println!("node {} listening on udp {} (DHT and QUIC)", node.id(), node.local_addr());
    println!("data dir {}", dir.display());
    let restored = node.dht().restored();
    if let Some(r) = restored.filter(|r| r.peers + r.records > 0) {
        println!("restored {} peers and {} records from {}", r.peers, r.records, db.display());
    }
    println!("reach it with: suprnova ping {}@{}", node.id(), node.local_addr());
    let rejoin = seeds.is_empty() && restored.is_some_and(|r| r.peers > 0);
    if !seeds.is_empty() || rejoin {
        // In the background: Ctrl-C must work while peers are still being contacted.
        let n = seeds.len();
        let joining = node.clone();
        tokio::spawn(async move {
            match joining.bootstrap(seeds).await {
                Ok(peers) if rejoin => println!("rejoined from the saved routing table: {peers} peers"),
                Ok(peers) => println!("bootstrapped through {n} node(s): {peers} peers in the routing table"),
                Err(e) => eprintln!("warning: bootstrap failed ({e}); the node keeps running and answers peers"),
            }
        });
    }
    wait_for_signal().await;
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

async fn wait_for_signal() {
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

/// Pings `target` `count` times from a short-lived identity.
pub async fn run_ping(target: &str, count: u32) -> Result<()> {
    let (expect, addr) = parse_target(target)?;
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let ident = Identity::from_seed(random_seed()?);
    let (node, _task) = net::spawn(ident, bind, DhtConfig::default()).await.context("cannot bind a UDP socket")?;
    let mut rtts = Vec::new();
    let mut expect = expect;
    for seq in 1..=count {
        // After the first answer the node's record is cached under its id, so later pings go
        // straight to the established session.
        match node.ping(Target::Addr { addr, expect }).await {
            Ok(r) => {
                let note = if seq == 1 { " (incl. record fetch + handshake)" } else { "" };
                println!(
                    "pong from {} at {}: seq={} rtt={:.3} ms{} observed={}",
                    r.peer.short(),
                    r.addr,
                    seq,
                    r.rtt.as_secs_f64() * 1e3,
                    note,
                    r.observed
                );
                rtts.push(r.rtt.as_secs_f64() * 1e3);
                expect = Some(r.peer);
            }
            Err(NodeError::Request(e)) => {
                node.shutdown().await;
                match e {
                    RequestError::Timeout | RequestError::HandshakeFailed => {
                        anyhow::bail!("ping {target}: no answer from {addr} ({e}); is a suprnova node listening there?")
                    }
                    _ => anyhow::bail!("ping {target}: {e}"),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    node.shutdown().await;
    let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rtts.iter().copied().fold(0.0, f64::max);
    let avg = rtts.iter().sum::<f64>() / rtts.len().max(1) as f64;
    println!("{count} sent, {} answered, rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms", rtts.len());
    Ok(())
}
