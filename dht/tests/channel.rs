//! Behaviour of the secure channel through the `Dht` core on virtual time: handshake + ping,
//! replay rejection, retransmission, rekeying, the cookie path under load, and refused identities.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use suprnova_dht::handshake::{self, noise};
use suprnova_dht::identity::Identity;
use suprnova_dht::proto::{DhtEvent, RequestError, Target};
use suprnova_dht::stats::DropReason;
use suprnova_dht::testing::{Net, addr, config};
use suprnova_dht::wire::packet::{self, INITIATION_MAC1, Packet};

fn pongs(ev: &[DhtEvent]) -> usize {
    ev.iter().filter(|e| matches!(e, DhtEvent::Pong { .. })).count()
}

fn ping(net: &mut Net, from: usize, to: usize) -> u64 {
    let rec = net.nodes[to].record().clone();
    let now = net.now;
    net.nodes[from].ping(now, Target::Record(rec)).unwrap()
}

#[test]
fn handshake_then_ping_pong() {
    let mut net = Net::with_nodes(2);
    let req = ping(&mut net, 0, 1);
    net.run();
    let ev = net.take_events(0);
    let pong = ev.iter().find_map(|e| match e {
        DhtEvent::Pong { request, peer, observed, .. } => Some((*request, *peer, *observed)),
        _ => None,
    });
    let (r, peer, observed) = pong.expect("pong");
    assert_eq!(r, req);
    assert_eq!(peer, net.nodes[1].id());
    assert_eq!(observed.to_socket_addr(), addr(0));
    // Exactly: initiation, response, ping (transport); then the responder, which has no record of
    // the pinger yet, asks for it (record request, 5) to add it to its routing table while it
    // answers (pong, 4); the record reply (6) closes the exchange.
    let kinds: Vec<u8> = net.log.iter().map(|p| p.data[0]).collect();
    assert_eq!(kinds, vec![1, 2, 4, 5, 4, 6]);
    assert_eq!(net.nodes[1].table().len(), 1, "the pinger is in the responder's table");
    assert_eq!(net.nodes[0].table().len(), 1, "the responder is in the pinger's table");
    assert_eq!(net.log[0].data.len(), 240);
    assert_eq!(net.log[1].data.len(), 92);
    let (a, b) = (net.nodes[0].stats(), net.nodes[1].stats());
    assert_eq!((a.handshakes_initiated, a.handshakes_completed, b.handshakes_answered), (1, 1, 1));
    assert_eq!(a.drops.total() + b.drops.total(), 0);
    assert_eq!(net.nodes[0].channel().session_count(), 1);
    assert_eq!(net.nodes[1].channel().session_count(), 1);
    // A second ping reuses the session: two transport packets, no handshake.
    let before = net.log.len();
    ping(&mut net, 0, 1);
    net.run();
    assert_eq!(net.log[before..].iter().map(|p| p.data[0]).collect::<Vec<_>>(), vec![4, 4]);
    assert_eq!(pongs(&net.take_events(0)), 1);
}

#[test]
fn replayed_transport_packet_is_dropped_once_delivered() {
    let mut net = Net::with_nodes(2);
    ping(&mut net, 0, 1);
    net.run();
    net.take_events(0);
    ping(&mut net, 0, 1);
    let wire = net.take_wire();
    assert_eq!(wire.len(), 1);
    let p = wire[0].clone();
    net.deliver(p.clone());
    net.deliver(p.clone());
    net.deliver(p);
    net.run();
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::Replay), 2);
    assert_eq!(pongs(&net.take_events(0)), 1, "only one pong for one accepted ping");
}

#[test]
fn retransmitted_initiation_gets_a_byte_identical_response() {
    let mut net = Net::with_nodes(2);
    let req = ping(&mut net, 0, 1);
    // Deliver the initiation but lose the response.
    let init = net.take_wire();
    net.deliver(init[0].clone());
    let resp1 = net.take_wire();
    assert_eq!(resp1.len(), 1);
    // The initiator retransmits the very same initiation after 1 s ...
    net.advance(Duration::from_millis(1000));
    let retry = net.take_wire();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].data, init[0].data);
    net.deliver(retry[0].clone());
    // ... and gets a byte-identical response, with no new DH work on the responder.
    let resp2 = net.take_wire();
    assert_eq!(resp2[0].data, resp1[0].data);
    assert_eq!(net.nodes[1].stats().responses_replayed, 1);
    assert_eq!(net.nodes[1].stats().handshakes_answered, 1);
    net.deliver(resp2[0].clone());
    net.run();
    assert!(net.take_events(0).iter().any(|e| matches!(e, DhtEvent::Pong { request, .. } if *request == req)));
}

