//! Entry points for the cargo-fuzz targets (`fuzz/`).

use std::time::{Duration, Instant};

use suprnova_dht::identity::Identity;

use crate::simplex::{self, Config, Digest, In, Members, Message, Out, Proposal, Sig, Signers, Simplex};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = postcard::from_bytes::<T>(data) {
        let again = postcard::to_allocvec(&m).unwrap_or_default();
        let back: Result<T, _> = postcard::from_bytes(&again);
        assert_eq!(back.ok().as_ref(), Some(&m), "re-encoding must decode to the same value");
    }
}

/// Decodes arbitrary bytes as each mesh wire type (Simplex message, certificate, evidence,
/// batch, signed input, genesis); whatever decodes re-encodes to bytes that decode equal.
pub fn simplex_decode(data: &[u8]) {
    round_trip::<Message>(data);
    round_trip::<simplex::Certificate>(data);
    round_trip::<simplex::Evidence>(data);
    round_trip::<crate::world::Batch>(data);
    round_trip::<crate::world::BatchHeader>(data);
    round_trip::<crate::world::SignedInput>(data);
    round_trip_bytes::<crate::world::Genesis>(data);
    round_trip::<crate::store::RoundRecord>(data);
    round_trip::<crate::store::Head>(data);
    round_trip_bytes::<crate::spatial::Presence>(data);
    round_trip_bytes::<crate::spatial::Space>(data);
}

/// For types with floats (NaN is not equal to itself): whatever decodes re-encodes to bytes that
/// decode and re-encode to the same bytes.
fn round_trip_bytes<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8]) {
    if let Ok(m) = postcard::from_bytes::<T>(data) {
        let once = postcard::to_allocvec(&m).unwrap_or_default();
        let back: Result<T, _> = postcard::from_bytes(&once);
        let twice = back.ok().and_then(|b| postcard::to_allocvec(&b).ok());
        assert_eq!(twice.as_deref(), Some(once.as_slice()), "re-encoding must be stable");
    }
}

fn f64_at(data: &[u8], at: usize) -> f64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    f64::from_le_bytes(b)
}

/// The spatial index's sans-IO parts on arbitrary input: a space (2-D or 3-D, levels from the
/// input), a query centre and radius as raw f64 bits (NaN and infinities included), the cells a
/// query reads and the children of each, and a [`crate::spatial::Sifter`] fed arbitrary entries
/// (writer, seq, value bytes) for those cells.
///
/// Invariants: a query never reads more than its bound, children stay within theirs and inside
/// their parent; the sifter returns each agent at most once, within the radius, nearest first,
/// never more agents than entries, and counts every refused entry.
pub fn presence_ops(data: &[u8]) -> usize {
    use crate::spatial::{Sifter, Space};
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let dims = 2 + (b(0) & 1);
    let mut levels: Vec<u8> = (1..=3).map(|i| b(i) % 22).collect();
    levels.sort_unstable();
    levels.dedup();
    let Ok(space) = Space::new(dims, [-100.0; 3], [100.0, 100.0, 100.0], levels) else { return 0 };
    let centre = [f64_at(data, 4), f64_at(data, 12), f64_at(data, 20)];
    let radius = f64_at(data, 28);
    let max = u64::from(b(36) % 64) + 1;
    let Ok((_, cells)) = space.query_cells(&centre, radius, max) else { return 0 };
    assert!(cells.len() as u64 <= max, "a query reads at most its bound");
    for c in &cells {
        if let Some(f) = space.finer(c.level)
            && let Some(children) = space.children_in(*c, f, &centre, radius, max)
        {
            assert!(children.len() as u64 <= max);
            let shift = u32::from(f - c.level) * u32::from(dims);
            assert!(children.iter().all(|k| k.level == f && k.code.checked_shr(shift).unwrap_or(0) == c.code));
        }
    }
    let mut sifter = Sifter::new(&space, centre, radius);
    let mut entries = 0u64;
    for chunk in data.get(37..).unwrap_or(&[]).chunks(64).take(200) {
        let cell = cells.get(usize::from(chunk.first().copied().unwrap_or(0)) % cells.len().max(1)).copied();
        let Some(cell) = cell else { break };
        let writer = [chunk.get(1).copied().unwrap_or(0) % 8; 32];
        let seq = u64::from(chunk.get(2).copied().unwrap_or(0));
        sifter.add(cell, writer, seq, chunk.get(3..).unwrap_or(&[]));
        entries += 1;
    }
    let drops = sifter.drops;
    let found = sifter.finish();
    assert!(
        found.len() as u64 + drops.undecodable + drops.outside + drops.misplaced <= entries.max(found.len() as u64)
    );
    assert!(found.windows(2).all(|w| w.first().map(|a| a.distance) <= w.get(1).map(|b| b.distance)));
    let mut agents: Vec<[u8; 32]> = found.iter().map(|n| n.agent).collect();
    agents.sort_unstable();
    agents.dedup();
    assert_eq!(agents.len(), found.len(), "an agent is reported once");
    assert!(found.iter().all(|n| n.distance <= radius));
    found.len()
}

