//! Arbitrary bytes into `parse_command`: see src/command.rs for the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::command::check(data));
