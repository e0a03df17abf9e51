//! Kademlia on virtual time (the `testing` harness): deterministic checks of bootstrap, puts
//! without timers, and every kind of bad input a peer can send, each refused and counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use suprnova_dht::channel::PeerInfo;
use suprnova_dht::identity::{Identity, NodeId};
use suprnova_dht::proto::{DhtEvent, GetMode, RequestError, Target};
use suprnova_dht::stats::DropReason;
use suprnova_dht::testing::Adversary;
use suprnova_dht::testing::{Net, addr, config};
use suprnova_dht::wire::bounded::BoundedBytes;
use suprnova_dht::wire::{Body, Key, Message, MutableRecord, Record};

fn net(n: usize) -> Net {
    Net::new(
        (0..n)
            .map(|i| {
                let mut c = config(i);
                c.routing.exempt_local = true;
                c
            })
            .collect(),
    )
}

fn joined(n: usize) -> Net {
    joined_with(net(n))
}

fn joined_with(mut net: Net) -> Net {
    let n = net.nodes.len();
    for i in 1..n {
        let seed = net.nodes[0].record().clone();
        let now = net.now;
        net.nodes[i].bootstrap(now, vec![Target::Record(seed)]).unwrap();
        net.run();
    }
    for i in 0..n {
        net.take_events(i);
    }
    net
}

fn imm(v: &[u8]) -> (Key, Record) {
    (Key::for_immutable(v), Record::Immutable { value: BoundedBytes::try_from(v).unwrap() })
}

fn info(net: &Net, i: usize) -> PeerInfo {
    let r = net.nodes[i].record();
    PeerInfo { id: r.id, noise_key: r.noise_key, addr: addr(i) }
}

#[test]
fn bootstrap_fills_every_table_and_put_get_need_no_timer() {
    let mut net = joined(30);
    for n in &net.nodes {
        assert_eq!(n.table().len(), 29, "every node knows every other");
    }
    let (k, r) = imm(b"hello");
    let now = net.now;
    let q = net.nodes[5].put(now, k, r.clone(), Duration::from_secs(300), None).unwrap();
    net.run();
    let ev = net.take_events(5);
    assert_eq!(
        ev.iter().filter(|e| matches!(e, DhtEvent::PutReplica { query, result: Ok(()), .. } if *query == q)).count(),
        3
    );
    assert!(ev.iter().any(|e| matches!(e, DhtEvent::PutDone { query, result: Ok(o) } if *query == q && o.stored == 3)));
    // The three replicas are the three nodes closest to the key.
    let mut ids: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    ids.sort_by_key(|id| NodeId(k.0).distance(id));
    let holders: Vec<NodeId> = net.nodes.iter().filter(|n| !n.store().is_empty()).map(|n| n.id()).collect();
    assert_eq!(holders.len(), 3);
    assert!(holders.iter().all(|h| ids[..3].contains(h)));
    let now = net.now;
    let q = net.nodes[17].get(now, k, GetMode::First).unwrap();
    net.run();
    let ev = net.take_events(17);
    assert!(ev.iter().any(|e| matches!(e, DhtEvent::GotRecord { query, record, .. } if *query == q && *record == r)));
    assert!(ev.iter().any(|e| matches!(e, DhtEvent::GetDone { query, result: Ok(1), .. } if *query == q)));
}

#[test]
fn a_burst_of_queries_waits_its_turn_and_every_one_completes() {
    let mut net = Net::new(
        (0..20)
            .map(|i| {
                let mut c = config(i);
                c.routing.exempt_local = true;
                c.max_active_queries = 2;
                c
            })
            .collect(),
    );
    net = joined_with(net);
    let now = net.now;
    let keys: Vec<(Key, Record)> = (0..12u8).map(|i| imm(&[b'q', i])).collect();
    let qs: Vec<_> = keys
        .iter()
        .map(|(k, r)| net.nodes[5].put(now, *k, r.clone(), Duration::from_secs(300), None).unwrap())
        .collect();
    assert!(net.nodes[5].dht_stats().queries_queued >= 10, "two run (at most), the others wait");
    net.run();
    let ev = net.take_events(5);
    let done: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            DhtEvent::PutDone { query, result: Ok(o) } if o.stored == 3 => Some(*query),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 12, "every queued put ran and stored three copies");
    assert!(qs.iter().all(|q| done.contains(q)));
    for (k, _) in &keys {
        assert_eq!(net.nodes.iter().filter(|n| n.store().get(net.now, k).len() == 1).count(), 3);
    }
}

