#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! `test-vectors/gossip.json`: topic ids, the signed broadcast envelope, gossip frames, contact
//! data, blob manifests and requests (wire-spec §12), from fixed keys. The encoder must reproduce
//! the file byte for byte (`SUPRNOVA_UPDATE_VECTORS=1 cargo test -p suprnova-gossip --test vectors`
//! rewrites it), and the decoder must read every encoding back to the listed fields.

use std::path::PathBuf;

use serde_json::{Value, json};
use suprnova_dht::{Identity, NodeId};
use suprnova_gossip::blob::{BlobHash, BlobRequest, Manifest};
use suprnova_gossip::proto::{Frame, decode_frame, encode_frame};
use suprnova_gossip::proto::{hyparview, plumtree};
use suprnova_gossip::wire::{Envelope, TopicId, decode_canonical};

fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/gossip.json")
}

const TOPIC_NAME: &str = "suprnova/test-topic";
const TIME_MS: u64 = 1_790_000_000_000;

fn origin() -> Identity {
    Identity::from_seed([0x11; 32])
}

fn contact() -> Vec<u8> {
    suprnova_gossip::wire::encode_contact(&["127.0.0.1:4433".parse().unwrap(), "[::1]:4433".parse().unwrap()])
}

fn frames() -> Vec<(&'static str, Frame)> {
    let topic = TopicId::from_name(TOPIC_NAME);
    let peer = Identity::from_seed([0x22; 32]).id();
    let env =
        Envelope::sign(&origin(), &topic, TIME_MS - 5_000, 0, TIME_MS, b"hello, topic".to_vec()).unwrap().encode();
    let id = *blake3::hash(&env).as_bytes();
    vec![
        ("keepalive", Frame::KeepAlive),
        ("join", Frame::Membership { topic, msg: hyparview::Message::Join(contact()) }),
        (
            "forward_join",
            Frame::Membership {
                topic,
                msg: hyparview::Message::ForwardJoin {
                    peer: hyparview::PeerInfo { id: peer, data: contact() },
                    ttl: 6,
                },
            },
        ),
        (
            "neighbor_high",
            Frame::Membership { topic, msg: hyparview::Message::Neighbor { high: true, data: contact() } },
        ),
        ("disconnect", Frame::Membership { topic, msg: hyparview::Message::Disconnect { alive: false } }),
        ("gossip", Frame::Broadcast { topic, msg: plumtree::Message::Gossip { id, round: 3, payload: env } }),
        ("ihave", Frame::Broadcast { topic, msg: plumtree::Message::IHave(vec![(id, 3), ([0xab; 32], 1)]) }),
        ("graft", Frame::Broadcast { topic, msg: plumtree::Message::Graft { id: Some(id), round: 3 } }),
        ("prune", Frame::Broadcast { topic, msg: plumtree::Message::Prune }),
    ]
}

