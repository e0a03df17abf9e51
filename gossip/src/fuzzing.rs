//! Entry points for the cargo-fuzz targets (`fuzz/`): arbitrary input sequences against one
//! HyParView and one Plumtree instance, with their invariants checked after every step.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::proto::hyparview::{self as hpv, HyParView, PeerInfo};
use crate::proto::plumtree::{self as pt, Plumtree};

fn info(id: u8) -> PeerInfo<u8> {
    PeerInfo { id, data: vec![id] }
}

/// HyParView fed arbitrary messages, losses and timers from peers 1..=31 (we are 0).
/// Invariants: views within capacity, disjoint, never containing us; `NeighborUp`/`NeighborDown`
/// outputs track the active view exactly.
pub fn hyparview_ops(data: &[u8]) {
    let cfg = hpv::Config { active_view_capacity: 3, passive_view_capacity: 6, ..hpv::Config::default() };
    let mut h = HyParView::new(info(0), cfg.clone(), [7; 32]);
    let mut up: BTreeSet<u8> = BTreeSet::new();
    for op in data.chunks(4).take(1000) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let from = 1 + b(1) % 31;
        let nodes: Vec<PeerInfo<u8>> = (0..b(3) % 6).map(|k| info(b(2).wrapping_add(k) % 32)).collect();
        let input = match b(0) % 11 {
            0 => hpv::In::Join(info(from)),
            1 => hpv::In::Message { from, msg: hpv::Message::Join(vec![from]) },
            2 => hpv::In::Message {
                from,
                msg: hpv::Message::ForwardJoin { peer: info(b(2) % 32), ttl: u16::from(b(3) % 8) },
            },
            3 => hpv::In::Message { from, msg: hpv::Message::Neighbor { high: b(3) % 2 == 1, data: vec![from] } },
            4 => hpv::In::Message { from, msg: hpv::Message::NeighborAccept { data: vec![from] } },
            5 => hpv::In::Message { from, msg: hpv::Message::NeighborReject },
            6 => hpv::In::Message { from, msg: hpv::Message::Disconnect { alive: b(3) % 2 == 1 } },
            7 => hpv::In::Message {
                from,
                msg: hpv::Message::Shuffle { origin: info(b(2) % 32), ttl: u16::from(b(3) % 8), nodes },
            },
            8 => hpv::In::Message { from, msg: hpv::Message::ShuffleReply { nodes } },
            9 => hpv::In::ConnectionLost(from),
            _ => hpv::In::Timer(if b(3) % 2 == 0 { hpv::Timer::Shuffle } else { hpv::Timer::NeighborTimeout(from) }),
        };
        h.handle(input);
        while let Some(o) = h.poll() {
            match o {
                hpv::Out::NeighborUp(p) => assert!(up.insert(p), "up twice"),
                hpv::Out::NeighborDown(p) => assert!(up.remove(&p), "down without up"),
                _ => {}
            }
        }
        let active: BTreeSet<u8> = h.active().copied().collect();
        let passive: BTreeSet<u8> = h.passive().copied().collect();
        assert!(active.len() <= cfg.active_view_capacity && passive.len() <= cfg.passive_view_capacity);
        assert!(active.is_disjoint(&passive));
        assert!(!active.contains(&0) && !passive.contains(&0));
        assert_eq!(active, up);
    }
}

