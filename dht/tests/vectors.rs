//! Test vectors (`test-vectors/*.json`), checked in both directions:
//!
//! * encoder: every vector is rebuilt from its fixed inputs and must equal the checked-in file
//!   byte for byte (`SUPRNOVA_UPDATE_VECTORS=1 cargo test --test vectors` rewrites the files: do
//!   that only on purpose, with the wire-spec change that goes with it);
//! * decoder: the bytes in the files are fed to the decoders and to a responder `Channel`, which
//!   must accept or reject them exactly as listed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Value, json};
use suprnova_dht::channel::{Channel, ChannelConfig, ChannelEvent, PeerInfo};
use suprnova_dht::handshake::{self, cookie, noise, session::Session};
use suprnova_dht::identity::{self, Identity, NodeRecord};
use suprnova_dht::stats::DropReason;
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedString, BoundedVec};
use suprnova_dht::wire::packet::{self, INITIATION_MAC1, Packet, RESPONSE_MAC1};
use suprnova_dht::wire::{self, Body, Key, Message, MutableRecord, Record, SetEntry, WireAddr};

const INITIATOR_SEED: [u8; 32] = [0x11; 32];
const RESPONDER_SEED: [u8; 32] = [0x42; 32];
const INITIATOR_RNG: [u8; 32] = [0xa1; 32];
const RESPONDER_RNG: [u8; 32] = [0xb2; 32];
const UNIX_START_NS: u64 = 1_700_000_000_000_000_000;

fn h(b: &[u8]) -> String {
    hex::encode(b)
}
fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or_else(|| panic!("not a hex string: {v}"))).unwrap()
}
fn initiator_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn responder_addr() -> SocketAddr {
    "127.0.0.1:4433".parse().unwrap()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors")
}

fn cfg(seed: [u8; 32], cookie_threshold: u32) -> ChannelConfig {
    ChannelConfig {
        rng_seed: seed,
        unix_time_ns_at_start: UNIX_START_NS,
        cookie_threshold_per_s: cookie_threshold,
        ..ChannelConfig::default()
    }
}

fn responder(t0: Instant, cookie_threshold: u32) -> Channel {
    Channel::new(Identity::from_seed(RESPONDER_SEED), cfg(RESPONDER_RNG, cookie_threshold), t0)
}

fn responder_info() -> PeerInfo {
    let r = Identity::from_seed(RESPONDER_SEED);
    PeerInfo { id: r.id(), noise_key: r.noise_public(), addr: responder_addr() }
}

fn drain(ch: &mut Channel) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(t) = ch.poll_transmit() {
        v.push(t.payload);
    }
    v
}

/// What the two channels' RNGs hand out, in the order the channel draws: two cookie secrets at
/// start, then per handshake a session index and an ephemeral secret.
struct Draws {
    index: u32,
    ephemeral: [u8; 32],
}
fn draws(seed: [u8; 32]) -> Draws {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut skip = [0u8; 64];
    rng.fill_bytes(&mut skip);
    let index = rng.next_u32();
    let mut ephemeral = [0u8; 32];
    rng.fill_bytes(&mut ephemeral);
    Draws { index, ephemeral }
}

/// The transcript of one real exchange between two channels with fixed seeds.
struct Transcript {
    initiation: Vec<u8>,
    response: Vec<u8>,
    ping: Vec<u8>,
    pong: Vec<u8>,
}
fn transcript() -> Transcript {
    let t0 = Instant::now();
    let mut i = Channel::new(Identity::from_seed(INITIATOR_SEED), cfg(INITIATOR_RNG, 1000), t0);
    let mut r = responder(t0, 1000);
    let ping = Message { id: 1, body: Body::Ping }.encode().unwrap();
    i.send(t0, &responder_info(), &ping).unwrap();
    let initiation = drain(&mut i).remove(0);
    r.handle_datagram(t0, initiator_addr(), &initiation);
    let response = drain(&mut r).remove(0);
    i.handle_datagram(t0, responder_addr(), &response);
    let ping_pkt = drain(&mut i).remove(0);
    r.handle_datagram(t0, initiator_addr(), &ping_pkt);
    let peer = match r.poll_event() {
        Some(ChannelEvent::Established { peer, .. }) => peer,
        e => panic!("expected Established, got {e:?}"),
    };
    let pong = Message { id: 1, body: Body::Pong { observed: WireAddr::from(initiator_addr()), record_seq: 7 } };
    r.send_known(t0, peer, &pong.encode().unwrap()).unwrap();
    let pong_pkt = drain(&mut r).remove(0);
    Transcript { initiation, response, ping: ping_pkt, pong: pong_pkt }
}

fn identity_vectors() -> Value {
    let ids: Vec<Value> = [INITIATOR_SEED, RESPONDER_SEED]
        .iter()
        .map(|seed| {
            let id = Identity::from_seed(*seed);
            json!({
                "seed": h(seed),
                "ed25519_public_key": h(&id.public_key()),
                "node_id": h(id.id().as_bytes()),
                "x25519_static_secret": h(&blake3::derive_key(identity::NOISE_KEY_CONTEXT, seed)),
                "x25519_static_public": h(&id.noise_public()),
                "binding_message": h(&identity::binding_message(&id.noise_public())),
                "binding_signature": h(&id.binding_signature()),
            })
        })
        .collect();
    json!({ "description": "Identity derivation (wire-spec §3): seed -> keys, node id, static-key binding.", "identities": ids })
}

