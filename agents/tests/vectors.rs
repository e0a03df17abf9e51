#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! `test-vectors/agents.json`: the agents' keys, signed bytes and encodings (wire-spec §14), from
//! fixed keys. The encoder must reproduce the file byte for byte
//! (`SUPRNOVA_UPDATE_VECTORS=1 cargo test -p suprnova-agents --test vectors` rewrites it), and
//! the decoder must read every encoding back and verify every signature and certificate.

use std::path::PathBuf;

use serde_json::{Value, json};
use suprnova_agents::wire::{
    self, Ack, Announcement, Certificate, DomainEntry, Envelope, EnvelopeKind, Evidence, Index, IndexRef, Item, Offer,
    OfferReply, Proposal, Reply, Resources, SignedAnnouncement, System, Vote, VoteWire, bounded, capability_key,
    domain_key, index_salt, kind_key, vote_bytes,
};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::WireAddr;

fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/agents.json")
}

fn key(i: u8) -> Identity {
    Identity::from_seed([0x60 + i; 32])
}

fn announcement() -> Announcement {
    Announcement {
        node: [0x11; 32],
        addrs: vec![WireAddr::V4([192, 0, 2, 7], 4433)].try_into().unwrap(),
        kind: bounded("researcher").unwrap(),
        capabilities: vec![bounded("planning").unwrap(), bounded("vision").unwrap()].try_into().unwrap(),
        resources: Resources { cpu_milli: 2000, memory_mb: 4096, storage_mb: 10_240 },
        position: Some([1.5, -2.0, 0.0]),
        time_ms: 1_800_000_000_000,
    }
}

fn proposal() -> Proposal {
    let voters: Vec<[u8; 32]> = (1..=4).map(|i| key(i).public_key()).collect();
    Proposal::sign(&key(0), 7, 1_800_000_030_000, voters, b"spawn-agent researcher").unwrap()
}

fn index() -> Index {
    Index {
        agent: key(0).public_key(),
        domain: bounded("chess").unwrap(),
        version: 3,
        items: vec![
            Item { name: bounded("memory").unwrap(), blob: [0x21; 32], size: 4600 },
            Item { name: bounded("weights").unwrap(), blob: [0x22; 32], size: 10 << 20 },
        ]
        .try_into()
        .unwrap(),
    }
}

/// (name, fuzz type byte of `agents::fuzzing::agents_decode`, encoding).
fn encodings() -> Vec<(&'static str, u8, Vec<u8>)> {
    let a = announcement();
    let p = proposal();
    let vote = |i: u8, choice: &[u8]| Vote::sign(&key(i), &p, choice).unwrap();
    let mut votes: Vec<Vote> = (1..=3).map(|i| vote(i, b"yes")).collect();
    votes.sort_by_key(|v| v.voter);
    let cert = Certificate {
        proposal: p.clone(),
        choice: b"yes".as_slice().try_into().unwrap(),
        signers: votes.iter().map(|v| (v.voter, v.sig)).collect::<Vec<_>>().try_into().unwrap(),
    };
    let (y, n) = (vote(4, b"yes"), vote(4, b"no"));
    let evidence = Evidence {
        proposal: p.id(),
        voter: key(4).public_key(),
        a: (y.choice.clone(), y.sig),
        b: (n.choice.clone(), n.sig),
    };
    let env =
        Envelope::sign(&key(1), EnvelopeKind::Request, key(2).public_key(), 42, 1_800_000_000_123, b"ping").unwrap();
    let answer = Reply::answer(&key(2), &env.id(), b"pong").unwrap();
    let iref = IndexRef { blob: [0x23; 32], size: 130, items: 2, total: (10 << 20) + 4600 };
    let offer = Offer { domain: bounded("chess").unwrap(), index: iref, version: 3 };
    vec![
        ("announcement", 0, wire::encode(&a)),
        ("signed_announcement", 1, wire::encode(&SignedAnnouncement::sign(&key(0), a))),
        ("envelope_request", 2, wire::encode(&env)),
        ("agent_frame", 3, wire::frame(&env)),
        ("reply_answer", 4, wire::encode(&answer)),
        ("reply_rejected", 4, wire::encode(&Reply::Rejected)),
        ("proposal", 5, wire::encode(&p)),
        ("vote", 6, wire::encode(&votes[0])),
        ("certificate", 7, wire::encode(&cert)),
        ("evidence", 8, wire::encode(&evidence)),
        ("votewire_vote", 9, wire::encode(&VoteWire::Vote(votes[1].clone()))),
        ("index", 10, wire::encode(&index())),
        ("index_ref", 10, wire::encode(&iref)),
        ("domain_entry", 10, wire::encode(&DomainEntry { node: [0x11; 32], index: iref })),
        ("system_offer", 11, wire::encode(&System::Offer(offer))),
        ("offer_reply_ack", 11, wire::encode(&OfferReply::Ack(Ack { fetched: 1, skipped: 1, bytes: 10 << 20 }))),
    ]
}

