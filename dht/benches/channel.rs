//! Throughput of the encrypted channel on one core, set beside raw ChaCha20-Poly1305 measured in
//! the same run. Prints a table; asserts nothing (figures belong in benchmarks, not tests).
//!
//! `cargo bench -p suprnova-dht --bench channel` (release). `BENCH_SECS` sets seconds per figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit};
use suprnova_dht::channel::{Channel, ChannelConfig, ChannelEvent, PeerInfo};
use suprnova_dht::handshake::noise::{self, SessionKeys};
use suprnova_dht::handshake::session::Session;
use suprnova_dht::handshake::{self as hs};
use suprnova_dht::identity::Identity;
use suprnova_dht::wire::limits::{MAX_DATAGRAM, MAX_PLAINTEXT};
use suprnova_dht::wire::packet::{self, Packet};

fn secs() -> Duration {
    let s = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(1.5);
    Duration::from_secs_f64(s)
}

/// Runs `f` (which does `batch` operations and returns the time they took) until `secs()` have
/// been measured; returns operations per second.
fn rate(batch: u64, mut f: impl FnMut() -> Duration) -> f64 {
    let _ = f(); // warm-up
    let mut spent = Duration::ZERO;
    let mut ops = 0u64;
    while spent < secs() {
        spent += f();
        ops += batch;
    }
    ops as f64 / spent.as_secs_f64()
}

fn timed(batch: u64, mut op: impl FnMut()) -> impl FnMut() -> Duration {
    move || {
        let t = Instant::now();
        for _ in 0..batch {
            op();
        }
        t.elapsed()
    }
}

fn keys() -> (SessionKeys, SessionKeys) {
    (SessionKeys { send: [1; 32], recv: [2; 32] }, SessionKeys { send: [2; 32], recv: [1; 32] })
}

