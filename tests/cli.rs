//! The `suprnova` binary across processes on 127.0.0.1: a node process answers `suprnova ping`
//! from another process, keeps its identity across restarts, stops cleanly on SIGINT, and errors
//! are one line with a non-zero exit. Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_suprnova");

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("suprnova-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Starts `suprnova node` on an ephemeral port; returns the child, a line receiver and the
/// `NODEID@ADDR` it prints.
fn start_node(data: &PathBuf) -> (Child, mpsc::Receiver<String>, String) {
    let mut child = Command::new(BIN)
        .args(["node", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut target = None;
    for _ in 0..10 {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("node printed nothing");
        if let Some(t) = line.strip_prefix("reach it with: suprnova ping ") {
            target = Some(t.to_string());
            break;
        }
    }
    (child, rx, target.expect("no 'reach it with' line"))
}

fn sigint(child: &Child) {
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn wait(mut child: Child) -> std::process::ExitStatus {
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("process did not exit within 5 s");
}

#[test]
fn ping_between_two_processes_and_identity_survives_restart() {
    let data = tmp("node");
    let (node, rx, target) = start_node(&data);
    let (id, _) = target.split_once('@').unwrap();
    let out = Command::new(BIN).args(["ping", &target, "-c", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ping failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("pong from ").count(), 3, "{stdout}");
    assert!(stdout.contains("3 sent, 3 answered"), "{stdout}");
    assert!(stdout.contains(&id[..8]));

    // A wrong id at the same address: one line on stderr, exit 1.
    let addr = target.split_once('@').unwrap().1;
    let wrong = format!("{}@{addr}", "00".repeat(32));
    let out = Command::new(BIN).args(["ping", &wrong]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not the one expected"), "{err}");

    // SIGINT stops the node cleanly with its counters.
    sigint(&node);
    let status = wait(node);
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("stopped:") && l.contains("handshakes answered")), "{rest:?}");

    // Same data dir, same id.
    let (node, _rx, target2) = start_node(&data);
    assert_eq!(target2.split_once('@').unwrap().0, id);
    sigint(&node);
    assert!(wait(node).success());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn usage_errors_are_one_line_with_nonzero_exit() {
    for args in [&["ping", "not-an-address"][..], &["ping", "zz@127.0.0.1:1"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let out = Command::new(BIN).args(["id", "--data-dir"]).arg(tmp("id")).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("node id "));
    let out = Command::new(BIN).args(["ping", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example"));
}
