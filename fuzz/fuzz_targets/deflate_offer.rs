//! Arbitrary `Sec-WebSocket-Extensions` values into `negotiate`: see src/deflate.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickgate_fuzz::deflate::check_offer(data));