#[test]
fn lying_nodes_answers_are_refused_and_counted() {
    let mut net = net(3);
    let honest = net.nodes[2].record().clone();
    // A record whose signature no longer matches, and one whose id is not its key's hash.
    let mut tampered = Identity::from_seed([50; 32]).make_record(1, 0, &[addr(7).into()]).unwrap();
    tampered.seq = 2;
    let mut wrong_id = Identity::from_seed([51; 32]).make_record(1, 0, &[addr(8).into()]).unwrap();
    wrong_id.id = NodeId([0xee; 32]);
    net.nodes[1].set_answer_filter(Some(std::sync::Arc::new(Adversary {
        extra_nodes: vec![tampered.clone(), wrong_id.clone(), honest.clone()],
        only_extra_nodes: true,
        ..Adversary::default()
    })));
    let now = net.now;
    let seed = net.nodes[1].record().clone();
    net.nodes[0].bootstrap(now, vec![Target::Record(seed)]).unwrap();
    net.run();
    // The bootstrap lookup and the three bucket refreshes after it each ask the liar once, and each
    // answer carries both forged records: every one is counted.
    let lookups = net.nodes[0].dht_stats().lookups;
    assert_eq!(lookups, 4);
    assert_eq!(net.nodes[0].stats().drops.get(DropReason::BadRecord), 2 * lookups);
    let t = net.nodes[0].table();
    assert!(t.get(&tampered.id).is_none() && t.get(&wrong_id.id).is_none());
    assert!(t.get(&honest.id).is_some(), "the honest node in the same answer was used");
}

#[test]
fn invalid_values_are_refused_and_counted() {
    let mut net = joined(4);
    let (k, r) = imm(b"the real value");
    let (_, other) = imm(b"a value for another key");
    let id = Identity::from_seed([52; 32]);
    let mut forged = MutableRecord {
        public_key: id.public_key(),
        salt: BoundedBytes::try_from(&b"s"[..]).unwrap(),
        seq: 1,
        value: BoundedBytes::try_from(&b"v"[..]).unwrap(),
        signature: [7; 64],
    };
    forged.seq = 2;
    for i in 1..4 {
        net.nodes[i].set_answer_filter(Some(std::sync::Arc::new(Adversary {
            values: Some(vec![other.clone(), Record::Mutable(forged.clone())]),
            ..Adversary::default()
        })));
    }
    let now = net.now;
    let q = net.nodes[0].get(now, k, GetMode::First).unwrap();
    net.run();
    let ev = net.take_events(0);
    assert!(
        ev.iter()
            .any(|e| matches!(e, DhtEvent::GetDone { query, result: Err(RequestError::NotFound), .. } if *query == q))
    );
    assert!(!ev.iter().any(|e| matches!(e, DhtEvent::GotRecord { .. })));
    assert_eq!(net.nodes[0].stats().drops.get(DropReason::InvalidValue), 6, "2 bad records from each of 3 liars");
    drop(r);
}

