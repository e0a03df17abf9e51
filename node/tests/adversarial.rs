//! The adversarial suite (issue 10): a real victim node on 127.0.0.1 under each attack in
//! `attacks/`, for two seconds at a few thousand packets a second, one attack after another (one
//! test: run side by side on a 2-core machine they would measure each other). During each attack the victim
//! keeps answering an honest peer; afterwards its memory is bounded (its own counters and table
//! sizes), every record it held is served unchanged, and every drop was counted under a named
//! reason. `cargo run --release -p suprnova-node --example attacks` runs the same attacks longer
//! and harder and prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod attacks;

use std::time::Duration;

use attacks::{Attack, Report, run};
use suprnova_dht::stats::DropReason;

const FOR: Duration = Duration::from_secs(2);

/// What every attack must leave true.
fn common(r: &Report) {
    let name = r.attack.name();
    eprintln!(
        "{name}: sent {} ({:.0}/s), dht side got {} ({} queue-full), honest pings {}/{} p50 {:.2} ms p99 {:.2} ms, drops {:?}, limits {:?}, refused {:?}, {:?}",
        r.sent,
        r.rate(),
        r.dht_in,
        r.dht_queue_full,
        r.pings.1,
        r.pings.0,
        r.rtt(0.5),
        r.rtt(0.99),
        r.drops,
        r.limited,
        r.refused,
        r.extra
    );
    assert!(r.sent > 0, "{name}: nothing sent");
    // The honest peer was answered throughout (one lost ping in a hundred tolerated: the test
    // machine is shared and loopback drops under bursts).
    assert!(r.pings.0 >= 20, "{name}: only {} pings in 2 s", r.pings.0);
    assert!(r.answered_pct() >= 95.0, "{name}: honest pings answered {:.1} % ({:?})", r.answered_pct(), r.pings);
    // No record lost or corrupted.
    assert!(r.records.0 >= 1, "{name}: the victim held no record to check");
    assert_eq!(r.records.1, r.records.0, "{name}: records lost or corrupted");
    // Memory bounded: peers with channel state are the honest ones plus at most the attacker's
    // admitted identities, within max_peers; limiter tables within their size.
    let m = &r.after;
    assert!(m.dht.channel_peers <= 4096, "{name}: {} channel peers", m.dht.channel_peers);
    assert!(m.dht.limits.iter().all(|l| l.tracked <= 4096), "{name}: {:?}", m.dht.limits);
    assert!(m.dht.records <= 100_000);
}

/// Attack datagrams that reached the victim's DHT core: what its socket's DHT side got, less the
/// honest traffic (the prober's pings, and the honest nodes' neighbour checks and keep-alives,
/// overestimated), less any the queue refused. Loopback loses what overflows the socket buffer.
fn attack_in(r: &Report) -> u64 {
    r.dht_in.saturating_sub(r.dht_queue_full).saturating_sub(3 * r.pings.0 + 50)
}

fn random_bytes_are_dropped_by_reason_and_honest_pings_answered(r: &Report) {
    // Every datagram that reached the DHT side is counted under a parse reason (nothing random
    // gets past mac1 or an index), and the QUIC side saw the rest.
    let parse = [
        DropReason::Empty,
        DropReason::TooLarge,
        DropReason::UnknownType,
        DropReason::WrongVersion,
        DropReason::Reserved,
        DropReason::BadLength,
        DropReason::BadMac1,
        DropReason::UnknownIndex,
        DropReason::UnexpectedCookie,
        DropReason::UnsolicitedRecord,
    ];
    let counted: u64 = parse.iter().map(|&d| r.drop(d)).sum();
    assert!(counted >= attack_in(r), "only {counted} of {} counted: {:?}", attack_in(r), r.drops);
    assert!(r.drop(DropReason::TooLarge) > 0 && r.drop(DropReason::BadLength) > 0, "{:?}", r.drops);
    assert_eq!(r.after.dht.channel_peers, 2, "no state for a random source");
}

fn truncated_and_oversized_packets_are_bad_length_or_too_large(r: &Report) {
    let (bl, tl) = (r.drop(DropReason::BadLength), r.drop(DropReason::TooLarge));
    // Every one that reached the core is counted: cut short (bad_length, or empty when cut to
    // nothing) or padded past 1,200 bytes (too_large), about half each.
    let empty = r.drop(DropReason::Empty);
    assert!(bl + tl + empty >= attack_in(r), "{:?} of {}", r.drops, attack_in(r));
    assert!(bl > 0 && tl > 0);
    assert_eq!(r.after.dht.channel_peers, 2);
}

fn replayed_transport_packets_are_refused_as_replays(r: &Report) {
    let replays = r.drop(DropReason::Replay) + r.drop(DropReason::TooOld);
    assert!(replays >= attack_in(r), "{replays} replays of {}: {:?}", attack_in(r), r.drops);
    // Nothing replayed was answered: no request was served twice.
    assert_eq!(r.drop(DropReason::Decrypt), 0, "{:?}", r.drops);
}

