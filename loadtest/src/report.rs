//! Reports: the human-readable table, the JSON file, the comparison of servers, the SVG plot.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::run::RunResult;
use crate::verdict::{Status, Verdict};

/// One step of a sweep: the server's tick rate, what the run measured and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Ticks per second the server generated.
    pub rate: f64,
    /// Deliveries per second expected if nothing were lost (rate × N × k / S for uniform picks).
    pub expected_per_s: f64,
    /// What the run measured ([`RunResult`]); empty for a step that errored.
    pub result: serde_json::Value,
    /// The verdict's status is `passed`.
    pub ok: bool,
    /// Why the step did not pass. Sweeps written before the strict verdict have none: their
    /// `ok` was judged on loss, disconnects and p99 alone.
    #[serde(default = "Step::unjudged")]
    pub verdict: Verdict,
    /// Why the run could not be carried out, for a step that errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Step {
    pub fn measured(rate: f64, expected_per_s: f64, result: &RunResult, verdict: Verdict) -> Self {
        Self {
            rate,
            expected_per_s,
            result: serde_json::to_value(result).unwrap_or_default(),
            ok: verdict.status == Status::Passed,
            verdict,
            error: None,
        }
    }

    pub fn errored(rate: f64, expected_per_s: f64, error: String) -> Self {
        Self {
            rate,
            expected_per_s,
            result: serde_json::Value::Object(serde_json::Map::new()),
            ok: false,
            verdict: Verdict { status: Status::Errored, reasons: vec![error.clone()] },
            error: Some(error),
        }
    }

    fn unjudged() -> Verdict {
        Verdict { status: Status::Failed, reasons: vec!["judged by the verdict before the strict one".into()] }
    }
}

/// A whole sweep against one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    pub server: String,
    pub connections: usize,
    pub symbols_per_client: usize,
    pub universe: usize,
    pub p99_bound_us: f64,
    pub steps: Vec<Step>,
}

fn num(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(f64::NAN)
}

impl Sweep {
    /// The step with the highest delivered rate that passed.
    pub fn best(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.ok)
            .max_by(|a, b| num(&a.result, &["delivered_per_s"]).total_cmp(&num(&b.result, &["delivered_per_s"])))
    }

    /// The passing step whose rate is closest to half the best one's.
    pub fn half(&self) -> Option<&Step> {
        let best = self.best()?;
        self.steps
            .iter()
            .filter(|s| s.ok)
            .min_by(|a, b| (a.rate - best.rate / 2.0).abs().total_cmp(&(b.rate - best.rate / 2.0).abs()))
    }
}

/// One line per step.
pub fn step_table(sweep: &Sweep) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>7} {:>15} {:>9}",
        "server",
        "rate/s",
        "expected/s",
        "delivered/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "lost",
        "cpu ns/d",
        "gen",
        "resumed w/g/f",
        "verdict"
    );
    for s in &sweep.steps {
        let r = &s.result;
        let _ = writeln!(
            out,
            "{:<18} {:>10.0} {:>12.0} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>9.0} {:>6.0}% {:>15} {:>9}",
            sweep.server,
            s.rate,
            s.expected_per_s,
            num(r, &["delivered_per_s"]),
            num(r, &["latency_us", "p50"]),
            num(r, &["latency_us", "p99"]),
            num(r, &["latency_us", "p999"]),
            num(r, &["latency_us", "max"]),
            num(r, &["seq", "lost"]),
            num(r, &["server", "cpu_ns_per_delivery"]),
            100.0 * num(r, &["loadtest_core_share"]),
            resumes(r),
            if s.ok { "passed" } else { s.verdict.status.label() },
        );
    }
    out
}

/// Resumed subscriptions of a run that dropped and resumed clients: whole / with a gap /
/// failed; `-` for a run that did not.
fn resumes(r: &serde_json::Value) -> String {
    let resume = &r["resume"];
    if !resume.is_object() {
        return "-".into();
    }
    let n = |key: &str| resume[key].as_u64().unwrap_or(0);
    format!("{}/{}/{}", n("whole"), n("with_gap"), n("failed") + n("reconnect_failed"))
}

