//! Entry points for the cargo-fuzz targets in `fuzz/` (one-line targets call these). Each asserts
//! invariants beyond "no panic": canonical round trips, no reply larger than its trigger, no state
//! for unauthenticated peers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::channel::{Channel, ChannelConfig};
use crate::identity::{Identity, NodeRecord};
use crate::wire::packet::{self, Packet};
use crate::wire::{self, Message};

mod dht_ops;
mod relay_ops;
pub use dht_ops::{Local, Msg, Op, Rec, dht_ops};
pub use relay_ops::relay_ops;

/// The responder identity every fuzz target and the seed corpus use (seed bytes 0x42).
pub fn responder_identity() -> Identity {
    Identity::from_seed([0x42; 32])
}

/// Packet decode: parse never panics, and fixed-layout packets re-encode to the same bytes.
pub fn packet_decode(data: &[u8]) {
    match packet::parse(data) {
        Ok(Packet::Initiation(i)) => assert_eq!(i.to_bytes(), data),
        Ok(Packet::Response(r)) => assert_eq!(r.to_bytes(), data),
        Ok(Packet::CookieReply(c)) => assert_eq!(c.to_bytes(), data),
        Ok(Packet::Transport(t)) => {
            let mut again = packet::transport_header(t.receiver_index, t.counter).to_vec();
            again.extend_from_slice(t.ciphertext);
            assert_eq!(again, data);
        }
        Ok(Packet::RecordRequest(n)) => assert_eq!(packet::record_request(n), data),
        Ok(Packet::RecordReply(n, rec)) => assert_eq!(packet::record_reply(n, rec).as_deref(), Some(data)),
        Ok(Packet::Relayed(c, inner)) => assert_eq!(packet::relayed(c, inner).as_deref(), Some(data)),
        Err(_) => {}
    }
    // The same bytes as a LAN announcement (§15.6, its own port): accepted ones re-encode.
    if let Ok(a) = crate::lan::parse_announce(data) {
        let rec = wire::encode(&a.record).unwrap_or_default();
        let again = crate::lan::encode_announce(&rec, a.port, a.flags & crate::lan::FLAG_ANSWER_ME != 0);
        assert_eq!(again, data);
    }
}

/// Message decode: whatever decodes re-encodes to exactly the input.
pub fn message_roundtrip(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode().ok().as_deref(), Some(data));
    }
}

/// Node record (and reach record) decode + verification: anything accepted re-encodes identically and verifies again.
pub fn record_verify(data: &[u8]) {
    if let Ok(rec) = NodeRecord::decode_verified(data) {
        assert_eq!(wire::encode(&rec).ok().as_deref(), Some(data));
        assert!(rec.verify().is_ok());
    }
    if let Ok(rec) = wire::decode::<NodeRecord>(data) {
        assert_eq!(wire::encode(&rec).ok().as_deref(), Some(data));
    }
    // The same bytes as a reach record (§15.4): canonical, and stored only if it verifies.
    if let Ok(reach) = wire::decode::<wire::ReachRecord>(data) {
        assert_eq!(wire::encode(&reach).ok().as_deref(), Some(data));
        let stored = crate::store::validate(&reach.key(), &wire::Record::Reach(Box::new(reach.clone())));
        assert_eq!(stored.is_ok(), reach.verify().is_ok());
    }
}

/// Splits fuzz input into datagrams: each is a u16 LE length then that many bytes.
fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let (Some(&lo), Some(&hi), true) = (data.first(), data.get(1), out.len() < 64) {
        let rest = data.get(2..).unwrap_or(&[]);
        let n = usize::from(u16::from_le_bytes([lo, hi])).min(rest.len());
        let (d, tail) = rest.split_at(n);
        out.push(d);
        data = tail;
    }
    out
}

/// The handshake responder fed arbitrary datagrams from several sources, under load and not.
/// Invariants: every reply is no larger than the datagram that caused it; peers with state are
/// never more than the handshakes that authenticated; the index table matches.
pub fn handshake_responder(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cfg = ChannelConfig { cookie_threshold_per_s: u32::from(mode % 4), ..ChannelConfig::default() };
    let t0 = Instant::now();
    let mut ch = Channel::new(responder_identity(), cfg, t0);
    for (i, d) in datagrams(rest).into_iter().enumerate() {
        let port = 1000 + u16::try_from(i % 3).unwrap_or(0);
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let now = t0 + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 300);
        ch.handle_datagram(now, from, d);
        assert!(ch.timer_bound_holds());
        while let Some(t) = ch.poll_transmit() {
            assert!(t.payload.len() <= d.len(), "reply {} > trigger {}", t.payload.len(), d.len());
            assert_eq!(t.dst, from);
        }
        ch.handle_timeout(now);
        assert!(ch.timer_bound_holds());
        while ch.poll_transmit().is_some() {}
        while ch.poll_event().is_some() {}
        let st = ch.stats();
        assert!(ch.peer_count() as u64 <= st.handshakes_answered);
        assert!(ch.index_count() as u64 <= st.handshakes_answered);
    }
}

