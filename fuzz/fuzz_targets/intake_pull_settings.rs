#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hpke_gateway::fuzzing::intake_pull_settings(data));