fn blob() -> Vec<u8> {
    (0..600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

fn vectors() -> Value {
    let topic = TopicId::from_name(TOPIC_NAME);
    let env = Envelope::sign(&origin(), &topic, TIME_MS - 5_000, 0, TIME_MS, b"hello, topic".to_vec()).unwrap();
    let enc = env.encode();
    let frames: Vec<Value> = frames()
        .into_iter()
        .map(|(name, f)| json!({ "name": name, "frame": format!("{f:?}").chars().take(120).collect::<String>(), "encoding": h(&encode_frame(&f).unwrap()) }))
        .collect();
    let data = blob();
    let m = Manifest::of(&data, 262_144);
    let hash = m.hash();
    json!({
        "description": "wire-spec §12: topics, broadcast envelopes, gossip frames, contact data, blob manifests and requests",
        "topic": {
            "name": TOPIC_NAME,
            "topic_id": h(&topic.0),
            "members_key": h(&topic.members_key().0),
        },
        "envelope": {
            "origin_seed": h(&[0x11; 32]),
            "origin_public_key": h(&env.origin),
            "origin_node_id": h(env.origin_id().as_bytes()),
            "epoch": env.epoch,
            "seq": env.seq,
            "time_ms": env.time_ms,
            "payload": h(&env.payload),
            "signed_bytes": h(&env.signed_bytes(&topic).unwrap()),
            "signature": h(&env.signature),
            "encoding": h(&enc),
            "message_id": h(blake3::hash(&enc).as_bytes()),
            "ttl_ms": 300_000,
        },
        "contact": {
            "addrs": ["127.0.0.1:4433", "[::1]:4433"],
            "encoding": h(&contact()),
        },
        "frames": frames,
        "blob": {
            "content": "600000 bytes: byte i = (i * 2654435761 mod 2^32) >> 24",
            "content_blake3": h(blake3::hash(&data).as_bytes()),
            "chunk_size": m.chunk_size,
            "chunk_hashes": m.chunks.iter().map(|c| h(c)).collect::<Vec<_>>(),
            "manifest": h(&m.encode()),
            "blob_hash": h(&hash.0),
            "providers_key": h(&hash.providers_key().0),
            "request_manifest": h(&postcard::to_allocvec(&BlobRequest::Manifest(hash)).unwrap()),
            "request_chunk_2": h(&postcard::to_allocvec(&BlobRequest::Chunk(hash, 2)).unwrap()),
        },
    })
}

#[test]
fn encoder_reproduces_the_vector_file() {
    let text = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("SUPRNOVA_UPDATE_VECTORS").is_some() {
        std::fs::write(path(), &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(path()).unwrap();
    assert!(
        on_disk == text,
        "gossip.json differs from what the code produces; if the wire changed on purpose, regenerate it and update wire-spec.md"
    );
}

#[test]
fn decoder_reads_every_vector() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let topic = TopicId(unh(&v["topic"]["topic_id"]).try_into().unwrap());
    assert_eq!(topic, TopicId::from_name(v["topic"]["name"].as_str().unwrap()));
    // Envelope: decodes, verifies within its TTL, and carries the listed fields.
    let e = &v["envelope"];
    let enc = unh(&e["encoding"]);
    let time = e["time_ms"].as_u64().unwrap();
    let env = Envelope::decode_verified(&enc, &topic, time, e["ttl_ms"].as_u64().unwrap()).unwrap();
    assert_eq!(env.payload, unh(&e["payload"]));
    assert_eq!(env.seq, e["seq"].as_u64().unwrap());
    assert_eq!(env.epoch, e["epoch"].as_u64().unwrap());
    assert_eq!(env.origin_id(), NodeId(unh(&e["origin_node_id"]).try_into().unwrap()));
    assert!(suprnova_dht::identity::verify_strict(
        &env.origin,
        &unh(&e["signed_bytes"]),
        &unh(&e["signature"]).try_into().unwrap()
    ));
    // Every frame decodes and re-encodes to the same bytes.
    let expected = frames();
    for (f, (name, want)) in v["frames"].as_array().unwrap().iter().zip(expected) {
        assert_eq!(f["name"], name);
        let bytes = unh(&f["encoding"]);
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(decode_frame(&bytes[4..]), Some(want), "{name}");
    }
    // Blob: manifest verifies against its hash and the content's chunks.
    let b = &v["blob"];
    let hash = BlobHash(unh(&b["blob_hash"]).try_into().unwrap());
    let m = Manifest::decode_verified(&unh(&b["manifest"]), &hash).unwrap();
    assert_eq!(hash.providers_key().0.to_vec(), unh(&b["providers_key"]));
    assert_eq!(m, Manifest::of(&blob(), 262_144));
    assert_eq!(decode_canonical::<BlobRequest>(&unh(&b["request_chunk_2"])), Some(BlobRequest::Chunk(hash, 2)));
    assert_eq!(decode_canonical::<BlobRequest>(&unh(&b["request_manifest"])), Some(BlobRequest::Manifest(hash)));
}
