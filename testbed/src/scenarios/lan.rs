//! Join, records and pub/sub, loss, and partitions (issue: real hosts, point 2).

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Sent, TOPIC, ms, tally, wait_delivered};
use crate::bed::{Bed, median, table_range};
use crate::host::Subscription;

/// Starts every node through host 0 and checks every table holds every other host.
pub fn join(bed: &mut Bed) -> Result<()> {
    let start = Instant::now();
    bed.start_all()?;
    let up = start.elapsed();
    let all: Vec<usize> = (0..bed.n()).collect();
    let want = (bed.n() - 1) as u64;
    let full = bed.wait_tables(&all, want, Duration::from_secs(30));
    let tables = bed.tables();
    bed.figure("nodes started", format!("{} in {}", bed.n(), ms(up)));
    let when = full.map_or("never within 30 s".into(), |d| format!("after {}", ms(d)));
    bed.check(
        &format!("every table holds all {want} peers"),
        full.is_some(),
        format!("tables {} ({when})", table_range(&tables)),
    );
    Ok(())
}

/// Puts and gets `n` records from random hosts; returns (keys and values, put times, gets ok).
pub fn put_get(bed: &mut Bed, tag: &str, n: usize, on: &[usize]) -> Result<PutGet> {
    let mut r = PutGet::default();
    for i in 0..n {
        let from = on.get(bed.pick(on.len())).copied().unwrap_or(0);
        let value = format!("{tag}-{i}-{}", std::process::id());
        let (key, out) = bed.put(from, &value)?;
        if out.ok {
            r.put_ok += 1;
            r.put_ms.push(out.took);
            r.records.push((key, value));
        } else {
            r.errors.push(out.stderr.trim().to_owned());
        }
    }
    for (key, value) in &r.records {
        let at = on.get(bed.pick(on.len())).copied().unwrap_or(0);
        let (ok, out) = bed.get(at, key, value)?;
        r.get_ok += usize::from(ok);
        r.get_ms.push(out.took);
        if !ok {
            r.errors.push(out.stderr.trim().to_owned());
        }
    }
    Ok(r)
}

/// What [`put_get`] saw.
#[derive(Default)]
pub struct PutGet {
    /// (key, value) of every record stored.
    pub records: Vec<(String, String)>,
    /// Puts that succeeded.
    pub put_ok: usize,
    /// Gets that returned the right value.
    pub get_ok: usize,
    /// Wall time of each successful put (CLI process start to exit).
    pub put_ms: Vec<Duration>,
    /// Wall time of each get.
    pub get_ms: Vec<Duration>,
    /// What the failures said.
    pub errors: Vec<String>,
}

impl PutGet {
    fn report(&mut self, bed: &mut Bed, n: usize, tag: &str) {
        let put_p50 = median(&mut self.put_ms);
        let get_p50 = median(&mut self.get_ms);
        bed.check(&format!("{tag}puts succeed"), self.put_ok == n, format!("{}/{n}, p50 {}", self.put_ok, ms(put_p50)));
        bed.check(&format!("{tag}gets succeed"), self.get_ok == n, format!("{}/{n}, p50 {}", self.get_ok, ms(get_p50)));
        if let Some(e) = self.errors.first() {
            bed.figure("first error", e.clone());
        }
    }
}

/// Publishes `count` messages from random hosts in `from`, owed to every host in `to`.
pub fn publish_n(bed: &mut Bed, tag: &str, count: usize, from: &[usize], to: &[usize]) -> Result<Vec<Sent>> {
    let mut sent = Vec::new();
    for i in 0..count {
        let p = from.get(bed.pick(from.len())).copied().unwrap_or(0);
        let text = format!("{tag}-{i}-{}", std::process::id());
        let out = bed.publish(p, TOPIC, &text)?;
        if !out.ok {
            bed.figure("publish failed", out.stderr.trim().to_owned());
        }
        if std::env::var_os("TESTBED_TRACE").is_some() {
            println!("    trace: h{p} {} {}", out.stdout.trim(), out.stderr.trim());
        }
        sent.push(Sent::new(&text, p, to.iter().copied()));
    }
    Ok(sent)
}

