//! Packet layouts (wire-spec §4): the fixed-size framing around the Noise handshake, cookie replies,
//! record requests and transport data. Pure bytes <-> fields; no crypto, no state.
//!
//! Every packet starts with a 4-byte header: type, version, two reserved zero bytes. Types are below
//! 0x40 so the first byte always has bit 0x40 clear (QUIC v1 packets always have it set, §4.1).

use super::limits::{HEADER_LEN, MAX_DATAGRAM, PROTOCOL_VERSION, RECORD_REQUEST_LEN, TAG_LEN, TRANSPORT_HEADER_LEN};

/// Packet type byte (§4.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PacketType {
    /// Noise IK message 1.
    Initiation = 1,
    /// Noise IK message 2.
    Response = 2,
    /// Stateless cookie challenge answering an initiation under load.
    CookieReply = 3,
    /// Encrypted transport data.
    Transport = 4,
    /// Ask a node for its signed record (padded; §4.6).
    RecordRequest = 5,
    /// A node's signed record, answering a record request.
    RecordReply = 6,
    /// A datagram carried through a relay circuit (§15.3): header ‖ circuit ‖ inner datagram.
    Relayed = 7,
}

/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = 240;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 80;
/// Offset of mac1 in an initiation; mac1 covers every byte before it.
pub const INITIATION_MAC1: usize = 208;
/// Offset of mac1 in a response.
pub const RESPONSE_MAC1: usize = 60;
/// Noise-encrypted static key: 32 bytes + tag.
pub const ENC_STATIC_LEN: usize = 32 + TAG_LEN;
/// Plaintext handshake payload: ed25519 key (32) ‖ binding signature (64) ‖ timestamp (8).
pub const INIT_PAYLOAD_LEN: usize = 104;
/// Encrypted handshake payload.
pub const ENC_PAYLOAD_LEN: usize = INIT_PAYLOAD_LEN + TAG_LEN;
/// Fixed part of a record reply before the record bytes.
pub const RECORD_REPLY_HEADER_LEN: usize = HEADER_LEN + 8;
/// Header of a relayed frame: packet header ‖ circuit id (u64 LE).
pub const RELAYED_HEADER_LEN: usize = HEADER_LEN + 8;
/// Largest relayed frame: a 1,460-byte inner datagram (room for QUIC's largest packets, 1,452)
/// plus the header; 1,472 is the UDP payload of a 1,500-byte IPv4 MTU (§15.3).
pub const MAX_RELAYED_LEN: usize = 1472;

/// Why bytes are not a well-formed packet (§4.7). Each maps to a drop reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum PacketError {
    /// Zero-length datagram.
    #[error("empty datagram")]
    Empty,
    /// Longer than 1200 bytes.
    #[error("datagram larger than 1200 bytes")]
    TooLarge,
    /// First byte has bit 0x40 set: a QUIC packet, not ours.
    #[error("QUIC bit set")]
    QuicBit,
    /// Type byte not in §4.2.
    #[error("unknown packet type")]
    UnknownType,
    /// Version byte is not 1.
    #[error("unsupported protocol version")]
    WrongVersion,
    /// Reserved header bytes or padding not zero.
    #[error("reserved bytes not zero")]
    Reserved,
    /// Wrong length for the packet type.
    #[error("wrong length for packet type")]
    BadLength,
}

/// Handshake initiation (§4.3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Initiation {
    /// Initiator's session index.
    pub sender_index: u32,
    /// Initiator's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Noise-encrypted initiator static key.
    pub enc_static: [u8; ENC_STATIC_LEN],
    /// Noise-encrypted payload.
    pub enc_payload: [u8; ENC_PAYLOAD_LEN],
    /// MAC keyed by the responder's static key.
    pub mac1: [u8; 16],
    /// MAC keyed by a cookie, or zeros.
    pub mac2: [u8; 16],
}

