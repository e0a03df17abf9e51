//! Entry points for the fuzz targets in `fuzz/` (not part of the API). Each asserts invariants
//! beyond "no panic".
// Harness code: indexes are taken modulo the lengths of fixed tables.
#![allow(clippy::panic, clippy::indexing_slicing)]

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::SetEntry;

use crate::discovery::{Criteria, Sifter};
use crate::vote::{BallotConfig, Ballots, Decision, Output};
use crate::wire::{
    self, Announcement, Certificate, DomainEntry, Envelope, Evidence, Index, IndexRef, Offer, OfferReply, Proposal,
    Reply, SignedAnnouncement, System, Vote, VoteWire,
};

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    let v = wire::decode::<T>(data).ok()?;
    // `decode` is canonical: what it accepts re-encodes to the same bytes.
    assert_eq!(wire::encode(&v), data, "decode accepted a non-canonical encoding");
    Some(v)
}

/// Every agents wire type from arbitrary bytes (the first byte picks the type): canonical
/// round trip, and checks and verifications that never panic.
pub fn agents_decode(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 12 {
        0 => {
            if let Some(a) = roundtrip::<Announcement>(rest) {
                let _ = a.check();
            }
        }
        1 => {
            if let Some(s) = roundtrip::<SignedAnnouncement>(rest) {
                assert!(s.verify().is_err() || s.announcement.check().is_ok());
            }
        }
        2 => {
            if let Some(e) = roundtrip::<Envelope>(rest) {
                let _ = e.verify();
                let framed = wire::frame(&e);
                assert!(matches!(wire::unframe(&framed), Some(Ok(x)) if x == e));
            }
        }
        3 => {
            let _ = wire::unframe(rest);
        }
        4 => {
            let _ = roundtrip::<Reply>(rest);
        }
        5 => {
            if let Some(p) = roundtrip::<Proposal>(rest)
                && p.verify().is_ok()
            {
                assert!(!p.voters.is_empty() && p.quorum() * 3 > p.voters.len() * 2);
            }
        }
        6 => {
            let _ = roundtrip::<Vote>(rest);
        }
        7 => {
            if let Some(c) = roundtrip::<Certificate>(rest)
                && c.verify().is_ok()
            {
                assert!(c.signers.len() >= c.proposal.quorum());
            }
        }
        8 => {
            if let Some(e) = roundtrip::<Evidence>(rest)
                && e.verify()
            {
                assert_ne!(e.a.0, e.b.0);
            }
        }
        9 => {
            let _ = roundtrip::<VoteWire>(rest);
        }
        10 => {
            if let Some(i) = roundtrip::<Index>(rest) {
                let _ = i.check();
                let _ = i.total_size();
            }
            let _ = roundtrip::<IndexRef>(rest);
            let _ = roundtrip::<DomainEntry>(rest);
        }
        _ => {
            let _ = roundtrip::<System>(rest);
            let _ = roundtrip::<Offer>(rest);
            let _ = roundtrip::<OfferReply>(rest);
        }
    }
}

const NOW: u64 = 1_800_000_000_000;

/// Drains the ballots' outputs, checking each: decided at most once, certificates that verify
/// and, when formed here, hold a quorum of distinct voters; evidence that verifies.
fn check_ballot_outputs(b: &mut Ballots, decided: &mut Vec<[u8; 32]>, certs: &mut Vec<Certificate>) {
    while let Some(o) = b.next_output() {
        match o {
            Output::Decided { id, decision, formed } => {
                assert!(!decided.contains(&id), "decided twice");
                decided.push(id);
                if let Decision::Certified(c) = decision {
                    assert!(c.verify().is_ok(), "a certificate that does not verify");
                    assert_eq!(c.proposal.id(), id);
                    if formed {
                        let mut idx: Vec<u16> = c.signers.iter().map(|(i, _)| *i).collect();
                        idx.dedup();
                        assert!(idx.len() >= c.proposal.quorum());
                    }
                    certs.push(*c);
                }
            }
            Output::Evidence { evidence, .. } => assert!(evidence.verify(), "evidence that does not verify"),
        }
    }
}