fn sample_records() -> Vec<(String, NodeRecord)> {
    let i = Identity::from_seed(INITIATOR_SEED);
    let r = Identity::from_seed(RESPONDER_SEED);
    vec![
        ("one IPv4 address".into(), r.make_record(7, 0, &[WireAddr::V4([127, 0, 0, 1], 4433)]).unwrap()),
        (
            "IPv4 and IPv6, capabilities set, large seq".into(),
            i.make_record(
                1_700_000_000,
                0x8001,
                &[
                    WireAddr::V4([192, 0, 2, 1], 51820),
                    WireAddr::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 443),
                ],
            )
            .unwrap(),
        ),
        ("no addresses".into(), r.make_record(0, 0, &[]).unwrap()),
    ]
}

fn record_json(rec: &NodeRecord) -> Value {
    json!({
        "version": rec.version,
        "id": h(rec.id.as_bytes()),
        "public_key": h(&rec.public_key),
        "noise_key": h(&rec.noise_key),
        "seq": rec.seq,
        "capabilities": rec.capabilities,
        "addrs": rec.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "signature": h(&rec.signature),
    })
}

fn record_vectors() -> Value {
    let valid: Vec<Value> = sample_records()
        .iter()
        .map(|(d, rec)| {
            json!({ "description": d, "fields": record_json(rec), "signed_bytes": h(&rec.signed_bytes().unwrap()), "encoding": h(&wire::encode(rec).unwrap()) })
        })
        .collect();
    let base = sample_records().remove(0).1;
    let other = Identity::from_seed([0x77; 32]);
    let mut invalid = Vec::new();
    let mut push = |d: &str, rec: &NodeRecord, err: &str| {
        invalid.push(json!({ "description": d, "encoding": h(&wire::encode(rec).unwrap()), "error": err }));
    };
    let mut r = base.clone();
    r.seq += 1;
    push("seq changed after signing", &r, "bad_signature");
    let mut r = base.clone();
    r.noise_key = other.noise_public();
    push("static key swapped for another node's (forged)", &r, "bad_signature");
    let mut r = base.clone();
    r.id = other.id();
    push("id is not BLAKE3(public_key)", &r, "id_mismatch");
    let mut r = base.clone();
    r.version = 2;
    push("unsupported version", &r, "wrong_version");
    let r = Identity::from_seed(RESPONDER_SEED).make_record(7, 0, &[WireAddr::V4([0, 0, 0, 0], 4433)]).unwrap();
    push("unspecified address (validly signed)", &r, "bad_addr");
    let enc = wire::encode(&base).unwrap();
    let mut trailing = enc.clone();
    trailing.push(0);
    invalid.push(json!({ "description": "trailing byte", "encoding": h(&trailing), "error": "malformed" }));
    invalid.push(
        json!({ "description": "truncated signature", "encoding": h(&enc[..enc.len() - 1]), "error": "malformed" }),
    );
    // 5 addresses announced: more than MAX_RECORD_ADDRS, refused at the length prefix.
    let mut five = enc.clone();
    let addr_count_at = 1 + 32 * 3 + 1 + 1; // version, id, key, noise key, seq=7 (1 byte), caps=0 (1 byte)
    five[addr_count_at] = 5;
    invalid.push(json!({ "description": "5 addresses announced (max 4)", "encoding": h(&five), "error": "malformed" }));
    json!({ "description": "Node records (wire-spec §3.4): fields, signed bytes, encoding; and records that must be refused.", "valid": valid, "invalid": invalid })
}

fn sample_messages() -> Vec<(&'static str, Message)> {
    let r = Identity::from_seed(RESPONDER_SEED);
    let rec = sample_records().remove(0).1;
    let key = Key([0x5a; 32]);
    let mut mutable = MutableRecord {
        public_key: r.public_key(),
        salt: BoundedBytes::try_from(&b"profile"[..]).unwrap(),
        seq: 3,
        value: BoundedBytes::try_from(&b"hello mutable"[..]).unwrap(),
        signature: [0; 64],
    };
    mutable.signature = r.sign(&mutable.signed_bytes().unwrap());
    let mut entry = SetEntry {
        public_key: r.public_key(),
        seq: 1,
        ttl_s: 300,
        value: BoundedBytes::try_from(&b"member"[..]).unwrap(),
        signature: [0; 64],
    };
    entry.signature = r.sign(&entry.signed_bytes(&key).unwrap());
    let imm = Record::Immutable { value: BoundedBytes::try_from(&b"hello immutable"[..]).unwrap() };
    vec![
        ("ping", Message { id: 1, body: Body::Ping }),
        ("pong", Message { id: 1, body: Body::Pong { observed: WireAddr::V4([127, 0, 0, 1], 40000), record_seq: 7 } }),
        (
            "pong_ipv6",
            Message {
                id: 300,
                body: Body::Pong {
                    observed: WireAddr::V6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 65535),
                    record_seq: 1 << 40,
                },
            },
        ),
        ("find_node", Message { id: 2, body: Body::FindNode { target: r.id() } }),
        ("nodes", Message { id: 2, body: Body::Nodes { total: 1, nodes: BoundedVec::try_from(vec![rec]).unwrap() } }),
        ("nodes_empty", Message { id: 2, body: Body::Nodes { total: 1, nodes: BoundedVec::new() } }),
        ("find_value", Message { id: 3, body: Body::FindValue { key } }),
        (
            "value",
            Message {
                id: 3,
                body: Body::Value {
                    key: Key::for_immutable(b"hello immutable"),
                    records: BoundedVec::try_from(vec![imm.clone()]).unwrap(),
                },
            },
        ),
        (
            "store_immutable",
            Message {
                id: 4,
                body: Body::Store {
                    key: Key::for_immutable(b"hello immutable"),
                    record: imm,
                    ttl_s: 300,
                    expected_seq: None,
                },
            },
        ),
        (
            "store_mutable_cas",
            Message {
                id: 5,
                body: Body::Store {
                    key: mutable.key(),
                    record: Record::Mutable(mutable),
                    ttl_s: 600,
                    expected_seq: Some(2),
                },
            },
        ),
        (
            "store_set_entry",
            Message {
                id: 6,
                body: Body::Store { key, record: Record::SetEntry(entry.clone()), ttl_s: 300, expected_seq: None },
            },
        ),
        ("store_ack", Message { id: 6, body: Body::StoreAck { key } }),
        ("error", Message { id: 9, body: Body::Error { code: 1, detail: BoundedString::truncated("unsupported") } }),
        ("find_set", Message { id: 10, body: Body::FindSet { key, after: None } }),
        ("find_set_after", Message { id: 11, body: Body::FindSet { key, after: Some(entry.public_key) } }),
        (
            "set_page",
            Message {
                id: 10,
                body: Body::SetPage { key, entries: BoundedVec::try_from(vec![entry.clone()]).unwrap(), more: true },
            },
        ),
        ("set_page_last", Message { id: 11, body: Body::SetPage { key, entries: BoundedVec::new(), more: false } }),
    ]
}