/// Plumtree fed arbitrary broadcasts, messages, neighbour changes and timers from peers 1..=7.
/// Invariants: each id is delivered at most once, eager and lazy are disjoint, stats add up.
pub fn plumtree_ops(data: &[u8]) {
    let cfg = pt::Config { max_cached: 16, max_remembered: 32, max_message_size: 64, ..pt::Config::default() };
    let mut p: Plumtree<u8> = Plumtree::new(cfg);
    let t0 = Instant::now();
    // The ids Plumtree still remembers are exactly its last `max_remembered` deliveries.
    let mut recent: std::collections::VecDeque<[u8; 32]> = std::collections::VecDeque::new();
    let payload = |x: u8| vec![x; usize::from(x % 80)];
    for (i, op) in data.chunks(3).take(1000).enumerate() {
        let b = |k: usize| op.get(k).copied().unwrap_or(0);
        let from = 1 + b(1) % 7;
        let now = t0 + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 20);
        let id_of = |x: u8| *blake3::hash(&payload(x)).as_bytes();
        let input = match b(0) % 9 {
            0 => pt::In::Broadcast(payload(b(2))),
            1 => {
                let good = b(2) % 5 != 0;
                let id = if good { id_of(b(2)) } else { [b(2); 32] };
                pt::In::Message {
                    from,
                    msg: pt::Message::Gossip { id, round: u16::from(b(2) % 9), payload: payload(b(2)) },
                }
            }
            2 => pt::In::Message {
                from,
                msg: pt::Message::IHave((0..b(2) % 4).map(|k| (id_of(b(2).wrapping_add(k)), u16::from(k))).collect()),
            },
            3 => {
                pt::In::Message { from, msg: pt::Message::Graft { id: (b(2) % 2 == 0).then(|| id_of(b(2))), round: 1 } }
            }
            4 => pt::In::Message { from, msg: pt::Message::Prune },
            5 => pt::In::NeighborUp(from),
            6 => pt::In::NeighborDown(from),
            7 => pt::In::Timer(if b(2) % 2 == 0 { pt::Timer::Missing(id_of(b(2))) } else { pt::Timer::DispatchLazy }),
            _ => pt::In::Timer(pt::Timer::Expire),
        };
        p.handle(now, input);
        while let Some(o) = p.poll() {
            if let pt::Out::Deliver { id, payload, .. } = o {
                assert_eq!(id, *blake3::hash(&payload).as_bytes());
                assert!(!recent.contains(&id), "delivered twice within the dedup window");
                recent.push_back(id);
                if recent.len() > 32 {
                    recent.pop_front();
                }
            }
        }
        let eager: BTreeSet<u8> = p.eager().copied().collect();
        let lazy: BTreeSet<u8> = p.lazy().copied().collect();
        assert!(eager.is_disjoint(&lazy));
        let s = p.stats();
        assert!(s.duplicates <= s.gossip_received);
    }
}

/// Gossip stream frames, broadcast envelopes and contact data from arbitrary bytes: whatever
/// decodes re-encodes to the same bytes, and nothing panics or allocates beyond the input.
pub fn gossip_frames(data: &[u8]) {
    use crate::proto::{decode_frame, encode_frame};
    use crate::wire::{Envelope, TopicId, decode_canonical};
    if let Some(f) = decode_frame(data) {
        let enc = encode_frame(&f).unwrap_or_default();
        assert_eq!(enc.get(4..), Some(data), "frames are canonical");
    }
    let topic = TopicId([7; 32]);
    if let Ok(e) = Envelope::decode_verified(data, &topic, u64::MAX / 2, u64::MAX) {
        assert_eq!(e.encode(), data, "envelopes are canonical");
        assert!(e.payload.len() <= crate::wire::MAX_BROADCAST_PAYLOAD);
    }
    assert!(crate::wire::decode_contact(data).len() <= 4);
    if let Some(e) = decode_canonical::<Envelope>(data) {
        // Whatever decodes has a well-defined signed message.
        assert!(e.signed_bytes(&topic).is_some());
    }
}

/// Blob manifests and requests from arbitrary bytes: a manifest that verifies is consistent
/// (chunk lengths add up to its size) and canonical.
pub fn blob_manifest(data: &[u8]) {
    use crate::blob::{BlobHash, BlobRequest, Manifest};
    use crate::wire::decode_canonical;
    let hash = BlobHash(*blake3::hash(data).as_bytes());
    if let Some(m) = Manifest::decode_verified(data, &hash) {
        assert_eq!(m.encode(), data);
        let total: u64 = (0..m.chunks.len()).map(|i| m.chunk_len(i) as u64).sum();
        assert_eq!(total, m.size, "chunk lengths add up");
        assert!(m.chunks.iter().enumerate().all(|(i, _)| m.chunk_len(i) > 0));
    }
    if let Some(r) = decode_canonical::<BlobRequest>(data) {
        assert_eq!(postcard::to_allocvec(&r).ok().as_deref(), Some(data));
    }
}