/// Checks `sent` was delivered to every owed host exactly once within `limit`.
pub fn check_delivery(bed: &mut Bed, what: &str, subs: &[Option<Subscription>], sent: &[Sent], limit: Duration) {
    let took = wait_delivered(subs, sent, limit);
    thread::sleep(Duration::from_millis(500));
    let (owed, got, dup) = tally(subs, sent);
    let when = took.map_or(format!("not all within {limit:?}"), |d| format!("all within {}", ms(d)));
    bed.check(what, got == owed && dup == 0, format!("{got}/{owed} delivered, {dup} duplicated; {when}"));
    if got < owed {
        bed.figure("missing (message, host)", super::missing(subs, sent, 12));
        gossip_state(bed);
    }
}

/// One figure per host with its topic views and gossip counters: what a failed delivery check
/// needs to be understood from the report alone.
fn gossip_state(bed: &mut Bed) {
    let mut rows = Vec::new();
    for h in &bed.hosts {
        let Ok(s) = h.status() else {
            rows.push((h.ns.clone(), "no status".to_owned()));
            continue;
        };
        let topic = s["topics"].as_array().and_then(|ts| ts.iter().find(|t| t["name"] == TOPIC).cloned());
        let views = topic.map_or("not in the topic".to_owned(), |t| {
            let active = t["active"].as_array().map_or(0, Vec::len);
            format!("active {active}, passive {}, eager {}, lazy {}", t["passive"], t["eager"], t["lazy"])
        });
        let traffic = &s["traffic"];
        rows.push((
            h.ns.clone(),
            format!(
                "{views}; delivered {}, duplicates {}; drops {}",
                traffic["gossip_delivered"], traffic["gossip_duplicates"], s["gossip_drops"]
            ),
        ));
    }
    for (ns, row) in rows {
        bed.figure(&format!("gossip at {ns}"), row);
    }
}

/// 30 records put and read back from random hosts, 50 messages from random hosts to all.
pub fn records_pubsub(bed: &mut Bed, subs: &[Option<Subscription>]) -> Result<()> {
    let all: Vec<usize> = (0..bed.n()).collect();
    let mut r = put_get(bed, "rec", 30, &all)?;
    r.report(bed, 30, "");
    let sent = publish_n(bed, "msg", 50, &all, &all)?;
    check_delivery(bed, "50 messages reach every host exactly once", subs, &sent, Duration::from_secs(10));
    Ok(())
}

/// 10 % loss each way on every host: puts and gets succeed, no table loses a live peer; then the
/// loss is removed and everything is as before within 10 s.
pub fn loss(bed: &mut Bed, subs: &[Option<Subscription>], hold_s: u64) -> Result<()> {
    let all: Vec<usize> = (0..bed.n()).collect();
    let want = (bed.n() - 1) as u64;
    bed.loss(10)?;
    let start = Instant::now();
    let mut r = put_get(bed, "lossy", 30, &all)?;
    r.report(bed, 30, "with loss: ");
    let put_p50 = median(&mut r.put_ms);
    bed.check("with loss: put p50 under 100 ms", put_p50 < Duration::from_millis(100), ms(put_p50));
    let sum = |field: &str| -> u64 {
        bed.hosts.iter().filter_map(|h| h.status().ok()).map(|s| s["traffic"][field].as_u64().unwrap_or(0)).sum()
    };
    let (resent, repeated) = (sum("dht_retransmits"), sum("dht_answers_repeated"));
    bed.figure(
        "with loss: DHT requests retransmitted / answered again from the cache",
        format!("{resent} / {repeated}"),
    );
    let sent = publish_n(bed, "lossy", 20, &all, &all)?;
    check_delivery(bed, "with loss: 20 messages reach every host", subs, &sent, Duration::from_secs(10));
    let mut lowest = u64::MAX;
    while start.elapsed() < Duration::from_secs(hold_s) {
        lowest = lowest.min(bed.tables().iter().map(|t| t.unwrap_or(0)).min().unwrap_or(0));
        thread::sleep(Duration::from_secs(2));
    }
    lowest = lowest.min(bed.tables().iter().map(|t| t.unwrap_or(0)).min().unwrap_or(0));
    bed.check(
        &format!("with loss: no table lost a live peer over {hold_s} s"),
        lowest >= want,
        format!("smallest table seen {lowest} (all {want} before)"),
    );
    bed.heal()?;
    let back = bed.wait_tables(&all, want, Duration::from_secs(10));
    let mut r = put_get(bed, "after-loss", 10, &all)?;
    r.report(bed, 10, "loss removed: ");
    let sent = publish_n(bed, "after-loss", 10, &all, &all)?;
    check_delivery(bed, "loss removed: messages reach every host", subs, &sent, Duration::from_secs(10));
    let when = back.map_or("not within 10 s".into(), |d| format!("after {}", ms(d)));
    bed.check("loss removed: full tables within 10 s", back.is_some(), when);
    Ok(())
}