/// A notarisation (or, with `fin` and a block, a finalisation) of `p` (⊥ at `height` if none)
/// signed by `take` of members 1 ..= 3: the fuzzer holds a quorum.
fn certificate(
    ids: &[Identity],
    mesh: &Digest,
    p: Option<Proposal>,
    fin: bool,
    height: u64,
    take: usize,
) -> Option<Message> {
    let h = p.as_ref().map_or(height, |p| p.height);
    let d = p.as_ref().map(|p| p.digest(mesh));
    let votes: Vec<(u16, Sig)> = (1u16..=3)
        .filter_map(|i| {
            let id = ids.get(usize::from(i))?;
            let msg = match (fin, d) {
                (true, Some(d)) => simplex::finalize_message(mesh, h, &d),
                _ => simplex::vote_message(mesh, h, &d),
            };
            Some((i, Sig(id.sign(&msg))))
        })
        .take(take)
        .collect();
    let votes = Signers::try_from(votes).ok()?;
    Some(match (fin, p) {
        (true, Some(proposal)) => Message::Finalization { proposal, votes },
        (_, proposal) => Message::Notarization { height: h, proposal, votes },
    })
}

/// Drains the member's outputs, checking each: finalised heights strictly increase and carry
/// certificates that verify, evidence proves itself; proposals asked for get a payload.
fn check_outputs(s: &mut Simplex, now: Instant, mesh: &Digest, members: &Members, last_final: &mut u64) {
    while let Some(out) = s.poll() {
        match out {
            Out::Finalized { proposal, digest, certificate } => {
                assert!(proposal.height > *last_final, "finalised heights strictly increase");
                *last_final = proposal.height;
                assert_eq!(proposal.digest(mesh), digest);
                if let Some(c) = certificate {
                    assert!(members.verify_certificate(mesh, &c).is_ok(), "a certificate that does not verify");
                }
            }
            Out::Propose { height, .. } => s.handle(now, In::Payload { height, payload: vec![0, 1], body: vec![2] }),
            Out::Evidence(e) => assert!(e.verify(mesh, members), "evidence must prove itself"),
            _ => {}
        }
    }
}

