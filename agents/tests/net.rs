//! Agents on real nodes (127.0.0.1): discovery against ground truth in one round of lookups,
//! messages and requests, a 30-voter proposal with 9 malicious voters, a proposal that expires,
//! and a 10 MiB knowledge share and sync that skip what the receiver holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use suprnova_agents::agent::{Agent, AgentAddr, Ctx, Event, Profile};
use suprnova_agents::discovery::Criteria;
use suprnova_agents::runtime::{Runtime, RuntimeConfig};
use suprnova_agents::vote::Decision;
use suprnova_agents::wire::{AgentId, Resources};
use suprnova_dht::identity::Identity;
use suprnova_node::{Node, NodeConfig};
use tokio::sync::mpsc;

fn seed(i: usize, tag: u8) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s
}

async fn runtimes(n: usize, tag: u8) -> Vec<Runtime> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = NodeConfig::with_seed(seed(i, tag), "127.0.0.1:0".parse().unwrap());
        cfg.dht.routing.exempt_local = true;
        let node = Node::spawn(cfg).await.unwrap();
        if let Some(first) = nodes.first() {
            node.bootstrap(vec![first.target()]).await.unwrap();
        }
        nodes.push(node);
    }
    let mut out = Vec::new();
    for n in nodes {
        out.push(Runtime::start(n, RuntimeConfig::default()).await.unwrap());
    }
    out
}

/// Reports every event to the test; answers requests with the body reversed; votes on
/// proposals as its behaviour says.
struct Probe {
    tx: mpsc::UnboundedSender<(AgentId, Event)>,
    behaviour: Behaviour,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Honest,
    Silent,
    Equivocate,
}

impl Agent for Probe {
    fn step(&mut self, ctx: &mut Ctx) {
        for e in ctx.take_events() {
            match &e {
                Event::Request { id, body, .. } => {
                    let mut b = body.clone();
                    b.reverse();
                    ctx.respond(*id, b);
                }
                Event::Proposal { proposal } if proposal.proposer != ctx.me() => match self.behaviour {
                    Behaviour::Honest => {
                        ctx.vote(proposal, b"yes");
                    }
                    Behaviour::Silent => {}
                    Behaviour::Equivocate => {
                        ctx.vote(proposal, b"yes");
                        ctx.vote(proposal, b"no");
                    }
                },
                _ => {}
            }
            let _ = self.tx.send((ctx.me(), e));
        }
    }
}

fn probe(tx: &mpsc::UnboundedSender<(AgentId, Event)>, behaviour: Behaviour) -> Probe {
    Probe { tx: tx.clone(), behaviour }
}

fn profile(kind: &str, caps: &[&str], memory_mb: u32, position: Option<[f64; 3]>) -> Profile {
    Profile {
        kind: kind.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        resources: Resources { cpu_milli: 1000, memory_mb, storage_mb: 0 },
        position,
        announce: true,
        ..Profile::default()
    }
}