fn vectors() -> Value {
    let p = proposal();
    let env =
        Envelope::sign(&key(1), EnvelopeKind::Request, key(2).public_key(), 42, 1_800_000_000_123, b"ping").unwrap();
    json!({
        "description": "Suprnova agents (wire-spec §14). Keys: seed i = 32 bytes of 0x60+i; agent id = ed25519 public key.",
        "keys": (0..=4).map(|i| json!({ "seed": h(key(i).seed()), "public": h(&key(i).public_key()) })).collect::<Vec<_>>(),
        "derived": {
            "bucket_of_key_0": wire::bucket(&key(0).public_key()),
            "capability_key_vision_3": h(&capability_key("vision", 3)),
            "kind_key_researcher_0": h(&kind_key("researcher", 0)),
            "index_salt_chess": h(&index_salt("chess")),
            "domain_key_chess": h(&domain_key("chess")),
            "proposal_id": h(&p.id()),
            "proposal_quorum": p.quorum(),
            "vote_bytes_yes": h(&vote_bytes(&p.id(), b"yes")),
            "envelope_signed_bytes": h(&env.signed_bytes()),
            "envelope_id": h(&env.id()),
            "announce_signed_bytes": h(&SignedAnnouncement::signed_bytes(&key(0).public_key(), &announcement())),
        },
        "encodings": encodings().into_iter().map(|(name, t, e)| json!({ "name": name, "fuzz_type": t, "encoding": h(&e) })).collect::<Vec<_>>(),
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
        "agents.json differs from what the code produces; if the wire changed on purpose, regenerate it and update wire-spec.md"
    );
}

#[test]
fn decoder_reads_and_verifies_every_vector() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let get = |name: &str| -> Vec<u8> {
        let e = v["encodings"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap();
        unh(&e["encoding"])
    };
    let pk = |i: usize| -> [u8; 32] { unh(&v["keys"][i]["public"]).try_into().unwrap() };
    let a: Announcement = wire::decode(&get("announcement")).unwrap();
    a.check().unwrap();
    assert!(a.has("vision") && !a.has("audio"));
    let s: SignedAnnouncement = wire::decode(&get("signed_announcement")).unwrap();
    s.verify().unwrap();
    assert_eq!(s.agent, pk(0));
    let e: Envelope = wire::decode(&get("envelope_request")).unwrap();
    assert!(e.verify());
    assert_eq!((e.from, e.to), (pk(1), pk(2)));
    assert_eq!(hex::encode(e.id()), v["derived"]["envelope_id"].as_str().unwrap());
    assert_eq!(wire::unframe(&get("agent_frame")), Some(Ok(e.clone())));
    match wire::decode::<Reply>(&get("reply_answer")).unwrap() {
        Reply::Answer { body, sig } => {
            assert!(suprnova_dht::identity::verify_strict(&pk(2), &Reply::signed_bytes(&e.id(), &body), &sig.0))
        }
        other => panic!("{other:?}"),
    }
    let p: Proposal = wire::decode(&get("proposal")).unwrap();
    p.verify().unwrap();
    assert_eq!(hex::encode(p.id()), v["derived"]["proposal_id"].as_str().unwrap());
    assert_eq!(p.quorum(), 3);
    let vote: Vote = wire::decode(&get("vote")).unwrap();
    let voter = p.voters[usize::from(vote.voter)];
    assert!(suprnova_dht::identity::verify_strict(&voter, &vote_bytes(&p.id(), &vote.choice), &vote.sig.0));
    let c: Certificate = wire::decode(&get("certificate")).unwrap();
    c.verify().unwrap();
    let ev: Evidence = wire::decode(&get("evidence")).unwrap();
    assert!(ev.verify());
    assert!(matches!(wire::decode::<VoteWire>(&get("votewire_vote")).unwrap(), VoteWire::Vote(_)));
    let i: Index = wire::decode(&get("index")).unwrap();
    i.check().unwrap();
    assert_eq!(i.total_size(), (10 << 20) + 4600);
    let _: IndexRef = wire::decode(&get("index_ref")).unwrap();
    let _: DomainEntry = wire::decode(&get("domain_entry")).unwrap();
    assert!(matches!(wire::decode::<System>(&get("system_offer")).unwrap(), System::Offer(_)));
    assert!(matches!(wire::decode::<OfferReply>(&get("offer_reply_ack")).unwrap(), OfferReply::Ack(_)));
    // Tampering with any signed byte breaks verification.
    let mut bad = get("signed_announcement");
    let last = bad.len() - 70;
    bad[last] ^= 1;
    if let Ok(s) = wire::decode::<SignedAnnouncement>(&bad) {
        assert!(s.verify().is_err());
    }
    let mut c2 = c.clone();
    c2.signers = c2.signers.iter().take(2).cloned().collect::<Vec<_>>().try_into().unwrap();
    assert!(c2.verify().is_err());
}
