#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
//! `test-vectors/mesh.json`: the Simplex agreement's signed bytes and message encodings
//! (wire-spec §13), from fixed keys. The encoder must reproduce the file byte for byte
//! (`SUPRNOVA_UPDATE_VECTORS=1 cargo test -p suprnova-mesh --test vectors` rewrites it), and the
//! decoder must read every encoding back and verify every signature and certificate.

use std::path::PathBuf;

use serde_json::{Value, json};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::{BoundedString, BoundedVec};
use suprnova_dht::wire::{Key, SetEntry};
use suprnova_mesh::life::{Board, SetCell};
use suprnova_mesh::simplex::{
    Certificate, Digest, Evidence, Members, Message, Proposal, Sig, Signers, finalize_message, vote_message,
};
use suprnova_mesh::spatial::{Position, Presence, Space};
use suprnova_mesh::world::{Batch, BatchHeader, Genesis, Limits, SignedInput, round_seed, state_hash};

fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-vectors/mesh.json")
}

const MESH: Digest = [0x99; 32];

fn ids() -> Vec<Identity> {
    (1u8..=4).map(|i| Identity::from_seed([0x30 + i; 32])).collect()
}

fn members() -> Members {
    Members::new(ids().iter().map(Identity::public_key).collect()).unwrap()
}

fn proposal() -> Proposal {
    Proposal {
        height: 3,
        parent_height: 1,
        parent: [0xab; 32],
        payload: b"header: round, state and inputs hashes".as_slice().try_into().unwrap(),
        body: b"the inputs".as_slice().try_into().unwrap(),
    }
}

fn signed(i: usize, msg: &[u8]) -> (u16, Sig) {
    (i as u16, Sig(ids()[i].sign(msg)))
}

fn messages() -> Vec<(&'static str, Message)> {
    let p = proposal();
    let d = p.digest(&MESH);
    let vote = vote_message(&MESH, 3, &Some(d));
    let bottom = vote_message(&MESH, 2, &None);
    let fin = finalize_message(&MESH, 3, &d);
    let leader = members().leader(&MESH, 3) as usize;
    let votes = |msg: &[u8]| Signers::try_from((0..3).map(|i| signed(i, msg)).collect::<Vec<_>>()).unwrap();
    vec![
        ("propose", Message::Propose { proposal: p.clone(), sig: signed(leader, &vote).1 }),
        ("vote_block", Message::Vote { height: 3, choice: Some(d), signer: 1, sig: signed(1, &vote).1 }),
        ("vote_bottom", Message::Vote { height: 2, choice: None, signer: 2, sig: signed(2, &bottom).1 }),
        ("finalize", Message::Finalize { height: 3, digest: d, signer: 0, sig: signed(0, &fin).1 }),
        ("notarization_block", Message::Notarization { height: 3, proposal: Some(p.clone()), votes: votes(&vote) }),
        ("notarization_bottom", Message::Notarization { height: 2, proposal: None, votes: votes(&bottom) }),
        ("finalization", Message::Finalization { proposal: p, votes: votes(&fin) }),
    ]
}

fn genesis() -> Genesis {
    Genesis {
        world: BoundedString::truncated("life"),
        version: 1,
        state_hash: state_hash(&Board::empty(4, 4)),
        members: BoundedVec::try_from(ids().iter().map(Identity::public_key).collect::<Vec<_>>()).unwrap(),
        round_interval_ms: 100,
        limits: Limits::default(),
        space: None,
    }
}

fn input() -> SignedInput {
    let author = Identity::from_seed([0x41; 32]);
    SignedInput::sign(&author, &genesis().mesh_id(), 1, 7, &SetCell { x: 1, y: 2, alive: true }).unwrap()
}

