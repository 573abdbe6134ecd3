//! Arbitrary bytes into the exchange mapper: see src/exchange.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::exchange::check(data));
