//! Arbitrary client byte streams into `InboundInflate`: see src/deflate.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::deflate::check_inflate(data));
