//! The checks behind tickgate's fuzz targets.
//!
//! Each module's `check` takes one input and panics when tickgate breaks its contract; the
//! targets in `fuzz_targets/` are one-line wrappers around them. Keeping the logic here lets
//! `cargo test` (on stable, without libFuzzer) replay the seed corpora and the saved
//! regressions through exactly the same checks: see `tests/replay.rs` and README.md.

pub mod bus;
pub mod command;
pub mod deflate;
pub mod exchange;
pub mod http;
pub mod normalize;
pub mod outbox;
pub mod proxy;
pub mod replay;
pub mod utf8;