/// Two nodes with no background traffic (no neighbour check), for tests that count packets
/// across long waits.
fn quiet_pair() -> Net {
    Net::new(
        (0..2)
            .map(|i| {
                let mut c = config(i);
                c.neighbour_check = Duration::ZERO;
                c
            })
            .collect(),
    )
}

#[test]
fn stale_initiation_replayed_after_cache_expiry_is_refused() {
    let mut net = quiet_pair();
    ping(&mut net, 0, 1);
    let init = net.take_wire()[0].clone();
    net.deliver(init.clone());
    net.run();
    net.advance(Duration::from_secs(11)); // response cache TTL is 10 s
    net.deliver(init);
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::StaleTimestamp), 1);
    assert!(net.take_wire().is_empty(), "no answer to a replayed initiation");
}

#[test]
fn rekey_after_message_count_keeps_traffic_flowing() {
    let mut cfgs = vec![config(0), config(1)];
    cfgs[0].channel.rekey_after_messages = 4;
    let mut net = Net::new(cfgs);
    for _ in 0..20 {
        ping(&mut net, 0, 1);
        net.run();
    }
    assert_eq!(pongs(&net.take_events(0)), 20);
    let a = net.nodes[0].stats();
    assert!(a.handshakes_completed >= 4, "rekeyed {} times", a.handshakes_completed);
    assert_eq!(a.drops.total() + net.nodes[1].stats().drops.total(), 0);
}

#[test]
fn packets_in_flight_during_rekey_are_still_accepted() {
    let mut cfgs = vec![config(0), config(1)];
    cfgs[0].channel.rekey_after_messages = 2;
    let mut net = Net::new(cfgs);
    ping(&mut net, 0, 1);
    net.run();
    // Second ping triggers a rekey: the ping (old session) and the new initiation leave together.
    ping(&mut net, 0, 1);
    let wire = net.take_wire();
    let kinds: Vec<u8> = wire.iter().map(|p| p.data[0]).collect();
    assert_eq!(kinds, vec![4, 1]);
    // Deliver the handshake first, then the old-session ping.
    net.deliver(wire[1].clone());
    net.deliver(wire[0].clone());
    net.run();
    assert_eq!(pongs(&net.take_events(0)), 2);
    assert_eq!(net.nodes[1].stats().drops.total(), 0);
}

#[test]
fn sessions_rekey_after_time_and_expire() {
    let mut net = quiet_pair();
    ping(&mut net, 0, 1);
    net.run();
    net.advance(Duration::from_secs(121));
    ping(&mut net, 0, 1);
    net.run();
    assert_eq!(net.nodes[0].stats().handshakes_initiated, 2, "time-based rekey");
    // Past reject_after with no traffic every session is gone; the next ping handshakes anew.
    net.advance(Duration::from_secs(200));
    assert_eq!(net.nodes[0].channel().session_count(), 0);
    assert_eq!(net.nodes[0].channel().index_count(), 0);
    assert_eq!(net.nodes[1].channel().index_count(), 0);
    ping(&mut net, 0, 1);
    net.run();
    assert_eq!(net.nodes[0].stats().handshakes_initiated, 3);
    assert_eq!(pongs(&net.take_events(0)), 3);
}

#[test]
fn under_load_the_responder_demands_a_cookie_first() {
    let mut cfgs = vec![config(0), config(1)];
    cfgs[1].channel.cookie_threshold_per_s = 0;
    let mut net = Net::new(cfgs);
    ping(&mut net, 0, 1);
    let init = net.take_wire()[0].clone();
    net.deliver(init.clone());
    let reply = net.take_wire();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].data[0], 3, "cookie reply");
    assert!(reply[0].data.len() < init.data.len(), "no amplification");
    assert_eq!(net.nodes[1].channel().peer_count(), 0, "no state before the cookie round trip");
    assert_eq!(net.nodes[1].stats().handshakes_answered, 0);
    // The initiation replayed from another address with the old mac2 still gets only a cookie.
    let mut other = init.clone();
    other.src = addr(7);
    net.deliver(other);
    assert_eq!(net.take_wire()[0].data[0], 3);
    // The initiator retries at once with mac2 and the handshake completes.
    net.deliver(reply[0].clone());
    let retry = net.take_wire();
    assert_eq!(retry[0].data[..INITIATION_MAC1 + 16], init.data[..INITIATION_MAC1 + 16]);
    assert_ne!(retry[0].data[INITIATION_MAC1 + 16..], [0u8; 16]);
    net.deliver(retry[0].clone());
    net.run();
    assert_eq!(pongs(&net.take_events(0)), 1);
    let b = net.nodes[1].stats();
    assert_eq!((b.cookies_sent, b.drops.get(DropReason::CookieRequired), b.handshakes_answered), (2, 2, 1));
}

