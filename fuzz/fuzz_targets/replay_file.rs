//! Arbitrary bytes as a recording, replayed looping: see src/replay.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::replay::check(data));