async fn wait_for<T>(
    rx: &mut mpsc::UnboundedReceiver<(AgentId, Event)>,
    secs: u64,
    mut f: impl FnMut(&AgentId, &Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((a, e))) => {
                if let Some(t) = f(&a, &e) {
                    return t;
                }
            }
            _ => panic!("event not seen within {secs} s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_exactly_the_matching_agents_in_one_round_and_messages_reach_them() {
    let rts = runtimes(6, 0x41).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let caps = ["vision", "planning", "speech", "chess"];
    // 60 agents, 10 per node: capabilities, kinds, memory and positions vary with i.
    let mut truth = Vec::new();
    for i in 0..60usize {
        let rt = &rts[i % 6];
        let mine: Vec<&str> =
            caps.iter().enumerate().filter(|(c, _)| (i >> c) & 1 == 1 || *c == i % 4).map(|(_, c)| *c).collect();
        let kind = if i % 3 == 0 { "researcher" } else { "worker" };
        let pos = [(i % 10) as f64 * 10.0, (i / 10) as f64 * 10.0, 0.0];
        let p = profile(kind, &mine, 256 * (i as u32 % 8), Some(pos));
        let id = Identity::from_seed(seed(i, 0x42));
        let h = rt.spawn_with(id, p.clone(), probe(&tx, Behaviour::Honest)).await.unwrap();
        truth.push((h.addr, p));
    }
    let check = |c: &Criteria| -> BTreeSet<AgentId> {
        truth
            .iter()
            .filter(|(_, p)| {
                c.capabilities.iter().all(|x| p.capabilities.contains(x))
                    && c.kind.as_ref().is_none_or(|k| *k == p.kind)
                    && p.resources.memory_mb >= c.min.memory_mb
                    && c.near.is_none_or(|(q, r)| {
                        let pos = p.position.unwrap();
                        ((pos[0] - q[0]).powi(2) + (pos[1] - q[1]).powi(2)).sqrt() <= r
                    })
            })
            .map(|(a, _)| a.agent)
            .collect()
    };
    let queries = [
        Criteria::capability("vision"),
        Criteria { capabilities: vec!["planning".into(), "speech".into()], ..Criteria::default() },
        Criteria {
            kind: Some("researcher".into()),
            min: Resources { memory_mb: 1024, ..Resources::default() },
            ..Criteria::default()
        },
        Criteria { capabilities: vec!["chess".into()], near: Some(([30.0, 20.0, 0.0], 25.0)), ..Criteria::default() },
    ];
    for (qi, q) in queries.iter().enumerate() {
        let want = check(q);
        assert!(!want.is_empty(), "query {qi} has matches");
        // From every node: recall 100 %, precision 100 %, 16 set reads in one parallel round.
        for rt in &rts {
            let d = rt.discover(q).await.unwrap();
            let got: BTreeSet<AgentId> = d.agents.iter().map(|f| f.agent).collect();
            assert_eq!(got, want, "query {qi}");
            assert_eq!(d.lookups, 16);
            assert!(d.complete);
            assert_eq!(d.drops.total_bad(), 0);
        }
    }
    // An agent that drops a capability is withdrawn from its set: the next query misses it.
    let (addr, p) = truth.iter().find(|(_, p)| p.capabilities.contains(&"vision".to_string())).unwrap();
    let mut dropped = p.clone();
    dropped.capabilities.retain(|c| c != "vision");
    let owner = rts.iter().find(|r| r.node().id() == addr.node).unwrap();
    owner.reannounce(&addr.agent, dropped).await.unwrap();
    let d = rts[1].discover(&Criteria::capability("vision")).await.unwrap();
    let mut want = check(&Criteria::capability("vision"));
    want.remove(&addr.agent);
    assert_eq!(d.agents.iter().map(|f| f.agent).collect::<BTreeSet<_>>(), want);
    assert_eq!(d.drops.withdrawn, 1);
    // Found agents are reachable: a request from node 0's first agent to each vision agent on
    // other nodes comes back reversed and signed by the recipient.
    let d = rts[0].discover(&Criteria::capability("vision")).await.unwrap();
    let me = truth[0].0.agent;
    for f in d.agents.iter().take(8) {
        let to = AgentAddr::from(f);
        let answer = rts[0].request(&me, to, b"ping").await.unwrap();
        assert_eq!(answer, b"gnip");
    }
    // A one-way message arrives in the recipient's mailbox with the sender proven.
    let target = truth[7].0;
    rts[0].send(&me, target, b"hello").await.unwrap();
    let from = wait_for(&mut rx, 10, |a, e| match e {
        Event::Message { from, body } if *a == target.agent && body == b"hello" => Some(*from),
        _ => None,
    })
    .await;
    assert_eq!(from, me);
    for rt in &rts {
        rt.shutdown();
        rt.node().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_voters_with_nine_malicious_reach_a_certificate_and_each_equivocation_is_caught() {
    let rts = runtimes(5, 0x51).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut voters = Vec::new();
    let mut equivocators = BTreeSet::new();
    for i in 0..30usize {
        // 0..5 silent, 5..9 equivocating, the rest honest.
        let b = if i < 5 {
            Behaviour::Silent
        } else if i < 9 {
            Behaviour::Equivocate
        } else {
            Behaviour::Honest
        };
        let id = Identity::from_seed(seed(i, 0x52));
        if matches!(b, Behaviour::Equivocate) {
            equivocators.insert(id.public_key());
        }
        let mut p = profile("voter", &["vote"], 0, None);
        p.announce = false;
        let h = rts[i % 5].spawn_with(id, p, probe(&tx, b)).await.unwrap();
        voters.push(h.id);
    }
    let mut pp = profile("proposer", &[], 0, None);
    pp.announce = false;
    let proposer = rts[0].spawn_with(Identity::from_seed([0x53; 32]), pp, probe(&tx, Behaviour::Silent)).await.unwrap();
    // Let the votes topic settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = rts[0]
        .propose_from(&proposer.id, b"spawn a researcher", voters.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let mut caught = BTreeSet::new();
    let cert = wait_for(&mut rx, 30, |a, e| match e {
        Event::Decided { decision, .. } if *a == proposer.id => match &**decision {
            Decision::Certified(c) => Some(c.clone()),
            Decision::Expired => panic!("expired"),
        },
        Event::Equivocation { evidence } if *a == proposer.id => {
            assert!(evidence.verify());
            caught.insert(evidence.voter);
            None
        }
        _ => None,
    })
    .await;
    cert.verify().unwrap();
    assert_eq!(cert.proposal, p);
    assert_eq!(cert.choice.as_slice(), b"yes");
    assert!(cert.signers.len() >= 21);
    // A certificate may hold an equivocator's "yes" if its "no" arrived after the certificate
    // formed: that voter did sign "yes", and the honest signers alone are a quorum.
    let honest = cert.signers.iter().filter(|(i, _)| !equivocators.contains(&p.voters[usize::from(*i)])).count();
    assert!(honest >= 17, "{honest}");
    // Every equivocator is caught, with evidence that verifies, and the proposer hears of it
    // (votes that arrive after the certificate are still checked until the deadline).
    while caught.len() < 4 {
        let e = wait_for(&mut rx, 20, |a, e| match e {
            Event::Equivocation { evidence } if *a == proposer.id => Some(evidence.clone()),
            _ => None,
        })
        .await;
        assert!(e.verify());
        caught.insert(e.voter);
    }
    assert!(caught.iter().all(|v| equivocators.contains(v)));
    for rt in &rts {
        rt.shutdown();
        rt.node().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_without_a_quorum_expires() {
    let rts = runtimes(3, 0x61).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut voters = Vec::new();
    for i in 0..30usize {
        // 20 honest of 30 is not more than 2/3.
        let b = if i < 20 { Behaviour::Honest } else { Behaviour::Silent };
        let mut p = profile("voter", &[], 0, None);
        p.announce = false;
        let h = rts[i % 3].spawn_with(Identity::from_seed(seed(i, 0x62)), p, probe(&tx, b)).await.unwrap();
        voters.push(h.id);
    }
    let mut pp = profile("proposer", &[], 0, None);
    pp.announce = false;
    let proposer = rts[1].spawn_with(Identity::from_seed([0x63; 32]), pp, probe(&tx, Behaviour::Silent)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = rts[1].propose_from(&proposer.id, b"move north", voters, Duration::from_secs(3)).await.unwrap();
    let expired = wait_for(&mut rx, 15, |a, e| match e {
        Event::Decided { id, decision } if *a == proposer.id => Some((*id, matches!(**decision, Decision::Expired))),
        _ => None,
    })
    .await;
    assert_eq!(expired, (p.id(), true));
    for rt in &rts {
        assert!(matches!(rt.decision(&p.id()), Some(Decision::Expired)));
        rt.shutdown();
        rt.node().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_share_and_a_sync_are_hash_exact_and_skip_what_is_held() {
    let rts = runtimes(3, 0x71).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut p = profile("learner", &[], 0, None);
    p.announce = false;
    let a = rts[0].spawn_with(Identity::from_seed([0x72; 32]), p.clone(), probe(&tx, Behaviour::Honest)).await.unwrap();
    let b = rts[1].spawn_with(Identity::from_seed([0x73; 32]), p.clone(), probe(&tx, Behaviour::Honest)).await.unwrap();
    let weights: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let memory: Vec<u8> = b"the opponent opens with e4 and castles early".repeat(100);
    // B's node already holds the memory.
    rts[1].node().add_blob(memory.clone());
    let items =
        vec![("memory".to_string(), Arc::new(memory.clone())), ("weights".to_string(), Arc::new(weights.clone()))];
    let started = std::time::Instant::now();
    let results = rts[0].share_knowledge(&Identity::from_seed([0x72; 32]), &[b.addr], "chess", items).await.unwrap();
    let took = started.elapsed();
    assert_eq!(results.len(), 1);
    let ack = results[0].1.clone().unwrap();
    assert_eq!((ack.fetched, ack.skipped, ack.bytes), (1, 1, 10 << 20), "only the weights travel");
    eprintln!("10 MiB share took {took:?}");
    let (items, from) = wait_for(&mut rx, 10, |x, e| match e {
        Event::Knowledge { from, items, .. } if *x == b.id => Some((items.clone(), *from)),
        _ => None,
    })
    .await;
    assert_eq!(from, a.id);
    let w = items.iter().find(|i| i.name.as_str() == "weights").unwrap();
    assert_eq!(*rts[1].knowledge_bytes(w).unwrap(), weights, "hash-exact");
    // A third node syncs the domain from the DHT: it finds A's index (and B holds the same
    // blobs, so both serve them), fetches both items; a second sync fetches nothing.
    let mut synced = None;
    for _ in 0..50 {
        let r = rts[2].sync_knowledge("chess").await.unwrap();
        if r.indexes >= 1 && r.items == 2 {
            synced = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = synced.expect("index published in the DHT");
    assert_eq!((r.fetched, r.skipped, r.bytes), (2, 0, (10 << 20) + memory.len() as u64));
    assert!(r.failed.is_empty());
    let again = rts[2].sync_knowledge("chess").await.unwrap();
    assert_eq!((again.fetched, again.skipped, again.bytes), (0, 2, 0));
    let w = rts[2].knowledge("chess").into_iter().find(|i| i.name.as_str() == "weights").unwrap();
    assert_eq!(*rts[2].knowledge_bytes(&w).unwrap(), weights);
    // The index record names the same index.
    let idx = rts[2].knowledge_index(&a.id, "chess").await.unwrap();
    assert_eq!(idx.items.len(), 2);
    for rt in &rts {
        rt.shutdown();
        rt.node().shutdown().await;
    }
}