#[test]
fn cookies_stop_working_two_lifetimes_after_their_secret() {
    let mut cfgs = vec![config(0), config(1)];
    cfgs[1].channel.cookie_threshold_per_s = 0;
    let mut net = Net::new(cfgs);
    ping(&mut net, 0, 1);
    let init = net.take_wire()[0].clone();
    net.deliver(init);
    let cookie_reply = net.take_wire()[0].clone();
    net.deliver(cookie_reply);
    let with_mac2 = net.take_wire()[0].clone();
    net.deliver(with_mac2.clone());
    net.run();
    assert_eq!(net.nodes[1].stats().handshakes_answered, 1);
    // 130 s later the cookie still passes (previous secret): the replay dies on its timestamp.
    net.advance(Duration::from_secs(130));
    net.deliver(with_mac2.clone());
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::StaleTimestamp), 1);
    // 250 s after the secret was made, the cookie is refused before any DH work.
    net.advance(Duration::from_secs(120));
    let cookies_before = net.nodes[1].stats().cookies_sent;
    net.deliver(with_mac2);
    assert_eq!(net.nodes[1].stats().cookies_sent, cookies_before + 1);
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::StaleTimestamp), 1);
}

#[test]
fn record_reply_from_an_ipv4_mapped_source_matches() {
    let mut net = Net::with_nodes(2);
    let now = net.now;
    net.nodes[0].ping(now, Target::Addr { addr: addr(1), expect: None }).unwrap();
    let req = net.take_wire().remove(0);
    net.deliver(req);
    let mut reply = net.take_wire().remove(0);
    assert_eq!(reply.data[0], 6);
    // As a dual-stack socket reports it.
    reply.src =
        std::net::SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped()), addr(1).port());
    net.deliver(reply);
    net.run();
    assert_eq!(net.nodes[0].stats().drops.total(), 0);
    assert_eq!(pongs(&net.take_events(0)), 1);
}

#[test]
fn forged_record_is_refused_before_any_packet() {
    let mut net = Net::with_nodes(2);
    let mut rec = net.nodes[1].record().clone();
    rec.noise_key = Identity::from_seed([99; 32]).noise_public();
    let now = net.now;
    let err = net.nodes[0].ping(now, Target::Record(rec)).unwrap_err();
    assert!(matches!(err, RequestError::BadRecord(_)));
    assert!(net.take_wire().is_empty());
}

#[test]
fn wrong_expected_id_is_refused() {
    let mut net = Net::with_nodes(3);
    let now = net.now;
    let wrong = net.nodes[2].id();
    let req = net.nodes[0].ping(now, Target::Addr { addr: addr(1), expect: Some(wrong) }).unwrap();
    net.run();
    let ev = net.take_events(0);
    assert!(ev.iter().any(|e| matches!(e, DhtEvent::RequestFailed { request, error: RequestError::IdentityMismatch(id) } if *request == req && *id == net.nodes[1].id())));
    assert_eq!(net.nodes[0].stats().drops.get(DropReason::IdentityMismatch), 1);
    assert_eq!(net.nodes[0].stats().handshakes_initiated, 0);
    // A bare address accepts whoever answers, and the record reply is smaller than the request.
    let now = net.now;
    net.nodes[0].ping(now, Target::Addr { addr: addr(1), expect: None }).unwrap();
    net.run();
    assert_eq!(pongs(&net.take_events(0)), 1);
    let req_len = net.log.iter().find(|p| p.data[0] == 5).unwrap().data.len();
    let rep_len = net.log.iter().find(|p| p.data[0] == 6).unwrap().data.len();
    assert!(rep_len < req_len, "record reply {rep_len} < request {req_len}");
}

