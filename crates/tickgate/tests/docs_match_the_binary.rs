//! docs/OPERATIONS.md against the binary and the code: every metric a live `/metrics` shows is
//! documented and every documented one is shown; every key of config/default.toml is in the
//! configuration reference; every log message at info level or above is in "Logs"; and
//! `--check-config` prints TOML that loads back to the same configuration.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BIN, Tickgate};
use tickgate_testkit::http_request;

const OPERATIONS: &str = include_str!("../../../docs/OPERATIONS.md");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The text of OPERATIONS.md from the heading `## {title}` to the next `## ` heading.
fn section(title: &str) -> &'static str {
    let start = OPERATIONS.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("a section {title}"));
    let rest = &OPERATIONS[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Every `tickgate_...` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tickgate_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn every_metric_of_a_live_gateway_is_documented_and_every_documented_one_is_live() {
    let (mut gateway, addr) = Tickgate::start(&["--listen", "127.0.0.1:0", "--reactors", "2"], &[]);
    let text = http_request(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    gateway.signal("TERM");
    let live: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_string)
        .collect();
    assert!(live.len() > 20, "{text}");
    let documented = metric_names(section("Metrics"));
    let missing: Vec<&String> = live.difference(&documented).collect();
    assert!(missing.is_empty(), "in /metrics but not in OPERATIONS.md \"Metrics\": {missing:?}");
    // A histogram's series carry suffixes of its name.
    let is_live = |name: &String| {
        live.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| live.contains(base)))
    };
    let everywhere = metric_names(OPERATIONS);
    let gone: Vec<&String> = everywhere.iter().filter(|name| !is_live(name)).collect();
    assert!(gone.is_empty(), "in OPERATIONS.md but not in /metrics: {gone:?}");
    assert!(gateway.exit_status(support::PATIENCE).success());
}

/// `[section]` -> its keys, set or commented out (`# key = ...`), in config/default.toml.
fn default_toml_keys() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/default.toml")).unwrap();
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if !name.starts_with('[') {
                section = name.to_string();
            }
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = line.split_once(" = ") else { continue };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !key.is_empty() {
            keys.push((section.clone(), key.to_string()));
        }
    }
    keys
}

#[test]
fn every_key_of_the_default_file_is_in_the_configuration_reference() {
    let reference = section("Configuration reference");
    let keys = default_toml_keys();
    assert!(keys.len() > 60, "{keys:?}");
    let mut missing = Vec::new();
    for (section, key) in &keys {
        // The commented `[[feed.sources]]` example's keys count as [feed]'s: its reference
        // (with "Several sources") describes them.
        let heading = format!("### `[{section}]`");
        let start = reference.find(&heading).unwrap_or_else(|| panic!("no {heading} in the reference"));
        let body = &reference[start..];
        let body = &body[..body[4..].find("\n### ").map_or(body.len(), |i| i + 4)];
        if !body.contains(&format!("`{key}`")) {
            missing.push(format!("{section}.{key}"));
        }
    }
    assert!(missing.is_empty(), "keys of config/default.toml missing from the reference: {missing:?}");
}

/// Every message of a `tracing::info!`, `warn!` or `error!` in the gateway's sources: the last
/// string literal of the call.
fn logged_messages() -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let crates = Path::new(ROOT).join("crates");
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if let Ok(dir) = std::fs::read_dir(&src) {
            files.extend(dir.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")));
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for macro_name in ["tracing::info!(", "tracing::warn!(", "tracing::error!("] {
            for (at, _) in text.match_indices(macro_name) {
                if let Some(message) = last_literal(&text[at + macro_name.len()..]) {
                    found.push((file.clone(), message));
                }
            }
        }
    }
    found
}

/// The last string literal before the parenthesis that closes a macro call's arguments.
fn last_literal(args: &str) -> Option<String> {
    let (mut depth, mut last, mut chars) = (0usize, None, args.chars());
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return last,
            ')' | ']' | '}' => depth -= 1,
            '"' => {
                let mut literal = String::new();
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {
                            escaped = false;
                            literal.push(c);
                        }
                    }
                }
                if depth == 0 {
                    last = Some(literal);
                }
            }
            _ => {}
        }
    }
    None
}

#[test]
fn every_log_message_at_info_or_above_is_in_the_logs_section() {
    let logs = section("Logs");
    let messages = logged_messages();
    assert!(messages.len() > 20, "{messages:?}");
    let mut missing = Vec::new();
    for (file, message) in &messages {
        // `{name}` parts are filled in at run time: each fixed part must be documented.
        let fixed: Vec<&str> = message
            .split('{')
            .map(|part| part.split_once('}').map_or(part, |(_, after)| after))
            .map(str::trim)
            .filter(|part| part.len() > 3)
            .collect();
        if fixed.iter().any(|part| !logs.contains(part)) {
            missing.push(format!("{}: {message:?}", file.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(missing.is_empty(), "log messages missing from OPERATIONS.md \"Logs\": {missing:#?}");
}

/// `tickgate --check-config FILE` in another working folder: its standard output.
fn checked(file: &Path) -> String {
    let out = Command::new(BIN).current_dir("/").arg("--check-config").arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_config_prints_toml_that_loads_back_to_the_same_configuration() {
    let dir = std::env::temp_dir().join(format!("tickgate-docs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tapes")).unwrap();
    std::fs::copy(Path::new(ROOT).join("config/tapes/sim-3s.jsonl.gz"), dir.join("tapes/t.jsonl.gz")).unwrap();
    let secret = "a-secret-of-thirty-two-bytes-or-more";
    let configs = [
        std::fs::read_to_string(Path::new(ROOT).join("config/default.toml")).unwrap(),
        format!(
            "[auth]\nenabled = true\njwt_algorithm = \"HS256\"\njwt_secret = \"{secret}\"\n\
             api_keys = [{{ key = \"key-0123456789abcdef\", user = \"desk\", symbols = [\"*\"] }}]\n\
             [universe]\nsymbols = [{{ name = \"DESK-A\", price_scale = 2, size_scale = 0 }}]\n\
             added_scales = [{{ pattern = \"DESK-*\", price_scale = 4, size_scale = 0 }}]\nunknown_symbols = \"add\"\n\
             [feed]\nrecord_path = \"out.jsonl\"\naliases = {{ XBT = \"BTC-USD\" }}\n\
             [[feed.sources]]\nname = \"tape\"\nsource = \"replay\"\nreplay_path = \"tapes/t.jsonl.gz\"\n\
             [[feed.sources]]\nname = \"desk\"\nsource = \"tcp\"\ntcp_listen = \"127.0.0.1:7000\"\nrequired = true\n"
        ),
    ];
    for (i, text) in configs.iter().enumerate() {
        let file = dir.join(format!("in-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let shown = checked(&file);
        let table: toml::Table = shown.parse().unwrap_or_else(|e| panic!("not TOML ({e}): {shown}"));
        assert!(table.contains_key("server") && table.contains_key("feed"), "{shown}");
        assert!(!shown.contains(secret) && !shown.contains("key-0123456789abcdef"), "secrets redacted: {shown}");
        // Loaded back from another folder, it is the same configuration.
        let again = dir.join(format!("elsewhere-{i}"));
        std::fs::create_dir_all(&again).unwrap();
        std::fs::write(again.join("shown.toml"), &shown).unwrap();
        assert_eq!(checked(&again.join("shown.toml")), shown, "the printed configuration loads back the same");
    }
    std::fs::remove_dir_all(&dir).ok();
}
