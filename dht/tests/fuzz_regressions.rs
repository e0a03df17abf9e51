//! Inputs the fuzzers once crashed on, kept as tests (fuzz/README.md: "a crash becomes a regression test").
#![allow(clippy::unwrap_used)]

/// routing_ops: the same node twice in a bucket (a waiting candidate promoted after it entered from the replacement cache).
#[test]
fn routing_ops_crash_1() {
    suprnova_dht::fuzzing::routing_ops(&hex::decode("00e4fbc5f21359665d5d279ca007eafca3ffffffffffffffffffffffffffffffffffbd179a1c970893dfc800e4fbc5f21359665d5d279ca007eafca3bd179a1c970893dfc831bb5c6e03fab40102030405065131bb5c6e03fab40102030405060e0000005151").unwrap());
}

/// routing_ops: subnet limit exceeded when a node moved to a full subnet.
#[test]
fn routing_ops_crash_2() {
    suprnova_dht::fuzzing::routing_ops(&hex::decode("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e311f202122232425262728292a2b2c2d2e2f30314445464748494a5e5f08091b1c1d1e311f202122232425262728292a2b2c2d2e2f30314445464748494a5e5f08090a0b0c0d0e0f1046474849").unwrap());
}

#[test]
fn relay_ops_hold_their_invariants_on_pseudo_random_sequences() {
    // A fixed xorshift stream: 300 sequences of up to 1 KiB, so `cargo test` runs the fuzz
    // target's invariants even where cargo-fuzz is not installed.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for n in 0..300usize {
        let data: Vec<u8> = (0..(n * 7) % 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        suprnova_dht::fuzzing::relay_ops(&data);
    }
}