#[test]
fn node_with_another_static_key_cannot_answer() {
    // Node 0 believes node 1's record, but node 2 sits at node 1's address.
    let mut net = Net::with_nodes(3);
    let rec1 = net.nodes[1].record().clone();
    let now = net.now;
    let req = net.nodes[0].ping(now, Target::Record(rec1)).unwrap();
    // Retries at 0.25, 0.75, 1.75 and 3.75 s, abandoned at 7.75 s: before the 10 s request timeout.
    for _ in 0..9 {
        for mut p in net.take_wire() {
            p.dst = addr(2);
            net.deliver(p);
        }
        net.advance(Duration::from_secs(1));
    }
    assert_eq!(net.nodes[2].stats().drops.get(DropReason::BadMac1), 5);
    assert_eq!(net.nodes[2].channel().peer_count(), 0);
    let ev = net.take_events(0);
    assert!(ev.iter().any(
        |e| matches!(e, DhtEvent::RequestFailed { request, error: RequestError::HandshakeFailed } if *request == req)
    ));
}

#[test]
fn static_key_not_bound_to_claimed_identity_is_refused() {
    let mut net = Net::with_nodes(2);
    let responder = net.nodes[1].record().clone();
    let victim = Identity::from_seed([1; 32]); // node 0's identity
    let attacker = Identity::from_seed([77; 32]);
    // The attacker claims the victim's public key but can only sign with its own key.
    let payload =
        handshake::InitPayload { public_key: victim.public_key(), binding: attacker.binding_signature(), timestamp: 1 };
    let (_, m1) = noise::write_message1(
        &suprnova_dht::crypto::REAL,
        &x25519_dalek::StaticSecret::from(blake3::derive_key(
            suprnova_dht::identity::NOISE_KEY_CONTEXT,
            attacker.seed(),
        )),
        &responder.noise_key,
        [9; 32],
        &payload.to_bytes(),
        false,
    )
    .unwrap();
    let init = packet::Initiation {
        sender_index: 1,
        ephemeral: m1.ephemeral,
        enc_static: m1.enc_static.try_into().unwrap(),
        enc_payload: m1.enc_payload.try_into().unwrap(),
        mac1: [0; 16],
        mac2: [0; 16],
    };
    let mut bytes = init.to_bytes();
    handshake::set_macs(&mut bytes, INITIATION_MAC1, &responder.noise_key, None);
    assert!(matches!(packet::parse(&bytes), Ok(Packet::Initiation(_))));
    let now = net.now;
    net.nodes[1].handle_datagram(now, addr(5), &bytes);
    assert_eq!(net.nodes[1].stats().drops.get(DropReason::BadBinding), 1);
    assert_eq!(net.nodes[1].channel().peer_count(), 0);
    assert!(net.take_wire().is_empty());
}

#[test]
fn garbage_is_counted_by_reason_and_never_answered() {
    let mut net = Net::with_nodes(1);
    let now = net.now;
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::Empty),
        (vec![0x41; 100], DropReason::QuicBit),
        (vec![0x09, 1, 0, 0], DropReason::UnknownType),
        (vec![0x01, 9, 0, 0], DropReason::WrongVersion),
        (vec![0x01, 1, 0, 0, 0], DropReason::BadLength),
        (vec![0x01; 1300], DropReason::TooLarge),
        (
            {
                let mut v = vec![0u8; 240];
                v[0] = 1;
                v[1] = 1;
                v
            },
            DropReason::BadMac1,
        ),
        (
            {
                let mut v = vec![0u8; 60];
                v[0] = 4;
                v[1] = 1;
                v
            },
            DropReason::UnknownIndex,
        ),
        (
            {
                let mut v = vec![0u8; 80];
                v[0] = 3;
                v[1] = 1;
                v
            },
            DropReason::UnknownIndex,
        ),
        (
            {
                let mut v = vec![0u8; 100];
                v[0] = 6;
                v[1] = 1;
                v
            },
            DropReason::UnsolicitedRecord,
        ),
    ];
    for (bytes, reason) in &cases {
        let before = net.nodes[0].stats().drops.get(*reason);
        net.nodes[0].handle_datagram(now, addr(3), bytes);
        assert_eq!(net.nodes[0].stats().drops.get(*reason), before + 1, "{reason}");
    }
    assert!(net.take_wire().is_empty());
    assert_eq!(net.nodes[0].stats().drops.total(), cases.len() as u64);
}