fn vectors() -> Value {
    let m = members();
    let g = genesis();
    let batch = Batch { inputs: BoundedVec::try_from(vec![input()]).unwrap() };
    let batch_bytes = postcard::to_allocvec(&batch).unwrap();
    let header = BatchHeader { round: 1, state_hash: [0x5a; 32], inputs_hash: *blake3::hash(&batch_bytes).as_bytes() };
    let p = proposal();
    let d = p.digest(&MESH);
    let fin = finalize_message(&MESH, 3, &d);
    let cert = Certificate {
        height: 3,
        digest: d,
        votes: Signers::try_from((0..3).map(|i| signed(i, &fin)).collect::<Vec<_>>()).unwrap(),
    };
    let other = [0xcd; 32];
    let evidence = Evidence {
        signer: 1,
        height: 3,
        finalize: false,
        a: (d, signed(1, &vote_message(&MESH, 3, &Some(d))).1),
        b: (other, signed(1, &vote_message(&MESH, 3, &Some(other))).1),
    };
    json!({
        "mesh_id": h(&MESH),
        "members": ids().iter().map(|i| json!({"seed": h(i.seed()), "public_key": h(&i.public_key())})).collect::<Vec<_>>(),
        "quorum": m.quorum(),
        "leaders": (1u64..=8).map(|x| m.leader(&MESH, x)).collect::<Vec<_>>(),
        "proposal": {
            "height": p.height,
            "parent_height": p.parent_height,
            "parent": h(&p.parent),
            "payload": h(p.payload.as_slice()),
            "body": h(p.body.as_slice()),
            "encoding": h(&postcard::to_allocvec(&p).unwrap()),
            "digest": h(&d),
        },
        "vote_message_block": h(&vote_message(&MESH, 3, &Some(d))),
        "vote_message_bottom": h(&vote_message(&MESH, 2, &None)),
        "finalize_message": h(&fin),
        "messages": messages().into_iter().map(|(name, msg)| json!({
            "name": name,
            "encoding": h(&postcard::to_allocvec(&msg).unwrap()),
        })).collect::<Vec<_>>(),
        "certificate": {"encoding": h(&postcard::to_allocvec(&cert).unwrap())},
        "evidence": {"encoding": h(&postcard::to_allocvec(&evidence).unwrap())},
        "genesis": {
            "encoding": h(&postcard::to_allocvec(&g).unwrap()),
            "mesh_id": h(&g.mesh_id()),
            "initial_state_encoding": h(&postcard::to_allocvec(&Board::empty(4, 4)).unwrap()),
            "round_seed_1": h(&round_seed(&g.mesh_id(), &g.state_hash, 1)),
        },
        "input": {
            "author_seed": h(&[0x41; 32]),
            "body": h(input().body.as_slice()),
            "signed_bytes": h(&SignedInput::signed_bytes(&g.mesh_id(), &input().author, 1, 7, input().body.as_slice())),
            "encoding": h(&postcard::to_allocvec(&input()).unwrap()),
            "id": h(&input().id()),
        },
        "batch": {"encoding": h(&batch_bytes), "header_encoding": h(&postcard::to_allocvec(&header).unwrap())},
        "spatial": spatial_vectors(),
    })
}

fn space() -> Space {
    Space::new(2, [0.0, 0.0, 0.0], [1000.0, 1000.0, 0.0], vec![2, 4, 6]).unwrap()
}

const AGENT_POS: Position = [612.25, 87.5, 0.0];

fn presence_here() -> Presence {
    Presence::Here {
        position: AGENT_POS,
        node: [0x4e; 32],
        info: suprnova_dht::wire::bounded::BoundedBytes::try_from(b"particle".as_slice()).unwrap(),
    }
}

/// The agent's signed entry in its level-6 cell (seq 1700000000000, 120 s).
fn presence_entry() -> (Key, SetEntry) {
    let c = space().cell(&AGENT_POS, 6).unwrap();
    let key = Key(space().cell_key(&MESH, c));
    let agent = Identity::from_seed([0x61; 32]);
    let e = SetEntry::sign(&agent, &key, 1_700_000_000_000, 120, &postcard::to_allocvec(&presence_here()).unwrap())
        .unwrap();
    (key, e)
}

