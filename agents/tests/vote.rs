//! The ballots state machine, sans-IO: certificates at strictly more than 2/3 of the frozen voter
//! set, equivocation evidence, expiry, and every hostile vote refused and counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use suprnova_agents::vote::{BallotConfig, Ballots, Decision, Output};
use suprnova_agents::wire::{Certificate, Proposal, Vote, vote_bytes};
use suprnova_dht::identity::Identity;
use suprnova_mesh::simplex::Sig;

const NOW: u64 = 1_800_000_000_000;

fn ids(n: usize, tag: u8) -> Vec<Identity> {
    (0..n)
        .map(|i| {
            let mut s = [tag; 32];
            s[..4].copy_from_slice(&(i as u32).to_le_bytes());
            Identity::from_seed(s)
        })
        .collect()
}

fn proposal(voters: &[Identity], deadline: u64) -> Proposal {
    let proposer = Identity::from_seed([0xee; 32]);
    Proposal::sign(&proposer, 1, deadline, voters.iter().map(Identity::public_key).collect(), b"spawn a researcher")
        .unwrap()
}

fn drain(b: &mut Ballots) -> Vec<Output> {
    let mut v = Vec::new();
    while let Some(o) = b.next_output() {
        v.push(o);
    }
    v
}

#[test]
fn thirty_voters_nine_malicious_certify_and_each_equivocator_leaves_evidence() {
    let voters = ids(30, 1);
    let p = proposal(&voters, NOW + 30_000);
    let id = p.id();
    let mut b = Ballots::new(BallotConfig::default());
    assert_eq!(b.on_proposal(NOW, p.clone()), Ok(true));
    // 0..5 silent; 5..9 equivocate (yes and no); 9..30 honest (yes).
    let mut equivocators = Vec::new();
    for (i, v) in voters.iter().enumerate() {
        if i < 5 {
            continue;
        }
        b.on_vote(NOW, Vote::sign(v, &p, b"yes").unwrap());
        if i < 9 {
            b.on_vote(NOW, Vote::sign(v, &p, b"no").unwrap());
            equivocators.push(v.public_key());
        }
    }
    b.poll(NOW + 1);
    let out = drain(&mut b);
    let evidence: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Evidence { evidence, found: true } => Some(evidence.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 4, "one piece of evidence per equivocator");
    for e in &evidence {
        assert!(e.verify());
        assert!(equivocators.contains(&e.voter));
        assert_eq!(e.proposal, id);
    }
    let cert = out
        .iter()
        .find_map(|o| match o {
            Output::Decided { decision: Decision::Certified(c), formed: true, .. } => Some(c.clone()),
            _ => None,
        })
        .expect("21 honest of 30 is above 2/3 (quorum 21)");
    assert_eq!(p.quorum(), 21);
    assert_eq!(cert.choice.as_slice(), b"yes");
    assert_eq!(cert.signers.len(), 21, "equivocators' votes do not count");
    let silent: Vec<[u8; 32]> = voters[..5].iter().map(Identity::public_key).collect();
    for (i, _) in cert.signers.iter() {
        let k = p.voters[usize::from(*i)];
        assert!(!equivocators.contains(&k) && !silent.contains(&k), "only honest voters sign");
    }
    cert.verify().unwrap();
    // The certificate goes over the wire and verifies offline after decoding.
    let bytes = suprnova_agents::wire::encode(&*cert);
    let back: Certificate = suprnova_agents::wire::decode(&bytes).unwrap();
    back.verify().unwrap();
    let s = b.stats();
    assert_eq!((s.equivocations, s.certificates_formed, s.votes_counted), (4, 1, 25));
}

#[test]
fn equivocation_after_the_certificate_is_still_caught_until_the_deadline() {
    let voters = ids(4, 7);
    let p = proposal(&voters, NOW + 30_000);
    let mut b = Ballots::new(BallotConfig::default());
    b.on_proposal(NOW, p.clone()).unwrap();
    for v in &voters[..3] {
        b.on_vote(NOW, Vote::sign(v, &p, b"yes").unwrap());
    }
    b.poll(NOW + 1);
    assert!(matches!(
        drain(&mut b).as_slice(),
        [Output::Decided { decision: Decision::Certified(_), formed: true, .. }]
    ));
    assert_eq!(b.stats().open, 0);
    b.on_vote(NOW + 2, Vote::sign(&voters[1], &p, b"no").unwrap());
    b.poll(NOW + 3);
    let out = drain(&mut b);
    assert!(
        matches!(out.as_slice(), [Output::Evidence { found: true, evidence }] if evidence.voter == voters[1].public_key())
    );
    // After the deadline the ballot is gone; later votes are late.
    b.poll(NOW + 30_001);
    b.on_vote(NOW + 30_002, Vote::sign(&voters[3], &p, b"yes").unwrap());
    assert_eq!(b.stats().drops.late, 1);
    assert!(b.proposal(&p.id()).is_none());
}

