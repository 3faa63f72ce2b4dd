#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hpke_gateway::fuzzing::ohttp_chunked(data));
