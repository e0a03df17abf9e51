//! The scenarios, grouped in two sessions of one network each:
//! - `lan`: 12 hosts on one private /24 with the default replication (r = 3): join, records and
//!   pub/sub, 10 % loss each way, partitions into halves;
//! - `wan`: 12 hosts each on its own public-looking /24 with `--replication 6`: join, 200 records,
//!   `kill -9` of half the hosts, their restart from their data dirs, a rolling restart;
//! - `nat`: 4 public hosts and 3 hosts behind NAT routers (two `masquerade`, one
//!   `masquerade fully-random`): reachability, relays, traffic between NATed hosts;
//! - `discovery`: 6 hosts on one bridge with no `--bootstrap`: the LAN beacon.

mod alone;
mod crash;
mod discovery;
mod lan;
mod nat;

pub use discovery::discovery_session;
pub use nat::nat_session;

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bed::Bed;
use crate::host::{Subscription, hex};

/// The topic every host follows.
pub const TOPIC: &str = "testbed";

/// What the operator asked for.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Partition lengths to run, in seconds.
    pub partitions_s: Vec<u64>,
    /// How long the loss scenario holds its loss.
    pub loss_hold_s: u64,
}

/// Runs the `lan` session's scenarios on `bed` (nodes not started yet).
pub fn lan_session(bed: &mut Bed, plan: &Plan) -> Result<()> {
    bed.scenario = "join-lan".into();
    lan::join(bed)?;
    let mut subs = subscribe_all(bed)?;
    bed.scenario = "records".into();
    lan::records_pubsub(bed, &subs)?;
    bed.scenario = "loss".into();
    lan::loss(bed, &subs, plan.loss_hold_s)?;
    for &secs in &plan.partitions_s {
        bed.scenario = format!("cut-{secs}s");
        lan::partition(bed, &mut subs, secs)?;
    }
    bed.scenario = "alone".into();
    alone::isolated(bed, &subs)?;
    Ok(())
}

/// Runs the `wan` session's scenarios on `bed` (nodes not started yet).
pub fn wan_session(bed: &mut Bed) -> Result<()> {
    bed.scenario = "join-wan".into();
    lan::join(bed)?;
    let mut subs = subscribe_all(bed)?;
    bed.scenario = "crash".into();
    let records = crash::crash_half(bed, &mut subs)?;
    bed.scenario = "restart".into();
    crash::restart(bed, &mut subs, &records)?;
    bed.scenario = "young".into();
    alone::killed_young(bed)?;
    let h = bed.n() - 1;
    if let (Some(s), Some(host)) = (subs.get_mut(h), bed.hosts.get(h)) {
        *s = Some(host.subscribe(TOPIC)?);
    }
    wait_topic(bed, &[h], Duration::from_secs(10));
    bed.scenario = "rolling".into();
    crash::rolling(bed, &mut subs, &records)?;
    Ok(())
}

/// Starts a `subscribe` on every host that is up and waits (bounded) until each has a topic
/// neighbour.
pub fn subscribe_all(bed: &Bed) -> Result<Vec<Option<Subscription>>> {
    let subs = bed
        .hosts
        .iter()
        .map(|h| if h.is_up() { h.subscribe(TOPIC).map(Some) } else { Ok(None) })
        .collect::<Result<Vec<_>>>()?;
    let who: Vec<usize> = (0..bed.n()).filter(|&i| bed.hosts.get(i).is_some_and(|h| h.is_up())).collect();
    wait_topic(bed, &who, Duration::from_secs(15));
    Ok(subs)
}

/// Waits (bounded) until every host in `who` has at least one active neighbour on [`TOPIC`].
pub fn wait_topic(bed: &Bed, who: &[usize], limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let joined = who.iter().all(|&i| {
            bed.hosts.get(i).and_then(|h| h.status().ok()).is_some_and(|s| {
                s["topics"].as_array().is_some_and(|ts| {
                    ts.iter().any(|t| t["name"] == TOPIC && t["active"].as_array().is_some_and(|a| !a.is_empty()))
                })
            })
        });
        if joined {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

/// One published message and who must get it.
pub struct Sent {
    /// The message's data as hex (how subscribers print it).
    pub hex: String,
    /// Hosts that must receive it.
    pub to: Vec<usize>,
}

impl Sent {
    /// A message published from `from`, owed to every host in `to` but `from`.
    pub fn new(text: &str, from: usize, to: impl IntoIterator<Item = usize>) -> Sent {
        Sent { hex: hex(text.as_bytes()), to: to.into_iter().filter(|&i| i != from).collect() }
    }
}

/// Deliveries so far: (owed, delivered at least once, delivered more than once).
pub fn tally(subs: &[Option<Subscription>], sent: &[Sent]) -> (usize, usize, usize) {
    let (mut owed, mut got, mut dup) = (0, 0, 0);
    for s in sent {
        for &i in &s.to {
            owed += 1;
            let n = subs
                .get(i)
                .and_then(Option::as_ref)
                .map_or(0, |sub| sub.counts(std::slice::from_ref(&s.hex)).first().copied().unwrap_or(0));
            got += usize::from(n >= 1);
            dup += usize::from(n > 1);
        }
    }
    (owed, got, dup)
}

/// Up to `at_most` owed deliveries that did not happen, as `message@host` (the message as text).
pub fn missing(subs: &[Option<Subscription>], sent: &[Sent], at_most: usize) -> String {
    let mut out = Vec::new();
    for s in sent {
        for &i in &s.to {
            let got = subs
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|sub| sub.counts(std::slice::from_ref(&s.hex)).first().copied().unwrap_or(0) > 0);
            if !got && out.len() < at_most {
                out.push(format!("{}@h{i}", unhex(&s.hex)));
            }
        }
    }
    out.join(" ")
}

fn unhex(h: &str) -> String {
    let bytes: Vec<u8> = (0..h.len() / 2)
        .filter_map(|i| h.get(i * 2..i * 2 + 2))
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits (bounded by `limit`) until every owed delivery happened; returns how long it took.
pub fn wait_delivered(subs: &[Option<Subscription>], sent: &[Sent], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        let (owed, got, _) = tally(subs, sent);
        if got == owed {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
