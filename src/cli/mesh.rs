//! `suprnova mesh …`: run and read meshes of the built-in Life world through a running node.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::Via;

/// Mesh subcommands.
#[derive(Subcommand, Debug)]
pub enum MeshCmd {
    /// Start a Game-of-Life mesh on the running node (or find it, if it runs already). Every
    /// member runs the same command: the same arguments give the same genesis, hence the same
    /// mesh id. Prints the mesh id.
    #[command(
        after_help = "Examples:\n  suprnova mesh create --size 32x32 --cell 1,0 --cell 2,1 --cell 0,2 --cell 1,2 --cell 2,2\n  suprnova mesh create --members 7be0…21,3f2a…c1,9c4d…02 --interval-ms 500   # on each of the three nodes"
    )]
    Create {
        /// Board size, WIDTHxHEIGHT (each 1–256).
        #[arg(long, default_value = "32x32")]
        size: String,
        /// Member public keys in order (`suprnova id` prints a node's) [default: this node alone].
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Target time between rounds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// A cell alive at round 0, X,Y. Repeatable.
        #[arg(long = "cell")]
        cells: Vec<String>,
        #[command(flatten)]
        via: Via,
    },
    /// Join a running Life mesh by its id: its genesis and newest certified state come from the
    /// DHT (a member if this node's key is one of the genesis' members, else an observer).
    #[command(after_help = "Example:\n  suprnova mesh join 4c1f…9e")]
    Join {
        /// Mesh id (64 hex digits).
        mesh_id: String,
        #[command(flatten)]
        via: Via,
    },
    /// Show the meshes the running node runs: round, inputs, refusals, DHT writes.
    #[command(after_help = "Examples:\n  suprnova mesh status\n  suprnova mesh status 4c1f…9e --json")]
    Status {
        /// Only this mesh.
        mesh_id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: Via,
    },
    /// Read a Life mesh's newest certified state from the DHT, checked against its genesis and
    /// certificate (works for any mesh, from any node, member or not).
    #[command(
        name = "get-state",
        after_help = "Examples:\n  suprnova mesh get-state 4c1f…9e\n  suprnova mesh get-state 4c1f…9e --ephemeral --bootstrap 127.0.0.1:4433 --json"
    )]
    GetState {
        /// Mesh id (64 hex digits).
        mesh_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        via: Via,
    },
    /// Submit an input to a mesh the running node runs: set cell X,Y alive (or dead).
    #[command(after_help = "Examples:\n  suprnova mesh submit 4c1f…9e 3,4\n  suprnova mesh submit 4c1f…9e 3,4 --dead")]
    Submit {
        /// Mesh id (64 hex digits).
        mesh_id: String,
        /// The cell, X,Y.
        cell: String,
        /// Set it dead rather than alive.
        #[arg(long)]
        dead: bool,
        #[command(flatten)]
        via: Via,
    },
}

fn xy(s: &str) -> Result<(u64, u64)> {
    let Some((x, y)) = s.split_once(',') else { bail!("'{s}' is not X,Y") };
    match (x.trim().parse(), y.trim().parse()) {
        (Ok(x), Ok(y)) => Ok((x, y)),
        _ => bail!("'{s}' is not X,Y (two non-negative integers)"),
    }
}

fn mesh_id(s: &str) -> Result<String> {
    match hex::decode(s) {
        Ok(b) if b.len() == 32 => Ok(s.to_lowercase()),
        _ => bail!("'{s}' is not a mesh id (64 hex digits)"),
    }
}

fn field(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    }
}

/// Runs a mesh subcommand.
pub async fn run(cmd: MeshCmd) -> Result<()> {
    match cmd {
        MeshCmd::Create { size, members, interval_ms, cells, via } => {
            create(size, members, interval_ms, cells, via).await
        }
        MeshCmd::Join { mesh_id: id, via } => {
            let v = super::client::call(&via, "/v1/mesh/join", &json!({ "mesh_id": mesh_id(&id)? })).await?;
            let role = if v.get("member").and_then(Value::as_bool) == Some(true) { "member" } else { "observer" };
            println!("joined {} as {role}", field(&v, "mesh_id"));
            Ok(())
        }
        MeshCmd::Status { mesh_id: id, json: as_json, via } => status(id, as_json, via).await,
        MeshCmd::GetState { mesh_id: id, json: as_json, via } => get_state(id, as_json, via).await,
        MeshCmd::Submit { mesh_id: id, cell, dead, via } => {
            let (x, y) = xy(&cell)?;
            let req = json!({ "mesh_id": mesh_id(&id)?, "x": x, "y": y, "alive": !dead });
            let v = super::client::call(&via, "/v1/mesh/submit", &req).await?;
            println!("{}", field(&v, "input_id"));
            eprintln!("input for round {} pooled and gossiped", field(&v, "round"));
            Ok(())
        }
    }
}

