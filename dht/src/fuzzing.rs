//! Entry points for the cargo-fuzz targets in `fuzz/` (one-line targets call these). Each asserts
//! invariants beyond "no panic": canonical round trips, no reply larger than its trigger, no state
//! for unauthenticated peers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::channel::{Channel, ChannelConfig};
use crate::identity::{Identity, NodeRecord};
use crate::wire::packet::{self, Packet};
use crate::wire::{self, Message};

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
        Err(_) => {}
    }
}

/// Message decode: whatever decodes re-encodes to exactly the input.
pub fn message_roundtrip(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode().ok().as_deref(), Some(data));
    }
}

/// Node record decode + verification: anything accepted re-encodes identically and verifies again.
pub fn record_verify(data: &[u8]) {
    if let Ok(rec) = NodeRecord::decode_verified(data) {
        assert_eq!(wire::encode(&rec).ok().as_deref(), Some(data));
        assert!(rec.verify().is_ok());
    }
    if let Ok(rec) = wire::decode::<NodeRecord>(data) {
        assert_eq!(wire::encode(&rec).ok().as_deref(), Some(data));
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
        while let Some(t) = ch.poll_transmit() {
            assert!(t.payload.len() <= d.len(), "reply {} > trigger {}", t.payload.len(), d.len());
            assert_eq!(t.dst, from);
        }
        ch.handle_timeout(now);
        while ch.poll_transmit().is_some() {}
        while ch.poll_event().is_some() {}
        let st = ch.stats();
        assert!(ch.peer_count() as u64 <= st.handshakes_answered);
        assert!(ch.index_count() as u64 <= st.handshakes_answered);
    }
}
