#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    suprnova_agents::fuzzing::router_ops(data);
});