/// `mesh create`: starts (or finds) a Life mesh on the node and prints its id.
async fn create(size: String, members: Vec<String>, interval_ms: u64, cells: Vec<String>, via: Via) -> Result<()> {
    let Some((w, h)) = size.split_once(['x', 'X']) else { bail!("--size must be WIDTHxHEIGHT, e.g. 32x32") };
    let (w, h): (u64, u64) = match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) => (w, h),
        _ => bail!("--size must be WIDTHxHEIGHT, e.g. 32x32"),
    };
    let cells: Vec<Value> = cells.iter().map(|c| xy(c).map(|(x, y)| json!([x, y]))).collect::<Result<_>>()?;
    let req = json!({ "width": w, "height": h, "members": members, "round_interval_ms": interval_ms, "cells": cells });
    let v = super::client::call(&via, "/v1/mesh/create", &req).await?;
    println!("{}", field(&v, "mesh_id"));
    let role = if v.get("member").and_then(Value::as_bool) == Some(true) { "member" } else { "observer" };
    eprintln!(
        "life {}x{}, {} member(s), a round every {} ms; this node is a {role}; topic {}",
        field(&v, "width"),
        field(&v, "height"),
        v.get("members").and_then(Value::as_array).map_or(0, Vec::len),
        field(&v, "round_interval_ms"),
        field(&v, "topic"),
    );
    Ok(())
}

/// `mesh status`: prints the meshes the node runs (or JSON).
async fn status(id: Option<String>, as_json: bool, via: Via) -> Result<()> {
    let req = match id {
        Some(id) => json!({ "mesh_id": mesh_id(&id)? }),
        None => json!({}),
    };
    let v = super::client::call(&via, "/v1/mesh/status", &req).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let meshes = v.get("meshes").and_then(Value::as_array).cloned().unwrap_or_default();
    if meshes.is_empty() {
        println!("no meshes (start one with `suprnova mesh create`)");
    }
    for m in meshes {
        print_mesh(&m);
    }
    Ok(())
}

/// Prints one mesh of `mesh status`.
fn print_mesh(m: &Value) {
    let role = if m.get("member").and_then(Value::as_bool) == Some(true) { "member" } else { "observer" };
    println!("mesh      {} ({} v1, {role} of {})", field(m, "mesh_id"), field(m, "world"), field(m, "members"));
    println!(
        "round     {} (a round every {} ms; {} timeouts)",
        field(m, "round"),
        field(m, "round_interval_ms"),
        field(m, "timeouts")
    );
    println!(
        "inputs    {} accepted, {} applied, {} pending; refused {}",
        field(m, "inputs_accepted"),
        field(m, "inputs_applied"),
        field(m, "pool"),
        field(m, "inputs_refused")
    );
    println!(
        "batches   {} proposed; refused {}; equivocations seen {}",
        field(m, "proposed"),
        field(m, "batches_refused"),
        field(m, "equivocations")
    );
    println!(
        "dht       {} rounds stored, {} failed (last error {}); caught up {} times",
        field(m, "stored"),
        field(m, "store_failed"),
        field(m, "last_store_error"),
        field(m, "caught_up")
    );
}

/// `mesh get-state`: reads a mesh's newest certified state from the DHT and prints it (or JSON).
async fn get_state(id: String, as_json: bool, via: Via) -> Result<()> {
    let v = super::client::call(&via, "/v1/mesh/state", &json!({ "mesh_id": mesh_id(&id)? })).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("mesh        {}", field(&v, "mesh_id"));
    println!(
        "round       {} (certificate of {} signatures, verified)",
        field(&v, "round"),
        field(&v, "certificate_signers")
    );
    println!("state hash  {} (verified)", field(&v, "state_hash"));
    println!("board       {}x{}, {} alive", field(&v, "width"), field(&v, "height"), field(&v, "population"));
    for row in v.get("rows").and_then(Value::as_array).into_iter().flatten() {
        println!("  {}", row.as_str().unwrap_or(""));
    }
    for r in v.get("rejected_heads").and_then(Value::as_array).into_iter().flatten() {
        eprintln!("rejected head by {}: {}", field(r, "writer"), field(r, "why"));
    }
    eprintln!("read in {:.1} ms", v.get("read_ms").and_then(Value::as_f64).unwrap_or(0.0));
    Ok(())
}
