//! `kill -9` of half the hosts, their restart from their data dirs with no `--bootstrap`, and a
//! rolling restart of every host while a publisher keeps publishing (issue: real hosts, point 2).

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::lan::{check_delivery, publish_n, put_get};
use super::{TOPIC, ms, wait_topic};
use crate::bed::{Bed, median, table_range};
use crate::host::Subscription;

/// How many records the crash scenario keeps.
const RECORDS: usize = 200;

/// Puts 200 records, kills half the hosts, and checks the survivors read ≥ 99 % of them and get
/// broadcasts within 10 s. Returns the records.
pub fn crash_half(bed: &mut Bed, subs: &mut [Option<Subscription>]) -> Result<Vec<(String, String)>> {
    let n = bed.n();
    let all: Vec<usize> = (0..n).collect();
    let mut r = put_get(bed, "crash", RECORDS, &all)?;
    let put_p50 = median(&mut r.put_ms);
    bed.figure(
        &format!("{RECORDS} records put before the crash ({})", flags(bed)),
        format!("{}/{RECORDS}, put p50 {}", r.put_ok, ms(put_p50)),
    );
    let survivors: Vec<usize> = (0..n / 2).collect();
    for i in n / 2..n {
        if let Some(h) = bed.hosts.get_mut(i) {
            h.kill9();
        }
        if let Some(s) = subs.get_mut(i) {
            *s = None;
        }
    }
    let crashed = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let sent = publish_n(bed, "after-crash", 10, &survivors, &survivors)?;
    check_delivery(
        bed,
        "broadcasts reach every survivor within 10 s of the crash",
        subs,
        &sent,
        Duration::from_secs(10).saturating_sub(crashed.elapsed()),
    );
    let mut read = 0;
    let mut took = Vec::new();
    for (key, value) in &r.records {
        let at = survivors.get(bed.pick(survivors.len())).copied().unwrap_or(0);
        let (ok, out) = bed.get(at, key, value)?;
        read += usize::from(ok);
        took.push(out.took);
    }
    let stored = r.records.len().max(1);
    let pct = read as f64 * 100.0 / stored as f64;
    bed.check(
        &format!("survivors read ≥ 99 % of the {RECORDS} records"),
        pct >= 99.0,
        format!("{read}/{stored} ({pct:.1} %), get p50 {}", ms(median(&mut took))),
    );
    Ok(r.records)
}

fn flags(bed: &Bed) -> String {
    if bed.node_flags.is_empty() { "default flags".into() } else { bed.node_flags.join(" ") }
}

/// Restarts the killed hosts from their data dirs with no `--bootstrap`: they rejoin within 10 s
/// and serve records.
pub fn restart(bed: &mut Bed, subs: &mut [Option<Subscription>], records: &[(String, String)]) -> Result<()> {
    let n = bed.n();
    let down: Vec<usize> = (0..n).filter(|&i| bed.hosts.get(i).is_some_and(|h| !h.is_up())).collect();
    let start = Instant::now();
    for &i in &down {
        bed.start(i, &[])?;
    }
    let want = (n - 1) as u64;
    let all: Vec<usize> = (0..n).collect();
    let back = bed.wait_tables(&all, want, Duration::from_secs(10).saturating_sub(start.elapsed()));
    let when = back.map_or("not within 10 s".into(), |_| format!("after {}", ms(start.elapsed())));
    bed.check(
        "restarted with no --bootstrap: every table full within 10 s",
        back.is_some(),
        format!("tables {} ({when})", table_range(&bed.tables())),
    );
    for &i in &down {
        if let (Some(s), Some(h)) = (subs.get_mut(i), bed.hosts.get(i)) {
            *s = Some(h.subscribe(TOPIC)?);
        }
    }
    wait_topic(bed, &all, Duration::from_secs(10));
    let (mut ok, mut tried) = (0, 0);
    for &i in &down {
        for _ in 0..5 {
            let Some((key, value)) = records.get(bed.pick(records.len())) else { break };
            tried += 1;
            ok += usize::from(bed.get(i, key, value)?.0);
        }
    }
    bed.check("restarted hosts read records", ok == tried, format!("{ok}/{tried}"));
    let sent = publish_n(bed, "after-restart", 10, &all, &all)?;
    check_delivery(bed, "broadcasts reach every host after the restart", subs, &sent, Duration::from_secs(10));
    Ok(())
}

/// Restarts every host one by one (SIGTERM, start with no `--bootstrap`) while messages keep
/// being published from a host that is up; no message and no record is lost.
pub fn rolling(bed: &mut Bed, subs: &mut [Option<Subscription>], records: &[(String, String)]) -> Result<()> {
    let n = bed.n();
    let mut sent = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let publisher = (i + 1) % n;
        if let Some(h) = bed.hosts.get_mut(i) {
            h.stop();
        }
        if let Some(s) = subs.get_mut(i) {
            *s = None;
        }
        let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        sent.extend(publish_n(bed, &format!("rolling-{i}-down"), 3, &[publisher], &others)?);
        bed.start(i, &[])?;
        if let (Some(s), Some(h)) = (subs.get_mut(i), bed.hosts.get(i)) {
            *s = Some(h.subscribe(TOPIC)?);
        }
        wait_topic(bed, &[i], Duration::from_secs(10));
        let all: Vec<usize> = (0..n).collect();
        sent.extend(publish_n(bed, &format!("rolling-{i}-up"), 3, &[publisher], &all)?);
    }
    bed.figure("rolling restart", format!("{n} hosts restarted one by one in {}", ms(start.elapsed())));
    check_delivery(
        bed,
        "no message published during the rolling restart is lost",
        subs,
        &sent,
        Duration::from_secs(15),
    );
    if std::env::var_os("TESTBED_TRACE").is_some() {
        for h in &bed.hosts {
            if let Ok(s) = h.status() {
                let t = s["topics"].to_string();
                println!("    trace: {} topics {t} drops {}", h.ns, s["gossip_drops"]);
            }
        }
    }
    let (mut ok, mut tried) = (0, 0);
    for (key, value) in records {
        tried += 1;
        let at = bed.pick(n);
        ok += usize::from(bed.get(at, key, value)?.0);
    }
    bed.check("every record still readable after the rolling restart", ok == tried, format!("{ok}/{tried}"));
    Ok(())
}
