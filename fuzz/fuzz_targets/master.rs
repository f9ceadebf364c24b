#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rxgate::fuzzing::master(data));