/// The comparison table (Markdown): each server's best zero-loss rate, its cost, and ratios
/// against the first sweep (tickgate).
pub fn compare_table(sweeps: &[Sweep]) -> String {
    let mut out = String::new();
    let base = sweeps.first().and_then(|s| s.best()).map(|b| num(&b.result, &["delivered_per_s"]));
    let _ = writeln!(
        out,
        "| server | best zero-loss deliveries/s (p99 < {:.0} ms) | vs {} | CPU ns/delivery | p50 / p99 / p99.9 µs at half rate | bytes/connection |",
        sweeps.first().map_or(5.0, |s| s.p99_bound_us / 1000.0),
        sweeps.first().map_or("first", |s| s.server.as_str())
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for sweep in sweeps {
        let best = sweep.best();
        let rate = best.map_or(0.0, |b| num(&b.result, &["delivered_per_s"]));
        let ratio = match base {
            Some(base) if base > 0.0 => format!("{:.2}×", rate / base),
            _ => "–".into(),
        };
        let cpu = best.map_or(f64::NAN, |b| num(&b.result, &["server", "cpu_ns_per_delivery"]));
        let half = sweep.half().map_or("–".to_string(), |h| {
            format!(
                "{:.0} / {:.0} / {:.0}",
                num(&h.result, &["latency_us", "p50"]),
                num(&h.result, &["latency_us", "p99"]),
                num(&h.result, &["latency_us", "p999"])
            )
        });
        let bytes =
            best.or(sweep.steps.first()).map_or(f64::NAN, |b| num(&b.result, &["server", "rss_per_connection"]));
        let _ = writeln!(out, "| {} | {:.0} | {} | {:.0} | {} | {:.0} |", sweep.server, rate, ratio, cpu, half, bytes);
    }
    out
}

/// An SVG plot of p50, p99 and p99.9 latency against delivered rate, one colour per server.
pub fn latency_svg(sweeps: &[Sweep]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 540.0;
    const L: f64 = 80.0;
    const R: f64 = 200.0;
    const T: f64 = 40.0;
    const B: f64 = 60.0;
    const COLOURS: [&str; 6] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    let points = |s: &Sweep, q: &str| -> Vec<(f64, f64)> {
        s.steps
            .iter()
            .map(|st| (num(&st.result, &["delivered_per_s"]), num(&st.result, &["latency_us", q])))
            .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0)
            .collect()
    };
    let all: Vec<(f64, f64)> =
        sweeps.iter().flat_map(|s| ["p50", "p99", "p999"].into_iter().flat_map(move |q| points(s, q))).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_min = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).max(1.0);
    let y_max = all.iter().map(|p| p.1).fold(10.0, f64::max);
    let (ly0, ly1) = (y_min.log10().floor(), y_max.log10().ceil().max(y_min.log10().floor() + 1.0));
    let sx = |x: f64| L + x / x_max * (W - L - R);
    let sy = |y: f64| T + (1.0 - (y.max(1.0).log10() - ly0) / (ly1 - ly0)) * (H - T - B);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15">Latency (gw_ts to receipt) against delivered messages/s</text>"#,
        L
    );
    for d in (ly0 as i32)..=(ly1 as i32) {
        let y = sy(10f64.powi(d));
        let _ = writeln!(svg, r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/>"##, W - R);
        let label = match d {
            d if d < 3 => format!("{} µs", 10u64.pow(d as u32)),
            d if d < 6 => format!("{} ms", 10u64.pow(d as u32 - 3)),
            d => format!("{} s", 10u64.pow(d as u32 - 6)),
        };
        let _ = writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#, L - 6.0, y + 4.0);
    }
    for i in 0..=5 {
        let x = x_max * i as f64 / 5.0;
        let _ = writeln!(svg, r##"<line x1="{:.1}" x2="{:.1}" y1="{T}" y2="{}" stroke="#eee"/>"##, sx(x), sx(x), H - B);
        let _ =
            writeln!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, sx(x), H - B + 18.0, human(x));
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">delivered messages/s</text>"#,
        (L + W - R) / 2.0,
        H - 15.0
    );
    let mut legend_y = T + 10.0;
    for (i, sweep) in sweeps.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (q, dash, width) in [("p50", "", 1.5), ("p99", "6 3", 1.5), ("p999", "2 3", 1.2)] {
            let pts = points(sweep, q);
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}" stroke-dasharray="{dash}" points="{}"/>"#,
                path.join(" ")
            );
        }
        let _ =
            writeln!(svg, r#"<rect x="{}" y="{:.1}" width="12" height="12" fill="{colour}"/>"#, W - R + 15.0, legend_y);
        let _ =
            writeln!(svg, r#"<text x="{}" y="{:.1}">{}</text>"#, W - R + 32.0, legend_y + 10.0, escape(&sweep.server));
        legend_y += 20.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{:.1}">solid p50, dashed p99, dotted p99.9</text>"#,
        W - R + 15.0,
        legend_y + 12.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.0}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(rate: f64, delivered: f64, p99: f64, ok: bool) -> Step {
        Step {
            rate,
            expected_per_s: delivered,
            result: json!({"delivered_per_s": delivered, "latency_us": {"p50": p99 / 4.0, "p99": p99, "p999": p99 * 2.0, "max": p99 * 3.0},
                           "seq": {"lost": 0}, "server": {"cpu_ns_per_delivery": 300.0, "rss_per_connection": 900.0}, "loadtest_core_share": 0.3}),
            ok,
            verdict: Verdict { status: if ok { Status::Passed } else { Status::Failed }, reasons: vec![] },
            error: None,
        }
    }

    fn sweep(name: &str, scale: f64) -> Sweep {
        Sweep {
            server: name.into(),
            connections: 1000,
            symbols_per_client: 10,
            universe: 100,
            p99_bound_us: 5000.0,
            steps: vec![
                step(1000.0, 100_000.0 * scale, 300.0, true),
                step(2000.0, 200_000.0 * scale, 600.0, true),
                step(4000.0, 390_000.0 * scale, 9000.0, false),
            ],
        }
    }

    #[test]
    fn best_is_the_fastest_passing_step_and_half_is_near_half_its_rate() {
        let s = sweep("x", 1.0);
        assert_eq!(s.best().unwrap().rate, 2000.0);
        assert_eq!(s.half().unwrap().rate, 1000.0);
    }

    #[test]
    fn the_table_shows_how_resumes_went_and_a_dash_without_them() {
        let mut s = sweep("x", 1.0);
        s.steps.truncate(1);
        assert!(step_table(&s).lines().nth(1).unwrap().contains(" - "), "{}", step_table(&s));
        s.steps[0].result["resume"] = json!({"whole": 30, "with_gap": 2, "failed": 1, "reconnect_failed": 1});
        let table = step_table(&s);
        assert!(table.contains("resumed w/g/f") && table.contains(" 30/2/2 "), "{table}");
    }

    #[test]
    fn comparison_gives_ratios_against_the_first_server() {
        let table = compare_table(&[sweep("tickgate", 1.0), sweep("peer", 0.5)]);
        assert!(table.contains("| tickgate | 200000 | 1.00× |"), "{table}");
        assert!(table.contains("| peer | 100000 | 0.50× |"), "{table}");
        let svg = latency_svg(&[sweep("tickgate", 1.0), sweep("peer", 0.5)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
    }
}