fn handshake_floods_from_many_ports_are_rate_limited(r: &Report) {
    // Past the per-address bursts (20 each on 64 ports) and the IP's burst of 1,000, the IP gets
    // 200 a second; above 1,000 a second the cookie is demanded too.
    let limited = r.drop(DropReason::RateLimitedHandshake) + r.drop(DropReason::CookieRequired);
    assert!(limited >= r.sent / 2, "{limited} limited of {}: {:?}", r.sent, r.drops);
    // Answered at most: the IP's burst and its rate over the attack (with a second of slack for
    // the victim catching up), plus the prober's odd rekey.
    let secs = r.elapsed.as_secs_f64() + 1.0;
    let most = 1000.0 + 200.0 * secs + 2.0;
    assert!((r.handshakes_answered as f64) <= most, "{} handshakes answered", r.handshakes_answered);
    // Each admitted identity holds a pending session at most: 256 identities, honest 2.
    assert!(r.after.dht.channel_peers <= 2 + 256, "{}", r.after.dht.channel_peers);
    assert!(r.limited.get("handshakes_per_ip").copied().unwrap_or(0) > 0, "{:?}", r.limited);
}

fn forged_and_oversized_stores_are_refused_and_nothing_held_changes(r: &Report) {
    // The forged higher seqs never replaced the genuine record.
    assert_eq!(r.extra.get("mutable_seq_after"), Some(&5), "{:?}", r.extra);
    assert_eq!(r.extra.get("mutable_genuine"), Some(&1));
    let refused = |k: &str| r.refused.get(k).copied().unwrap_or(0);
    assert!(refused("bad_signature") > 0 && refused("wrong_key") > 0, "{:?}", r.refused);
    assert!(r.drop(DropReason::MalformedMessage) > 0, "oversized values: {:?}", r.drops);
    // 2,000 a second for 2 s from one peer: beyond the store burst (1,000) the limit answers.
    assert!(r.drop(DropReason::RateLimitedStore) > 0, "{:?}", r.drops);
    // The peer's quota caps what it holds here.
    assert!(r.after.dht.records <= 1000 + 30 + 1, "{}", r.after.dht.records);
}

fn colluder_only_nodes_replies_do_not_capture_the_victims_lookups(r: &Report) {
    let (n, ok) = (r.extra["lookups"], r.extra["lookups_ok"]);
    assert!(n >= 1, "{n} lookups");
    assert_eq!(ok, n, "every lookup finished with answers");
    // Each found the real nodes (the honest two, and the liar unless its answer was lost), and
    // no colluder, which never answers.
    assert!((2 * n..=3 * n).contains(&r.extra["nodes_found"]), "{:?}", r.extra);
    // The colluders never answered, so none entered the routing table: it holds the honest two
    // and the liar.
    assert!(r.after.dht.table <= 3, "table {}", r.after.dht.table);
}

fn gossip_with_bad_signatures_replays_and_stale_times_is_dropped_and_honest_broadcasts_arrive(r: &Report) {
    let e = &r.extra;
    assert!(e["honest_published"] >= 10);
    assert_eq!(e["victim_delivered"], e["honest_published"], "{e:?}");
    assert_eq!(e["attacker_delivered"], 1, "the genuine broadcast once, its replays never");
    let d = |k: &str| r.drops.get(k).copied().unwrap_or(0);
    assert!(d("gossip_bad_signature") > 0 && d("gossip_bad_time") > 0, "{:?}", r.drops);
    assert!(d("gossip_duplicates") + d("gossip_rate_limited") > 0, "{:?}", r.drops);
}

/// What one attack must leave true besides `common`.
type Check = fn(&Report);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_victim_node_under_seven_attacks() {
    let checks: [(Attack, u64, u8, Check); 7] = [
        (Attack::RandomBytes, 3000, 0xa1, random_bytes_are_dropped_by_reason_and_honest_pings_answered),
        (Attack::Malformed, 3000, 0xa2, truncated_and_oversized_packets_are_bad_length_or_too_large),
        (Attack::Replay, 3000, 0xa3, replayed_transport_packets_are_refused_as_replays),
        (Attack::Handshakes, 3000, 0xa4, handshake_floods_from_many_ports_are_rate_limited),
        (Attack::Stores, 2000, 0xa5, forged_and_oversized_stores_are_refused_and_nothing_held_changes),
        (Attack::Colluders, 0, 0xa6, colluder_only_nodes_replies_do_not_capture_the_victims_lookups),
        (
            Attack::Gossip,
            3000,
            0xa7,
            gossip_with_bad_signatures_replays_and_stale_times_is_dropped_and_honest_broadcasts_arrive,
        ),
    ];
    for (attack, rate, tag, check) in checks {
        let r = run(attack, rate, FOR, tag).await;
        common(&r);
        check(&r);
    }
}