/// The ballots state machine fed an arbitrary sequence of proposals, votes (good, forged,
/// equivocating, replayed), certificates, evidence and clock steps by 7 voters and an outsider.
/// Invariants: a proposal is decided at most once; every certificate it forms verifies and holds
/// a quorum of distinct voters of one choice; every piece of evidence verifies; the open and
/// early-vote bounds hold.
pub fn ballots_ops(data: &[u8]) {
    let ids: Vec<Identity> = (0u8..8).map(|i| Identity::from_seed([i.wrapping_add(1); 32])).collect();
    let voters: Vec<[u8; 32]> = ids.iter().take(7).map(Identity::public_key).collect();
    let cfg = BallotConfig { max_open: 4, max_early: 16, max_decided: 8, max_horizon_ms: 60_000 };
    let mut b = Ballots::new(cfg.clone());
    let mut now = NOW;
    let mut proposals: Vec<Proposal> = Vec::new();
    let mut certs: Vec<Certificate> = Vec::new();
    let mut decided: Vec<[u8; 32]> = Vec::new();
    let mut votes: Vec<Vote> = Vec::new();
    for op in data.chunks(3).take(256) {
        let (a, x, y) = match op {
            [a, x, y] => (*a, *x, *y),
            _ => return,
        };
        match a % 8 {
            0 => {
                let proposer = &ids[usize::from(x) % ids.len()];
                let n = 1 + usize::from(y) % 7;
                let deadline = now + 1 + u64::from(x) * 100;
                if let Ok(p) = Proposal::sign(proposer, u64::from(y), deadline, voters[..n].to_vec(), &[x]) {
                    let _ = b.on_proposal(now, p.clone());
                    proposals.push(p);
                }
            }
            1 | 2 => {
                let Some(p) = proposals.get(usize::from(x) % proposals.len().max(1)) else { continue };
                let signer = &ids[usize::from(y >> 4) % ids.len()];
                let choice = [b'a' + (y & 3)];
                match Vote::sign(signer, p, &choice) {
                    Some(v) => {
                        votes.push(v.clone());
                        b.on_vote(now, v);
                    }
                    None => {
                        // An outsider claims an index.
                        let sig = suprnova_mesh::simplex::Sig(signer.sign(&wire::vote_bytes(&p.id(), &choice)));
                        let v = Vote {
                            proposal: p.id(),
                            voter: u16::from(y & 7),
                            choice: choice.as_slice().try_into().unwrap_or_default(),
                            sig,
                        };
                        b.on_vote(now, v);
                    }
                }
            }
            3 => {
                if let Some(v) = votes.get(usize::from(x) % votes.len().max(1)) {
                    let mut v = v.clone();
                    if y & 1 == 1 {
                        v.sig.0[usize::from(y >> 1) % 64] ^= 1;
                    }
                    b.on_vote(now, v);
                }
            }
            4 => now += u64::from(x) * 10 + u64::from(y),
            5 => {
                if let Some(c) = certs.get(usize::from(x) % certs.len().max(1)) {
                    let mut c = c.clone();
                    if y & 1 == 1 {
                        c.choice = [b'z'].as_slice().try_into().unwrap_or_default();
                    }
                    b.on_certificate(c);
                }
            }
            6 => {
                // Evidence from two votes of one voter (valid only if the choices differ).
                let (Some(v1), Some(v2)) =
                    (votes.get(usize::from(x) % votes.len().max(1)), votes.get(usize::from(y) % votes.len().max(1)))
                else {
                    continue;
                };
                if let Some(p) = proposals.iter().find(|p| p.id() == v1.proposal)
                    && let Some(voter) = p.voters.get(usize::from(v1.voter))
                {
                    b.on_evidence(Evidence {
                        proposal: v1.proposal,
                        voter: *voter,
                        a: (v1.choice.clone(), v1.sig),
                        b: (v2.choice.clone(), v2.sig),
                    });
                }
            }
            _ => b.poll(now),
        }
        check_ballot_outputs(&mut b, &mut decided, &mut certs);
        let s = b.stats();
        assert!(s.open as usize <= cfg.max_open);
    }
}

