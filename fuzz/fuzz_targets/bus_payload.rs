//! Arbitrary bytes into the cluster's bus payload decoder: see src/bus.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::bus::check(data));