/// Handshake response (§4.4).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    /// Responder's session index.
    pub sender_index: u32,
    /// The initiator's index, echoed.
    pub receiver_index: u32,
    /// Responder's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Noise-encrypted empty payload (tag only).
    pub enc_empty: [u8; TAG_LEN],
    /// MAC keyed by the initiator's static key.
    pub mac1: [u8; 16],
    /// MAC keyed by a cookie, or zeros.
    pub mac2: [u8; 16],
}

/// Cookie reply (§4.5).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CookieReply {
    /// The initiation's sender index, echoed.
    pub receiver_index: u32,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// Encrypted 32-byte cookie plus tag.
    pub enc_cookie: [u8; 48],
}

/// Transport data (§4.8), borrowing the ciphertext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transport<'a> {
    /// The receiver's session index.
    pub receiver_index: u32,
    /// Per-session packet counter; the AEAD nonce.
    pub counter: u64,
    /// Ciphertext and tag.
    pub ciphertext: &'a [u8],
}

/// A parsed packet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Packet<'a> {
    /// Type 1.
    Initiation(Initiation),
    /// Type 2.
    Response(Response),
    /// Type 3.
    CookieReply(CookieReply),
    /// Type 4.
    Transport(Transport<'a>),
    /// Type 5: the requester's nonce.
    RecordRequest([u8; 8]),
    /// Type 6: the echoed nonce and the record bytes.
    RecordReply([u8; 8], &'a [u8]),
    /// Type 7: the circuit id and the inner datagram (empty for a leg keep-alive).
    Relayed(u64, &'a [u8]),
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

/// Parses one datagram. Checks, in order: size, QUIC bit, type, version, reserved bytes, length.
pub fn parse(b: &[u8]) -> Result<Packet<'_>, PacketError> {
    let first = *b.first().ok_or(PacketError::Empty)?;
    let max = if first == PacketType::Relayed as u8 { MAX_RELAYED_LEN } else { MAX_DATAGRAM };
    if b.len() > max {
        return Err(PacketError::TooLarge);
    }
    if first & 0x40 != 0 {
        return Err(PacketError::QuicBit);
    }
    if !(1..=7).contains(&first) {
        return Err(PacketError::UnknownType);
    }
    if b.len() < HEADER_LEN {
        return Err(PacketError::BadLength);
    }
    if b.get(1) != Some(&PROTOCOL_VERSION) {
        return Err(PacketError::WrongVersion);
    }
    if b.get(2..4) != Some(&[0, 0][..]) {
        return Err(PacketError::Reserved);
    }
    let len_is = |n: usize| if b.len() == n { Ok(()) } else { Err(PacketError::BadLength) };
    Ok(match first {
        1 => {
            len_is(INITIATION_LEN)?;
            Packet::Initiation(Initiation {
                sender_index: u32_at(b, 4),
                ephemeral: arr(b, 8),
                enc_static: arr(b, 40),
                enc_payload: arr(b, 88),
                mac1: arr(b, INITIATION_MAC1),
                mac2: arr(b, INITIATION_MAC1 + 16),
            })
        }
        2 => {
            len_is(RESPONSE_LEN)?;
            Packet::Response(Response {
                sender_index: u32_at(b, 4),
                receiver_index: u32_at(b, 8),
                ephemeral: arr(b, 12),
                enc_empty: arr(b, 44),
                mac1: arr(b, RESPONSE_MAC1),
                mac2: arr(b, RESPONSE_MAC1 + 16),
            })
        }
        3 => {
            len_is(COOKIE_REPLY_LEN)?;
            Packet::CookieReply(CookieReply { receiver_index: u32_at(b, 4), nonce: arr(b, 8), enc_cookie: arr(b, 32) })
        }
        4 => {
            if b.len() < TRANSPORT_HEADER_LEN + TAG_LEN {
                return Err(PacketError::BadLength);
            }
            Packet::Transport(Transport {
                receiver_index: u32_at(b, 4),
                counter: u64::from_le_bytes(arr(b, 8)),
                ciphertext: b.get(TRANSPORT_HEADER_LEN..).unwrap_or(&[]),
            })
        }
        5 => {
            len_is(RECORD_REQUEST_LEN)?;
            if b.get(12..).is_some_and(|pad| pad.iter().any(|&x| x != 0)) {
                return Err(PacketError::Reserved);
            }
            Packet::RecordRequest(arr(b, 4))
        }
        6 => {
            if b.len() <= RECORD_REPLY_HEADER_LEN || b.len() >= RECORD_REQUEST_LEN {
                return Err(PacketError::BadLength);
            }
            Packet::RecordReply(arr(b, 4), b.get(RECORD_REPLY_HEADER_LEN..).unwrap_or(&[]))
        }
        _ => {
            if b.len() < RELAYED_HEADER_LEN {
                return Err(PacketError::BadLength);
            }
            Packet::Relayed(u64::from_le_bytes(arr(b, 4)), b.get(RELAYED_HEADER_LEN..).unwrap_or(&[]))
        }
    })
}

/// Writes the header of a relayed frame on `circuit` (the inner datagram follows it).
pub fn relayed_header(circuit: u64) -> [u8; RELAYED_HEADER_LEN] {
    let mut h = [0u8; RELAYED_HEADER_LEN];
    h[0] = PacketType::Relayed as u8;
    h[1] = PROTOCOL_VERSION;
    h[4..12].copy_from_slice(&circuit.to_le_bytes());
    h
}

/// Encodes a relayed frame; `None` if `inner` is longer than a frame can carry.
pub fn relayed(circuit: u64, inner: &[u8]) -> Option<Vec<u8>> {
    if RELAYED_HEADER_LEN + inner.len() > MAX_RELAYED_LEN {
        return None;
    }
    let mut v = Vec::with_capacity(RELAYED_HEADER_LEN + inner.len());
    v.extend_from_slice(&relayed_header(circuit));
    v.extend_from_slice(inner);
    Some(v)
}

fn header(t: PacketType, out: &mut Vec<u8>) {
    out.extend_from_slice(&[t as u8, PROTOCOL_VERSION, 0, 0]);
}

impl Initiation {
    /// Encodes the initiation (240 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(INITIATION_LEN);
        header(PacketType::Initiation, &mut v);
        v.extend_from_slice(&self.sender_index.to_le_bytes());
        v.extend_from_slice(&self.ephemeral);
        v.extend_from_slice(&self.enc_static);
        v.extend_from_slice(&self.enc_payload);
        v.extend_from_slice(&self.mac1);
        v.extend_from_slice(&self.mac2);
        v
    }
}

impl Response {
    /// Encodes the response (92 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RESPONSE_LEN);
        header(PacketType::Response, &mut v);
        v.extend_from_slice(&self.sender_index.to_le_bytes());
        v.extend_from_slice(&self.receiver_index.to_le_bytes());
        v.extend_from_slice(&self.ephemeral);
        v.extend_from_slice(&self.enc_empty);
        v.extend_from_slice(&self.mac1);
        v.extend_from_slice(&self.mac2);
        v
    }
}