/// Discovery sifting of arbitrary set entries (values from the fuzzer, writers from 16 fixed
/// keys, seqs and buckets chosen by it). Invariants: every agent found matches the criteria,
/// was read from its own bucket, and appears once.
pub fn discovery_sift(data: &[u8]) {
    let criteria = Criteria {
        capabilities: vec!["vision".into()],
        min: crate::wire::Resources { memory_mb: 16, ..Default::default() },
        near: Some(([0.0, 0.0, 0.0], 100.0)),
        ..Criteria::default()
    };
    let mut sifter = Sifter::new(&criteria, NOW, 120_000, 60_000);
    let mut added = Vec::new();
    for chunk in data.split(|b| *b == 0xff).take(64) {
        let Some((&head, value)) = chunk.split_first() else { continue };
        let Ok(value) = value.try_into() else { continue };
        // The sifter trusts the DHT for signatures (checked for the set's key before it sees
        // an entry); its job is the content, so writers are plain 32-byte keys here.
        let e = SetEntry {
            public_key: [head & 15; 32],
            seq: NOW - u64::from(head) * 1000,
            ttl_s: 120,
            value,
            signature: [0; 64],
        };
        added.push((e.public_key, head >> 4));
        sifter.add(head >> 4, &[e]);
    }
    let found = sifter.finish();
    let mut seen = Vec::new();
    for f in &found {
        assert!(criteria.matches(&f.announcement), "found an agent that does not match");
        let b = crate::wire::bucket(&f.agent);
        assert!(added.iter().any(|(w, x)| *w == f.agent && *x == b), "found through another bucket");
        assert!(!seen.contains(&f.agent), "an agent found twice");
        seen.push(f.agent);
    }
}

/// The envelope router fed arbitrary envelopes (4 senders, every kind, each transport, times
/// around now, system-tagged bodies, flipped signatures, repeated nonces), held, answered and
/// forgotten requests, and clock steps. Invariants: the replay memory and the pending table
/// stay within their bounds; an envelope just admitted is never admitted again at the same
/// time; a held request is taken at most once.
pub fn router_ops(data: &[u8]) {
    use crate::router::{Router, Transport};
    use crate::wire::{EnvelopeKind, SYSTEM_TAG};
    let ids: Vec<Identity> = (1u8..=4).map(|i| Identity::from_seed([i; 32])).collect();
    let (max_replay, max_pending) = (8, 4);
    let mut r: Router<u8> = Router::new(1_000, max_replay, max_pending);
    let mut now = NOW;
    let mut held: Vec<([u8; 32], u64)> = Vec::new();
    for op in data.chunks(4).take(512) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        match b(0) % 4 {
            0 | 1 => {
                let Some(id) = ids.get(usize::from(b(1)) % ids.len()) else { continue };
                let kind =
                    [EnvelopeKind::Message, EnvelopeKind::Request, EnvelopeKind::Broadcast][usize::from(b(2)) % 3];
                let transport =
                    [Transport::Message, Transport::Request, Transport::Broadcast][usize::from(b(2) / 3) % 3];
                let to = if b(2) & 0x80 == 0 { [0; 32] } else { [9; 32] };
                let time = (now + u64::from(b(3)) * 20).saturating_sub(2_500);
                let body: Vec<u8> = if b(0) % 4 == 1 { [SYSTEM_TAG, &[b(3)]].concat() } else { vec![b(3)] };
                let Ok(mut e) = Envelope::sign(id, kind, to, u64::from(b(1) >> 2), time, &body) else { continue };
                if b(3) % 7 == 0 {
                    e.sig.0[usize::from(b(1)) % 64] ^= 1;
                }
                if r.admit(now, &e, transport).is_ok() {
                    assert!(r.admit(now, &e, transport).is_err(), "admitted twice");
                }
            }
            2 => {
                let key = ([b(1) % 4; 32], u64::from(b(2) % 8));
                match b(3) % 3 {
                    0 => {
                        if r.hold(now, key.0, key.1, b(3)).is_ok() && !held.contains(&key) {
                            held.push(key);
                        }
                    }
                    1 => {
                        let was = held.iter().position(|k| *k == key).map(|i| held.swap_remove(i));
                        let got = r.take(&key.0, key.1);
                        assert!(got.is_none() || was.is_some(), "taken without being held");
                        assert!(r.take(&key.0, key.1).is_none(), "taken twice");
                    }
                    _ => {
                        r.forget_agent(&key.0);
                        held.retain(|k| k.0 != key.0);
                    }
                }
            }
            _ => now += u64::from(b(1)) * 50 + u64::from(b(2)) * 10_000,
        }
        assert!(r.remembered() <= max_replay);
        assert!(r.held() <= max_pending);
    }
}