fn signed_identities() -> &'static [crate::identity::Identity] {
    static IDS: std::sync::OnceLock<Vec<crate::identity::Identity>> = std::sync::OnceLock::new();
    IDS.get_or_init(|| (0..32u8).map(|i| Identity::from_seed([i.wrapping_add(1); 32])).collect())
}

/// Routing-table operation sequences: insert (with ping-before-evict answered either way), fail,
/// remove, closest. Invariants after every op: at most k per bucket, the count matches, every node
/// sits in its own bucket, subnet limits hold, `closest` is sorted by distance.
pub fn routing_ops(data: &[u8]) {
    use crate::routing::{Entry, Insert, RoutingConfig, RoutingTable};
    let now = Instant::now();
    let ids = signed_identities();
    let local = Identity::from_seed([0; 32]).id();
    let cfg = RoutingConfig {
        k: 3,
        replacements: 2,
        per_bucket_subnet: 2,
        per_table_subnet: 4,
        exempt_local: false,
        ..RoutingConfig::default()
    };
    let mut t = RoutingTable::new(local, cfg.clone());
    for op in data.chunks(3).take(512) {
        let (a, b, c) =
            (op.first().copied().unwrap_or(0), op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
        let Some(ident) = ids.get(usize::from(b) % ids.len()) else { continue };
        let addr = SocketAddr::from(([10, c % 4, c / 64, 1], 4000));
        let Ok(record) = ident.make_record(u64::from(a), 0, &[addr.into()]) else { continue };
        let id = record.id;
        match a % 4 {
            0 | 1 => {
                if let Insert::PingFirst { ping } =
                    t.insert(now, Entry { record, addr, last_seen: now, failures: 0, failed_at: None })
                {
                    if c % 2 == 0 {
                        t.on_alive(now, &ping);
                    } else {
                        t.on_failed(&ping);
                    }
                }
            }
            2 => {
                t.record_failure(now, now, &id, 2, Duration::from_millis(u64::from(c)));
            }
            _ => t.remove(&id),
        }
        let sizes = t.bucket_sizes();
        assert!(sizes.iter().all(|&(_, n)| n <= cfg.k));
        assert_eq!(sizes.iter().map(|&(_, n)| n).sum::<usize>(), t.len());
        assert!(t.subnet_counts().iter().all(|&n| n <= cfg.per_table_subnet));
        for e in t.entries() {
            assert!(t.bucket_index(&e.id()).is_some());
        }
        let c = t.closest(&id, 64);
        assert!(
            c.windows(2)
                .all(|w| w.first().zip(w.get(1)).is_some_and(|(x, y)| id.distance(&x.id()) < id.distance(&y.id())))
        );
    }
}

/// Store operation sequences: puts of valid and invalid records of every kind from several peers,
/// with and without compare-and-swap, and time passing. Invariants: the item count matches what
/// iteration finds, nothing expired is served, quotas hold.
pub fn store_ops(data: &[u8]) {
    use crate::store::{RecordStore, StoreConfig};
    use crate::wire::bounded::BoundedBytes;
    use crate::wire::{Key, MutableRecord, Record, SetEntry};
    let t0 = Instant::now();
    let ids = signed_identities();
    let cfg = StoreConfig {
        max_items: 40,
        max_bytes: 8 << 10,
        max_per_peer: 12,
        max_set_entries: 4,
        ..StoreConfig::default()
    };
    let mut s = RecordStore::new(cfg.clone());
    let mut now = t0;
    for op in data.chunks(4).take(400) {
        let b = |i: usize| op.get(i).copied().unwrap_or(0);
        let Some(w) = ids.get(usize::from(b(1)) % ids.len()) else { continue };
        let from = crate::identity::NodeId([b(2) % 4; 32]);
        let ttl = Duration::from_secs(u64::from(b(3) % 8) + 1);
        let value = [b(2); 24];
        let (key, rec) = match b(0) % 5 {
            0 => (
                Key::for_immutable(&value),
                Record::Immutable { value: BoundedBytes::try_from(&value[..]).unwrap_or_default() },
            ),
            1 => (Key([b(3); 32]), Record::Immutable { value: BoundedBytes::try_from(&value[..]).unwrap_or_default() }),
            2 => {
                let mut m = MutableRecord {
                    public_key: w.public_key(),
                    salt: BoundedBytes::default(),
                    seq: u64::from(b(3) % 4),
                    value: BoundedBytes::try_from(&value[..4]).unwrap_or_default(),
                    signature: [0; 64],
                };
                if b(2) % 3 != 0 {
                    m.signature = w.sign(&m.signed_bytes().unwrap_or_default());
                }
                (m.key(), Record::Mutable(m))
            }
            3 => {
                let key = Key([b(2) % 2; 32]);
                let mut e = SetEntry {
                    public_key: w.public_key(),
                    seq: u64::from(b(3) % 3),
                    ttl_s: u32::from(b(3)),
                    value: BoundedBytes::default(),
                    signature: [0; 64],
                };
                e.signature = w.sign(&e.signed_bytes(&key).unwrap_or_default());
                (key, Record::SetEntry(e))
            }
            _ => {
                now += Duration::from_millis(u64::from(b(1)) * 40);
                s.expire(now);
                continue;
            }
        };
        let cas = (b(1) % 4 == 0).then_some(u64::from(b(2) % 3));
        let _ = s.put(now, key, rec, ttl, cas, from);
        assert!(s.len() <= cfg.max_items);
        assert!(s.bytes() <= cfg.max_bytes);
        assert_eq!(s.items().count(), s.len());
        for k in s.keys() {
            for r in s.get(now, k) {
                assert!(crate::store::validate(k, &r).is_ok());
            }
        }
        let mut per_peer = std::collections::HashMap::new();
        for (_, i) in s.items() {
            *per_peer.entry(i.owner).or_insert(0usize) += 1;
        }
        assert!(per_peer.values().all(|&n| n <= cfg.max_per_peer));
    }
}

/// Arbitrary plaintext messages from an authenticated peer to a `Dht` (both on virtual time, with
/// a real session between them), then the peer's lookups and timers run. Invariants: nothing
/// panics, requests and queries stay within their caps, the store within its quotas, and every
/// table entry's record verifies.
pub fn dht_messages(data: &[u8]) {
    use crate::channel::PeerInfo;
    use crate::proto::Target;
    use crate::testing::{Net, addr, config};
    let mut net = Net::new(vec![config(0), config(1)]);
    let Some(target) = net.nodes.get(1).map(|n| n.record().clone()) else { return };
    let now = net.now;
    if let Some(n) = net.nodes.get_mut(0) {
        let _ = n.bootstrap(now, vec![Target::Record(target.clone())]);
    }
    net.run();
    let to = PeerInfo { id: target.id, noise_key: target.noise_key, addr: addr(1) };
    for (i, d) in datagrams(data).into_iter().enumerate() {
        let now = net.now;
        if let Some(n) = net.nodes.get_mut(0) {
            let _ = n.send_raw(now, &to, d);
        }
        net.run();
        assert!(net.nodes.iter().all(|n| n.channel().timer_bound_holds()));
        if i % 8 == 7 {
            net.advance(Duration::from_secs(3));
            net.run();
        }
    }
    net.advance(Duration::from_secs(40));
    net.run();
    let Some(n) = net.nodes.get(1) else { return };
    assert!(n.pending_requests() <= 4096 && n.pending_queries() <= 256);
    assert!(n.store().len() <= 100_000);
    assert!(n.table().entries().all(|e| e.record.verify().is_ok()));
}

/// Session receive (§5.8): a receiving session fed, by `data`, genuine packets its peer sealed (in
/// any order, any number of times), forged packets (arbitrary counters and bytes), and jumps of
/// the peer's counter. Invariants: a genuine packet opens once, with the plaintext that was
/// sealed, and again only as a replay; nothing forged ever opens; a counter more than the window
/// behind the newest accepted one is refused as too old.
pub fn session_receive(data: &[u8]) {
    use crate::handshake::noise::SessionKeys;
    use crate::handshake::replay::{ReplayError, WINDOW};
    use crate::handshake::session::{Session, SessionError};
    use crate::wire::limits::TRANSPORT_HEADER_LEN;
    let mut tx = Session::new(1, 2, &SessionKeys { send: [7; 32], recv: [8; 32] });
    let mut rx = Session::new(2, 1, &SessionKeys { send: [8; 32], recv: [7; 32] });
    let mut sealed: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut opened = std::collections::BTreeSet::new();
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 4 {
            0 => {
                let plaintext = vec![op; usize::from(arg % 64)];
                if let Ok(c) = tx.seal_into(&plaintext, &mut out) {
                    let ct = out.get(TRANSPORT_HEADER_LEN..).unwrap_or_default().to_vec();
                    if sealed.len() < 4096 {
                        sealed.push((c, ct, plaintext));
                    }
                }
            }
            1 => {
                let Some((c, ct, plaintext)) = sealed.get(usize::from(arg) % sealed.len().max(1)) else { continue };
                let newest = opened.last().copied();
                let result = rx.open_into(*c, ct, &mut buf);
                match result {
                    Ok(()) => {
                        assert!(opened.insert(*c), "counter {c} opened twice");
                        assert_eq!(&buf, plaintext);
                    }
                    Err(SessionError::Replay(ReplayError::Duplicate)) => assert!(opened.contains(c)),
                    Err(SessionError::Replay(ReplayError::TooOld)) => {
                        assert!(newest.is_some_and(|n| n >= WINDOW && *c <= n - WINDOW), "{c} refused as too old")
                    }
                    Err(_) => {}
                }
                assert!(
                    !matches!(result, Err(SessionError::Decrypt | SessionError::Exhausted | SessionError::TooLarge)),
                    "genuine packet {c} refused: {result:?}"
                );
            }
            2 => {
                let counter = u64::from(arg) * 37 + u64::from(bytes.next().unwrap_or(0));
                let len = usize::from(bytes.next().unwrap_or(0) % 80);
                let forged: Vec<u8> = bytes.by_ref().take(len).collect();
                assert!(rx.open_into(counter, &forged, &mut buf).is_err(), "a forged packet opened");
            }
            _ => {
                // The peer sends (and loses) a run of up to 4,080 packets: the window moves on.
                tx.skip_sent(u64::from(arg) * 16);
            }
        }
    }
}

