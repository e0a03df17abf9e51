#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| suprnova_gossip::fuzzing::topic_ops(data));
