#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hpke_gateway::fuzzing::upstream_uri(data));