fn message_vectors() -> Value {
    let valid: Vec<Value> = sample_messages()
        .iter()
        .map(|(name, m)| json!({ "name": name, "debug": format!("{m:?}"), "encoding": h(&m.encode().unwrap()) }))
        .collect();
    let too_many_nodes = {
        // id 2, Nodes (tag 3), total 1, 17 nodes announced, nothing after.
        vec![0x02, 0x03, 0x01, 17]
    };
    let bad_option = {
        let mut v = sample_messages()[8].1.encode().unwrap();
        let last = v.len() - 1;
        v[last] = 2;
        h(&v)
    };
    let invalid = vec![
        json!({ "description": "over-long varint for id 0 (0x80 0x00), then Ping", "encoding": "800000", "error": "non_canonical" }),
        json!({ "description": "trailing byte after Ping", "encoding": "010000", "error": "trailing" }),
        json!({ "description": "unknown body tag 99 (peek_id gives 1)", "encoding": "0163", "error": "malformed" }),
        json!({ "description": "17 nodes announced (max 16), no allocation", "encoding": h(&too_many_nodes), "error": "malformed" }),
        json!({ "description": "Option tag 2 in Store.expected_seq", "encoding": bad_option, "error": "malformed" }),
        json!({ "description": "empty input", "encoding": "", "error": "malformed" }),
        json!({ "description": "Nodes with total 0 (must be 1..=255)", "encoding": "02030000", "error": "malformed" }),
        json!({ "description": "truncated Pong", "encoding": "0101000000", "error": "malformed" }),
    ];
    json!({ "description": "Transport plaintexts (wire-spec §6): Message encodings; and encodings that must be refused.", "valid": valid, "invalid": invalid })
}

fn trace_json(t: &noise::Trace) -> Vec<Value> {
    t.iter().map(|(l, v)| json!({ "step": l, "value": h(v) })).collect()
}

fn handshake_vectors(tr: &Transcript) -> Value {
    let i = Identity::from_seed(INITIATOR_SEED);
    let r = Identity::from_seed(RESPONDER_SEED);
    let di = draws(INITIATOR_RNG);
    let dr = draws(RESPONDER_RNG);
    let (ist, init) =
        handshake::build_initiation(&i, &r.noise_public(), di.ephemeral, di.index, UNIX_START_NS, None, true).unwrap();
    assert_eq!(init, tr.initiation, "Channel's initiation differs from the explicit construction");
    let Ok(Packet::Initiation(pi)) = packet::parse(&init) else { panic!() };
    let priv_r = Identity::from_seed(RESPONDER_SEED);
    let (rst, payload) = handshake::consume_initiation(&priv_r, &pi, true).unwrap();
    let trace1 = ist.trace_so_far();
    assert_eq!(trace1, rst.trace_so_far(), "both sides derive the same message-1 values");
    let (resp, rkeys, rtrace) = handshake::build_response(rst, dr.ephemeral, dr.index, di.index).unwrap();
    assert_eq!(resp, tr.response, "Channel's response differs from the explicit construction");
    let Ok(Packet::Response(pr)) = packet::parse(&resp) else { panic!() };
    let priv_i = Identity::from_seed(INITIATOR_SEED);
    let (ikeys, itrace) = handshake::consume_response(ist, &priv_i, &pr).unwrap();
    assert_eq!(itrace, rtrace);
    let e_pub = |s: [u8; 32]| x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(s)).to_bytes();
    json!({
        "description": "A complete Noise_IK_25519_ChaChaPoly_BLAKE2s handshake (wire-spec §5) with every intermediate value.",
        "protocol_name": String::from_utf8_lossy(noise::PROTOCOL_NAME),
        "prologue": h(noise::PROLOGUE),
        "initiator": {
            "identity_seed": h(&INITIATOR_SEED), "static_public": h(&i.noise_public()),
            "ephemeral_secret": h(&di.ephemeral), "ephemeral_public": h(&e_pub(di.ephemeral)),
            "sender_index": di.index, "timestamp_ns": UNIX_START_NS, "address": initiator_addr().to_string(),
        },
        "responder": {
            "identity_seed": h(&RESPONDER_SEED), "static_public": h(&r.noise_public()),
            "ephemeral_secret": h(&dr.ephemeral), "ephemeral_public": h(&e_pub(dr.ephemeral)),
            "sender_index": dr.index, "address": responder_addr().to_string(),
        },
        "initiation": {
            "payload": h(&payload.to_bytes()),
            "mac1_key": h(&cookie::mac1_key(&r.noise_public())),
            "mac1": h(&pi.mac1), "mac2": h(&pi.mac2),
            "packet": h(&init),
        },
        "response": {
            "mac1_key": h(&cookie::mac1_key(&i.noise_public())),
            "mac1": h(&pr.mac1),
            "packet": h(&resp),
        },
        "trace": trace_json(&rtrace),
        "session": {
            "initiator_send": h(&ikeys.send), "initiator_recv": h(&ikeys.recv),
            "responder_send": h(&rkeys.send), "responder_recv": h(&rkeys.recv),
        },
    })
}

