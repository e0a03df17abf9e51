//! Never alone (issue: real hosts, point 3): a host cut off from every other one notices, says so
//! (status, log, the warnings of `put` and `publish`), and is whole again within 10 s of the heal;
//! and a host killed seconds after it first joined rejoins when restarted with no `--bootstrap`.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::lan::{check_delivery, publish_n};
use super::{TOPIC, ms};
use crate::bed::{Bed, table_range};
use crate::host::Subscription;

/// How long the isolated host is given to notice it is alone.
const NOTICE_LIMIT: Duration = Duration::from_secs(60);

/// Cuts the last host off from all others, checks it reports being alone, then heals.
pub fn isolated(bed: &mut Bed, subs: &[Option<Subscription>]) -> Result<()> {
    let n = bed.n();
    let h = n - 1;
    bed.isolate(h)?;
    let cut = Instant::now();
    // Its own requests fail, so its table empties; the neighbour check does the same, slower.
    let mut status = Value::Null;
    let mut k = 0;
    while cut.elapsed() < NOTICE_LIMIT {
        let _ = bed.put(h, &format!("alone-{k}-{}", std::process::id()))?;
        k += 1;
        status = bed.hosts.get(h).and_then(|x| x.status().ok()).unwrap_or(Value::Null);
        // Rejoining, and the first attempt (1 s after the table emptied) made and logged.
        if status["rejoin"]["rejoining"] == true && status["rejoin"]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    let noticed = cut.elapsed();
    bed.check(
        "a host cut off from all others says it is rejoining (status)",
        status["rejoin"]["rejoining"] == true,
        format!(
            "after {}: {} peers, attempt {}, {} seed(s), {} former peers",
            ms(noticed),
            status["peers"],
            status["rejoin"]["attempts"],
            status["rejoin"]["seeds"],
            status["rejoin"]["dormant"]
        ),
    );
    let logged = bed.hosts.get(h).is_some_and(|x| x.log().contains("rejoining"));
    bed.check("... and in its log", logged, if logged { "a warning per attempt" } else { "no line" });
    let host = bed.hosts.get(h).map(|x| x.cli(&["put", "--json", "lonely"])).transpose()?;
    let (warned, replicas) = host.map_or((false, Value::Null), |o| {
        let v: Value = serde_json::from_str(&o.stdout).unwrap_or(Value::Null);
        (o.ok && o.stderr.contains("no other node took a copy"), v["replicas"].clone())
    });
    bed.check(
        "... a put warns that no other node took a copy",
        warned && replicas == 0,
        format!("replicas {replicas}"),
    );
    // Its topic links die within the QUIC idle timeout (10 s) of the cut; on a loaded machine the
    // driver may notice a little later, so the publish is tried again (bounded) until it warns.
    thread::sleep(Duration::from_secs(11).saturating_sub(cut.elapsed()));
    let mut said = String::new();
    let mut warned = false;
    for k in 0..20 {
        let out =
            bed.hosts.get(h).map(|x| x.cli(&["publish", TOPIC, "--json", &format!("unheard-{k}")])).transpose()?;
        said = out.as_ref().map(|o| o.stderr.trim().to_owned()).unwrap_or_default();
        warned = out.as_ref().is_some_and(|o| o.ok && o.stderr.contains("no neighbour"));
        if warned {
            said = format!("after {}: {said}", ms(cut.elapsed()));
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    bed.check("... a publish warns that no other node received it", warned, said);
    bed.heal()?;
    let all: Vec<usize> = (0..n).collect();
    let back = bed.wait_tables(&all, (n - 1) as u64, Duration::from_secs(10));
    let when = back.map_or("not within 10 s".into(), |d| format!("after {}", ms(d)));
    bed.check(
        "healed: every table full again within 10 s",
        back.is_some(),
        format!("tables {} ({when})", table_range(&bed.tables())),
    );
    let sent = publish_n(bed, "rejoined", 5, &[h], &all)?;
    check_delivery(bed, "healed: its broadcasts reach every host", subs, &sent, Duration::from_secs(10));
    Ok(())
}

/// A fresh host joins, is killed 2 s later (before any periodic snapshot), and restarts with no
/// `--bootstrap`: it rejoins within 10 s from what it saved.
pub fn killed_young(bed: &mut Bed) -> Result<()> {
    let n = bed.n();
    let h = n - 1;
    let seed = bed.seed_addr();
    if let Some(host) = bed.hosts.get_mut(h) {
        host.kill9();
        host.wipe()?;
    }
    bed.start(h, &seed)?;
    thread::sleep(Duration::from_secs(2));
    if let Some(host) = bed.hosts.get_mut(h) {
        host.kill9();
    }
    let not_running = bed.hosts.get(h).map(|x| x.cli(&["status"])).transpose()?;
    let said = not_running.is_some_and(|o| !o.ok && o.stderr.contains("the node is not running"));
    bed.check("status of a killed node says it is not running", said, "");
    let start = Instant::now();
    bed.start(h, &[])?;
    let back = bed.wait_tables(&[h], (n - 1) as u64, Duration::from_secs(10));
    let when = back.map_or("not within 10 s".into(), |_| format!("after {}", ms(start.elapsed())));
    let peers = bed.hosts.get(h).and_then(|x| x.peers()).unwrap_or(0);
    bed.check(
        "killed 2 s after joining, restarted with no --bootstrap: full table within 10 s",
        back.is_some(),
        format!("{peers} peers ({when})"),
    );
    Ok(())
}