/// Cuts the hosts into halves for `secs`, with records and messages on both sides during the cut,
/// then heals and checks everything crosses within 10 s.
pub fn partition(bed: &mut Bed, subs: &mut [Option<Subscription>], secs: u64) -> Result<()> {
    let n = bed.n();
    let a: Vec<usize> = (0..n / 2).collect();
    let b: Vec<usize> = (n / 2..n).collect();
    let all: Vec<usize> = (0..n).collect();
    bed.partition(&a)?;
    let cut = Instant::now();
    thread::sleep(Duration::from_secs(secs.min(40) / 2));
    let ra = put_get(bed, &format!("cut{secs}-a"), 5, &a)?;
    let rb = put_get(bed, &format!("cut{secs}-b"), 5, &b)?;
    bed.figure(
        "during the cut: records put and read on their own side",
        format!("side a {}/5 put, {}/5 read; side b {}/5 put, {}/5 read", ra.put_ok, ra.get_ok, rb.put_ok, rb.get_ok),
    );
    let mut during = publish_n(bed, &format!("cut{secs}-a"), 5, &a, &all)?;
    during.extend(publish_n(bed, &format!("cut{secs}-b"), 5, &b, &all)?);
    // The first five were published on side a, the rest on side b.
    let own_side: Vec<Sent> = during
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let side = if k < 5 { &a } else { &b };
            Sent { hex: s.hex.clone(), to: s.to.iter().copied().filter(|i| side.contains(i)).collect() }
        })
        .collect();
    check_delivery(bed, "during the cut: messages reach their own side", subs, &own_side, Duration::from_secs(10));
    let rest = Duration::from_secs(secs).saturating_sub(cut.elapsed());
    thread::sleep(rest);
    bed.heal()?;
    let healed = Instant::now();
    let caught_up = wait_delivered(subs, &during, Duration::from_secs(15));
    let (owed, got, _) = tally(subs, &during);
    let when = caught_up.map_or("not within 15 s".into(), |d| format!("within {}", ms(d)));
    bed.check(
        "messages published during the cut reach the other side",
        caught_up.is_some(),
        format!("{got}/{owed} ({when} of the heal)"),
    );
    thread::sleep(Duration::from_secs(10).saturating_sub(healed.elapsed()));
    let after = publish_n(bed, &format!("heal{secs}"), 10, &all, &all)?;
    check_delivery(bed, "from heal + 10 s, new broadcasts reach every host", subs, &after, Duration::from_secs(5));
    let records: Vec<(String, String)> = ra.records.iter().chain(&rb.records).cloned().collect();
    let (mut ok, mut tried) = (0, 0);
    for (key, value) in &records {
        for i in 0..n {
            tried += 1;
            ok += usize::from(bed.get(i, key, value)?.0);
        }
    }
    bed.check("records put on either side, read from every host after the heal", ok == tried, format!("{ok}/{tried}"));
    Ok(())
}
