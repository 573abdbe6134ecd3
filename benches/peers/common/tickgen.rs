//! Shared by the Rust peers (included with `#[path = "../../common/tickgen.rs"] mod tickgen;`):
//! command line, symbol universe, wall clock, the paced tick generator and the client commands.
//! The JavaScript peers do the same in common/ticks.js; README.md describes the contract.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ticks per batch at most, as tickgate's ingest thread (`MAX_BATCH`).
pub const MAX_BATCH: u64 = 4096;

/// The batch interval: a tick may wait this long after it is due for its batch before the wait
/// counts as lateness in its timestamp (tickgate's `sim.batch_interval_us` = 1000).
pub const BATCH_INTERVAL_NS: u64 = 1_000_000;

/// Command line: `--name value` or `--name=value`, every name declared with its default.
#[derive(Debug)]
pub struct Args {
    values: HashMap<&'static str, String>,
}

impl Args {
    /// Parses `std::env::args()` against `spec` (name, default); exits 2 on anything else.
    pub fn parse(spec: &[(&'static str, &str)], usage: &str) -> Args {
        let mut values: HashMap<&'static str, String> = spec.iter().map(|&(k, v)| (k, v.to_string())).collect();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(body) = arg.strip_prefix("--") else { usage_exit(&format!("unexpected argument {arg}"), usage) };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let Some(&(key, _)) = spec.iter().find(|(k, _)| *k == name) else {
                usage_exit(&format!("unknown option --{name}"), usage)
            };
            let value =
                value.or_else(|| it.next()).unwrap_or_else(|| usage_exit(&format!("--{name} needs a value"), usage));
            values.insert(key, value);
        }
        Args { values }
    }

    pub fn str(&self, name: &str) -> &str {
        &self.values[name]
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str) -> T {
        let v = self.str(name);
        v.parse().unwrap_or_else(|_| usage_exit(&format!("--{name}: not a valid number: {v}"), ""))
    }
}

fn usage_exit(msg: &str, usage: &str) -> ! {
    eprintln!("error: {msg}\n{usage}");
    std::process::exit(2)
}

/// The universe: one symbol per line of `path` (blank lines and duplicates skipped), or
/// SYM0000..SYM0499 when `path` is empty (tickgate's default universe also has 500 symbols).
pub fn load_symbols(path: &str) -> Vec<String> {
    if path.is_empty() {
        return (0..500).map(|i| format!("SYM{i:04}")).collect();
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("error: cannot read {path}: {e}");
        std::process::exit(2)
    });
    let mut seen = std::collections::HashSet::new();
    let names: Vec<String> =
        text.lines().map(str::trim).filter(|s| !s.is_empty() && seen.insert(*s)).map(String::from).collect();
    if names.is_empty() {
        eprintln!("error: no symbols in {path}");
        std::process::exit(2);
    }
    names
}

/// Nanoseconds since the Unix epoch, from the wall clock.
pub fn wall_clock_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Raises the soft limit on open files to the hard limit (one descriptor per connection).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    #[allow(unsafe_code)]
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// xorshift64*: plenty for picking symbols and jiggling prices.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64() >> 11) * u128::from(n)) >> 53) as u64
    }
}

fn write_cents(out: &mut String, c: i64) {
    let _ = write!(out, "{}.{:02}", c / 100, c % 100);
}

/// Paced generator: [`TickGen::due`] returns round-down(rate × elapsed) − emitted (at most
/// [`MAX_BATCH`]; a backlog carries over), so the rate is exact over time whatever the timer
/// resolution. Each tick picks a symbol uniformly at random, is a trade with probability 0.3 and a
/// quote otherwise, and is encoded once as tickgate's JSON text.
#[derive(Debug)]
pub struct TickGen {
    pub names: Vec<String>,
    seq: Vec<u64>,
    mid: Vec<i64>,
    rng: Rng,
    rate: f64,
    start: Instant,
    /// The last batch's release: the wall clock and the time since `start`, read together.
    released_ns: u64,
    released_elapsed_ns: u64,
    emitted: u64,
    pub ticks: u64,
}

impl TickGen {
    pub fn new(names: Vec<String>, rate: f64) -> TickGen {
        let mut rng = Rng::new(wall_clock_ns() ^ 0x9E37_79B9_7F4A_7C15);
        let mid = names.iter().map(|_| 1000 + rng.below(49_000) as i64).collect(); // $10-$500
        TickGen {
            seq: vec![0; names.len()],
            mid,
            names,
            rng,
            rate,
            start: Instant::now(),
            released_ns: 0,
            released_elapsed_ns: 0,
            emitted: 0,
            ticks: 0,
        }
    }

    /// How many ticks are due now (and counts them as emitted); they are released now.
    pub fn due(&mut self) -> u64 {
        self.released_ns = wall_clock_ns();
        self.released_elapsed_ns = self.start.elapsed().as_nanos() as u64;
        let total = (self.rate * self.released_elapsed_ns as f64 / 1e9) as u64;
        let due = total.saturating_sub(self.emitted).min(MAX_BATCH);
        self.emitted += due;
        due
    }

