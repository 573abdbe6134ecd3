//! Events, partial writes and control pushes through `Outbox` under each policy: the contract of
//! the proptest in crates/core/src/outbox.rs. See src/outbox.rs.
#![no_main]

use tickgate_fuzz::outbox::OpsInput;

libfuzzer_sys::fuzz_target!(|input: OpsInput| tickgate_fuzz::outbox::check(&input.0));
