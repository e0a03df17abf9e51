//! `MeshCore` with the Life world on virtual time: members agree on every round's state, every
//! valid input is applied exactly once, bad inputs are refused with their reason, and a leader
//! that lies about the state it proposes is outvoted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;
use suprnova_dht::wire::bounded::{BoundedString, BoundedVec};
use suprnova_mesh::core::{Certified, MeshConfig, MeshCore, MeshError, MeshOut};
use suprnova_mesh::life::{Board, Life, SetCell};
use suprnova_mesh::simplex::{self, Message, Sig};
use suprnova_mesh::store::{RecordError, RoundRecord, StateRef, verify_record, verify_state};
use suprnova_mesh::world::{BatchHeader, Genesis, InputError, Limits, SignedInput, state_hash};

struct Net {
    ids: Vec<Identity>,
    cores: Vec<MeshCore<Life>>,
    now: Instant,
    wire: Vec<(Instant, usize, Message)>,
    /// Certified (round → state hash) per member.
    rounds: Vec<BTreeMap<u64, [u8; 32]>>,
    liar: Option<usize>,
    /// Member 0's newest certified round that carries its own certificate.
    last: Option<Certified<Board>>,
}

fn genesis(ids: &[Identity], board: &Board) -> Genesis {
    Genesis {
        world: BoundedString::truncated("life"),
        version: 1,
        state_hash: state_hash(board),
        members: BoundedVec::try_from(ids.iter().map(Identity::public_key).collect::<Vec<_>>()).unwrap(),
        round_interval_ms: 20,
        limits: Limits::default(),
        space: None,
    }
}

impl Net {
    fn new(n: usize) -> Net {
        let ids: Vec<Identity> = (0..n).map(|i| Identity::from_seed([0x50 + i as u8; 32])).collect();
        let board = Board::empty(8, 8);
        let g = genesis(&ids, &board);
        let now = Instant::now();
        let cores = ids
            .iter()
            .map(|id| {
                let me = Identity::from_seed(*id.seed());
                MeshCore::new(Life, g.clone(), board.clone(), Some(me), MeshConfig::default(), now).unwrap()
            })
            .collect();
        let mut net =
            Net { ids, cores, now, wire: Vec::new(), rounds: vec![BTreeMap::new(); n], liar: None, last: None };
        for i in 0..n {
            net.drain(i);
        }
        net
    }

    fn mesh(&self) -> [u8; 32] {
        self.cores[0].mesh_id()
    }

    /// A lying leader: its proposals claim a state hash it did not compute (re-signed, so the
    /// signature is fine and only re-execution catches it).
    fn lie(&self, i: usize, m: Message) -> Message {
        let Message::Propose { mut proposal, .. } = m else { return m };
        let mut header: BatchHeader = postcard::from_bytes(proposal.payload.as_slice()).unwrap();
        header.state_hash = [0xee; 32];
        proposal.payload = postcard::to_allocvec(&header).unwrap().as_slice().try_into().unwrap();
        let d = proposal.digest(&self.mesh());
        let sig = Sig(self.ids[i].sign(&simplex::vote_message(&self.mesh(), proposal.height, &Some(d))));
        Message::Propose { proposal, sig }
    }

