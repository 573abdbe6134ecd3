//! Arbitrary bytes into the PROXY protocol header parser: see src/proxy.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::proxy::check(data));
