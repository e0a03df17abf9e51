#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| suprnova_dht::fuzzing::relay_ops(data));