impl CookieReply {
    /// Encodes the cookie reply (80 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(COOKIE_REPLY_LEN);
        header(PacketType::CookieReply, &mut v);
        v.extend_from_slice(&self.receiver_index.to_le_bytes());
        v.extend_from_slice(&self.nonce);
        v.extend_from_slice(&self.enc_cookie);
        v
    }
}

/// Writes a transport header into `out[..16]`.
pub fn transport_header(receiver_index: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0u8; TRANSPORT_HEADER_LEN];
    h[0] = PacketType::Transport as u8;
    h[1] = PROTOCOL_VERSION;
    h[4..8].copy_from_slice(&receiver_index.to_le_bytes());
    h[8..16].copy_from_slice(&counter.to_le_bytes());
    h
}

/// Encodes a record request (288 bytes, zero-padded).
pub fn record_request(nonce: [u8; 8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_REQUEST_LEN);
    header(PacketType::RecordRequest, &mut v);
    v.extend_from_slice(&nonce);
    v.resize(RECORD_REQUEST_LEN, 0);
    v
}

/// Encodes a record reply; `None` if the record would make it as large as a request.
pub fn record_reply(nonce: [u8; 8], record: &[u8]) -> Option<Vec<u8>> {
    if record.is_empty() || RECORD_REPLY_HEADER_LEN + record.len() >= RECORD_REQUEST_LEN {
        return None;
    }
    let mut v = Vec::with_capacity(RECORD_REPLY_HEADER_LEN + record.len());
    header(PacketType::RecordReply, &mut v);
    v.extend_from_slice(&nonce);
    v.extend_from_slice(record);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_fixed_packets() {
        let i = Initiation {
            sender_index: 7,
            ephemeral: [1; 32],
            enc_static: [2; 48],
            enc_payload: [3; 120],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let b = i.to_bytes();
        assert_eq!(b.len(), INITIATION_LEN);
        assert_eq!(parse(&b), Ok(Packet::Initiation(i)));
        let r = Response {
            sender_index: 1,
            receiver_index: 2,
            ephemeral: [6; 32],
            enc_empty: [7; 16],
            mac1: [8; 16],
            mac2: [9; 16],
        };
        let b = r.to_bytes();
        assert_eq!(b.len(), RESPONSE_LEN);
        assert_eq!(parse(&b), Ok(Packet::Response(r)));
        let c = CookieReply { receiver_index: 3, nonce: [1; 24], enc_cookie: [2; 48] };
        let b = c.to_bytes();
        assert_eq!(b.len(), COOKIE_REPLY_LEN);
        assert_eq!(parse(&b), Ok(Packet::CookieReply(c)));
        let b = record_request([9; 8]);
        assert_eq!(parse(&b), Ok(Packet::RecordRequest([9; 8])));
    }

    #[test]
    fn header_checks_in_order() {
        assert_eq!(parse(&[]), Err(PacketError::Empty));
        assert_eq!(parse(&[0x41; 50]), Err(PacketError::QuicBit));
        assert_eq!(parse(&[0x08, 1, 0, 0]), Err(PacketError::UnknownType));
        assert_eq!(parse(&[0x07, 1, 0, 0]), Err(PacketError::BadLength));
        assert_eq!(parse(&[0x07; 1473]), Err(PacketError::TooLarge));
        assert_eq!(parse(&[0x04, 2, 0, 0]), Err(PacketError::WrongVersion));
        assert_eq!(parse(&[0x04, 1, 1, 0]), Err(PacketError::Reserved));
        assert_eq!(parse(&[0x04, 1, 0, 0, 1]), Err(PacketError::BadLength));
        assert_eq!(parse(&[0x01; 1201]), Err(PacketError::TooLarge));
        let mut req = record_request([0; 8]);
        req[100] = 1;
        assert_eq!(parse(&req), Err(PacketError::Reserved));
    }

    #[test]
    fn every_type_byte_has_quic_bit_clear() {
        for t in 1u8..=7 {
            assert_eq!(t & 0x40, 0);
        }
    }

    #[test]
    fn relayed_frames_roundtrip_up_to_their_own_limit() {
        let b = relayed(0x0102_0304_0506_0708, &[0x45; 1460]).unwrap();
        assert_eq!(b.len(), MAX_RELAYED_LEN);
        assert_eq!(parse(&b), Ok(Packet::Relayed(0x0102_0304_0506_0708, &[0x45; 1460][..])));
        assert!(relayed(1, &[0; 1461]).is_none());
        assert_eq!(parse(&relayed(9, &[]).unwrap()), Ok(Packet::Relayed(9, &[][..])));
    }

    #[test]
    fn record_reply_never_reaches_request_size() {
        assert!(record_reply([0; 8], &[0; RECORD_REQUEST_LEN - RECORD_REPLY_HEADER_LEN]).is_none());
        assert!(record_reply([0; 8], &[0; 262]).is_some());
    }
}
