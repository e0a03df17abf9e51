//! Session `nat`: public hosts on their own /24s, and hosts behind NAT routers (nftables
//! `masquerade`, and `masquerade fully-random` for a symmetric NAT). The NATed hosts must find
//! out they are behind NAT, hold relay reservations, be reachable by id from every public host,
//! and reach each other — requests, messages, a topic of NATed members only, a 10 MiB blob —
//! through the relays, whose byte counters must cover what crossed.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Sent, wait_delivered};
use crate::bed::Bed;
use crate::host::Host;
use crate::net::NatKind;

/// Longest the bed waits for a NATed host to say it is behind NAT with a reservation.
const REACH_LIMIT: Duration = Duration::from_secs(30);

/// Runs the session on `bed` (its public hosts created, nothing started).
pub fn nat_session(bed: &mut Bed) -> Result<()> {
    bed.scenario = "nat-join".into();
    bed.start_all()?;
    let public: Vec<usize> = (0..bed.n()).collect();
    let joined = bed.wait_tables(&public, (bed.n() as u64).saturating_sub(1).min(3), Duration::from_secs(20));
    bed.check("public hosts joined", joined.is_some(), format!("{:?}", joined.map(|d| d.as_millis())));
    let kinds = [NatKind::Cone, NatKind::Cone, NatKind::Symmetric];
    let mut nated = Vec::new();
    for kind in kinds {
        nated.push((bed.add_nat_host(kind)?, kind));
    }
    let seed = bed.seed_addr();
    let mut started = Vec::new();
    for &(i, _) in &nated {
        started.push(Instant::now());
        bed.start(i, &seed)?;
    }
    bed.scenario = "nat-reach".into();
    behind_nat(bed, &nated, &started)?;
    reachable_by_id(bed, &public, &nated, &started)?;
    bed.scenario = "nat-nat".into();
    between_nated(bed, &nated)?;
    bed.scenario = "nat-failover".into();
    relay_lost(bed, &public, &nated)?;
    Ok(())
}

