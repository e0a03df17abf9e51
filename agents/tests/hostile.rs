//! Hostile input against a runtime on real nodes (127.0.0.1): malformed, forged, stale,
//! replayed and misdirected mailbox messages; forged and stale announcements; votes from keys
//! outside the voter set and replayed votes; oversized knowledge bundles. Each is refused and
//! counted by reason, and honest traffic still gets through.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use suprnova_agents::agent::{Agent, AgentAddr, Ctx, Event, KnowledgeError, Profile};
use suprnova_agents::discovery::Criteria;
use suprnova_agents::runtime::{ANNOUNCE_TOPIC, Runtime, RuntimeConfig, VOTES_TOPIC};
use suprnova_agents::wire::{
    self, Announcement, Envelope, EnvelopeKind, FRAME_MAGIC, Reply, Resources, SignedAnnouncement, Vote, VoteWire,
    bounded, bucket, capability_key, vote_bytes,
};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::{Key, Record, SetEntry};
use suprnova_mesh::simplex::Sig;
use suprnova_node::{Node, NodeConfig};
use tokio::sync::mpsc;

fn seed(i: usize, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s
}

async fn nodes(n: usize, tag: u8) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = NodeConfig::with_seed(seed(i, tag), "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_local = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = out.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        out.push(node);
    }
    out
}

struct Inbox(mpsc::UnboundedSender<Event>);

impl Agent for Inbox {
    fn step(&mut self, ctx: &mut Ctx) {
        for e in ctx.take_events() {
            if let Event::Request { id, body, .. } = &e {
                ctx.respond(*id, body.clone());
            }
            let _ = self.0.send(e);
        }
    }
}