#[test]
fn one_vote_short_of_the_quorum_expires_at_the_deadline() {
    let voters = ids(30, 2);
    let p = proposal(&voters, NOW + 30_000);
    let mut b = Ballots::new(BallotConfig::default());
    b.on_proposal(NOW, p.clone()).unwrap();
    for v in voters.iter().take(20) {
        b.on_vote(NOW, Vote::sign(v, &p, b"yes").unwrap());
    }
    b.poll(NOW + 100);
    assert!(drain(&mut b).is_empty(), "20 of 30 is not more than 2/3");
    assert_eq!(b.tally(&p.id()), vec![(b"yes".to_vec(), 20)]);
    assert_eq!(b.next_deadline(), Some(NOW + 30_001));
    b.poll(NOW + 30_001);
    assert_eq!(drain(&mut b), vec![Output::Decided { id: p.id(), decision: Decision::Expired, formed: false }]);
    // A vote after the deadline is late.
    b.on_vote(NOW + 30_002, Vote::sign(&voters[25], &p, b"yes").unwrap());
    assert_eq!(b.stats().drops.late, 1);
    assert_eq!(b.stats().expired, 1);
}

#[test]
fn hostile_votes_are_refused_and_counted() {
    let voters = ids(7, 3);
    let outsiders = ids(3, 4);
    let p = proposal(&voters, NOW + 30_000);
    let id = p.id();
    let mut b = Ballots::new(BallotConfig::default());
    b.on_proposal(NOW, p.clone()).unwrap();

    // A key outside the voter set cannot produce a vote at all...
    assert!(Vote::sign(&outsiders[0], &p, b"yes").is_none());
    // ...and claiming a voter's index with its own key fails the signature check.
    let sig = Sig(outsiders[0].sign(&vote_bytes(&id, b"yes")));
    b.on_vote(NOW, Vote { proposal: id, voter: 2, choice: b"yes".as_slice().try_into().unwrap(), sig });
    // An index past the voter list.
    b.on_vote(NOW, Vote { proposal: id, voter: 7, choice: b"yes".as_slice().try_into().unwrap(), sig });
    // A replay of a counted vote.
    let v0 = Vote::sign(&voters[0], &p, b"yes").unwrap();
    b.on_vote(NOW, v0.clone());
    b.poll(NOW + 1);
    b.on_vote(NOW, v0.clone());
    // A vote for a proposal nobody has seen is held, up to a bound.
    let mut small = Ballots::new(BallotConfig { max_early: 1, ..BallotConfig::default() });
    small.on_vote(NOW, v0.clone());
    small.on_vote(NOW, v0.clone());
    b.poll(NOW + 2);
    let s = b.stats();
    assert_eq!(s.drops.bad_signature, 1);
    assert_eq!(s.drops.not_voter, 1);
    assert_eq!(s.drops.duplicate, 1);
    assert_eq!(s.votes_counted, 1);
    assert_eq!(small.stats().drops.unknown_proposal, 1);
    // The held early vote counts once its proposal arrives.
    small.on_proposal(NOW, p.clone()).unwrap();
    small.poll(NOW + 1);
    assert_eq!(small.stats().votes_counted, 1);

    // A tampered proposal (voter list changed after signing) is refused.
    let mut forged = p.clone();
    forged.voters = outsiders.iter().map(Identity::public_key).collect::<Vec<_>>().try_into().unwrap();
    let mut sorted: Vec<[u8; 32]> = forged.voters.to_vec();
    sorted.sort();
    forged.voters = sorted.try_into().unwrap();
    assert!(b.on_proposal(NOW, forged).is_err());
    assert_eq!(b.stats().drops.bad_signature, 2);
    // A proposal whose deadline is past is refused.
    let old = proposal(&voters, NOW - 1);
    assert!(b.on_proposal(NOW, old).is_err());
    assert_eq!(b.stats().drops.bad_proposal, 1);
}

#[test]
fn a_certificate_from_elsewhere_decides_and_a_forged_one_is_refused() {
    let voters = ids(4, 5);
    let p = proposal(&voters, NOW + 30_000);
    let mut a = Ballots::new(BallotConfig::default());
    a.on_proposal(NOW, p.clone()).unwrap();
    for v in &voters[..3] {
        a.on_vote(NOW, Vote::sign(v, &p, b"go").unwrap());
    }
    a.poll(NOW + 1);
    let cert = match drain(&mut a).pop() {
        Some(Output::Decided { decision: Decision::Certified(c), .. }) => *c,
        other => panic!("expected a certificate, got {other:?}"),
    };
    assert_eq!(p.quorum(), 3);
    // Tampering: drop one signer (below quorum), or change the choice.
    let mut short = cert.clone();
    short.signers = short.signers.iter().take(2).cloned().collect::<Vec<_>>().try_into().unwrap();
    assert!(short.verify().is_err());
    let mut other = cert.clone();
    other.choice = b"stop".as_slice().try_into().unwrap();
    assert!(other.verify().is_err());
    let mut b = Ballots::new(BallotConfig::default());
    b.on_certificate(short);
    b.on_certificate(other);
    assert_eq!(b.stats().drops.bad_certificate, 2);
    b.on_certificate(cert.clone());
    assert!(matches!(b.decision(&p.id()), Some(Decision::Certified(c)) if **c == cert));
    assert_eq!(b.stats().certificates_received, 1);
}

#[test]
fn open_proposals_are_bounded() {
    let voters = ids(3, 6);
    let proposer = Identity::from_seed([0xef; 32]);
    let mut b = Ballots::new(BallotConfig { max_open: 2, ..BallotConfig::default() });
    for n in 0..3 {
        let p =
            Proposal::sign(&proposer, n, NOW + 1000, voters.iter().map(Identity::public_key).collect(), b"x").unwrap();
        let r = b.on_proposal(NOW, p);
        assert_eq!(r.is_ok(), n < 2);
    }
    assert_eq!(b.stats().drops.too_many_open, 1);
    assert_eq!(b.stats().open, 2);
}