fn transport_vectors(tr: &Transcript, hs: &Value) -> Value {
    let key_i2r: [u8; 32] = unh(&hs["session"]["initiator_send"]).try_into().unwrap();
    let key_r2i: [u8; 32] = unh(&hs["session"]["responder_send"]).try_into().unwrap();
    let r_index = hs["responder"]["sender_index"].as_u64().unwrap() as u32;
    let i_index = hs["initiator"]["sender_index"].as_u64().unwrap() as u32;
    let mut pkts = Vec::new();
    for (n, counter) in [0u64, 1, 255, 65_536, 1 << 32].into_iter().enumerate() {
        let pt = if n == 4 { Vec::new() } else { Message { id: counter, body: Body::Ping }.encode().unwrap() };
        let mut pkt = packet::transport_header(r_index, counter).to_vec();
        pkt.extend_from_slice(&noise::seal(&key_i2r, counter, &[], &pt));
        pkts.push(json!({ "direction": "initiator_to_responder", "receiver_index": r_index, "counter": counter, "plaintext": h(&pt), "packet": h(&pkt) }));
    }
    assert_eq!(unh(&pkts[0]["packet"]), {
        // Counter 0 carries Message { id: 0, Ping }; the transcript's first packet carries id 1.
        let mut p = packet::transport_header(r_index, 0).to_vec();
        p.extend_from_slice(&noise::seal(&key_i2r, 0, &[], &Message { id: 0, body: Body::Ping }.encode().unwrap()));
        p
    });
    let mut ping = packet::transport_header(r_index, 0).to_vec();
    ping.extend_from_slice(&noise::seal(&key_i2r, 0, &[], &Message { id: 1, body: Body::Ping }.encode().unwrap()));
    assert_eq!(ping, tr.ping, "Channel's first transport packet");
    let pong_pt = Message { id: 1, body: Body::Pong { observed: WireAddr::from(initiator_addr()), record_seq: 7 } }
        .encode()
        .unwrap();
    let mut pong = packet::transport_header(i_index, 0).to_vec();
    pong.extend_from_slice(&noise::seal(&key_r2i, 0, &[], &pong_pt));
    assert_eq!(pong, tr.pong, "Channel's first reply");
    pkts.push(json!({ "direction": "responder_to_initiator", "receiver_index": i_index, "counter": 0, "plaintext": h(&pong_pt), "packet": h(&pong) }));
    json!({
        "description": "Transport packets (wire-spec §4.8, §5.8) under the session keys of handshake.json; AD is empty, the nonce is 4 zero bytes then the counter little-endian. An empty plaintext is a keepalive.",
        "packets": pkts,
    })
}

fn cookie_vectors(hs: &Value) -> Value {
    let r = Identity::from_seed(RESPONDER_SEED);
    let init = unh(&hs["initiation"]["packet"]);
    let Ok(Packet::Initiation(pi)) = packet::parse(&init) else { panic!() };
    let secret = [0xc0; 32];
    let nonce = [0x0c; 24];
    let source = WireAddr::from(initiator_addr());
    let cookie_value = cookie::make_cookie(&secret, &source);
    let reply = handshake::build_cookie_reply(&r.noise_public(), &secret, nonce, &pi, &source);
    let mut retried = init.clone();
    handshake::set_mac2(&mut retried, INITIATION_MAC1, Some(&cookie_value));
    json!({
        "description": "Cookie reply (wire-spec §5.6) answering handshake.json's initiation, and the retried initiation carrying mac2.",
        "responder_cookie_secret": h(&secret),
        "source": initiator_addr().to_string(),
        "source_bytes": h(&source.cookie_bytes()),
        "cookie": h(&cookie_value),
        "cookie_reply_key": h(&cookie::cookie_reply_key(&r.noise_public())),
        "nonce": h(&nonce),
        "cookie_reply": h(&reply),
        "retried_initiation": h(&retried),
        "mac2": h(&retried[INITIATION_MAC1 + 16..]),
    })
}

fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    v[at] ^= 0x01;
    v
}

