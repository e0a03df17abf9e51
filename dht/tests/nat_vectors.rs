//! Test vectors for reaching nodes behind NAT (`test-vectors/nat.json`, wire-spec §15), checked
//! in both directions like `vectors.rs`: every input is in the file as plain fields (numbers,
//! hex, `ip:port` strings), the encoder must reproduce the file byte for byte
//! (`SUPRNOVA_UPDATE_VECTORS=1 cargo test -p suprnova-dht --test nat_vectors` rewrites it), and
//! the decoder must turn the bytes back into the same fields or refuse them as listed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Value, json};
use suprnova_dht::identity::{Identity, NodeId, capability};
use suprnova_dht::lan::{self, LanError};
use suprnova_dht::store::{StoreError, validate};
use suprnova_dht::wire::packet::{self, Packet, PacketError};
use suprnova_dht::wire::{self, Body, Key, Message, ReachRecord, Record, RelayRef, WireAddr};

const NODE_SEED: [u8; 32] = [0x5a; 32];
const RELAY_SEEDS: [[u8; 32]; 2] = [[0x61; 32], [0x62; 32]];

fn h(b: &[u8]) -> String {
    hex::encode(b)
}
fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or_else(|| panic!("not a hex string: {v}"))).unwrap()
}
fn arr32(v: &Value) -> [u8; 32] {
    unh(v).try_into().unwrap()
}
fn addr(v: &Value) -> WireAddr {
    WireAddr::from(v.as_str().unwrap().parse::<SocketAddr>().unwrap())
}
fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/nat.json")
}

/// The relay control messages: (name, id, fields, message).
fn messages() -> Vec<(&'static str, Value, Message)> {
    let target = Identity::from_seed(NODE_SEED).id();
    vec![
        ("reserve", json!({ "ttl_s": 120 }), Message { id: 11, body: Body::Reserve { ttl_s: 120 } }),
        ("reserve_release", json!({ "ttl_s": 0 }), Message { id: 12, body: Body::Reserve { ttl_s: 0 } }),
        (
            "reserved",
            json!({ "ttl_s": 120, "max_circuits": 16, "circuit_bytes_per_s": 2_097_152 }),
            Message { id: 11, body: Body::Reserved { ttl_s: 120, max_circuits: 16, circuit_bytes_per_s: 2_097_152 } },
        ),
        ("connect", json!({ "target": h(&target.0) }), Message { id: 300, body: Body::Connect { target } }),
        (
            "connected",
            json!({ "circuit": "0x0123456789abcdef" }),
            Message { id: 300, body: Body::Connected { circuit: 0x0123_4567_89ab_cdef } },
        ),
    ]
}

