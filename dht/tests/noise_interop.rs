//! Interoperability with an independent Noise implementation (`snow`): given the keys and
//! ephemerals of `test-vectors/handshake.json`, snow must produce exactly our handshake bytes and
//! transport ciphertexts, in both roles. This is what lets other implementers use an
//! off-the-shelf Noise library (wire-spec §5.1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::Value;
use suprnova_dht::handshake::noise::{PROLOGUE, PROTOCOL_NAME};
use suprnova_dht::identity::NOISE_KEY_CONTEXT;

fn load(name: &str) -> Value {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}
fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn snow_reproduces_our_handshake_and_transport_bytes() {
    let hs = load("handshake.json");
    let params: snow::params::NoiseParams = std::str::from_utf8(PROTOCOL_NAME).unwrap().parse().unwrap();
    let i_static = blake3::derive_key(NOISE_KEY_CONTEXT, &unh(&hs["initiator"]["identity_seed"]));
    let r_static = blake3::derive_key(NOISE_KEY_CONTEXT, &unh(&hs["responder"]["identity_seed"]));
    let r_pub = unh(&hs["responder"]["static_public"]);
    let i_eph = unh(&hs["initiator"]["ephemeral_secret"]);
    let r_eph = unh(&hs["responder"]["ephemeral_secret"]);

    let mut ini = snow::Builder::new(params.clone())
        .local_private_key(&i_static)
        .unwrap()
        .remote_public_key(&r_pub)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&i_eph)
        .build_initiator()
        .unwrap();
    let mut res = snow::Builder::new(params)
        .local_private_key(&r_static)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&r_eph)
        .build_responder()
        .unwrap();

    // Message 1: our packet is header(4) ‖ index(4) ‖ [Noise message 1] ‖ mac1 ‖ mac2.
    let ours1 = unh(&hs["initiation"]["packet"]);
    let payload = unh(&hs["initiation"]["payload"]);
    let mut m1 = vec![0u8; 512];
    let n1 = ini.write_message(&payload, &mut m1).unwrap();
    assert_eq!(&m1[..n1], &ours1[8..208], "snow's message 1 equals ours");
    let mut got = vec![0u8; 512];
    let p1 = res.read_message(&ours1[8..208], &mut got).unwrap();
    assert_eq!(&got[..p1], &payload[..]);

    // Message 2: header(4) ‖ sender(4) ‖ receiver(4) ‖ [Noise message 2] ‖ mac1 ‖ mac2.
    let ours2 = unh(&hs["response"]["packet"]);
    let mut m2 = vec![0u8; 512];
    let n2 = res.write_message(&[], &mut m2).unwrap();
    assert_eq!(&m2[..n2], &ours2[12..60], "snow's message 2 equals ours");
    let p2 = ini.read_message(&ours2[12..60], &mut got).unwrap();
    assert_eq!(p2, 0);

    // Transport: snow's stateless mode uses the counter as nonce, like ours; AD is empty.
    let ini = ini.into_stateless_transport_mode().unwrap();
    let res = res.into_stateless_transport_mode().unwrap();
    for p in load("transport.json")["packets"].as_array().unwrap() {
        let pkt = unh(&p["packet"]);
        let pt = unh(&p["plaintext"]);
        let counter = p["counter"].as_u64().unwrap();
        let sender = if p["direction"] == "initiator_to_responder" { &ini } else { &res };
        let receiver = if p["direction"] == "initiator_to_responder" { &res } else { &ini };
        let mut ct = vec![0u8; pt.len() + 16];
        let n = sender.write_message(counter, &pt, &mut ct).unwrap();
        assert_eq!(&ct[..n], &pkt[16..], "counter {counter}");
        let mut out = vec![0u8; pkt.len()];
        let m = receiver.read_message(counter, &pkt[16..], &mut out).unwrap();
        assert_eq!(&out[..m], &pt[..]);
    }
}
