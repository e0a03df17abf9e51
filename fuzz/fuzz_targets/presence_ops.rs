#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    suprnova_mesh::fuzzing::presence_ops(data);
});