fn spatial_vectors() -> Value {
    let s = space();
    let mut g = genesis();
    g.space = Some(s.clone());
    let cells: Vec<Value> = s
        .presence_cells(&AGENT_POS)
        .unwrap()
        .into_iter()
        .map(|c| json!({"level": c.level, "code": c.code, "key": h(&s.cell_key(&MESH, c))}))
        .collect();
    let (key, e) = presence_entry();
    json!({
        "space_encoding": h(&postcard::to_allocvec(&s).unwrap()),
        "genesis_with_space_encoding": h(&postcard::to_allocvec(&g).unwrap()),
        "genesis_with_space_mesh_id": h(&g.mesh_id()),
        "position": AGENT_POS.to_vec(),
        "cells": cells,
        "here_encoding": h(&postcard::to_allocvec(&presence_here()).unwrap()),
        "gone_encoding": h(&postcard::to_allocvec(&Presence::Gone).unwrap()),
        "agent_seed": h(&[0x61; 32]),
        "entry_set_key": h(&key.0),
        "entry_encoding": h(&suprnova_dht::wire::encode(&e).unwrap()),
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
        "mesh.json differs from what the code produces; if the wire changed on purpose, regenerate it and update wire-spec.md"
    );
}

#[test]
fn decoder_reads_and_verifies_every_vector() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap();
    let mesh: Digest = unh(&v["mesh_id"]).try_into().unwrap();
    let keys: Vec<[u8; 32]> =
        v["members"].as_array().unwrap().iter().map(|m| unh(&m["public_key"]).try_into().unwrap()).collect();
    for (m, id) in v["members"].as_array().unwrap().iter().zip(ids()) {
        assert_eq!(unh(&m["seed"]), id.seed().to_vec());
    }
    let members = Members::new(keys).unwrap();
    assert_eq!(v["quorum"].as_u64().unwrap() as usize, members.quorum());
    let p: Proposal = postcard::from_bytes(&unh(&v["proposal"]["encoding"])).unwrap();
    assert_eq!(p, proposal());
    assert_eq!(p.digest(&mesh).to_vec(), unh(&v["proposal"]["digest"]));
    for m in v["messages"].as_array().unwrap() {
        let msg: Message = postcard::from_bytes(&unh(&m["encoding"])).unwrap();
        let want = messages().into_iter().find(|(n, _)| *n == m["name"]).unwrap().1;
        assert_eq!(msg, want, "{}", m["name"]);
        match &msg {
            Message::Propose { proposal, sig } => {
                let leader = members.leader(&mesh, proposal.height);
                let key = members.key(leader).unwrap();
                let bytes = vote_message(&mesh, proposal.height, &Some(proposal.digest(&mesh)));
                assert!(suprnova_dht::identity::verify_strict(key, &bytes, &sig.0));
            }
            Message::Vote { height, choice, signer, sig } => {
                let key = members.key(*signer).unwrap();
                assert!(suprnova_dht::identity::verify_strict(key, &vote_message(&mesh, *height, choice), &sig.0));
            }
            Message::Finalize { height, digest, signer, sig } => {
                let key = members.key(*signer).unwrap();
                assert!(suprnova_dht::identity::verify_strict(key, &finalize_message(&mesh, *height, digest), &sig.0));
            }
            Message::Notarization { height, proposal, votes } => {
                let choice = proposal.as_ref().map(|p| p.digest(&mesh));
                members.check(&vote_message(&mesh, *height, &choice), votes).unwrap();
            }
            Message::Finalization { proposal, votes } => {
                members.check(&finalize_message(&mesh, proposal.height, &proposal.digest(&mesh)), votes).unwrap();
            }
        }
    }
    let cert: Certificate = postcard::from_bytes(&unh(&v["certificate"]["encoding"])).unwrap();
    members.verify_certificate(&mesh, &cert).unwrap();
    let mut forged = cert.clone();
    forged.digest[0] ^= 1;
    assert!(members.verify_certificate(&mesh, &forged).is_err(), "a certificate for another block is refused");
    let ev: Evidence = postcard::from_bytes(&unh(&v["evidence"]["encoding"])).unwrap();
    assert!(ev.verify(&mesh, &members));
    let g: Genesis = postcard::from_bytes(&unh(&v["genesis"]["encoding"])).unwrap();
    assert_eq!(g, genesis());
    assert_eq!(g.mesh_id().to_vec(), unh(&v["genesis"]["mesh_id"]));
    let board: Board = postcard::from_bytes(&unh(&v["genesis"]["initial_state_encoding"])).unwrap();
    assert_eq!(state_hash(&board), g.state_hash);
    let i: SignedInput = postcard::from_bytes(&unh(&v["input"]["encoding"])).unwrap();
    i.check(&g.mesh_id(), &g.limits).unwrap();
    assert_eq!(i.id().to_vec(), unh(&v["input"]["id"]));
    assert_eq!(postcard::from_bytes::<SetCell>(i.body.as_slice()).unwrap(), SetCell { x: 1, y: 2, alive: true });
    let b: Batch = postcard::from_bytes(&unh(&v["batch"]["encoding"])).unwrap();
    assert_eq!(b.inputs.first(), Some(&i));
    let hd: BatchHeader = postcard::from_bytes(&unh(&v["batch"]["header_encoding"])).unwrap();
    assert_eq!(hd.inputs_hash, *blake3::hash(&unh(&v["batch"]["encoding"])).as_bytes());

    // Spatial: the space, a genesis carrying it, an agent's cells and its signed presence entry.
    let sp = &v["spatial"];
    let s: Space = postcard::from_bytes(&unh(&sp["space_encoding"])).unwrap();
    assert_eq!(s, space());
    let g: Genesis = postcard::from_bytes(&unh(&sp["genesis_with_space_encoding"])).unwrap();
    assert_eq!(g.space.as_ref(), Some(&s));
    assert_eq!(g.mesh_id().to_vec(), unh(&sp["genesis_with_space_mesh_id"]));
    let pos: Vec<f64> = sp["position"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let pos: Position = [pos[0], pos[1], pos[2]];
    for c in sp["cells"].as_array().unwrap() {
        let level = c["level"].as_u64().unwrap() as u8;
        let cell = s.cell(&pos, level).unwrap();
        assert_eq!(cell.code, c["code"].as_u64().unwrap());
        assert_eq!(s.cell_key(&mesh, cell).to_vec(), unh(&c["key"]));
    }
    let here: Presence = postcard::from_bytes(&unh(&sp["here_encoding"])).unwrap();
    assert_eq!(here, presence_here());
    assert_eq!(postcard::from_bytes::<Presence>(&unh(&sp["gone_encoding"])).unwrap(), Presence::Gone);
    let key = Key(unh(&sp["entry_set_key"]).try_into().unwrap());
    let e: SetEntry = suprnova_dht::wire::decode(&unh(&sp["entry_encoding"])).unwrap();
    assert!(e.signature_ok(&key));
    assert_eq!(e.public_key, Identity::from_seed(unh(&sp["agent_seed"]).try_into().unwrap()).public_key());
    assert_eq!(postcard::from_bytes::<Presence>(e.value.as_slice()).unwrap(), here);
    assert_eq!(s.cell(&pos, 6).map(|c| s.cell_key(&mesh, c)).unwrap(), key.0);
}