#[test]
fn bad_stores_get_error_codes_and_are_counted() {
    let mut net = joined(2);
    let now = net.now;
    let to = info(&net, 1);
    let send = |net: &mut Net, id: u64, body: Body| {
        let now = net.now;
        let bytes = Message { id, body }.encode().unwrap();
        net.nodes[0].send_raw(now, &to, &bytes).unwrap();
        net.run();
    };
    // Wrong key for the content.
    let (_, r) = imm(b"content");
    send(&mut net, 1, Body::Store { key: Key([1; 32]), record: r, ttl_s: 60, expected_seq: None });
    // A bad signature.
    let id = Identity::from_seed([53; 32]);
    let m = MutableRecord {
        public_key: id.public_key(),
        salt: BoundedBytes::default(),
        seq: 1,
        value: BoundedBytes::default(),
        signature: [1; 64],
    };
    send(&mut net, 2, Body::Store { key: m.key(), record: Record::Mutable(m), ttl_s: 60, expected_seq: None });
    // A quota flood: the per-peer quota (1000 by default) refuses the excess. Paced at the
    // store rate limit (100/s), which is tested on its own below.
    for i in 0..1100u32 {
        let (k, r) = imm(&i.to_le_bytes());
        send(&mut net, 100 + u64::from(i), Body::Store { key: k, record: r, ttl_s: 60, expected_seq: None });
        net.advance(Duration::from_millis(10));
    }
    let s = net.nodes[1].dht_stats();
    assert_eq!(s.stores_refused.get("wrong_key"), Some(&1));
    assert_eq!(s.stores_refused.get("bad_signature"), Some(&1));
    assert_eq!(s.stores_refused.get("quota"), Some(&100));
    assert_eq!(s.stores_accepted, 1000);
    assert_eq!(net.nodes[1].store().len(), 1000);
    // An oversized value cannot even be decoded: counted as malformed, answered with an error.
    let mut raw = vec![7u8, 6]; // id 7, Store
    raw.extend_from_slice(&[9u8; 32]); // key
    raw.push(0); // Immutable
    raw.extend_from_slice(&[0xb6, 0x07]); // length 950 (> 900)
    raw.extend(std::iter::repeat_n(0u8, 950));
    raw.extend_from_slice(&[60, 0]); // ttl, no CAS
    net.nodes[0].send_raw(now, &to, &raw).unwrap();
    net.run();
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::MalformedMessage), 1);
}

#[test]
fn a_re_signed_record_replaces_the_old_one_in_peers_tables() {
    let mut net = joined(3);
    let old_seq = net.nodes[1].record().seq;
    // Node 1 re-signs its record (as it does when its address changes).
    net.nodes[1].set_addrs(&[addr(1).into()]).unwrap();
    let new_seq = net.nodes[1].record().seq;
    assert!(new_seq > old_seq);
    assert_eq!(net.nodes[0].table().get(&net.nodes[1].id()).unwrap().record.seq, old_seq);
    // The next pong carries the new seq; node 0 fetches the record and its table follows. (Pinging
    // by address and id, so node 0 only has its old record to go on.)
    let id1 = net.nodes[1].id();
    let now = net.now;
    net.nodes[0].ping(now, Target::Addr { addr: addr(1), expect: Some(id1) }).unwrap();
    net.run();
    assert_eq!(net.nodes[0].table().get(&net.nodes[1].id()).unwrap().record.seq, new_seq);
}

#[test]
fn absurd_lifetimes_are_clamped_not_a_panic() {
    let mut net = joined(3);
    let (k, r) = imm(b"forever");
    let now = net.now;
    net.nodes[0].put(now, k, r, Duration::MAX, None).unwrap();
    net.run();
    assert!(net.take_events(0).iter().any(|e| matches!(e, DhtEvent::PutDone { result: Ok(_), .. })));
    net.advance(Duration::from_secs(25 * 3600));
    net.run();
    assert_eq!(net.nodes.iter().map(|n| n.store().len()).sum::<usize>(), 3, "republished within the 24 h cap");
}

/// Delivers packets among the nodes not in `dead` (their packets are lost both ways) while
/// virtual time advances `steps` × `step`.
fn pump_without(net: &mut Net, dead: &[usize], steps: usize, step: Duration) {
    let alive = |a: std::net::SocketAddr| !dead.iter().any(|d| addr(*d) == a);
    for _ in 0..steps {
        for _ in 0..10_000 {
            let wire = net.take_wire();
            if wire.is_empty() {
                break;
            }
            for p in wire {
                if alive(p.src) && alive(p.dst) {
                    net.deliver(p);
                }
            }
        }
        net.advance(step);
    }
}

fn holders(net: &Net, key: &Key, among: &[usize]) -> Vec<usize> {
    among.iter().copied().filter(|i| !net.nodes[*i].store().get(net.now, key).is_empty()).collect()
}

fn closest_of(net: &Net, key: &Key, among: &[usize], n: usize) -> Vec<usize> {
    let mut v = among.to_vec();
    v.sort_by_key(|i| NodeId(key.0).distance(&net.nodes[*i].id()));
    v.truncate(n);
    v.sort_unstable();
    v
}

