//! The `router_ops` fuzz target's invariants on a fixed set of pseudo-random inputs (the fuzz
//! smoke run explores further).

#[test]
fn router_ops_holds_its_invariants_on_seeded_inputs() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 3, 64, 512, 2048] {
        for _ in 0..20 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            suprnova_agents::fuzzing::router_ops(&data);
        }
    }
}