/// The handshake initiator fed arbitrary datagrams from the responder's address while its
/// initiation is outstanding (and, when the first byte is even, the genuine response first).
/// Invariants: a session exists only after the genuine response; garbage never establishes one,
/// never makes the channel send more than a retransmission per datagram, and leaves the timer
/// bound intact.
pub fn handshake_initiator(data: &[u8]) {
    use crate::channel::{ChannelEvent, PeerInfo};
    let Some((&mode, rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let responder_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 2000));
    let me = SocketAddr::from((Ipv4Addr::LOCALHOST, 1000));
    let responder_id = responder_identity();
    let mut responder = Channel::new(Identity::from_seed([0x42; 32]), ChannelConfig::default(), t0);
    let mut ch = Channel::new(Identity::from_seed([0x43; 32]), ChannelConfig::default(), t0);
    let to = PeerInfo { id: responder_id.id(), noise_key: responder_id.noise_public(), addr: responder_addr };
    if ch.send(t0, &to, b"hello").is_err() {
        return;
    }
    let Some(initiation) = ch.poll_transmit() else { return };
    let genuine = mode % 2 == 0;
    if genuine {
        responder.handle_datagram(t0, me, &initiation.payload);
        while let Some(t) = responder.poll_transmit() {
            ch.handle_datagram(t0, responder_addr, &t.payload);
        }
    }
    let mut established = false;
    while let Some(e) = ch.poll_event() {
        established |= matches!(e, ChannelEvent::Established { .. });
    }
    assert_eq!(established, genuine, "a session only after the genuine response");
    for (i, d) in datagrams(rest).into_iter().enumerate() {
        let now = t0 + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 50);
        ch.handle_datagram(now, responder_addr, d);
        ch.handle_timeout(now);
        assert!(ch.timer_bound_holds());
        let mut sent = 0;
        while ch.poll_transmit().is_some() {
            sent += 1;
        }
        // At most a retransmitted initiation (or a queued packet flushed) per datagram and tick.
        assert!(sent <= 2, "{sent} datagrams in answer to one");
        while let Some(e) = ch.poll_event() {
            if let ChannelEvent::Established { .. } = e {
                assert!(genuine, "garbage established a session");
            }
        }
    }
    assert!(ch.session_count() <= 1);
}