#[test]
fn holders_restore_r_replicas_when_replicas_die() {
    let n = 30;
    let mut net = joined(n);
    let keys: Vec<Key> = (0..40u32)
        .map(|i| {
            let (k, r) = imm(format!("record {i}").as_bytes());
            let now = net.now;
            net.nodes[0].put(now, k, r, Duration::from_secs(3600), None).unwrap();
            net.run();
            k
        })
        .collect();
    let all: Vec<usize> = (0..n).collect();
    for k in &keys {
        assert_eq!(holders(&net, k, &all), closest_of(&net, k, &all, 3), "a put stores on the 3 closest");
    }
    // Nodes 1..=9 stop. No lookups run: the survivors' neighbour checks (every 10 s, a node
    // leaves the table after two failed pings) notice the dead replicas.
    let dead: Vec<usize> = (1..=9).collect();
    let live: Vec<usize> = (0..n).filter(|i| !dead.contains(i)).collect();
    let kept: Vec<&Key> = keys.iter().filter(|k| !holders(&net, k, &live).is_empty()).collect();
    let damaged = kept.iter().filter(|k| holders(&net, k, &live).len() < 3).count();
    assert!(damaged >= 5, "the dead held copies of many records ({damaged})");
    pump_without(&mut net, &dead, 60, Duration::from_millis(500));
    pump_without(&mut net, &dead, 100, Duration::from_millis(10));
    for k in &kept {
        assert_eq!(holders(&net, k, &live), closest_of(&net, k, &live, 3), "repaired to the 3 closest live nodes");
    }
    let stores: u64 = live.iter().map(|i| net.nodes[*i].dht_stats().repair_stores).sum();
    assert!(stores >= damaged as u64, "{stores} repair stores for {damaged} damaged records");
}

#[test]
fn a_joining_node_receives_the_records_it_is_now_closest_to() {
    let n = 31;
    let mut net = net(n);
    let joiner = n - 1;
    for i in 1..joiner {
        let (now, seed) = (net.now, net.nodes[0].record().clone());
        net.nodes[i].bootstrap(now, vec![Target::Record(seed)]).unwrap();
        net.run();
    }
    let keys: Vec<Key> = (0..60u32)
        .map(|i| {
            let (k, r) = imm(format!("value {i}").as_bytes());
            let now = net.now;
            net.nodes[3].put(now, k, r, Duration::from_secs(3600), None).unwrap();
            net.run();
            k
        })
        .collect();
    assert!(net.nodes[joiner].store().is_empty());
    let (now, seed) = (net.now, net.nodes[0].record().clone());
    net.nodes[joiner].bootstrap(now, vec![Target::Record(seed)]).unwrap();
    pump_without(&mut net, &[], 50, Duration::from_millis(10));
    let all: Vec<usize> = (0..n).collect();
    let mine: Vec<&Key> = keys.iter().filter(|k| closest_of(&net, k, &all, 3).contains(&joiner)).collect();
    assert!(!mine.is_empty(), "the joiner is among the 3 closest to some of 60 keys");
    for k in &mine {
        assert!(holders(&net, k, &[joiner]) == vec![joiner], "the joiner got a copy of a record it is closest to");
    }
    assert_eq!(net.nodes[joiner].store().len(), mine.len(), "and no others");
}