fn main() {
    let pt = vec![0x5au8; MAX_PLAINTEXT];
    println!(
        "suprnova-dht channel benchmark: one core, {} B datagrams ({} B plaintext), {:.1} s per figure",
        MAX_DATAGRAM,
        pt.len(),
        secs().as_secs_f64()
    );

    // Raw AEAD.
    let cipher = ChaCha20Poly1305::new(&Key::from([7u8; 32]));
    let mut buf = pt.clone();
    let mut n = 0u64;
    let raw_seal = rate(
        4096,
        timed(4096, || {
            n += 1;
            let tag = cipher.encrypt_inout_detached(&noise::nonce(n), &[], buf.as_mut_slice().into()).unwrap();
            black_box(tag);
        }),
    );
    let mut ct = pt.clone();
    let tag = cipher.encrypt_inout_detached(&noise::nonce(1), &[], ct.as_mut_slice().into()).unwrap();
    let raw_open = rate(
        4096,
        timed(4096, || {
            buf.copy_from_slice(&ct);
            cipher.decrypt_inout_detached(&noise::nonce(1), &[], buf.as_mut_slice().into(), &tag).unwrap();
            black_box(&buf);
        }),
    );

    // Session path: header, counter, seal into a packet; parse, replay window, open.
    let (ka, kb) = keys();
    let mut a = Session::new(1, 2, &ka);
    let mut pkt = Vec::with_capacity(MAX_DATAGRAM);
    let sess_seal = rate(
        4096,
        timed(4096, || {
            a.seal_into(&pt, &mut pkt).unwrap();
            black_box(&pkt);
        }),
    );
    let mut a = Session::new(1, 2, &ka);
    let mut b = Session::new(2, 1, &kb);
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let sess_open = rate(2048, || {
        batch.clear();
        for _ in 0..2048 {
            let mut p = Vec::with_capacity(MAX_DATAGRAM);
            a.seal_into(&pt, &mut p).unwrap();
            batch.push(p);
        }
        let t = Instant::now();
        for p in &batch {
            let Ok(Packet::Transport(tp)) = packet::parse(p) else { panic!() };
            b.open_into(tp.counter, tp.ciphertext, &mut out).unwrap();
            black_box(&out);
        }
        t.elapsed()
    });

    // Full channel path: Channel::send -> datagram -> Channel::handle_datagram -> event.
    let t0 = Instant::now();
    let ia = Identity::from_seed([1; 32]);
    let ib = Identity::from_seed([2; 32]);
    let addr_a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let addr_b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let to_b = PeerInfo { id: ib.id(), noise_key: ib.noise_public(), addr: addr_b };
    let mut ca = Channel::new(ia, ChannelConfig::default(), t0);
    let mut cb = Channel::new(ib, ChannelConfig { rng_seed: [1; 32], ..ChannelConfig::default() }, t0);
    ca.send(t0, &to_b, b"hello").unwrap();
    for _ in 0..4 {
        while let Some(t) = ca.poll_transmit() {
            cb.handle_datagram(t0, addr_a, &t.payload);
        }
        while let Some(t) = cb.poll_transmit() {
            ca.handle_datagram(t0, addr_b, &t.payload);
        }
    }
    while cb.poll_event().is_some() {}
    let chan_pair = rate(
        1024,
        timed(1024, || {
            ca.send(t0, &to_b, &pt).unwrap();
            let t = ca.poll_transmit().unwrap();
            cb.handle_datagram(t0, addr_a, &t.payload);
            match cb.poll_event() {
                Some(ChannelEvent::Received { data, .. }) => {
                    black_box(data);
                }
                e => panic!("{e:?}"),
            }
        }),
    );

    // Handshakes: both sides in this thread; and the responder's share alone.
    let ini = Identity::from_seed([3; 32]);
    let res = Identity::from_seed([4; 32]);
    let mut e = 0u8;
    let full_hs = rate(
        256,
        timed(256, || {
            e = e.wrapping_add(1);
            let (ist, init) = hs::build_initiation(&ini, &res.noise_public(), [e; 32], 1, 1, None, false).unwrap();
            assert!(hs::mac1_ok(&init, packet::INITIATION_MAC1, &res.noise_public()));
            let Ok(Packet::Initiation(pi)) = packet::parse(&init) else { panic!() };
            let (rst, _) = hs::consume_initiation(&res, &pi, false).unwrap();
            let (resp, _, _) = hs::build_response(rst, [e ^ 0x55; 32], 2, 1).unwrap();
            let Ok(Packet::Response(pr)) = packet::parse(&resp) else { panic!() };
            black_box(hs::consume_response(ist, &ini, &pr).unwrap());
        }),
    );
    let inits: Vec<_> = (0..256u32)
        .map(|k| {
            let (_, b) =
                hs::build_initiation(&ini, &res.noise_public(), [(k % 251) as u8 + 1; 32], k, 1, None, false).unwrap();
            b
        })
        .collect();
    let mut k = 0usize;
    let resp_hs = rate(
        256,
        timed(256, || {
            let init = &inits[k % inits.len()];
            k += 1;
            assert!(hs::mac1_ok(init, packet::INITIATION_MAC1, &res.noise_public()));
            let Ok(Packet::Initiation(pi)) = packet::parse(init) else { panic!() };
            let (rst, _) = hs::consume_initiation(&res, &pi, false).unwrap();
            black_box(hs::build_response(rst, [9; 32], 2, 1).unwrap());
        }),
    );
    // Cookie replies: what a responder under load does instead of DH work.
    let pi = match packet::parse(&inits[0]) {
        Ok(Packet::Initiation(pi)) => pi,
        _ => panic!(),
    };
    let src = suprnova_dht::wire::WireAddr::V4([127, 0, 0, 1], 9);
    let cookies = rate(
        4096,
        timed(4096, || {
            assert!(hs::mac1_ok(&inits[0], packet::INITIATION_MAC1, &res.noise_public()));
            black_box(hs::build_cookie_reply(&res.noise_public(), &[1; 32], [2; 24], &pi, &src));
        }),
    );

    let mb = |r: f64| r * pt.len() as f64 / 1e6;
    println!();
    println!("{:<52} {:>12} {:>10}", "figure", "per second", "MB/s pt");
    println!("{:<52} {:>12.0} {:>10.0}", "raw ChaCha20-Poly1305 seal (1168 B)", raw_seal, mb(raw_seal));
    println!("{:<52} {:>12.0} {:>10.0}", "raw ChaCha20-Poly1305 open (copy + open)", raw_open, mb(raw_open));
    println!("{:<52} {:>12.0} {:>10.0}", "session seal -> 1200 B transport packet", sess_seal, mb(sess_seal));
    println!("{:<52} {:>12.0} {:>10.0}", "session open (parse + replay window + open)", sess_open, mb(sess_open));
    println!("{:<52} {:>12.0} {:>10.0}", "channel send + receive (sealed and opened)", chan_pair, mb(chan_pair));
    println!("{:<52} {:>12.0}", "handshakes, both sides on this core", full_hs);
    println!("{:<52} {:>12.0}", "handshakes, responder side only", resp_hs);
    println!("{:<52} {:>12.0}", "cookie replies (mac1 check + cookie)", cookies);
    let raw_pair = 1.0 / (1.0 / raw_seal + 1.0 / raw_open);
    println!();
    println!("session seal / raw seal               {:>6.1} %", 100.0 * sess_seal / raw_seal);
    println!("session open / raw open               {:>6.1} %", 100.0 * sess_open / raw_open);
    println!(
        "channel seal+open / raw seal+open     {:>6.1} %  (raw pair {:.0}/s)",
        100.0 * chan_pair / raw_pair,
        raw_pair
    );
}