    /// Time until the next tick is due (zero if one is due now).
    pub fn until_next(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::from_millis(10);
        }
        let next = Duration::from_secs_f64((self.emitted + 1) as f64 / self.rate);
        next.saturating_sub(self.start.elapsed())
    }

    /// Appends the next tick's JSON to `out` and returns its symbol index. The tick is stamped
    /// (`ts` = `gw_ts`) with its batch's release time (the last [`TickGen::due`]), or, if it was
    /// released more than
    /// [`BATCH_INTERVAL_NS`] after it was due, with its due time plus that interval: the time it
    /// was meant to leave. So a server whose loop is too busy to generate its ticks on time shows
    /// the delay in its latency, as tickgate's simulated market does; without this a saturated
    /// server would hold back its own load and hide the wait (coordinated omission).
    pub fn next_tick(&mut self, out: &mut String) -> usize {
        // Lateness on the monotonic clock, so a wall-clock step during the run changes nothing.
        let due_ns = ((self.ticks + 1) as f64 * 1e9 / self.rate) as u64;
        let late_ns = self.released_elapsed_ns.saturating_sub(due_ns + BATCH_INTERVAL_NS);
        let gw_ts = self.released_ns.saturating_sub(late_ns);
        let i = self.rng.below(self.names.len() as u64) as usize;
        self.seq[i] += 1;
        let seq = self.seq[i];
        let r = self.rng.below(1000);
        // Random walk of the mid by at most a cent per event, never below $1.
        let m = (self.mid[i]
            + if r < 100 {
                -1
            } else if r >= 900 {
                1
            } else {
                0
            })
        .max(100);
        self.mid[i] = m;
        let name = &self.names[i];
        if r < 300 {
            let size = 100 * (1 + self.rng.below(10));
            let _ = write!(out, r#"{{"type":"trade","symbol":"{name}","seq":{seq},"price":""#);
            write_cents(out, m + if r < 150 { -1 } else { 1 });
            let _ = write!(out, r#"","size":"{size}","ts":{gw_ts},"gw_ts":{gw_ts}}}"#);
        } else {
            let bid_size = 100 * (1 + self.rng.below(20));
            let ask_size = 100 * (1 + self.rng.below(20));
            let _ = write!(out, r#"{{"type":"quote","symbol":"{name}","seq":{seq},"bid":""#);
            write_cents(out, m - 1);
            let _ = write!(out, r#"","bid_size":"{bid_size}","ask":""#);
            write_cents(out, m + 1);
            let _ = write!(out, r#"","ask_size":"{ask_size}","ts":{gw_ts},"gw_ts":{gw_ts}}}"#);
        }
        self.ticks += 1;
        i
    }
}

/// `subscribe` or `unsubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Subscribe,
    Unsubscribe,
}

/// A client command: the op, its `id` as JSON (echoed verbatim), the known symbols (indices, no
/// duplicates) and the unknown names.
#[derive(Debug)]
pub struct Command {
    pub op: Op,
    pub id: Option<String>,
    pub known: Vec<usize>,
    pub unknown: Vec<String>,
}

/// Parses a client command; `Err` is the error reply to send.
pub fn parse_command(text: &str, index: &HashMap<String, usize>) -> Result<Command, String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let id = v.get("id").filter(|id| id.is_number() || id.is_string()).map(|id| id.to_string());
    let op = match v.get("op").and_then(|o| o.as_str()) {
        Some("subscribe") => Some(Op::Subscribe),
        Some("unsubscribe") => Some(Op::Unsubscribe),
        _ => None,
    };
    let symbols = v.get("symbols").and_then(|s| s.as_array());
    let (Some(op), Some(symbols)) = (op, symbols) else {
        let mut e = String::from(r#"{"type":"error""#);
        push_id(&mut e, id.as_deref());
        e.push_str(
            r#","code":"bad_request","message":"expected {\"op\":\"subscribe\"|\"unsubscribe\",\"symbols\":[...]}"}"#,
        );
        return Err(e);
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for s in symbols {
        match s.as_str().and_then(|s| index.get(s)) {
            Some(&i) => {
                if !known.contains(&i) {
                    known.push(i);
                }
            }
            None => unknown.push(s.as_str().map_or_else(|| s.to_string(), String::from)),
        }
    }
    Ok(Command { op, id, known, unknown })
}

fn push_id(out: &mut String, id: Option<&str>) {
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(id);
    }
}

fn push_names<'a>(out: &mut String, names: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (k, n) in names.enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(n).to_string());
    }
    out.push(']');
}

impl Command {
    /// The replies to send, in order: `subscribed`/`unsubscribed` with the known symbols, then an
    /// `unknown_symbol` error if some were not in the universe.
    pub fn replies(&self, names: &[String]) -> Vec<String> {
        let kind = if self.op == Op::Subscribe { "subscribed" } else { "unsubscribed" };
        let mut ok = format!(r#"{{"type":"{kind}""#);
        push_id(&mut ok, self.id.as_deref());
        ok.push_str(r#","symbols":"#);
        push_names(&mut ok, self.known.iter().map(|&i| names[i].as_str()));
        ok.push('}');
        let mut out = vec![ok];
        if !self.unknown.is_empty() {
            let mut e = String::from(r#"{"type":"error""#);
            push_id(&mut e, self.id.as_deref());
            e.push_str(r#","code":"unknown_symbol","message":"unknown symbols","symbols":"#);
            push_names(&mut e, self.unknown.iter().map(String::as_str));
            e.push('}');
            out.push(e);
        }
        out
    }
}

/// `{"type":"welcome","server":"<name>"}`
pub fn welcome(name: &str) -> String {
    format!(r#"{{"type":"welcome","server":"{name}"}}"#)
}
