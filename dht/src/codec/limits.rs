//! Named limits of wire-spec v1 (§2, §8). Every bound a decoder enforces lives here.

/// Protocol version carried in every packet header and node record.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest UDP datagram a node sends or accepts.
pub const MAX_DATAGRAM: usize = 1200;
/// Packet header: type, version, two reserved zero bytes.
pub const HEADER_LEN: usize = 4;
/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Transport header: header, receiver index (4), counter (8).
pub const TRANSPORT_HEADER_LEN: usize = HEADER_LEN + 4 + 8;
/// Largest transport plaintext (an encoded `Message`).
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - TRANSPORT_HEADER_LEN - TAG_LEN;
/// Addresses in one node record.
pub const MAX_RECORD_ADDRS: usize = 4;
/// Node records in one `Nodes` message.
pub const MAX_NODES_PER_MESSAGE: usize = 16;
/// Records in one `Value` message.
pub const MAX_RECORDS_PER_VALUE: usize = 8;
/// Value bytes of an immutable or mutable record.
pub const MAX_VALUE_LEN: usize = 900;
/// Salt bytes of a mutable record.
pub const MAX_SALT_LEN: usize = 64;
/// Value bytes of one multi-writer set entry.
pub const MAX_SET_VALUE_LEN: usize = 256;
/// Bytes of the human-readable detail in an `Error` message.
pub const MAX_ERROR_DETAIL_LEN: usize = 128;
/// Largest encoded node record: 1 + 32·3 + 10 + 10 + 1 + 4·(1+16+3) + 64.
pub const MAX_RECORD_LEN: usize = 262;
/// A record request is zero-padded to exactly this size, so its reply is never larger (§4.6).
pub const RECORD_REQUEST_LEN: usize = 288;