/// One of a NATed host's relays dies (`kill -9`): within a minute it holds two live relays again
/// and a public host reaches it by id.
fn relay_lost(bed: &mut Bed, public: &[usize], nated: &[(usize, NatKind)]) -> Result<()> {
    let Some(&(h, _)) = nated.first() else { return Ok(()) };
    let status = bed.hosts.get(h).context("no host")?.status()?;
    let Some(relay_addr) = status["reach"]["relays"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|r| r["addr"].as_str())
        .map(str::to_owned)
    else {
        bed.check("a NATed host replaces a relay that died", false, "it holds no relay");
        return Ok(());
    };
    let Some(victim) = public.iter().copied().find(|&p| bed.hosts.get(p).is_some_and(|x| x.addr() == relay_addr))
    else {
        bed.check("a NATed host replaces a relay that died", false, format!("no host at {relay_addr}"));
        return Ok(());
    };
    if let Some(v) = bed.hosts.get_mut(victim) {
        v.kill9();
    }
    let t0 = Instant::now();
    let host = bed.hosts.get(h).context("no host")?;
    let mut replaced = None;
    while t0.elapsed() < Duration::from_secs(60) {
        let s = host.status()?;
        let live: Vec<String> = s["reach"]["relays"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| r["reserved"] == true)
                    .filter_map(|r| r["addr"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if live.len() >= 2 && !live.contains(&relay_addr) {
            replaced = Some(t0.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let id = host.id.clone();
    let asker = public.iter().copied().find(|&p| p != victim).unwrap_or(0);
    let mut reached = false;
    let t1 = Instant::now();
    while !reached && t1.elapsed() < Duration::from_secs(20) {
        reached = bed.hosts.get(asker).context("no host")?.cli(&["request", &id, "after the relay died"])?.ok;
        if !reached {
            thread::sleep(Duration::from_millis(250));
        }
    }
    bed.check(
        &format!("h{h} replaces a relay that died (h{victim}, kill -9) and is reached again"),
        replaced.is_some() && reached,
        match replaced {
            Some(d) => format!(
                "two live relays again {:.1} s after the kill; reached from h{asker}: {reached}",
                d.as_secs_f64()
            ),
            None => format!(
                "not within 60 s: {}",
                host.status().map(|s| s["reach"]["relays"].to_string()).unwrap_or_default()
            ),
        },
    );
    Ok(())
}

/// The NATed host's `reach` status once it says private with a reserved relay, and when.
fn wait_private(host: &Host, since: Instant) -> Option<(Duration, serde_json::Value)> {
    while since.elapsed() < REACH_LIMIT {
        if let Ok(s) = host.status() {
            let r = &s["reach"];
            let reserved = r["relays"].as_array().is_some_and(|a| a.iter().any(|h| h["reserved"] == true));
            if r["state"] == "private" && reserved {
                return Some((since.elapsed(), s));
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Every NATed host finds out it is behind NAT, holds a reservation, and lists no private
/// address a stranger would dial in vain.
fn behind_nat(bed: &mut Bed, nated: &[(usize, NatKind)], started: &[Instant]) -> Result<()> {
    for (&(i, kind), &t0) in nated.iter().zip(started) {
        let host = bed.hosts.get(i).context("no host")?;
        let got = wait_private(host, t0);
        let value = match &got {
            Some((d, s)) => {
                let relays: Vec<String> = s["reach"]["relays"]
                    .as_array()
                    .map(|a| a.iter().map(|h| h["addr"].as_str().unwrap_or("?").to_owned()).collect())
                    .unwrap_or_default();
                format!("{:.1} s after start, relays {}", d.as_secs_f64(), relays.join(" "))
            }
            None => format!(
                "not within {REACH_LIMIT:?}: {}",
                host.status().map(|s| s["reach"].to_string()).unwrap_or_default()
            ),
        };
        bed.check(&format!("h{i} ({kind:?} NAT) knows it is behind NAT and holds a relay"), got.is_some(), value);
    }
    Ok(())
}

/// Every public host reaches every NATed host by id (a `request`, answered by the node).
fn reachable_by_id(bed: &mut Bed, public: &[usize], nated: &[(usize, NatKind)], started: &[Instant]) -> Result<()> {
    for (&(i, _), &t0) in nated.iter().zip(started) {
        let id = bed.hosts.get(i).context("no host")?.id.clone();
        let mut worst = Duration::ZERO;
        let mut failed = Vec::new();
        for &p in public {
            let host = bed.hosts.get(p).context("no host")?;
            let mut ok = false;
            while !ok && t0.elapsed() < REACH_LIMIT + Duration::from_secs(30) {
                let out = host.cli(&["request", &id, "ping"])?;
                ok = out.ok;
                if !ok {
                    thread::sleep(Duration::from_millis(250));
                }
            }
            worst = worst.max(t0.elapsed());
            if !ok {
                failed.push(format!("h{p}"));
            }
        }
        let value = if failed.is_empty() {
            format!("all {} public hosts, the last {:.1} s after h{i} started", public.len(), worst.as_secs_f64())
        } else {
            format!("not from {}", failed.join(" "))
        };
        bed.check(&format!("h{i} reachable by id from every public host"), failed.is_empty(), value);
        bed.check(
            &format!("h{i} reachable by id within 10 s of joining"),
            worst <= Duration::from_secs(10),
            format!("{:.1} s", worst.as_secs_f64()),
        );
    }
    Ok(())
}

/// NATed hosts reach each other through relays: requests and messages each way, a topic whose
/// only members are NATed, and a 10 MiB blob from a cone-NATed host to the symmetric one.
fn between_nated(bed: &mut Bed, nated: &[(usize, NatKind)]) -> Result<()> {
    let idx: Vec<usize> = nated.iter().map(|n| n.0).collect();
    let (Some(&a), Some(&b), Some(&c)) = (idx.first(), idx.get(1), idx.get(2)) else { return Ok(()) };
    let id = |i: usize| bed.hosts.get(i).map(|h| h.id.clone()).unwrap_or_default();
    let mut failures = Vec::new();
    let mut took = Vec::new();
    for (from, to) in [(a, b), (b, a), (c, a), (a, c), (b, c), (c, b)] {
        let host = bed.hosts.get(from).context("no host")?;
        // Retried for up to 10 s: the peer's reach record may still be on its way.
        let t0 = Instant::now();
        let mut out = host.cli(&["request", &id(to), "hello across two NATs"])?;
        while !out.ok && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(250));
            out = host.cli(&["request", &id(to), "hello across two NATs"])?;
        }
        took.push(t0.elapsed());
        if !out.ok {
            failures.push(format!("h{from}->h{to}: {}", out.stderr.trim()));
        }
        let sent = host.cli(&["send", &id(to), "a message"])?;
        if !sent.ok {
            failures.push(format!("send h{from}->h{to}: {}", sent.stderr.trim()));
        }
    }
    let slowest = took.iter().max().copied().unwrap_or_default();
    bed.check(
        "requests and messages between NATed hosts, both ways (6 pairs)",
        failures.is_empty(),
        if failures.is_empty() {
            format!("12 of 12, slowest {:.0} ms", slowest.as_secs_f64() * 1e3)
        } else {
            failures.join("; ")
        },
    );
    nat_topic(bed, &idx)?;
    nat_blob(bed, a, c)?;
    Ok(())
}

/// A topic only the NATed hosts follow: 5 messages from each, delivered to the others.
fn nat_topic(bed: &mut Bed, idx: &[usize]) -> Result<()> {
    const TOPIC: &str = "nat-only";
    let mut subs = Vec::new();
    for i in 0..bed.n() {
        let s = if idx.contains(&i) { Some(bed.hosts.get(i).context("no host")?.subscribe(TOPIC)?) } else { None };
        subs.push(s);
    }
    thread::sleep(Duration::from_secs(3));
    let mut sent = Vec::new();
    for &from in idx {
        for k in 0..5 {
            let text = format!("nat-only {k} from h{from}");
            let _ = bed.publish(from, TOPIC, &text)?;
            sent.push(Sent::new(&text, from, idx.iter().copied()));
        }
    }
    let waited = wait_delivered(&subs, &sent, Duration::from_secs(30));
    let (owed, got, _) = super::tally(&subs, &sent);
    bed.check(
        "a topic whose only members are NATed hosts",
        got == owed,
        format!(
            "{got} of {owed} deliveries{}",
            waited.map(|d| format!(" in {:.1} s", d.as_secs_f64())).unwrap_or_default()
        ),
    );
    Ok(())
}

/// A 10 MiB blob from `from` fetched by `to` (both NATed), verified, and the relays' counters.
fn nat_blob(bed: &mut Bed, from: usize, to: usize) -> Result<()> {
    let relayed_before = relayed_total(bed);
    let dir = std::env::temp_dir().join(format!("suprnova-bed-blob-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("blob.bin");
    let data: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&src, &data)?;
    let host = bed.hosts.get(from).context("no host")?;
    let add = host.cli(&["blob", "add", &src.display().to_string()])?;
    let hash = add.stdout.split_whitespace().find(|w| w.len() == 64).unwrap_or_default().to_owned();
    let out = dir.join("fetched.bin");
    let from_id = host.id.clone();
    let got = bed.hosts.get(to).context("no host")?.cli(&[
        "blob",
        "get",
        &hash,
        "-o",
        &out.display().to_string(),
        "--from",
        &from_id,
    ])?;
    let same = std::fs::read(&out).is_ok_and(|b| b == data);
    let relayed = relayed_total(bed).saturating_sub(relayed_before);
    let _ = std::fs::remove_dir_all(&dir);
    bed.check(
        &format!("10 MiB blob h{from} -> h{to} through a relay, verified"),
        add.ok && got.ok && same,
        format!(
            "{:.2} s{}",
            got.took.as_secs_f64(),
            if got.ok { String::new() } else { format!(": {}", got.stderr.trim()) }
        ),
    );
    bed.check(
        "relays forwarded at least the blob's bytes",
        relayed >= data.len() as u64,
        format!("{:.1} MiB forwarded by the relays during the fetch", relayed as f64 / 1048576.0),
    );
    Ok(())
}

/// Bytes every relay in the bed forwarded so far.
fn relayed_total(bed: &Bed) -> u64 {
    bed.hosts
        .iter()
        .filter(|h| h.is_up())
        .filter_map(|h| h.status().ok())
        .filter_map(|s| s["reach"]["relay"]["bytes_forwarded"].as_u64())
        .sum()
}