/// One member (index 0 of 4) fed an arbitrary sequence of validly signed proposals, votes,
/// finalize votes, notarisations and finalisations from the other three (who may equivocate at
/// will: three of four is past f, so only internal consistency is promised), raw undecodable
/// messages, application verdicts and timer ticks.
///
/// Invariants: finalised heights strictly increase; each `Finalized` certificate verifies; the
/// current height never goes down; the state held stays within its bounds. Returns the blocks
/// finalised (for tests that check the inputs reach that far).
pub fn simplex_ops(data: &[u8]) -> u64 {
    let ids: Vec<Identity> = (1u8..=4).map(|i| Identity::from_seed([i; 32])).collect();
    let Some(members) = Members::new(ids.iter().map(Identity::public_key).collect()) else { return 0 };
    let mesh: Digest = [9; 32];
    let start = Instant::now();
    let mut now = start;
    let Some(me) = ids.first().map(|i| Identity::from_seed(*i.seed())) else { return 0 };
    let mut s = Simplex::new(Config::default(), mesh, members.clone(), Some(me), now);
    let mut last_final = 0u64;
    let mut last_height = s.height();
    let mut blocks: Vec<Proposal> = Vec::new();
    for op in data.chunks(5).take(400) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let signer = 1 + u16::from(b(1) % 3);
        let id = ids.get(usize::from(signer)).map(|i| Identity::from_seed(*i.seed()));
        let Some(id) = id else { continue };
        let height = s.height().saturating_sub(2) + u64::from(b(2) % 6);
        let pick = |v: &Vec<Proposal>, k: u8| v.get(usize::from(k) % v.len().max(1)).cloned();
        let digest_of = |p: &Option<Proposal>| p.as_ref().map(|p| p.digest(&mesh));
        let input = match b(0) % 9 {
            0 => {
                let (ph, parent) = match pick(&blocks, b(3)) {
                    Some(p) if b(4) % 2 == 0 && p.height < height => (p.height, p.digest(&mesh)),
                    _ => s.finalized(),
                };
                let payload = [b(3), b(4)];
                let Ok(payload) = payload.as_slice().try_into() else { continue };
                let p = Proposal { height, parent_height: ph, parent, payload, body: Default::default() };
                let d = p.digest(&mesh);
                blocks.push(p.clone());
                if blocks.len() > 64 {
                    blocks.remove(0);
                }
                let sig = Sig(id.sign(&simplex::vote_message(&mesh, height, &Some(d))));
                In::Message(Message::Propose { proposal: p, sig })
            }
            1 | 2 => {
                let choice = if b(0) % 9 == 1 { digest_of(&pick(&blocks, b(3))) } else { None };
                let h = pick(&blocks, b(3)).filter(|_| choice.is_some()).map_or(height, |p| p.height);
                let sig = Sig(id.sign(&simplex::vote_message(&mesh, h, &choice)));
                In::Message(Message::Vote { height: h, choice, signer, sig })
            }
            3 => {
                let Some(p) = pick(&blocks, b(3)) else { continue };
                let d = p.digest(&mesh);
                let sig = Sig(id.sign(&simplex::finalize_message(&mesh, p.height, &d)));
                In::Message(Message::Finalize { height: p.height, digest: d, signer, sig })
            }
            4 | 5 => {
                let p = pick(&blocks, b(3));
                let Some(m) = certificate(&ids, &mesh, p, b(0) % 9 == 5, height, usize::from(1 + b(4) % 3)) else {
                    continue;
                };
                In::Message(m)
            }
            6 => {
                let Ok(m) = postcard::from_bytes::<Message>(op) else { continue };
                In::Message(m)
            }
            7 => {
                now += Duration::from_millis(u64::from(b(3)) * 10);
                s.handle_timeout(now);
                continue;
            }
            _ => {
                let Some(p) = pick(&blocks, b(3)) else { continue };
                In::Verified { height: p.height, digest: p.digest(&mesh), valid: b(4) % 4 != 0 }
            }
        };
        s.handle(now, input);
        check_outputs(&mut s, now, &mesh, &members, &mut last_final);
        assert!(s.height() >= last_height, "height never goes down");
        last_height = s.height();
        assert!(s.finalized().0 < s.height());
        assert!(s.slots_held() as u64 <= s.height() - s.finalized().0 + simplex::MAX_AHEAD + 1, "bounded state");
    }
    s.stats().finalized
}
