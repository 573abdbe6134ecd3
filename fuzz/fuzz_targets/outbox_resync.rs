//! `outbox_ops` plus the reactor's handling of a feed resync (forget, gap, snapshot). See src/outbox.rs.
#![no_main]

use tickgate_fuzz::outbox::ResyncInput;

libfuzzer_sys::fuzz_target!(|input: ResyncInput| tickgate_fuzz::outbox::check(&input.0));