fn quiet(kind: &str, caps: &[&str]) -> Profile {
    Profile {
        kind: kind.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        resources: Resources { cpu_milli: 500, memory_mb: 64, storage_mb: 0 },
        announce: true,
        ..Profile::default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mailbox_messages_are_refused_and_counted() {
    let ns = nodes(2, 0x81).await;
    let rt = Runtime::start(
        ns[0].clone(),
        RuntimeConfig { announce_topic: false, votes: false, ..RuntimeConfig::default() },
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let target = rt.spawn_with(Identity::from_seed([0x82; 32]), quiet("inbox", &[]), Inbox(tx)).await.unwrap();
    let attacker = &ns[1];
    let mallory = Identity::from_seed([0x83; 32]);
    let to = target.id;
    let envelope =
        |kind, time: u64, nonce: u64, body: &[u8]| Envelope::sign(&mallory, kind, to, nonce, time, body).unwrap();
    let dest = ns[0].id();
    let ask = |bytes: Vec<u8>| {
        let a = attacker.clone();
        async move { a.request(dest, &bytes).await.unwrap() }
    };
    let reply = |b: Vec<u8>| wire::decode::<Reply>(&b).unwrap();

    // Garbage after the magic byte.
    assert_eq!(reply(ask(vec![FRAME_MAGIC, 1, 2, 3]).await), Reply::Rejected);
    // A forged signature (body changed after signing).
    let mut forged = envelope(EnvelopeKind::Request, now_ms(), 1, b"pay me");
    forged.body = b"pay me 1000".as_slice().try_into().unwrap();
    assert_eq!(reply(ask(wire::frame(&forged)).await), Reply::Rejected);
    // Stale: ten minutes old; and from the future.
    let stale = envelope(EnvelopeKind::Request, now_ms() - 600_000, 2, b"old");
    assert_eq!(reply(ask(wire::frame(&stale)).await), Reply::Rejected);
    let future = envelope(EnvelopeKind::Request, now_ms() + 600_000, 3, b"new");
    assert_eq!(reply(ask(wire::frame(&future)).await), Reply::Rejected);
    // An agent this node does not host.
    let elsewhere = Envelope::sign(&mallory, EnvelopeKind::Request, [7; 32], 4, now_ms(), b"hi").unwrap();
    assert_eq!(reply(ask(wire::frame(&elsewhere)).await), Reply::NoSuchAgent);
    // A request envelope sent as a one-way message.
    attacker.send(ns[0].id(), &wire::frame(&envelope(EnvelopeKind::Request, now_ms(), 5, b"x"))).await.unwrap();
    // Not an agent frame at all, with nobody taking foreign messages.
    attacker.send(ns[0].id(), b"hello node").await.unwrap();
    // A good request is answered, signed by the target; its replay is refused.
    let good = envelope(EnvelopeKind::Request, now_ms(), 6, b"echo");
    match reply(ask(wire::frame(&good)).await) {
        Reply::Answer { body, sig } => {
            assert_eq!(body.as_slice(), b"echo");
            assert!(suprnova_dht::identity::verify_strict(&to, &Reply::signed_bytes(&good.id(), &body), &sig.0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reply(ask(wire::frame(&good)).await), Reply::Rejected);
    // A one-way message arrives once though sent twice.
    let msg = envelope(EnvelopeKind::Message, now_ms(), 7, b"once");
    attacker.send(ns[0].id(), &wire::frame(&msg)).await.unwrap();
    attacker.send(ns[0].id(), &wire::frame(&msg)).await.unwrap();
    let mut messages = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(Event::Message { body, from })) =
            tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
        {
            assert_eq!((body.as_slice(), from), (b"once".as_slice(), mallory.public_key()));
            messages += 1;
        }
        if rt.stats().drop_replayed >= 2 && rt.stats().drop_not_agent_frame >= 1 && rt.stats().drop_wrong_transport >= 1
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = rt.stats();
    assert_eq!(messages, 1);
    assert_eq!(s.drop_malformed, 1);
    assert_eq!(s.drop_bad_signature, 1);
    assert_eq!(s.drop_stale, 2);
    assert_eq!(s.drop_no_such_agent, 1);
    assert_eq!(s.drop_wrong_transport, 1);
    assert_eq!(s.drop_not_agent_frame, 1);
    assert_eq!(s.drop_replayed, 2);
    assert_eq!(s.requests_answered, 1);
    rt.shutdown();
    for n in &ns {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_announcements_are_dropped_and_counted() {
    let ns = nodes(4, 0x91).await;
    let rt = Runtime::start(ns[0].clone(), RuntimeConfig::default()).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let honest = rt.spawn_with(Identity::from_seed([0x92; 32]), quiet("worker", &["vision"]), Inbox(tx)).await.unwrap();
    let mut listen = rt.announcements();
    let attacker = &ns[1];
    let put = |k: &Identity, key: [u8; 32], seq: u64, value: Vec<u8>| {
        let entry = SetEntry::sign(k, &Key(key), seq, 120, &value).unwrap();
        let node = attacker.clone();
        async move { node.put_once(Key(key), Record::SetEntry(entry), Duration::from_secs(120)).await.unwrap() }
    };
    let announcement = |caps: &[&str], time: u64| Announcement {
        node: attacker.id().0,
        addrs: Default::default(),
        kind: bounded("spy").unwrap(),
        capabilities: caps.iter().map(|c| bounded(c).unwrap()).collect::<Vec<_>>().try_into().unwrap(),
        resources: Resources::default(),
        position: None,
        time_ms: time,
    };
    // Keys whose bucket is the honest agent's, so their entries land in the same set, and one
    // key of another bucket.
    let b = bucket(&honest.id);
    let mut same = Vec::new();
    let mut other = None;
    for i in 0..2000u32 {
        let mut s = [0x93; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        let k = Identity::from_seed(s);
        if bucket(&k.public_key()) == b {
            if same.len() < 4 {
                same.push(k);
            }
        } else if other.is_none() {
            other = Some(k);
        }
        if same.len() == 4 && other.is_some() {
            break;
        }
    }
    let other = other.unwrap();
    let key = capability_key("vision", b);
    let now = now_ms();
    // Garbage; an announcement without the capability it is filed under; a stale one; one whose
    // time is not its seq; and one filed under a bucket its key does not belong to.
    put(&same[0], key, now, b"\x01\x02garbage".to_vec()).await;
    put(&same[1], key, now, wire::encode(&announcement(&["audio"], now))).await;
    put(&same[2], key, now - 600_000, wire::encode(&announcement(&["vision"], now - 600_000))).await;
    put(&same[3], key, now, wire::encode(&announcement(&["vision"], now - 5))).await;
    put(&other, key, now, wire::encode(&announcement(&["vision"], now))).await;
    let d = rt.discover(&Criteria::capability("vision")).await.unwrap();
    assert_eq!(d.agents.iter().map(|f| f.agent).collect::<Vec<_>>(), vec![honest.id]);
    assert_eq!((d.drops.malformed, d.drops.misplaced, d.drops.stale), (1, 2, 2));
    let s = rt.stats();
    assert_eq!((s.discovery_malformed, s.discovery_misplaced, s.discovery_stale), (1, 2, 2));

    // On the announce topic: a tampered signed announcement and garbage.
    let _sub = attacker.subscribe(ANNOUNCE_TOPIC).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut signed = SignedAnnouncement::sign(&same[0], announcement(&["vision"], now));
    signed.announcement.resources.memory_mb = 1 << 20;
    attacker.publish(ANNOUNCE_TOPIC, wire::encode(&signed)).await.unwrap();
    attacker.publish(ANNOUNCE_TOPIC, b"not an announcement".to_vec()).await.unwrap();
    let good = SignedAnnouncement::sign(&same[1], announcement(&["vision"], now));
    attacker.publish(ANNOUNCE_TOPIC, wire::encode(&good)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let a = listen.recv().await.unwrap();
            if a.agent == same[1].public_key() {
                return a;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(*seen, good);
    let s = rt.stats();
    assert_eq!(s.drop_bad_announcement, 1);
    assert_eq!(s.drop_malformed, 1);
    rt.shutdown();
    for n in &ns {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_from_outsiders_and_replayed_votes_do_not_count() {
    let ns = nodes(3, 0xa1).await;
    let rt = Runtime::start(ns[0].clone(), RuntimeConfig { announce_topic: false, ..RuntimeConfig::default() })
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let voters: Vec<Identity> = (0..4).map(|i| Identity::from_seed(seed(i, 0xa2))).collect();
    let mut p = quiet("voter", &[]);
    p.announce = false;
    // The proposer and one voter are hosted; the other three voters' keys are the test's.
    let proposer = rt.spawn_with(Identity::from_seed([0xa3; 32]), p.clone(), Inbox(tx.clone())).await.unwrap();
    let v0 = rt.spawn_with(Identity::from_seed(seed(0, 0xa2)), p.clone(), Inbox(tx)).await.unwrap();
    let attacker = &ns[1];
    let _sub = attacker.subscribe(VOTES_TOPIC).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys: Vec<[u8; 32]> = voters.iter().map(Identity::public_key).collect();
    let prop = rt.propose_from(&proposer.id, b"merge the branches", keys, Duration::from_secs(20)).await.unwrap();
    let id = prop.id();
    // Quorum of 4 is 3. The hosted voter votes yes.
    assert!(rt.vote_from(&v0.id, &prop, b"yes").await);
    let send = |w: VoteWire| async move { attacker.publish(VOTES_TOPIC, wire::encode(&w)).await.unwrap() };
    // Outsiders claim voters' indexes; an index past the list; garbage.
    let outsiders: Vec<Identity> = (0..3).map(|i| Identity::from_seed(seed(i, 0xa4))).collect();
    for (n, o) in outsiders.iter().enumerate() {
        let sig = Sig(o.sign(&vote_bytes(&id, b"yes")));
        send(VoteWire::Vote(Vote {
            proposal: id,
            voter: 1 + n as u16 % 3,
            choice: b"yes".as_slice().try_into().unwrap(),
            sig,
        }))
        .await;
    }
    let sig = Sig(outsiders[0].sign(&vote_bytes(&id, b"yes")));
    send(VoteWire::Vote(Vote { proposal: id, voter: 9, choice: b"yes".as_slice().try_into().unwrap(), sig })).await;
    attacker.publish(VOTES_TOPIC, b"garbage".to_vec()).await.unwrap();
    // One real voter's vote, replayed three times: it counts once.
    let real = Vote::sign(&voters[1], &prop, b"yes").unwrap();
    for _ in 0..3 {
        send(VoteWire::Vote(real.clone())).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rt.decision(&id).is_none(), "two real votes of four are not a quorum");
    let s = rt.stats();
    assert_eq!(s.ballots.drops.bad_signature, 3, "outsiders' signatures under voters' indexes");
    assert_eq!(s.ballots.drops.not_voter, 1);
    assert!(s.ballots.drops.duplicate >= 1, "replays: {:?}", s.ballots.drops);
    assert_eq!(s.drop_bad_vote_wire, 1);
    assert_eq!(s.ballots.votes_counted, 2);
    // The third real vote decides it.
    send(VoteWire::Vote(Vote::sign(&voters[2], &prop, b"yes").unwrap())).await;
    let decided = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Decided { id: d, .. }) = rx.recv().await
                && d == id
            {
                return;
            }
        }
    })
    .await;
    assert!(decided.is_ok());
    rt.shutdown();
    for n in &ns {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_bundle_is_refused_before_it_is_fetched() {
    let ns = nodes(2, 0xb1).await;
    let quiet_cfg = RuntimeConfig { announce_topic: false, votes: false, ..RuntimeConfig::default() };
    let a = Runtime::start(ns[0].clone(), quiet_cfg.clone()).await.unwrap();
    let b = Runtime::start(ns[1].clone(), RuntimeConfig { max_bundle: 1 << 20, ..quiet_cfg }).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut p = quiet("learner", &[]);
    p.announce = false;
    let alice = Identity::from_seed([0xb2; 32]);
    a.spawn_with(Identity::from_seed([0xb2; 32]), p.clone(), Inbox(tx.clone())).await.unwrap();
    let bob = b.spawn_with(Identity::from_seed([0xb3; 32]), p, Inbox(tx)).await.unwrap();
    let big = Arc::new(vec![7u8; 2 << 20]);
    let results = a
        .share_knowledge(
            &alice,
            &[AgentAddr { agent: bob.id, node: ns[1].id() }],
            "huge",
            vec![("w".into(), big.clone())],
        )
        .await
        .unwrap();
    let err = results[0].1.clone().unwrap_err();
    assert!(matches!(err, KnowledgeError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("over the limit"), "{err}");
    let s = b.stats();
    assert_eq!(s.knowledge_oversized, 1);
    assert_eq!((s.knowledge_fetched, s.knowledge_bytes), (0, 0));
    assert!(b.knowledge("huge").is_empty());
    assert_eq!(ns[1].metrics().await.unwrap().blobs, 0, "nothing fetched");
    a.shutdown();
    b.shutdown();
    for n in &ns {
        n.shutdown().await;
    }
}