fn reject_vectors(tr: &Transcript) -> Value {
    let r = Identity::from_seed(RESPONDER_SEED);
    let attacker = Identity::from_seed([0x77; 32]);
    let init = tr.initiation.clone();
    let mut resealed = flip(init.clone(), 50); // inside the encrypted static key
    handshake::set_macs(&mut resealed, INITIATION_MAC1, &r.noise_public(), None);
    // Claims the initiator's ed25519 key, but the binding is signed by someone else.
    let forged_binding = {
        let victim = Identity::from_seed(INITIATOR_SEED);
        let p = handshake::InitPayload {
            public_key: victim.public_key(),
            binding: attacker.binding_signature(),
            timestamp: UNIX_START_NS,
        };
        let sk = x25519_dalek::StaticSecret::from(blake3::derive_key(identity::NOISE_KEY_CONTEXT, attacker.seed()));
        let (_, m1) = noise::write_message1(
            &suprnova_dht::crypto::REAL,
            &sk,
            &r.noise_public(),
            [0x33; 32],
            &p.to_bytes(),
            false,
        )
        .unwrap();
        let pi = packet::Initiation {
            sender_index: 9,
            ephemeral: m1.ephemeral,
            enc_static: m1.enc_static.try_into().unwrap(),
            enc_payload: m1.enc_payload.try_into().unwrap(),
            mac1: [0; 16],
            mac2: [0; 16],
        };
        let mut b = pi.to_bytes();
        handshake::set_macs(&mut b, INITIATION_MAC1, &r.noise_public(), None);
        b
    };
    let mut low_order = init.clone();
    low_order[8..40].copy_from_slice(&[0; 32]);
    handshake::set_macs(&mut low_order, INITIATION_MAC1, &r.noise_public(), None);
    let mut wrong_version = init.clone();
    wrong_version[1] = 2;
    let mut unknown_index = tr.ping.clone();
    unknown_index[4] ^= 0xff;
    let mut response_to_responder = tr.response.clone();
    handshake::set_macs(&mut response_to_responder, RESPONSE_MAC1, &r.noise_public(), None);
    let n = |d: &str, setup: &[&Vec<u8>], pkt: &[u8], drop: DropReason| json!({ "description": d, "setup": setup.iter().map(|s| h(s)).collect::<Vec<_>>(), "packet": h(pkt), "drop": drop.name() });
    let cases = vec![
        n("empty datagram", &[], &[], DropReason::Empty),
        n("1201 bytes", &[], &[0x04; 1201], DropReason::TooLarge),
        n("QUIC short header (bit 0x40 set)", &[], &[0x40, 1, 0, 0, 1, 2, 3], DropReason::QuicBit),
        n("unknown packet type 8", &[], &[0x08, 1, 0, 0], DropReason::UnknownType),
        n(
            "relayed frame (type 7) at a node with no data plane",
            &[],
            &[0x07, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            DropReason::RelayFrame,
        ),
        n("initiation with version 2", &[], &wrong_version, DropReason::WrongVersion),
        n(
            "reserved byte set",
            &[],
            &{
                let mut v = init.clone();
                v[2] = 1;
                v
            },
            DropReason::Reserved,
        ),
        n("truncated initiation (239 bytes)", &[], &init[..239], DropReason::BadLength),
        n("initiation with one bit of mac1 flipped", &[], &flip(init.clone(), INITIATION_MAC1), DropReason::BadMac1),
        n(
            "initiation for another responder (mac1 keyed by another key)",
            &[],
            &{
                let mut v = init.clone();
                handshake::set_macs(&mut v, INITIATION_MAC1, &attacker.noise_public(), None);
                v
            },
            DropReason::BadMac1,
        ),
        n(
            "initiation with a flipped ciphertext bit and a recomputed mac1",
            &[],
            &resealed,
            DropReason::HandshakeDecrypt,
        ),
        n("initiation with an all-zero (low-order) ephemeral", &[], &low_order, DropReason::LowOrderKey),
        n(
            "initiation whose static key is not bound to the claimed identity",
            &[],
            &forged_binding,
            DropReason::BadBinding,
        ),
        n("transport to an unknown receiver index", &[&init], &unknown_index, DropReason::UnknownIndex),
        n("transport with a flipped tag bit", &[&init], &flip(tr.ping.clone(), tr.ping.len() - 1), DropReason::Decrypt),
        n("transport replayed", &[&init, &tr.ping], &tr.ping, DropReason::Replay),
        n("response nobody asked for", &[], &response_to_responder, DropReason::UnknownIndex),
        n(
            "cookie reply nobody asked for",
            &[],
            &{
                let mut v = vec![3u8, 1, 0, 0];
                v.resize(80, 0);
                v
            },
            DropReason::UnknownIndex,
        ),
        n(
            "record reply nobody asked for",
            &[],
            &packet::record_reply([1; 8], &wire::encode(&sample_records()[0].1).unwrap()).unwrap(),
            DropReason::UnsolicitedRecord,
        ),
        n(
            "record request with non-zero padding",
            &[],
            &{
                let mut v = packet::record_request([1; 8]);
                v[287] = 1;
                v
            },
            DropReason::Reserved,
        ),
    ];
    json!({
        "description": "Packets a responder must drop (wire-spec §4.7, §5, §9), each with the drop reason. Receiver: the responder of handshake.json (fresh), after the `setup` packets from the initiator's address were accepted.",
        "receiver_identity_seed": h(&RESPONDER_SEED),
        "from": initiator_addr().to_string(),
        "cases": cases,
    })
}

/// One step of a behavioural sequence: a datagram at a time, and what must come back.
fn step(at_ms: u64, pkt: &[u8], reply: Option<&[u8]>, drop: Option<DropReason>) -> Value {
    json!({ "at_ms": at_ms, "packet": h(pkt), "reply": reply.map(h), "drop": drop.map(DropReason::name) })
}

fn behaviour_vectors(tr: &Transcript) -> Value {
    // Under load: the responder demands a cookie; the initiator's channel answers with mac2.
    let t0 = Instant::now();
    let mut r = responder(t0, 0);
    let mut i = Channel::new(Identity::from_seed(INITIATOR_SEED), cfg(INITIATOR_RNG, 1000), t0);
    i.send(t0, &responder_info(), &Message { id: 1, body: Body::Ping }.encode().unwrap()).unwrap();
    let init = drain(&mut i).remove(0);
    r.handle_datagram(t0, initiator_addr(), &init);
    let cookie_reply = drain(&mut r).remove(0);
    i.handle_datagram(t0, responder_addr(), &cookie_reply);
    let retried = drain(&mut i).remove(0);
    r.handle_datagram(t0, initiator_addr(), &retried);
    let response = drain(&mut r).remove(0);
    // The responder's draws in that sequence: two cookie secrets at start, the cookie nonce, then
    // the session index and ephemeral. Rebuild both replies explicitly from them.
    let mut rng = ChaCha20Rng::from_seed(RESPONDER_RNG);
    let (mut secret, mut prev, mut nonce, mut eph) = ([0u8; 32], [0u8; 32], [0u8; 24], [0u8; 32]);
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut prev);
    rng.fill_bytes(&mut nonce);
    let index = rng.next_u32();
    rng.fill_bytes(&mut eph);
    let Ok(Packet::Initiation(pi)) = packet::parse(&init) else { panic!() };
    let rid = Identity::from_seed(RESPONDER_SEED);
    assert_eq!(
        handshake::build_cookie_reply(&rid.noise_public(), &secret, nonce, &pi, &WireAddr::from(initiator_addr())),
        cookie_reply
    );
    let priv_r = Identity::from_seed(RESPONDER_SEED);
    let Ok(Packet::Initiation(pr)) = packet::parse(&retried) else { panic!() };
    let (rst, _) = handshake::consume_initiation(&priv_r, &pr, false).unwrap();
    assert_eq!(handshake::build_response(rst, eph, index, pr.sender_index).unwrap().0, response);
    json!({
        "description": "Behavioural sequences (wire-spec §5.5–§5.8): datagrams from the initiator's address, in order, to the responder of handshake.json configured as given. `reply` is the exact datagram the responder sends back (null: none); `drop` the reason counted. Unless `receiver_values` says otherwise, the responder's session index and ephemeral are those of handshake.json.",
        "receiver_identity_seed": h(&RESPONDER_SEED),
        "receiver_rng_seed": h(&RESPONDER_RNG),
        "receiver_unix_time_ns_at_start": UNIX_START_NS,
        "from": initiator_addr().to_string(),
        "sequences": [
            {
                "name": "retransmitted initiation gets a byte-identical answer",
                "cookie_threshold_per_s": 1000,
                "steps": [
                    step(0, &tr.initiation, Some(&tr.response), None),
                    step(1000, &tr.initiation, Some(&tr.response), None),
                ],
            },
            {
                "name": "initiation replayed after the response cache expired is refused",
                "cookie_threshold_per_s": 1000,
                "steps": [
                    step(0, &tr.initiation, Some(&tr.response), None),
                    step(11000, &tr.initiation, None, Some(DropReason::StaleTimestamp)),
                ],
            },
            {
                "name": "transport packet accepted once, then refused as a replay",
                "cookie_threshold_per_s": 1000,
                "steps": [
                    step(0, &tr.initiation, Some(&tr.response), None),
                    step(1, &tr.ping, None, None),
                    step(2, &tr.ping, None, Some(DropReason::Replay)),
                ],
            },
            {
                "name": "under load: cookie reply, then the retried initiation with mac2 succeeds",
                "cookie_threshold_per_s": 0,
                "receiver_values": {
                    "cookie_secret": h(&secret),
                    "cookie_nonce": h(&nonce),
                    "session_index": index,
                    "ephemeral_secret": h(&eph),
                },
                "steps": [
                    step(0, &init, Some(&cookie_reply), Some(DropReason::CookieRequired)),
                    step(0, &retried, Some(&response), None),
                ],
            },
        ],
    })
}