fn message_from_fields(name: &str, id: u64, f: &Value) -> Message {
    let u = |k: &str| f[k].as_u64().unwrap();
    let body = match name {
        "reserve" | "reserve_release" => Body::Reserve { ttl_s: u("ttl_s") as u32 },
        "reserved" => Body::Reserved {
            ttl_s: u("ttl_s") as u32,
            max_circuits: u("max_circuits") as u16,
            circuit_bytes_per_s: u("circuit_bytes_per_s") as u32,
        },
        "connect" => Body::Connect { target: NodeId(arr32(&f["target"])) },
        "connected" => Body::Connected {
            circuit: u64::from_str_radix(f["circuit"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap(),
        },
        other => panic!("unknown message {other}"),
    };
    Message { id, body }
}

fn relays() -> Vec<(String, RelayRef)> {
    let addrs = ["198.18.0.2:4433", "198.18.3.2:4433"];
    RELAY_SEEDS
        .iter()
        .zip(addrs)
        .map(|(s, a)| {
            let r = Identity::from_seed(*s);
            let wa = WireAddr::from(a.parse::<SocketAddr>().unwrap());
            (a.to_string(), RelayRef { id: r.id(), noise_key: r.noise_public(), addr: wa })
        })
        .collect()
}

fn relay_json(r: &(String, RelayRef)) -> Value {
    json!({ "id": h(&r.1.id.0), "noise_key": h(&r.1.noise_key), "addr": r.0 })
}

fn reach_record() -> ReachRecord {
    let me = Identity::from_seed(NODE_SEED);
    let node = me.make_record(4, capability::PRIVATE, &[]).unwrap();
    ReachRecord::sign(&me, node, 9, relays().into_iter().map(|r| r.1).collect()).unwrap()
}

fn reach_vectors() -> Value {
    let me = Identity::from_seed(NODE_SEED);
    let r = reach_record();
    let valid = json!({
        "node_seed": h(&NODE_SEED),
        "node_record": { "seq": 4, "capabilities": capability::PRIVATE, "addrs": [], "encoding": h(&wire::encode(&r.node).unwrap()) },
        "seq": 9,
        "relays": relays().iter().map(relay_json).collect::<Vec<_>>(),
        "key": h(&Key::for_reach(&me.id()).0),
        "signed_bytes": h(&r.signed_bytes().unwrap()),
        "signature": h(&r.signature),
        "encoding": h(&wire::encode(&r).unwrap()),
        "store_record_encoding": h(&wire::encode(&Record::Reach(Box::new(r.clone()))).unwrap()),
    });
    let mut seq = r.clone();
    seq.seq = 10;
    let other = Identity::from_seed(RELAY_SEEDS[0]);
    let wrong_key = Key::for_reach(&other.id());
    let mut zero = r.clone();
    zero.relays =
        wire::bounded::BoundedVec::try_from(vec![RelayRef { addr: WireAddr::V4([0; 4], 4433), ..r.relays[0].clone() }])
            .unwrap();
    let invalid = json!([
        { "description": "seq changed after signing", "key": h(&r.key().0), "record_encoding": h(&wire::encode(&Record::Reach(Box::new(seq))).unwrap()), "error": "bad_signature" },
        { "description": "stored under another node's reach key", "key": h(&wrong_key.0), "record_encoding": h(&wire::encode(&Record::Reach(Box::new(r.clone()))).unwrap()), "error": "wrong_key" },
        { "description": "a relay address 0.0.0.0 (unusable)", "key": h(&r.key().0), "record_encoding": h(&wire::encode(&Record::Reach(Box::new(zero))).unwrap()), "error": "bad_signature" },
    ]);
    json!({ "valid": valid, "invalid": invalid })
}

fn relayed_vectors() -> Value {
    let quic_like: Vec<u8> = (0..1460u32).map(|i| 0x40 | (i % 61) as u8).collect();
    let valid = vec![
        json!({ "circuit": "0x0000000000000001", "inner": "", "encoding": h(&packet::relayed(1, &[]).unwrap()) }),
        json!({ "circuit": "0xfedcba9876543210", "inner": "0401000000", "encoding": h(&packet::relayed(0xfedc_ba98_7654_3210, &[4, 1, 0, 0, 0]).unwrap()) }),
        json!({ "circuit": "0x0000000000000007", "inner": h(&quic_like), "encoding": h(&packet::relayed(7, &quic_like).unwrap()) }),
    ];
    let mut too_long = packet::relayed(7, &quic_like).unwrap();
    too_long.push(0);
    let mut reserved = packet::relayed(1, &[]).unwrap();
    reserved[3] = 1;
    let invalid = vec![
        json!({ "description": "11 bytes: no room for the circuit id", "encoding": "070100000102030405060708"[..22].to_string(), "error": "bad_length" }),
        json!({ "description": "1,473 bytes", "encoding": h(&too_long), "error": "too_large" }),
        json!({ "description": "reserved byte set", "encoding": h(&reserved), "error": "reserved_nonzero" }),
        json!({ "description": "version 2", "encoding": "070200000100000000000000", "error": "wrong_version" }),
    ];
    json!({ "valid": valid, "invalid": invalid })
}

fn lan_vectors() -> Value {
    let me = Identity::from_seed(NODE_SEED);
    let rec = me.make_record(4, 0, &[WireAddr::V4([10, 99, 0, 3], 4433)]).unwrap();
    let enc = wire::encode(&rec).unwrap();
    let a = lan::encode_announce(&enc, 4433, true);
    let mut flags = a.clone();
    flags[4] = 2;
    let mut port = a.clone();
    port[5] = 0;
    port[6] = 0;
    let mut sig = a.clone();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    json!({
        "group": "239.255.83.78:4434",
        "valid": { "node_seed": h(&NODE_SEED), "flags": 1, "port": 4433, "record": h(&enc), "encoding": h(&a) },
        "invalid": [
            { "description": "unknown flag bit 1", "encoding": h(&flags), "error": "bad_header" },
            { "description": "port 0", "encoding": h(&port), "error": "bad_port" },
            { "description": "record signature flipped", "encoding": h(&sig), "error": "bad_record" },
            { "description": "header only", "encoding": h(&a[..7]), "error": "bad_length" },
        ],
    })
}

fn vectors() -> Value {
    json!({
        "description": "Reaching nodes behind NAT (wire-spec §15): relay control messages, relayed frames, reach records. Every input is listed as fields.",
        "messages": messages().iter().map(|(n, f, m)| json!({ "name": n, "id": m.id, "fields": f, "encoding": h(&m.encode().unwrap()) })).collect::<Vec<_>>(),
        "relayed": relayed_vectors(),
        "reach_record": reach_vectors(),
        "lan_announce": lan_vectors(),
    })
}

#[test]
fn encoder_reproduces_nat_json() {
    let text = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("SUPRNOVA_UPDATE_VECTORS").is_some() {
        std::fs::write(path(), &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(path()).unwrap();
    assert!(on_disk == text, "nat.json differs from what the code produces (SUPRNOVA_UPDATE_VECTORS=1 rewrites it)");
}

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap()
}

#[test]
fn decoder_messages_from_fields() {
    for v in load()["messages"].as_array().unwrap() {
        let m = Message::decode(&unh(&v["encoding"])).unwrap();
        assert_eq!(m, message_from_fields(v["name"].as_str().unwrap(), v["id"].as_u64().unwrap(), &v["fields"]));
    }
}

#[test]
fn decoder_relayed_frames() {
    let doc = load();
    for v in doc["relayed"]["valid"].as_array().unwrap() {
        let bytes = unh(&v["encoding"]);
        let Ok(Packet::Relayed(c, inner)) = packet::parse(&bytes) else { panic!("not a relayed frame") };
        assert_eq!(format!("0x{c:016x}"), v["circuit"]);
        assert_eq!(h(inner), v["inner"]);
    }
    for v in doc["relayed"]["invalid"].as_array().unwrap() {
        let err = packet::parse(&unh(&v["encoding"])).unwrap_err();
        let name = match err {
            PacketError::BadLength => "bad_length",
            PacketError::TooLarge => "too_large",
            PacketError::Reserved => "reserved_nonzero",
            PacketError::WrongVersion => "wrong_version",
            e => panic!("unexpected {e:?}"),
        };
        assert_eq!(name, v["error"], "{}", v["description"]);
    }
}

#[test]
fn decoder_reach_records() {
    let doc = load();
    let v = &doc["reach_record"]["valid"];
    let me = Identity::from_seed(arr32(&v["node_seed"]));
    let r: ReachRecord = wire::decode(&unh(&v["encoding"])).unwrap();
    assert_eq!(r.verify(), Ok(()));
    assert_eq!(r.node.id, me.id());
    assert_eq!(r.node.capabilities, v["node_record"]["capabilities"].as_u64().unwrap());
    assert_eq!(h(&wire::encode(&r.node).unwrap()), v["node_record"]["encoding"]);
    assert_eq!(r.seq, v["seq"].as_u64().unwrap());
    for (got, want) in r.relays.iter().zip(v["relays"].as_array().unwrap()) {
        assert_eq!(got.id, NodeId(arr32(&want["id"])));
        assert_eq!(got.noise_key, arr32(&want["noise_key"]));
        assert_eq!(got.addr, addr(&want["addr"]));
    }
    assert_eq!(h(&Key::for_reach(&me.id()).0), v["key"]);
    assert_eq!(h(&r.signed_bytes().unwrap()), v["signed_bytes"]);
    let rec: Record = wire::decode(&unh(&v["store_record_encoding"])).unwrap();
    assert_eq!(validate(&Key(arr32(&v["key"])), &rec), Ok(()));
    for bad in doc["reach_record"]["invalid"].as_array().unwrap() {
        let rec: Record = wire::decode(&unh(&bad["record_encoding"])).unwrap();
        let name = match validate(&Key(arr32(&bad["key"])), &rec) {
            Err(StoreError::WrongKey) => "wrong_key",
            Err(StoreError::BadSignature) => "bad_signature",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(name, bad["error"], "{}", bad["description"]);
    }
}

#[test]
fn decoder_lan_announcements() {
    let doc = load();
    let v = &doc["lan_announce"]["valid"];
    let a = lan::parse_announce(&unh(&v["encoding"])).unwrap();
    assert_eq!(u64::from(a.flags), v["flags"].as_u64().unwrap());
    assert_eq!(u64::from(a.port), v["port"].as_u64().unwrap());
    assert_eq!(h(&wire::encode(&a.record).unwrap()), v["record"]);
    assert_eq!(a.record.id, Identity::from_seed(arr32(&v["node_seed"])).id());
    for bad in doc["lan_announce"]["invalid"].as_array().unwrap() {
        let name = match lan::parse_announce(&unh(&bad["encoding"])) {
            Err(LanError::BadHeader) => "bad_header",
            Err(LanError::BadPort) => "bad_port",
            Err(LanError::BadRecord(_)) => "bad_record",
            Err(LanError::BadLength) => "bad_length",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(name, bad["error"], "{}", bad["description"]);
    }
}