#[test]
fn a_set_of_64_writers_is_read_whole_page_by_page_and_a_lying_pager_is_cut_off() {
    use suprnova_dht::wire::SetEntry;
    let mut net = joined(30);
    let key = Key([0x5e; 32]);
    let writers: Vec<Identity> = (0..64u8).map(|i| Identity::from_seed([i.wrapping_add(100); 32])).collect();
    for (i, w) in writers.iter().enumerate() {
        let e = SetEntry::sign(w, &key, 1, 600, &[i as u8; 100]).unwrap();
        let now = net.now;
        net.nodes[i % 30].put(now, key, Record::SetEntry(e), Duration::from_secs(600), None).unwrap();
        net.run();
    }
    let got = |net: &mut Net, from: usize, mode: GetMode| {
        let now = net.now;
        let q = net.nodes[from].get(now, key, mode).unwrap();
        net.run();
        let ev = net.take_events(from);
        assert!(ev.iter().any(|e| matches!(e, DhtEvent::GetDone { query, .. } if *query == q)));
        let mut writers: Vec<[u8; 32]> = ev
            .iter()
            .filter_map(|e| match e {
                DhtEvent::GotRecord { query, record: Record::SetEntry(s), .. } if *query == q => Some(s.public_key),
                _ => None,
            })
            .collect();
        writers.sort();
        writers.dedup();
        writers.len()
    };
    // FindValue carries one datagram per replica: a sample. FindSet pages through every entry.
    let sampled = got(&mut net, 17, GetMode::All);
    assert!(sampled < 64, "FindValue returned {sampled}");
    assert_eq!(got(&mut net, 17, GetMode::Set), 64);
    let sent = net.nodes[17].dht_stats().rpcs_sent;
    // Two of the three replicas lie: they answer every FindSet with one page (in order) and
    // "more" forever. The second page repeats the first (out of order), is refused, and paging
    // that liar stops.
    let mut liars: Vec<&Identity> = writers.iter().take(3).collect();
    liars.sort_by_key(|w| w.public_key());
    let liar_page: Vec<Record> =
        liars.iter().map(|w| Record::SetEntry(SetEntry::sign(w, &key, 1, 600, b"lie").unwrap())).collect();
    let mut ids: Vec<usize> = (0..30).collect();
    ids.sort_by_key(|i| NodeId(key.0).distance(&net.nodes[*i].id()));
    assert!(!ids[..3].contains(&17));
    for &i in &ids[..2] {
        net.nodes[i].set_answer_filter(Some(std::sync::Arc::new(Adversary {
            values: Some(liar_page.clone()),
            ..Adversary::default()
        })));
    }
    let before = net.nodes[17].stats().drops.get(DropReason::InvalidValue);
    assert_eq!(got(&mut net, 17, GetMode::Set), 64, "the honest replica still gives every writer");
    assert_eq!(net.nodes[17].stats().drops.get(DropReason::InvalidValue) - before, 6, "3 repeated entries × 2 liars");
    assert!(net.nodes[17].dht_stats().rpcs_sent - sent < 80, "paging stayed bounded");
}

#[test]
fn put_records_are_republished_and_put_once_records_lapse() {
    let mut net = joined(12);
    let (kept, r1) = imm(b"republished by its publisher");
    let (once, r2) = imm(b"stored once, left to lapse");
    let now = net.now;
    net.nodes[4].put(now, kept, r1, Duration::from_secs(20), None).unwrap();
    net.nodes[4].put_once(now, once, r2, Duration::from_secs(20)).unwrap();
    net.run();
    let all: Vec<usize> = (0..12).collect();
    assert_eq!(holders(&net, &kept, &all).len(), 3);
    assert_eq!(holders(&net, &once, &all).len(), 3);
    // Three lifetimes later.
    pump_without(&mut net, &[], 60, Duration::from_secs(1));
    assert_eq!(holders(&net, &kept, &all).len(), 3, "republished at 4/5 of its lifetime");
    assert!(holders(&net, &once, &all).is_empty(), "a put_once record lives its ttl only");
}