fn all_vectors() -> BTreeMap<&'static str, Value> {
    let tr = transcript();
    let hs = handshake_vectors(&tr);
    let mut m = BTreeMap::new();
    m.insert("identity.json", identity_vectors());
    m.insert("node_record.json", record_vectors());
    m.insert("messages.json", message_vectors());
    m.insert("transport.json", transport_vectors(&tr, &hs));
    m.insert("cookie.json", cookie_vectors(&hs));
    m.insert("reject.json", reject_vectors(&tr));
    m.insert("behaviour.json", behaviour_vectors(&tr));
    m.insert("handshake.json", hs);
    m
}

fn load(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn encoder_reproduces_every_vector_file() {
    let update = std::env::var_os("SUPRNOVA_UPDATE_VECTORS").is_some();
    for (name, v) in all_vectors() {
        let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
        let path = dir().join(name);
        if update {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == text,
            "{name} differs from what the code produces; if the wire changed on purpose, run with SUPRNOVA_UPDATE_VECTORS=1 and update wire-spec.md"
        );
    }
}

#[test]
fn decoder_identities() {
    for v in load("identity.json")["identities"].as_array().unwrap() {
        let id = Identity::from_seed(unh(&v["seed"]).try_into().unwrap());
        assert_eq!(h(id.id().as_bytes()), v["node_id"]);
        assert_eq!(id.id().0, *blake3::hash(&unh(&v["ed25519_public_key"])).as_bytes());
        let bind: [u8; 64] = unh(&v["binding_signature"]).try_into().unwrap();
        assert!(identity::verify_strict(
            &unh(&v["ed25519_public_key"]).try_into().unwrap(),
            &unh(&v["binding_message"]),
            &bind
        ));
    }
}

#[test]
fn decoder_records() {
    let doc = load("node_record.json");
    for v in doc["valid"].as_array().unwrap() {
        let rec = NodeRecord::decode_verified(&unh(&v["encoding"])).unwrap();
        assert_eq!(record_json(&rec), v["fields"]);
        assert_eq!(h(&rec.signed_bytes().unwrap()), v["signed_bytes"]);
    }
    for v in doc["invalid"].as_array().unwrap() {
        let err = NodeRecord::decode_verified(&unh(&v["encoding"])).unwrap_err();
        let name = match err {
            identity::RecordError::Malformed => "malformed",
            identity::RecordError::WrongVersion => "wrong_version",
            identity::RecordError::IdMismatch => "id_mismatch",
            identity::RecordError::BadSignature => "bad_signature",
            identity::RecordError::BadAddr => "bad_addr",
            e => panic!("unexpected {e:?}"),
        };
        assert_eq!(name, v["error"], "{}", v["description"]);
    }
}

#[test]
fn decoder_messages() {
    let doc = load("messages.json");
    let expected: BTreeMap<_, _> = sample_messages().into_iter().collect();
    for v in doc["valid"].as_array().unwrap() {
        let m = Message::decode(&unh(&v["encoding"])).unwrap();
        assert_eq!(&m, &expected[v["name"].as_str().unwrap()]);
        assert_eq!(format!("{m:?}"), v["debug"]);
    }
    for v in doc["invalid"].as_array().unwrap() {
        let err = Message::decode(&unh(&v["encoding"])).unwrap_err();
        let name = match err {
            wire::DecodeError::Malformed => "malformed",
            wire::DecodeError::Trailing => "trailing",
            wire::DecodeError::NonCanonical => "non_canonical",
            wire::DecodeError::TooLarge => "too_large",
        };
        assert_eq!(name, v["error"], "{}", v["description"]);
    }
}

#[test]
fn decoder_handshake_and_transport() {
    let hs = load("handshake.json");
    let r_seed: [u8; 32] = unh(&hs["responder"]["identity_seed"]).try_into().unwrap();
    let i_seed: [u8; 32] = unh(&hs["initiator"]["identity_seed"]).try_into().unwrap();
    let r_static = x25519_dalek::StaticSecret::from(blake3::derive_key(identity::NOISE_KEY_CONTEXT, &r_seed));
    let r_ident = Identity::from_seed(r_seed);
    let init = unh(&hs["initiation"]["packet"]);
    assert!(handshake::mac1_ok(&init, INITIATION_MAC1, &x25519_dalek::PublicKey::from(&r_static).to_bytes()));
    let Ok(Packet::Initiation(pi)) = packet::parse(&init) else { panic!("initiation does not parse") };
    let (rst, payload) = handshake::consume_initiation(&r_ident, &pi, true).unwrap();
    assert_eq!(h(&payload.to_bytes()), hs["initiation"]["payload"]);
    assert_eq!(payload.timestamp, hs["initiator"]["timestamp_ns"].as_u64().unwrap());
    let (resp, rkeys, trace) = handshake::build_response(
        rst,
        unh(&hs["responder"]["ephemeral_secret"]).try_into().unwrap(),
        hs["responder"]["sender_index"].as_u64().unwrap() as u32,
        pi.sender_index,
    )
    .unwrap();
    assert_eq!(h(&resp), hs["response"]["packet"]);
    assert_eq!(serde_json::to_value(trace_json(&trace)).unwrap(), hs["trace"]);
    // The initiator side, from the file's ephemeral: same packet, keys mirror the responder's.
    let ident = Identity::from_seed(i_seed);
    let (ist, again) = handshake::build_initiation(
        &ident,
        &x25519_dalek::PublicKey::from(&r_static).to_bytes(),
        unh(&hs["initiator"]["ephemeral_secret"]).try_into().unwrap(),
        pi.sender_index,
        payload.timestamp,
        None,
        false,
    )
    .unwrap();
    assert_eq!(again, init);
    let Ok(Packet::Response(pr)) = packet::parse(&resp) else { panic!() };
    let (ikeys, _) = handshake::consume_response(ist, &ident, &pr).unwrap();
    assert_eq!(h(&ikeys.send), hs["session"]["initiator_send"]);
    assert_eq!(h(&rkeys.recv), hs["session"]["responder_recv"]);
    assert_eq!(ikeys.send, rkeys.recv);
    assert_eq!(ikeys.recv, rkeys.send);
    // Transport packets open under those keys, in order, and each only once.
    let tv = load("transport.json");
    let mut at_r = Session::new(pr.sender_index, pi.sender_index, &rkeys);
    let mut at_i = Session::new(pi.sender_index, pr.sender_index, &ikeys);
    let mut out = Vec::new();
    for p in tv["packets"].as_array().unwrap() {
        let bytes = unh(&p["packet"]);
        let Ok(Packet::Transport(t)) = packet::parse(&bytes) else { panic!("transport does not parse") };
        assert_eq!(t.counter, p["counter"].as_u64().unwrap());
        let s = if p["direction"] == "initiator_to_responder" { &mut at_r } else { &mut at_i };
        assert_eq!(t.receiver_index, s.local_index);
        s.open_into(t.counter, t.ciphertext, &mut out).unwrap();
        assert_eq!(h(&out), p["plaintext"]);
        assert!(s.open_into(t.counter, t.ciphertext, &mut out).is_err());
    }
}

#[test]
fn decoder_cookie() {
    let c = load("cookie.json");
    let hs = load("handshake.json");
    let r_pub: [u8; 32] = unh(&hs["responder"]["static_public"]).try_into().unwrap();
    let reply = unh(&c["cookie_reply"]);
    let Ok(Packet::CookieReply(cr)) = packet::parse(&reply) else { panic!() };
    let init = unh(&hs["initiation"]["packet"]);
    let mac1: [u8; 16] = init[INITIATION_MAC1..INITIATION_MAC1 + 16].try_into().unwrap();
    let got = cookie::open_cookie(&cookie::cookie_reply_key(&r_pub), &cr.nonce, &mac1, &cr.enc_cookie).unwrap();
    assert_eq!(h(&got), c["cookie"]);
    let secret: [u8; 32] = unh(&c["responder_cookie_secret"]).try_into().unwrap();
    assert_eq!(
        cookie::make_cookie(&secret, &WireAddr::from(c["source"].as_str().unwrap().parse::<SocketAddr>().unwrap())),
        got
    );
    let mut retried = init.clone();
    handshake::set_mac2(&mut retried, INITIATION_MAC1, Some(&got));
    assert_eq!(h(&retried), c["retried_initiation"]);
    // The retried initiation differs only in mac2; a cookie reply is smaller than its trigger.
    assert_eq!(retried[..INITIATION_MAC1 + 16], init[..INITIATION_MAC1 + 16]);
    assert!(reply.len() < init.len());
}

fn reason_named(name: &str) -> DropReason {
    *DropReason::ALL.iter().find(|r| r.name() == name).unwrap_or_else(|| panic!("unknown drop reason {name}"))
}

#[test]
fn decoder_rejects_exactly_as_listed() {
    let doc = load("reject.json");
    let from: SocketAddr = doc["from"].as_str().unwrap().parse().unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let t0 = Instant::now();
        let mut ch = responder(t0, 1000);
        for s in case["setup"].as_array().unwrap() {
            ch.handle_datagram(t0, from, &unh(s));
        }
        drain(&mut ch);
        assert_eq!(ch.stats().drops.total(), 0, "setup of {}", case["description"]);
        let reason = reason_named(case["drop"].as_str().unwrap());
        ch.handle_datagram(t0, from, &unh(&case["packet"]));
        assert_eq!(ch.stats().drops.get(reason), 1, "{}", case["description"]);
        assert_eq!(ch.stats().drops.total(), 1, "{}", case["description"]);
        assert!(drain(&mut ch).is_empty(), "no reply to {}", case["description"]);
    }
}

