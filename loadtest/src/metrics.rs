//! The gateway's tick rate from its Prometheus `/metrics`: what `run` expects deliveries
//! from when no `--rate` is given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The series summed: ticks taken from every source.
pub const TICKS_INGESTED: &str = "tickgate_ticks_ingested_total";

/// Why the tick count could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read http://{addr}/metrics: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error(
        "http://{addr}/metrics has no {TICKS_INGESTED} (not a tickgate, or its metrics are on server.admin_listen: see --metrics-addr)"
    )]
    NoSeries { addr: SocketAddr },
}

/// Ticks the gateway at `addr` has ingested so far, over every source.
pub fn ticks_ingested(addr: SocketAddr) -> Result<u64, MetricsError> {
    let io = |source| MetricsError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: tickgate\r\nConnection: close\r\n\r\n").map_err(io)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(io)?;
    sum_of(&text, TICKS_INGESTED).ok_or(MetricsError::NoSeries { addr })
}

/// The sum of every series of `name` in a Prometheus text exposition, or None if it has none.
pub fn sum_of(text: &str, name: &str) -> Option<u64> {
    let values: Vec<u64> = text
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_source_and_ignores_other_series() {
        let text = "# HELP tickgate_ticks_ingested_total Ticks.\n# TYPE tickgate_ticks_ingested_total counter\n\
                    tickgate_ticks_ingested_total{source=\"sim\"} 1200\ntickgate_ticks_ingested_total{source=\"desk\"} 34\n\
                    tickgate_ticks_ingested_total_other 5\n";
        assert_eq!(sum_of(text, TICKS_INGESTED), Some(1234));
        assert_eq!(sum_of("tickgate_frames_built_total 3\n", TICKS_INGESTED), None);
    }
}