#[test]
fn a_flooding_peer_is_held_to_its_request_and_store_limits_while_others_are_served() {
    let mut net = joined(3);
    let to = info(&net, 1);
    // 3,000 pings at one instant from node 0: the burst (2,000) is answered, the rest dropped.
    let now = net.now;
    for i in 0..3000u64 {
        let bytes = Message { id: 10_000 + i, body: Body::Ping }.encode().unwrap();
        net.nodes[0].send_raw(now, &to, &bytes).unwrap();
    }
    net.run();
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::RateLimitedRequest), 1000);
    // All 3,000 were answered: 2,000 pongs and 1,000 RATE_LIMITED errors (so an honest peer over
    // a limit sees us busy, not dead).
    assert_eq!(net.nodes[0].stats().drops.get(DropReason::UnexpectedResponse), 3000);
    // Another peer on the same IP is served at once: the per-IP bucket (10,000) has room.
    let now = net.now;
    let target = net.nodes[1].record().clone();
    let req = net.nodes[2].ping(now, Target::Record(target)).unwrap();
    net.run();
    assert!(net.take_events(2).iter().any(|e| matches!(e, DhtEvent::Pong { request, .. } if *request == req)));

    // Two seconds later node 0's request bucket is full again; 1,100 stores at once: the store
    // burst (1,000) is checked and stored, the other 100 are answered RATE_LIMITED.
    net.advance(Duration::from_secs(2));
    let now = net.now;
    for i in 0..1100u32 {
        let (k, r) = imm(&i.to_le_bytes());
        let body = Body::Store { key: k, record: r, ttl_s: 60, expected_seq: None };
        let bytes = Message { id: 20_000 + u64::from(i), body }.encode().unwrap();
        net.nodes[0].send_raw(now, &to, &bytes).unwrap();
    }
    net.run();
    let n1 = &net.nodes[1];
    assert_eq!(n1.stats().drops.get(DropReason::RateLimitedStore), 100);
    assert_eq!(n1.dht_stats().stores_accepted, 1000);
    assert_eq!(n1.store().len(), 1000);
    let limits = n1.limits();
    let stat = |name: &str| limits.iter().find(|l| l.name == name).unwrap().clone();
    assert_eq!(stat("requests_per_peer").refused, 1000);
    assert_eq!(stat("stores_per_peer").refused, 100);
    assert_eq!(stat("requests_per_peer").tracked, 1, "node 0 refilling; node 2's bucket refilled and was forgotten");
    assert_eq!(stat("requests_per_ip").refused, 0);
}

#[test]
fn initiations_from_one_address_are_limited_before_any_diffie_hellman() {
    use suprnova_dht::handshake::build_initiation;
    // Node 1 never asks for cookies, so that only the rate limits stand in the way (an attacker
    // with real addresses answers cookie replies anyway).
    let cfgs = (0..2)
        .map(|i| {
            let mut c = config(i);
            c.routing.exempt_local = true;
            c.channel.cookie_threshold_per_s = u32::MAX;
            c
        })
        .collect();
    let mut net = joined_with(Net::new(cfgs));
    let responder = net.nodes[1].record().clone();
    let attacker = Identity::from_seed([77; 32]);
    let src = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
    let send = |net: &mut Net, from: std::net::SocketAddr, n: u64, base: u64| {
        let now = net.now;
        for i in 0..n {
            // A fresh initiation each time (new ephemeral, index and timestamp): none is a
            // retransmission the response cache would answer.
            let eph = [(i % 250) as u8 + 1; 32];
            let (_, pkt) =
                build_initiation(&attacker, &responder.noise_key, eph, i as u32, base + i, None, false).unwrap();
            net.nodes[1].handle_datagram(now, from, &pkt);
        }
        // (responses, cookie replies)
        let mut replies = (0, 0);
        while let Some(t) = net.nodes[1].poll_transmit() {
            match t.payload.first() {
                Some(2) => replies.0 += 1,
                Some(3) => replies.1 += 1,
                _ => {}
            }
        }
        replies
    };
    // 50 at once from one address: the per-address burst (20) is answered, the rest get a
    // cookie reply (an honest initiator proves its address with it and is answered at once).
    assert_eq!(send(&mut net, src, 50, 1_800_000_000_000_000_000), (20, 30));
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::RateLimitedHandshake), 30);
    // The same IP on 100 other ports, 10 each: the per-address buckets are fresh, and the IP's
    // bucket (1,000) holds.
    let mut answered = 0;
    for p in 0..100u16 {
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 41_000 + p));
        answered += send(&mut net, from, 10, 1_900_000_000_000_000_000 + u64::from(p) * 100).0;
    }
    // The IP's burst of 1,000 less the 20 already answered (node 1 initiated its join itself).
    assert_eq!(answered, 980);
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::RateLimitedHandshake), 30 + 20);
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::CookieRequired), 0);
    // Once the sessions have expired (180 s) and the buckets refilled, forged initiations claim
    // node 0's own address and use up its unproven bucket. Node 0 still completes a fresh
    // handshake: its initiation is answered with a cookie reply, and the retry carries a mac2
    // that proves the address, which has a bucket of its own.
    net.advance(Duration::from_secs(200));
    let spoofed = send(&mut net, addr(0), 40, 2_000_000_000_000_000_000);
    assert_eq!(spoofed, (20, 20));
    let now = net.now;
    let target = net.nodes[1].record().clone();
    assert!(!net.nodes[0].channel().has_session(&target.id, now));
    let req = net.nodes[0].ping(now, Target::Record(target)).unwrap();
    net.run();
    assert!(net.take_events(0).iter().any(|e| matches!(e, DhtEvent::Pong { request, .. } if *request == req)));
}