#[test]
fn decoder_behaviour_sequences() {
    let doc = load("behaviour.json");
    let from: SocketAddr = doc["from"].as_str().unwrap().parse().unwrap();
    let seed: [u8; 32] = unh(&doc["receiver_identity_seed"]).try_into().unwrap();
    let rng: [u8; 32] = unh(&doc["receiver_rng_seed"]).try_into().unwrap();
    for seq in doc["sequences"].as_array().unwrap() {
        let t0 = Instant::now();
        let cfg = ChannelConfig {
            rng_seed: rng,
            unix_time_ns_at_start: doc["receiver_unix_time_ns_at_start"].as_u64().unwrap(),
            cookie_threshold_per_s: seq["cookie_threshold_per_s"].as_u64().unwrap() as u32,
            ..ChannelConfig::default()
        };
        let mut ch = Channel::new(Identity::from_seed(seed), cfg, t0);
        for (k, st) in seq["steps"].as_array().unwrap().iter().enumerate() {
            let now = t0 + Duration::from_millis(st["at_ms"].as_u64().unwrap());
            ch.handle_timeout(now);
            let before = ch.stats().drops.clone();
            ch.handle_datagram(now, from, &unh(&st["packet"]));
            let replies = drain(&mut ch);
            match st["reply"].as_str() {
                Some(r) => assert_eq!(
                    replies.iter().map(|x| h(x)).collect::<Vec<_>>(),
                    vec![r.to_string()],
                    "{} step {k}",
                    seq["name"]
                ),
                None => assert!(replies.is_empty(), "{} step {k}: unexpected reply", seq["name"]),
            }
            let after = ch.stats().drops.clone();
            match st["drop"].as_str() {
                Some(d) => {
                    let r = reason_named(d);
                    assert_eq!(after.get(r), before.get(r) + 1, "{} step {k}", seq["name"]);
                    assert_eq!(after.total(), before.total() + 1);
                }
                None => {
                    assert_eq!(after.total(), before.total(), "{} step {k}: unexpected drop {:?}", seq["name"], after)
                }
            }
        }
    }
}
