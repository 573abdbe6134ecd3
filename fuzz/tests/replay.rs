//! Replays every seed in corpus/<target>/ and every saved reproducer in regressions/<target>/
//! through the targets' checks, on stable and without libFuzzer:
//!
//!     cargo test --manifest-path fuzz/Cargo.toml
//!
//! A reproducer of a bug that is not fixed yet fails here, by design, until the fix lands.

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use tickgate_fuzz::{bus, command, deflate, exchange, http, normalize, outbox, proxy, replay as replay_file, utf8};

fn inputs(dir: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Runs `check` on every input of `target`; fails listing each input that panicked.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let mut failed = Vec::new();
    let mut ran = 0;
    for dir in ["corpus", "regressions"] {
        for (name, data) in inputs(dir, target) {
            ran += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(name);
            }
        }
    }
    assert!(ran > 0, "no inputs for {target}");
    assert!(failed.is_empty(), "{target}: {} of {ran} inputs fail:\n{}", failed.len(), failed.join("\n"));
}

fn take<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> T {
    T::arbitrary_take_rest(Unstructured::new(data)).expect("every input decodes")
}

#[test]
fn command_parser() {
    replay("command_parser", command::check);
}

#[test]
fn bus_payload() {
    replay("bus_payload", bus::check);
}

#[test]
fn http_request() {
    replay("http_request", http::check);
}

#[test]
fn proxy_header() {
    replay("proxy_header", proxy::check);
}

#[test]
fn utf8_watch() {
    replay("utf8_watch", |data| utf8::check(&take::<utf8::Input>(data)));
}

#[test]
fn outbox_ops() {
    replay("outbox_ops", |data| outbox::check(&take::<outbox::OpsInput>(data).0));
}

#[test]
fn outbox_resync() {
    replay("outbox_resync", |data| outbox::check(&take::<outbox::ResyncInput>(data).0));
}

#[test]
fn exchange_mapper() {
    replay("exchange_mapper", exchange::check);
}

#[test]
fn feed_normalizer() {
    replay("feed_normalizer", normalize::check);
}

#[test]
fn replay_file() {
    replay("replay_file", replay_file::check);
}

#[test]
fn deflate_offer() {
    replay("deflate_offer", deflate::check_offer);
}

#[test]
fn deflate_inflate() {
    replay("deflate_inflate", deflate::check_inflate);
}