    fn drain(&mut self, i: usize) {
        while let Some(o) = self.cores[i].poll() {
            match o {
                MeshOut::Send(m) => {
                    let m = if self.liar == Some(i) { self.lie(i, m) } else { m };
                    for to in 0..self.cores.len() {
                        if to != i {
                            let delay = 1 + ((i * 7 + to * 3 + self.wire.len()) % 5) as u64;
                            self.wire.push((self.now + Duration::from_millis(delay), to, m.clone()));
                        }
                    }
                }
                MeshOut::Certified(c) => {
                    assert_eq!(state_hash(&*c.state), c.state_hash);
                    assert!(self.rounds[i].insert(c.round, c.state_hash).is_none(), "round certified twice");
                    if i == 0 && c.certificate.is_some() {
                        self.last = Some(c);
                    }
                }
                MeshOut::Reserve { up_to } => self.cores[i].reserved(up_to),
                MeshOut::Evidence(_) | MeshOut::Gap { .. } | MeshOut::Fetch => {}
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..1_000_000 {
            let next_msg = self.wire.iter().map(|w| w.0).min();
            let next_timer = self.cores.iter().filter_map(|c| c.poll_timeout()).min();
            let Some(next) = [next_msg, next_timer].into_iter().flatten().min() else { break };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_msg == Some(next) {
                let k = self.wire.iter().position(|w| w.0 == next).unwrap();
                let (_, to, m) = self.wire.swap_remove(k);
                let now = self.now;
                self.cores[to].handle_message(now, m);
                self.drain(to);
            } else {
                for i in 0..self.cores.len() {
                    if self.cores[i].poll_timeout().is_some_and(|t| t <= self.now) {
                        let now = self.now;
                        self.cores[i].handle_timeout(now);
                        self.drain(i);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Gossip, simplified: every member hears of the input.
    fn submit_all(&mut self, input: &SignedInput) -> Vec<Result<[u8; 32], InputError>> {
        (0..self.cores.len()).map(|i| self.cores[i].submit(input.clone())).collect()
    }
}

#[test]
fn members_agree_on_every_round_and_apply_each_input_once() {
    let mut net = Net::new(4);
    let mesh = net.mesh();
    let author = Identity::from_seed([0x77; 32]);
    let mut submitted = 0;
    for k in 0..40u16 {
        let round = net.cores[0].final_round() + 1;
        let input =
            SignedInput::sign(&author, &mesh, round, u64::from(k), &SetCell { x: k % 8, y: k / 8 % 8, alive: true })
                .unwrap();
        assert!(net.submit_all(&input).iter().all(Result::is_ok));
        submitted += 1;
        // The same input again is a duplicate everywhere.
        assert!(net.submit_all(&input).iter().all(|r| *r == Err(InputError::Duplicate)));
        net.run_for(Duration::from_millis(50));
    }
    net.run_for(Duration::from_secs(1));
    let rounds = net.rounds[0].len();
    assert!(rounds >= 30, "{rounds} rounds certified");
    for i in 1..4 {
        let common: Vec<u64> = net.rounds[i].keys().filter(|r| net.rounds[0].contains_key(r)).copied().collect();
        assert!(common.len() >= rounds - 2);
        for r in common {
            assert_eq!(net.rounds[i][&r], net.rounds[0][&r], "member {i} differs at round {r}");
        }
    }
    for c in &net.cores {
        assert_eq!(c.stats().inputs_applied, submitted, "every input applied exactly once");
        assert_eq!(c.pool_len(), 0);
    }
}

#[test]
fn bad_inputs_are_refused_with_their_reason() {
    let mut net = Net::new(4);
    let mesh = net.mesh();
    let author = Identity::from_seed([0x78; 32]);
    let ok = SignedInput::sign(&author, &mesh, 1, 0, &SetCell { x: 1, y: 1, alive: true }).unwrap();
    let mut forged = ok.clone();
    forged.nonce = 99;
    assert_eq!(net.cores[0].submit(forged), Err(InputError::BadSignature));
    let other = SignedInput::sign(&author, &[1; 32], 1, 0, &SetCell { x: 1, y: 1, alive: true }).unwrap();
    assert_eq!(net.cores[0].submit(other), Err(InputError::WrongMesh));
    let garbage = SignedInput::sign(&author, &mesh, 1, 1, &"not a cell".to_string()).unwrap();
    assert_eq!(net.cores[0].submit(garbage), Err(InputError::Malformed));
    let far = SignedInput::sign(&author, &mesh, 1000, 2, &SetCell { x: 1, y: 1, alive: true }).unwrap();
    assert_eq!(net.cores[0].submit(far), Err(InputError::TooEarly(1000)));
    // Past rounds: run 30 rounds, then an input first valid in round 1 has expired.
    net.run_for(Duration::from_secs(2));
    assert!(net.cores[0].final_round() > 20);
    let old = SignedInput::sign(&author, &mesh, 1, 3, &SetCell { x: 1, y: 1, alive: true }).unwrap();
    assert!(matches!(net.cores[0].submit(old), Err(InputError::Expired { .. })));
    // One author cannot fill the pool.
    let limit = Limits::default().max_inputs_per_author as u64 * 4;
    let round = net.cores[0].final_round() + 1;
    let results: Vec<_> = (0..limit + 3)
        .map(|k| {
            net.cores[0].submit(
                SignedInput::sign(&author, &mesh, round, 100 + k, &SetCell { x: 0, y: 0, alive: true }).unwrap(),
            )
        })
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count() as u64, limit);
    assert_eq!(results.last(), Some(&Err(InputError::AuthorLimit)));
    let refused = &net.cores[0].stats().inputs_refused;
    for why in ["bad_signature", "wrong_mesh", "malformed", "too_early", "expired", "author_limit"] {
        assert!(refused.get(why).copied().unwrap_or(0) >= 1, "{why} counted");
    }
}

#[test]
fn a_leader_lying_about_the_state_is_outvoted() {
    let mut net = Net::new(4);
    net.liar = Some(2);
    net.run_for(Duration::from_secs(3));
    let honest = [0usize, 1, 3];
    let refused: u64 = honest
        .iter()
        .map(|i| net.cores[*i].stats().batches_refused.get("state_hash_mismatch").copied().unwrap_or(0))
        .sum();
    assert!(refused > 0, "the lie was caught by re-execution");
    assert!(net.rounds[0].len() >= 20, "the mesh goes on: {} rounds", net.rounds[0].len());
    for r in net.rounds[0].keys() {
        assert_ne!(net.rounds[0][r], [0xee; 32]);
        for i in honest {
            if let Some(h) = net.rounds[i].get(r) {
                assert_eq!(*h, net.rounds[0][r]);
            }
        }
    }
}

#[test]
fn stored_records_verify_and_tampering_is_caught() {
    let mut net = Net::new(4);
    net.run_for(Duration::from_millis(500));
    let c = net.last.clone().unwrap();
    let g = net.cores[0].genesis().clone();
    let state = postcard::to_allocvec(&*c.state).unwrap();
    let rec = RoundRecord {
        height: c.proposal.height,
        parent_height: c.proposal.parent_height,
        parent: c.proposal.parent,
        payload: c.proposal.payload.clone(),
        certificate: c.certificate.clone().unwrap(),
        state: StateRef::Inline(state.as_slice().try_into().unwrap()),
    };
    let header = verify_record(&g, &rec).unwrap();
    assert_eq!((header.round, header.state_hash), (c.round, c.state_hash));
    assert_eq!(verify_state::<Board>(&header, &state).unwrap(), *c.state);
    // Another state under the same certificate.
    let other = postcard::to_allocvec(&Board::empty(8, 8)).unwrap();
    assert_eq!(verify_state::<Board>(&header, &other), Err(RecordError::StateMismatch));
    // A certificate moved onto another header.
    let mut moved = rec.clone();
    moved.parent_height += 1;
    assert_eq!(verify_record(&g, &moved), Err(RecordError::CertificateMismatch));
    // A signature flipped.
    let mut flipped = rec.clone();
    let mut votes = flipped.certificate.votes.to_vec();
    votes[0].1.0[5] ^= 1;
    flipped.certificate.votes = votes.try_into().unwrap();
    assert!(matches!(verify_record(&g, &flipped), Err(RecordError::Certificate(_))));
    // The record fits one immutable DHT value.
    assert!(postcard::to_allocvec(&rec).unwrap().len() <= suprnova_mesh::store::MAX_IMMUTABLE);
}

#[test]
fn a_core_starts_from_a_certified_round_and_refuses_a_forged_one() {
    let mut net = Net::new(4);
    net.run_for(Duration::from_millis(500));
    let c = net.last.clone().unwrap();
    let g = net.cores[0].genesis().clone();
    let now = net.now;
    let cert = c.certificate.clone().unwrap();
    let start = |state: Board, cert: simplex::Certificate| {
        from_certified(g.clone(), (c.round, state, c.proposal.clone(), cert), now)
    };
    let core = start((*c.state).clone(), cert.clone()).unwrap();
    assert_eq!(core.final_round(), c.round);
    // Another state than the certified one, or a certificate with a flipped signature.
    assert!(matches!(start(Board::empty(8, 8), cert.clone()), Err(MeshError::BadCertified)));
    let mut votes = cert.votes.to_vec();
    votes[0].1.0[5] ^= 1;
    let mut bad = cert.clone();
    bad.votes = votes.try_into().unwrap();
    assert!(matches!(start((*c.state).clone(), bad), Err(MeshError::BadCertified)));
}

type Start = (u64, Board, simplex::Proposal, simplex::Certificate);

fn from_certified(g: Genesis, c: Start, now: Instant) -> Result<MeshCore<Life>, MeshError> {
    MeshCore::from_certified(Life, g, c, None, MeshConfig::default(), now)
}