/// 10 % of datagrams lost each way (a seeded choice): every put and get still succeeds, through
/// retransmission (§6.7) rather than timeouts, and no node leaves a routing table.
#[test]
fn puts_and_gets_succeed_under_ten_percent_loss() {
    let n = 12;
    let mut net = joined(n);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut lose = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng.is_multiple_of(10)
    };
    let step = Duration::from_millis(1);
    let mut took = Vec::new();
    for k in 0..30usize {
        let (key, r) = imm(format!("lossy {k}").as_bytes());
        let from = k % n;
        let now = net.now;
        let q = net.nodes[from].put(now, key, r, Duration::from_secs(300), None).unwrap();
        let start = net.now;
        let mut done = None;
        for _ in 0..10_000 {
            // Each datagram is lost on the way out or on the way in with 10 % each.
            for p in net.take_wire() {
                if !lose() && !lose() {
                    net.deliver(p);
                }
            }
            let ev = net.take_events(from);
            if let Some(res) = ev.iter().find_map(|e| match e {
                DhtEvent::PutDone { query, result } if *query == q => Some(*result),
                _ => None,
            }) {
                done = Some(res);
                break;
            }
            net.advance(step);
        }
        let res = done.expect("the put finished within 10 s of virtual time");
        assert!(res.as_ref().is_ok_and(|o| o.stored == 3), "put {k}: {res:?}");
        took.push(net.now - start);
    }
    took.sort();
    let retransmits: u64 = net.nodes.iter().map(|x| x.dht_stats().retransmits).sum();
    println!("30 puts under 10 % loss each way: p50 {:?}, max {:?}; {retransmits} retransmissions", took[15], took[29]);
    assert!(retransmits > 0);
    for x in &net.nodes {
        assert_eq!(x.table().len(), n - 1, "no node lost a peer to loss alone");
    }
}

/// Never alone (§7.6): a node cut off from every peer empties its table, reports that it rejoins
/// (through its seed), keeps its former peers dormant, and is back in full once the network is.
#[test]
fn a_node_cut_off_rejoins_and_its_former_peers_come_back() {
    let n = 5;
    let mut net = joined(n);
    let me = n - 1;
    let seed = net.nodes[0].record().clone();
    let now = net.now;
    net.nodes[me].bootstrap(now, vec![Target::Record(seed)]).unwrap();
    net.run();
    assert_eq!(net.nodes[me].table().len(), n - 1);
    // Cut: nothing from or to `me` arrives; its own lookups fail, so its table empties.
    let cut = |p: &suprnova_dht::testing::InFlight| p.src == addr(me) || p.dst == addr(me);
    for k in 0..120 {
        if k % 10 == 0 {
            let now = net.now;
            let _ = net.nodes[me].find_node(now, NodeId([k as u8; 32]));
        }
        for p in net.take_wire() {
            if !cut(&p) {
                net.deliver(p);
            }
        }
        net.advance(Duration::from_millis(500));
    }
    let status = net.nodes[me].rejoin_status();
    assert_eq!(net.nodes[me].table().len(), 0, "every peer failed");
    assert!(status.rejoining && status.attempts >= 1, "{status:?}");
    assert_eq!((status.seeds, status.dormant), (1, n - 1));
    let ev = net.take_events(me);
    assert!(ev.iter().any(|e| matches!(e, DhtEvent::Rejoining { peers: 0, .. })));
    // Healed: a dormant probe or a rejoin attempt gets through, and the table fills again.
    for _ in 0..40 {
        net.run();
        net.advance(Duration::from_millis(250));
    }
    net.run();
    assert_eq!(net.nodes[me].table().len(), n - 1, "every former peer is back");
    let status = net.nodes[me].rejoin_status();
    assert!(!status.rejoining && status.dormant == 0 && status.revived >= 1, "{status:?}");
}
