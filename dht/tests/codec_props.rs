//! Property tests for the codecs: every message and record round-trips through its canonical
//! encoding, and decoding arbitrary or mutated bytes never panics and never accepts anything
//! that does not re-encode to the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Instant;

use proptest::prelude::*;
use suprnova_dht::channel::{Channel, ChannelConfig};
use suprnova_dht::identity::{Identity, NodeId, NodeRecord};
use suprnova_dht::wire::bounded::{BoundedBytes, BoundedString, BoundedVec};
use suprnova_dht::wire::limits::{MAX_PLAINTEXT, MAX_RECORD_LEN};
use suprnova_dht::wire::packet;
use suprnova_dht::wire::{self, Body, Key, Message, MutableRecord, ReachRecord, Record, RelayRef, SetEntry, WireAddr};

fn addr() -> impl Strategy<Value = WireAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, p)| WireAddr::V4(ip, p)),
        (any::<[u8; 16]>(), 1u16..).prop_map(|(ip, p)| WireAddr::V6(ip, p)),
    ]
}

fn bytes<const N: usize>(max: usize) -> impl Strategy<Value = BoundedBytes<N>> {
    proptest::collection::vec(any::<u8>(), 0..=max.min(N)).prop_map(|v| BoundedBytes::try_from(&v[..]).unwrap())
}

fn sig() -> impl Strategy<Value = [u8; 64]> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        s
    })
}

fn node_record() -> impl Strategy<Value = NodeRecord> {
    (any::<[u8; 32]>(), any::<u64>(), any::<u64>(), proptest::collection::vec(addr(), 0..=4))
        .prop_map(|(seed, seq, caps, addrs)| Identity::from_seed(seed).make_record(seq, caps, &addrs).unwrap())
}

fn set_entry() -> impl Strategy<Value = SetEntry> {
    (any::<[u8; 32]>(), any::<u64>(), any::<u32>(), bytes::<256>(256), sig())
        .prop_map(|(public_key, seq, ttl_s, value, signature)| SetEntry { public_key, seq, ttl_s, value, signature })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        bytes::<900>(900).prop_map(|value| Record::Immutable { value }),
        (any::<[u8; 32]>(), bytes::<64>(64), any::<u64>(), bytes::<900>(900), sig()).prop_map(
            |(public_key, salt, seq, value, signature)| {
                Record::Mutable(MutableRecord { public_key, salt, seq, value, signature })
            }
        ),
        (any::<[u8; 32]>(), any::<u64>(), any::<u32>(), bytes::<256>(256), sig()).prop_map(
            |(public_key, seq, ttl_s, value, signature)| Record::SetEntry(SetEntry {
                public_key,
                seq,
                ttl_s,
                value,
                signature
            })
        ),
        (any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec((any::<[u8; 32]>(), addr()), 0..=2)).prop_map(
            |(seed, seq, relays)| {
                let me = Identity::from_seed(seed);
                let node = me.make_record(seq, 2, &[]).unwrap();
                let relays =
                    relays.into_iter().map(|(k, addr)| RelayRef { id: NodeId(k), noise_key: k, addr }).collect();
                Record::Reach(Box::new(ReachRecord::sign(&me, node, seq, relays).unwrap()))
            }
        ),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::Ping),
        (addr(), any::<u64>()).prop_map(|(observed, record_seq)| Body::Pong { observed, record_seq }),
        any::<[u8; 32]>().prop_map(|t| Body::FindNode { target: NodeId(t) }),
        (1u8.., proptest::collection::vec(node_record(), 0..=4))
            .prop_map(|(total, n)| Body::Nodes { total, nodes: BoundedVec::try_from(n).unwrap() }),
        any::<[u8; 32]>().prop_map(|k| Body::FindValue { key: Key(k) }),
        (any::<[u8; 32]>(), proptest::collection::vec(record(), 0..=3))
            .prop_map(|(k, r)| Body::Value { key: Key(k), records: BoundedVec::try_from(r).unwrap() }),
        (any::<[u8; 32]>(), record(), any::<u32>(), any::<Option<u64>>())
            .prop_map(|(k, record, ttl_s, expected_seq)| Body::Store { key: Key(k), record, ttl_s, expected_seq }),
        any::<[u8; 32]>().prop_map(|k| Body::StoreAck { key: Key(k) }),
        (any::<u16>(), "\\PC{0,40}").prop_map(|(code, d)| Body::Error { code, detail: BoundedString::truncated(&d) }),
        (any::<[u8; 32]>(), any::<Option<[u8; 32]>>()).prop_map(|(k, after)| Body::FindSet { key: Key(k), after }),
        (any::<[u8; 32]>(), proptest::collection::vec(set_entry(), 0..=3), any::<bool>())
            .prop_map(|(k, e, more)| Body::SetPage { key: Key(k), entries: BoundedVec::try_from(e).unwrap(), more }),
        any::<u32>().prop_map(|ttl_s| Body::Reserve { ttl_s }),
        (any::<u32>(), any::<u16>(), any::<u32>()).prop_map(|(ttl_s, max_circuits, circuit_bytes_per_s)| {
            Body::Reserved { ttl_s, max_circuits, circuit_bytes_per_s }
        }),
        any::<[u8; 32]>().prop_map(|t| Body::Connect { target: NodeId(t) }),
        any::<u64>().prop_map(|circuit| Body::Connected { circuit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_roundtrips(id in any::<u64>(), body in body()) {
        let m = Message { id, body };
        match m.encode() {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= MAX_PLAINTEXT);
                prop_assert_eq!(Message::decode(&bytes).unwrap(), m);
            }
            // Refused only when it truly does not fit one datagram.
            Err(_) => prop_assert!(wire::encode(&m).unwrap().len() > MAX_PLAINTEXT),
        }
    }

    #[test]
    fn every_record_roundtrips_and_verifies(rec in node_record()) {
        let bytes = wire::encode(&rec).unwrap();
        prop_assert!(bytes.len() <= MAX_RECORD_LEN);
        // Signed records with an unusable address (unspecified, multicast) are refused, others accepted.
        if rec.addrs.iter().all(WireAddr::is_usable) {
            prop_assert_eq!(NodeRecord::decode_verified(&bytes).unwrap(), rec);
        } else {
            prop_assert_eq!(NodeRecord::decode_verified(&bytes), Err(suprnova_dht::identity::RecordError::BadAddr));
        }
    }

    #[test]
    fn store_records_roundtrip(r in record()) {
        let bytes = wire::encode(&r).unwrap();
        prop_assert_eq!(wire::decode::<Record>(&bytes).unwrap(), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1300)) {
        if let Ok(m) = Message::decode(&data) {
            prop_assert_eq!(m.encode().unwrap(), data.clone());
        }
        if let Ok(r) = wire::decode::<NodeRecord>(&data) {
            prop_assert_eq!(wire::encode(&r).unwrap(), data.clone());
        }
        let _ = NodeRecord::decode_verified(&data);
        let _ = packet::parse(&data);
        let t0 = Instant::now();
        let mut ch = Channel::new(Identity::from_seed([9; 32]), ChannelConfig::default(), t0);
        ch.handle_datagram(t0, "127.0.0.1:1".parse().unwrap(), &data);
        prop_assert!(ch.poll_transmit().is_none_or(|t| t.payload.len() <= data.len()));
        prop_assert_eq!(ch.peer_count(), 0);
    }

    #[test]
    fn mutated_valid_messages_never_panic(id in any::<u64>(), body in body(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let Ok(mut bytes) = (Message { id, body }).encode() else { return Ok(()) };
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode().unwrap(), bytes);
        }
    }
}
