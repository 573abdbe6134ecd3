//! CPU time and memory of a process, and the kernel's socket memory, from /proc.

use std::io;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// Clock ticks per second of /proc/PID/stat times.
#[allow(unsafe_code)]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime and stime (in clock ticks) from the text of /proc/PID/stat.
pub fn parse_stat(text: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state is field 3; utime is field 14, stime field 15.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// VmRSS in bytes from the text of /proc/PID/status.
pub fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads a process's CPU time and RSS (`pid` None: this process).
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let bad = |what| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {dir}/{what}"));
    let (utime, stime) = parse_stat(&std::fs::read_to_string(format!("{dir}/stat"))?).ok_or_else(|| bad("stat"))?;
    let rss_bytes =
        parse_status_rss(&std::fs::read_to_string(format!("{dir}/status"))?).ok_or_else(|| bad("status"))?;
    Ok(ProcSample { cpu_s: (utime + stime) as f64 / clock_ticks_per_second(), rss_bytes })
}

/// Kernel memory held by TCP sockets (all processes), in bytes, from /proc/net/sockstat.
pub fn tcp_socket_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    parse_sockstat_tcp_mem(&text).map(|pages| pages * 4096)
}

/// The `mem` field (pages) of the `TCP:` line of /proc/net/sockstat.
pub fn parse_sockstat_tcp_mem(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times_past_a_tricky_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 1000000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((250, 75)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_rss_and_socket_memory() {
        assert_eq!(parse_status_rss("Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t3\n"), Some(2048 * 1024));
        let sockstat = "sockets: used 200\nTCP: inuse 5 orphan 0 tw 3 alloc 9 mem 42\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_sockstat_tcp_mem(sockstat), Some(42));
    }

    #[test]
    fn samples_this_process() {
        // Burn a little CPU so the reading is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 1 << 20, "{s:?}");
        assert!(s.cpu_s > 0.0, "{s:?}");
    }
}
