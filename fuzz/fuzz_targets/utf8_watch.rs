//! Client byte streams fed in arbitrary chops into `Utf8Watch`: see src/utf8.rs for the contract.
#![no_main]

use tickgate_fuzz::utf8::Input;

libfuzzer_sys::fuzz_target!(|input: Input| tickgate_fuzz::utf8::check(&input));
