//! Counters the sans-IO cores expose: every dropped packet is counted under one named reason
//! (wire-spec §9), and a few totals. Drivers export them (logs today, Prometheus later).

use std::fmt;

use crate::wire::packet::PacketError;

macro_rules! reasons {
    ($($(#[$m:meta])* $v:ident = $name:literal,)*) => {
        /// Why an incoming packet or message was dropped.
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
        pub enum DropReason { $($(#[$m])* $v,)* }
        impl DropReason {
            /// Every reason, in order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// The stable snake_case name used in metrics and wire-spec §9.
            pub fn name(self) -> &'static str { match self { $(DropReason::$v => $name,)* } }
        }
    };
}

reasons! {
    /// Zero-length datagram.
    Empty = "empty",
    /// Larger than 1200 bytes.
    TooLarge = "too_large",
    /// QUIC bit set: not a DHT packet.
    QuicBit = "quic_bit",
    /// Unknown packet type.
    UnknownType = "unknown_type",
    /// Unsupported protocol version.
    WrongVersion = "wrong_version",
    /// Reserved bytes or padding non-zero.
    Reserved = "reserved_nonzero",
    /// Wrong length for the packet type.
    BadLength = "bad_length",
    /// mac1 did not verify.
    BadMac1 = "bad_mac1",
    /// Under load and mac2 missing or wrong: a cookie reply was sent instead.
    CookieRequired = "cookie_required",
    /// Handshake AEAD failed (wrong key, tampered, not for us).
    HandshakeDecrypt = "handshake_decrypt",
    /// A public key gave an all-zero Diffie-Hellman result.
    LowOrderKey = "low_order_key",
    /// Initiator's static key not bound to its ed25519 identity.
    BadBinding = "bad_identity_binding",
    /// The initiator is not the node we meant to reach.
    IdentityMismatch = "identity_mismatch",
    /// Initiation timestamp not newer than the last one accepted from that node.
    StaleTimestamp = "stale_timestamp",
    /// No session or handshake with this receiver index.
    UnknownIndex = "unknown_index",
    /// A cookie reply we did not ask for or already used.
    UnexpectedCookie = "unexpected_cookie",
    /// Cookie reply did not decrypt.
    BadCookie = "bad_cookie",
    /// Transport counter already seen.
    Replay = "replay",
    /// Transport counter behind the replay window.
    TooOld = "too_old",
    /// Transport AEAD failed.
    Decrypt = "decrypt",
    /// Session past its lifetime or counter limit.
    SessionExpired = "session_expired",
    /// Peer table full: no state for a new peer.
    TableFull = "table_full",
    /// The event queue toward the layer above was full (the driver is not keeping up).
    QueueFull = "queue_full",
    /// Record request while we have no record to give.
    NoRecord = "no_record",
    /// Record reply nobody asked for.
    UnsolicitedRecord = "unsolicited_record",
    /// Record reply with an invalid record.
    BadRecord = "bad_record",
    /// Transport plaintext is not a canonical message.
    MalformedMessage = "malformed_message",
    /// A response to no outstanding request.
    UnexpectedResponse = "unexpected_response",
    /// A `Value` record that does not validate against its key (wrong key, bad signature).
    InvalidValue = "invalid_value",
    /// An initiation over the per-address or per-IP handshake limit (§8.1).
    RateLimitedHandshake = "rate_limited_handshake",
    /// A record request over the per-IP limit.
    RateLimitedRecordRequest = "rate_limited_record_request",
    /// A request from a peer over its request limit.
    RateLimitedRequest = "rate_limited_request",
    /// A store from a peer over its store limit (answered with `Error` RATE_LIMITED).
    RateLimitedStore = "rate_limited_store",
    /// A relay frame (type 7) reached the channel: this node has no data plane (§15.3).
    RelayFrame = "relay_frame",
}

impl From<PacketError> for DropReason {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::Empty => DropReason::Empty,
            PacketError::TooLarge => DropReason::TooLarge,
            PacketError::QuicBit => DropReason::QuicBit,
            PacketError::UnknownType => DropReason::UnknownType,
            PacketError::WrongVersion => DropReason::WrongVersion,
            PacketError::Reserved => DropReason::Reserved,
            PacketError::BadLength => DropReason::BadLength,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters indexed by reason.
#[derive(Clone, PartialEq, Eq)]
pub struct Drops([u64; 48]);

impl Default for Drops {
    fn default() -> Self {
        Drops([0; 48])
    }
}

impl Drops {
    /// Counts one drop.
    pub fn add(&mut self, r: DropReason) {
        if let Some(c) = self.0.get_mut(r as usize) {
            *c += 1;
        }
    }
    /// Drops counted for `r`.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0.get(r as usize).copied().unwrap_or(0)
    }
    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Non-zero counters.
    pub fn nonzero(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).filter(|&(_, n)| n > 0).collect()
    }
    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &Drops) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

impl fmt::Debug for Drops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.nonzero().into_iter().map(|(r, n)| (r.name(), n))).finish()
    }
}

/// Upper bounds (milliseconds) of the latency histogram buckets; a last bucket holds the rest.
pub const LATENCY_BOUNDS_MS: [u64; 14] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000];

/// A latency histogram with fixed buckets ([`LATENCY_BOUNDS_MS`]), as Prometheus exports them.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one counts those above every bound.
    pub buckets: [u64; LATENCY_BOUNDS_MS.len() + 1],
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
    /// Observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: std::time::Duration) {
        let ms = d.as_millis();
        let i = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= u128::from(b)).unwrap_or(LATENCY_BOUNDS_MS.len());
        if let Some(c) = self.buckets.get_mut(i) {
            *c += 1;
        }
        self.sum_us = self.sum_us.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.count += 1;
    }
}

/// Totals kept by the channel.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    /// Drops by reason.
    pub drops: Drops,
    /// Datagrams handed to the core.
    pub packets_in: u64,
    /// Datagrams the core asked to send.
    pub packets_out: u64,
    /// Handshake initiations sent (first attempts).
    pub handshakes_initiated: u64,
    /// Handshakes completed as initiator.
    pub handshakes_completed: u64,
    /// Initiations answered with a fresh response.
    pub handshakes_answered: u64,
    /// Retransmitted initiations answered from the response cache.
    pub responses_replayed: u64,
    /// Cookie replies sent.
    pub cookies_sent: u64,
    /// Handshakes abandoned after all retries.
    pub handshakes_failed: u64,
    /// Sessions confirmed (either role).
    pub sessions_established: u64,
    /// Keepalives (empty transport packets) received.
    pub keepalives_in: u64,
    /// Record requests answered.
    pub records_served: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_and_names_unique() {
        assert!(DropReason::ALL.len() <= 48);
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
