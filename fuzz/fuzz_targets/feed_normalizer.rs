//! Arbitrary bytes into the feed normalizer: see src/normalize.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::normalize::check(data));