/// The topic core fed arbitrary operations: frames from four peers (membership messages, signed
/// broadcasts valid or corrupted, announcements, grafts, prunes, raw bytes decoded as frames),
/// lost links, member-set answers, publishes, leaves and re-subscribes, and time. Invariants:
/// views within capacity, never us; deliveries in order per origin run; every output drained
/// within a bound.
pub fn topic_ops(data: &[u8]) {
    use crate::proto::topic::{Ed25519Verifier, Now, TopicCore, TopicsConfig};
    use crate::proto::{Frame, decode_frame};
    use crate::wire::{Envelope, TopicId};
    use std::collections::BTreeMap;
    use suprnova_dht::{Identity, NodeId};

    let mut cfg = TopicsConfig::default();
    cfg.hyparview.active_view_capacity = 3;
    cfg.hyparview.passive_view_capacity = 6;
    let peers: Vec<Identity> = (1..=4u8).map(|i| Identity::from_seed([i; 32])).collect();
    let ids: Vec<NodeId> = peers.iter().map(Identity::id).collect();
    let me = Identity::from_seed([0; 32]);
    let topic = TopicId::from_name("fuzz");
    let addr = std::net::SocketAddr::from(([10, 0, 0, 1], 4433));
    let t0 = Instant::now();
    let mut ms = 0u64;
    let now = |ms: u64| Now { at: t0 + Duration::from_millis(ms), unix_ms: 1_800_000_000_000 + ms };
    let mut core = TopicCore::new(&me, &[addr], cfg.clone(), [9; 32], now(0));
    let _ = core.subscribe(now(0), topic);
    let mut verifier = Ed25519Verifier::default();
    let mut last: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut known_ids: Vec<[u8; 32]> = Vec::new();
    for op in data.chunks(6).take(500) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let k = usize::from(b(1)) % peers.len();
        let (Some(from), Some(signer)) = (ids.get(k).copied(), peers.get(usize::from(b(2)) % peers.len())) else {
            continue;
        };
        let at = now(ms);
        let frame = |msg| Frame::Membership { topic, msg };
        let broadcast = |msg| Frame::Broadcast { topic, msg };
        let some_id = known_ids.get(usize::from(b(3)) % known_ids.len().max(1)).copied().unwrap_or([b(3); 32]);
        match b(0) % 16 {
            0 => core.frames(at, vec![(from, frame(hpv::Message::Join(vec![b(2)])))], &mut verifier),
            1 => core.frames(
                at,
                vec![(from, frame(hpv::Message::Neighbor { high: b(2) % 2 == 1, data: vec![b(3)] }))],
                &mut verifier,
            ),
            2 => core.frames(at, vec![(from, frame(hpv::Message::Disconnect { alive: b(2) % 2 == 1 }))], &mut verifier),
            3 | 4 => {
                // One run per origin, so that the order can be checked.
                let Ok(env) = Envelope::sign(signer, &topic, 7, u64::from(b(3) % 8), at.unix_ms, vec![b(5)]) else {
                    continue;
                };
                let mut payload = env.encode();
                let flip = usize::from(b(5)) % payload.len().max(1);
                if b(0) % 16 == 4
                    && let Some(x) = payload.get_mut(flip)
                {
                    *x ^= 1;
                }
                let id = *blake3::hash(&payload).as_bytes();
                known_ids.push(id);
                let msg = pt::Message::Gossip { id, round: u16::from(b(4)), payload };
                core.frames(at, vec![(from, broadcast(msg))], &mut verifier);
            }
            5 => core.frames(at, vec![(from, broadcast(pt::Message::IHave(vec![(some_id, 1)])))], &mut verifier),
            6 => core.frames(
                at,
                vec![(from, broadcast(pt::Message::Graft { id: Some(some_id), round: 1 }))],
                &mut verifier,
            ),
            7 => core.frames(at, vec![(from, broadcast(pt::Message::Prune))], &mut verifier),
            8 => core.link_lost(at, from),
            9 => {
                let members = ids.iter().take(usize::from(b(2)) % 5).map(|id| (*id, vec![addr])).collect();
                core.members_read(at, topic, members);
            }
            10 => {
                ms += u64::from(b(2)) * 10 + u64::from(b(3)) * 1000;
                core.handle_timeout(now(ms));
            }
            11 => {
                let _ = core.publish(at, topic, vec![b(2); usize::from(b(3))]);
            }
            12 => core.revived(),
            13 => {
                core.leave(topic);
                last.clear();
                let _ = core.subscribe(at, topic);
            }
            14 => core.send_failed(at, topic, from),
            _ => {
                if let Some(f) = decode_frame(op) {
                    core.frames(at, vec![(from, f)], &mut verifier);
                }
            }
        }
        check_topic(&mut core, &mut last, &topic, &cfg, &me.id());
    }
}

/// Drains the topic core's outputs (deliveries in order per origin run) and checks its views
/// (within capacity, never us).
fn check_topic(
    core: &mut crate::proto::topic::TopicCore,
    last: &mut std::collections::BTreeMap<suprnova_dht::NodeId, u64>,
    topic: &crate::wire::TopicId,
    cfg: &crate::proto::topic::TopicsConfig,
    me: &suprnova_dht::NodeId,
) {
    use crate::proto::topic::{Out, TopicEvent};
    for _ in 0..100_000 {
        let Some(out) = core.poll() else { break };
        if let Out::Event { event: TopicEvent::Message { origin, seq, .. }, .. } = out {
            // Within a run of the origin, seqs only go up.
            let prev = last.insert(origin, seq);
            assert!(prev.is_none_or(|p| p < seq), "order: {prev:?} then {seq}");
        }
    }
    if let Some(info) = core.info(topic) {
        assert!(info.active.len() <= cfg.hyparview.active_view_capacity);
        assert!(info.passive <= cfg.hyparview.passive_view_capacity);
        assert!(!info.active.contains(me));
    }
}
