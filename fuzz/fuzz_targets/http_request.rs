//! Arbitrary bytes into `parse_and_route`: see src/http.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::http::check(data));
