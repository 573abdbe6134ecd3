//! What the gateway reports about itself: `/metrics` (Prometheus text format, built with the
//! prometheus crate from the reactors' and the ingest thread's counters) and `/readyz`.
//!
//! Rendering reads atomics and merges the reactors' latency windows; it runs on whichever
//! reactor received the scrape, a few times a minute, never on the per-message path. Labels are
//! bounded: per reactor, per close reason, per op; never per connection or per symbol.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use std::sync::Arc;

use tickgate_core::SymbolTable;
use tickgate_feed::source::SourceStats;

use crate::connection::CloseReason;
use crate::gateway::GatewayStats;
use crate::stats::{COMMAND_OPS, HTTP_STATUSES, LATENCY_BUCKETS_NS, ReactorCounters};

/// Appends one histogram in the text format: cumulative `_bucket` series with `le` in seconds,
/// then `_sum` (seconds) and `_count`.
fn write_histogram(out: &mut Vec<u8>, name: &str, help: &str, buckets: &[u64], count: u64, sum_ns: u64) {
    use std::io::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (bound, n) in LATENCY_BUCKETS_NS.iter().zip(buckets) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e9);
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", count.max(cumulative));
    let _ = writeln!(out, "{name}_sum {}", sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", count.max(cumulative));
}

/// Everything /metrics and /readyz read, shared by every reactor.
#[derive(Debug)]
pub struct Telemetry {
    pub stats: GatewayStats,
    pub symbols: Arc<SymbolTable>,
    pub started_ns: u64,
    /// Whether the gateway has failed (/healthz, /readyz).
    pub liveness: Arc<crate::liveness::Liveness>,
    /// The TLS configuration and its reloads, when TLS is on.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Where the reactors gather a `/connz` answer.
    pub connz: crate::connz::Board,
}

/// A heartbeat older than this means a thread is stuck.
const HEARTBEAT_LIMIT_NS: u64 = 2_000_000_000;

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn age_ns(now_ns: u64, then_ns: u64) -> u64 {
    if then_ns == 0 { u64::MAX } else { now_ns.saturating_sub(then_ns) }
}

/// The answer of /readyz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub feed_ok: bool,
    pub reactors_ok: bool,
    /// JSON saying which part is not ready.
    pub body: String,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.feed_ok && self.reactors_ok
    }
}

/// Whether a source is delivering: up (a network source's session delivered, and clients were
/// told), and a tick within twenty expected intervals (at least five seconds: a quiet market is
/// not a dead one).
fn source_ok(source: &SourceStats, paused: bool, now_ns: u64) -> (bool, serde_json::Value) {
    let networked = source.is_networked();
    let connected = !networked || source.health.connected.load(Ordering::Relaxed);
    let up = !source.down.load(Ordering::Relaxed);
    let last_tick_age = age_ns(now_ns, load(&source.last_tick_ns));
    let tick_limit_ns = (20.0 / source.expected_rate * 1e9).max(5e9) as u64;
    let ok = !paused && connected && up && last_tick_age < tick_limit_ns;
    let health = &source.health;
    let body = serde_json::json!({
        "name": &*source.name,
        "kind": source.kind,
        "required": source.required,
        "ok": ok,
        "up": up,
        "connected": connected,
        "backoff_ms": load(&health.backoff_ms),
        "unhealthy_attempts": load(&health.unhealthy_attempts),
        "silences": load(&health.silences),
        "subscription_errors": load(&health.subscription_errors),
        "probes": load(&health.probes),
        "replaced": load(&health.replaced),
        "reconnects": load(&source.health.reconnects),
        "connect_failures": load(&source.health.connect_failures),
        "upstream_gaps": load(&source.health.upstream_gaps),
        "upstream_resets": source.upstream_resets.iter().map(load).sum::<u64>(),
        "rejected": source.rejected_total(),
        "last_tick_age_ms": ms(last_tick_age),
        "last_message_age_ms": if source.is_networked() {
            ms(age_ns(now_ns, load(&source.health.last_message_ns)))
        } else {
            serde_json::Value::Null
        },
    });
    (ok, body)
}

/// Whether the feed is delivering (every required source) and every reactor is turning.
pub fn readiness(t: &Telemetry, now_ns: u64) -> Readiness {
    let ingest = &t.stats.ingest;
    let heartbeat_age = age_ns(now_ns, load(&ingest.heartbeat_ns));
    let paused = ingest.paused.load(Ordering::Relaxed);
    let sources: Vec<(bool, serde_json::Value)> =
        ingest.sources.iter().map(|source| source_ok(source, paused, now_ns)).collect();
    let required = ingest.sources.iter().map(|source| source.required);
    let feed_ok = heartbeat_age < HEARTBEAT_LIMIT_NS && sources.iter().zip(required).all(|((ok, _), r)| *ok || !r);
    let not_delivering: Vec<&str> =
        ingest.sources.iter().zip(&sources).filter(|(_, (ok, _))| !ok).map(|(s, _)| &*s.name).collect();
    let reactors: Vec<serde_json::Value> = t
        .stats
        .reactors
        .iter()
        .enumerate()
        .map(|(id, r)| {
            let age = age_ns(now_ns, load(&r.heartbeat_ns));
            serde_json::json!({"id": id, "ok": age < HEARTBEAT_LIMIT_NS, "heartbeat_age_ms": ms(age)})
        })
        .collect();
    // An edge replaying the stream's past at start is not ready: its resume history and last
    // values are not there yet.
    let bus_ok = t.stats.bus.as_ref().is_none_or(|bus| bus.caught_up.load(Ordering::Relaxed));
    let feed_ok = feed_ok && bus_ok;
    let failure = t.liveness.failure().map(|f| f.to_string());
    // A failed gateway is stopping: its reactors and feed may still beat for a moment.
    let reactors_ok = reactors.iter().all(|r| r["ok"] == true) && failure.is_none();
    let body = serde_json::json!({
        "ready": feed_ok && reactors_ok,
        "failure": failure,
        "feed": {
            "ok": feed_ok,
            "paused": paused,
            "heartbeat_age_ms": ms(heartbeat_age),
            "last_tick_age_ms": ms(age_ns(now_ns, load(&ingest.last_batch_ns))),
            "not_delivering": not_delivering,
            "sources": sources.into_iter().map(|(_, body)| body).collect::<Vec<_>>(),
        },
        "reactors": reactors,
        // A cluster's bus: an edge's verdict is its source "bus" above; a publisher that lost
        // NATS still serves its own clients, and says so here.
        "bus": t.stats.bus.as_ref().map(|bus| serde_json::json!({
            "connected": bus.connected.load(Ordering::Relaxed),
            "caught_up": bus.caught_up.load(Ordering::Relaxed),
            "lag_messages": load(&bus.lag_messages),
            "publish_errors": load(&bus.publish_errors),
        })),
    });
    Readiness { feed_ok, reactors_ok, body: body.to_string() + "\n" }
}

fn ms(ns: u64) -> serde_json::Value {
    if ns == u64::MAX { serde_json::Value::Null } else { serde_json::json!(ns / 1_000_000) }
}

/// The Prometheus text exposition of every metric.
pub fn render(t: &Telemetry, now_ns: u64) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let float_gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let s = &t.stats;

    let build = gauge("tickgate_build_info", "Version of the running gateway (always 1).", &["version"])?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    float_gauge("tickgate_uptime_seconds", "Seconds since the gateway started.", &[])?
        .with_label_values(&[] as &[&str])
        .set(now_ns.saturating_sub(t.started_ns) as f64 / 1e9);
    gauge("tickgate_symbols", "Symbols in the universe.", &[])?
        .with_label_values(&[] as &[&str])
        .set(t.symbols.len() as i64);

    // Per-reactor counters.
    type Field = fn(&ReactorCounters) -> &AtomicU64;
    let per_reactor: &[(&str, &str, Field)] = &[
        ("tickgate_connections_accepted_total", "TCP connections accepted.", |c| &c.accepted),
        ("tickgate_connections_upgraded_total", "Connections upgraded to WebSocket.", |c| &c.upgraded),
        ("tickgate_messages_sent_total", "Tick messages queued to clients (one per subscriber per tick).", |c| {
            &c.deliveries
        }),
        (
            "tickgate_replies_sent_total",
            "Per-client messages queued: replies to commands and their snapshots, welcomes, rate-limit errors.",
            |c| &c.replies,
        ),
        ("tickgate_bytes_sent_total", "Bytes handed to the kernel.", |c| &c.bytes_written),
        ("tickgate_write_calls_total", "writev calls that wrote something.", |c| &c.write_calls),
        ("tickgate_frames_written_total", "Whole frames written (frames per call = this / write calls).", |c| {
            &c.frames_written
        }),
        ("tickgate_conflated_total", "Quotes that replaced a superseded quote queued for a slow client.", |c| {
            &c.conflated
        }),
        (
            "tickgate_throttled_quotes_total",
            "Quotes held back by a subscription's max_rate (each superseded by a later quote it sent).",
            |c| &c.throttled,
        ),
        ("tickgate_dropped_total", "Events a slow client's policy dropped (each announced in a gap).", |c| &c.dropped),
        (
            "tickgate_bandwidth_waits_total",
            "Waits of connections whose bandwidth cap held bytes back, each until the cap allowed the next write.",
            |c| &c.bandwidth_waits,
        ),
        ("tickgate_slow_consumer_disconnects_total", "Connections closed with 1008 slow consumer.", |c| {
            &c.slow_consumer_closes
        }),
        ("tickgate_protocol_closes_total", "Connections closed with 1002, 1007 or 1009.", |c| &c.protocol_closes),
        ("tickgate_reactor_turns_total", "Reactor loop turns.", |c| &c.turns),
        (
            "tickgate_reactor_write_holds_total",
            "Waits of a busy reactor before a write pass, to put more frames in each write.",
            |c| &c.write_holds,
        ),
        ("tickgate_rate_limited_total", "Client messages refused for the rate limit.", |c| &c.rate_limited),
        ("tickgate_subscriptions_refused_total", "Subscriptions refused for the per-connection maximum.", |c| {
            &c.subscriptions_refused
        }),
        (
            "tickgate_connections_refused_unanswered_total",
            "Refused connections reset at once, unanswered: too many refused ones were being answered already.",
            |c| &c.connections_refused_unanswered,
        ),
        ("tickgate_connections_refused_total", "Connections refused by a connection limit (503 or 429).", |c| {
            &c.connections_refused
        }),
        ("tickgate_pings_sent_total", "Keepalive pings sent to silent connections.", |c| &c.pings_sent),
        ("tickgate_auth_failures_total", "Tokens refused, or not presented in time.", |c| &c.auth_failures),
        ("tickgate_not_entitled_total", "Subscriptions refused for lack of entitlement.", |c| &c.not_entitled),
        ("tickgate_tls_handshakes_total", "TLS handshakes completed.", |c| &c.tls_handshakes),
        (
            "tickgate_tls_failures_total",
            "TLS handshakes or records refused (garbage, truncated or unsupported ClientHello), and clients neither TLS nor HTTP on a TLS port.",
            |c| &c.tls_failures,
        ),
        ("tickgate_tls_plain_http_total", "Plain HTTP requests on a TLS port (answered 400).", |c| &c.tls_plain_http),
        ("tickgate_proxy_headers_total", "PROXY protocol headers taken (server.proxy_protocol).", |c| &c.proxy_headers),
        (
            "tickgate_proxy_headers_refused_total",
            "Connections refused for a missing or malformed PROXY protocol header.",
            |c| &c.proxy_headers_refused,
        ),
        (
            "tickgate_forwarded_addresses_total",
            "Upgrades whose client address came from a trusted proxy's Forwarded or X-Forwarded-For.",
            |c| &c.forwarded_addresses,
        ),
        (
            "tickgate_forwarded_unusable_total",
            "Upgrades from a trusted proxy whose forwarding header had a hop it wrote that is not an address.",
            |c| &c.forwarded_unusable,
        ),
        ("tickgate_tls_on_plain_port_total", "TLS ClientHellos on a plain port (answered with an alert).", |c| {
            &c.tls_on_plain_port
        }),
    ];
    for &(name, help, field) in per_reactor {
        let c = counter(name, help, &["reactor"])?;
        for (id, r) in s.reactors.iter().enumerate() {
            c.with_label_values(&[&id.to_string()]).inc_by(load(field(&r.counters)));
        }
    }
    let gaps = counter("tickgate_gaps_sent_total", "Gap messages sent to clients, by reason.", &["reason"])?;
    let sum = |f: Field| s.reactors.iter().map(|r| load(f(&r.counters))).sum::<u64>();
    let resumes = counter(
        "tickgate_resumes_total",
        "Resuming subscriptions, by outcome: whole (every event after the client's seq, replayed), history (gap and \
         snapshot: the history did not reach back), ahead (gap and snapshot: the client's seq was past ours), stream \
         (an edge: the events read from the stream, then the history's).",
        &["outcome"],
    )?;
    resumes.with_label_values(&["whole"]).inc_by(sum(|c| &c.resumes_whole));
    resumes.with_label_values(&["history"]).inc_by(sum(|c| &c.resumes_history));
    resumes.with_label_values(&["ahead"]).inc_by(sum(|c| &c.resumes_ahead));
    resumes.with_label_values(&["stream"]).inc_by(sum(|c| &c.resumes_stream));
    let fetch_counters: [(&str, &str, Field); 3] = [
        (
            "tickgate_resume_fetches_refused_total",
            "Resumes an edge did not read from the stream: too many fetches in flight (gap history and snapshot).",
            |c| &c.resume_fetches_refused,
        ),
        (
            "tickgate_resume_fetches_failed_total",
            "Resumes an edge could not read from the stream: the bus down, a timeout (gap history and snapshot).",
            |c| &c.resume_fetches_failed,
        ),
        (
            "tickgate_resume_fetches_stale_total",
            "Answers from the stream for a subscription that went away or resumed again meanwhile: dropped.",
            |c| &c.resume_fetches_stale,
        ),
    ];
    for (name, help, field) in fetch_counters {
        counter(name, help, &[])?.with_label_values(&[] as &[&str]).inc_by(sum(field));
    }
    let replayed = counter(
        "tickgate_resume_replayed_events_total",
        "Events queued by resumes, from the history or the stream.",
        &[],
    )?;
    replayed.with_label_values(&[] as &[&str]).inc_by(sum(|c| &c.replayed));
    let cut = counter(
        "tickgate_resume_replays_cut_total",
        "Replays cut short: the history evicted events before the client was sent them (gap history and snapshot).",
        &[],
    )?;
    cut.with_label_values(&[] as &[&str]).inc_by(sum(|c| &c.replays_cut));
    gaps.with_label_values(&["history"]).inc_by(sum(|c| &c.resumes_history) + sum(|c| &c.replays_cut));
    gaps.with_label_values(&["ahead"]).inc_by(sum(|c| &c.resumes_ahead));
    gaps.with_label_values(&["slow_consumer"]).inc_by(sum(|c| &c.slow_gaps_sent));
    gaps.with_label_values(&["gateway_overload"]).inc_by(sum(|c| &c.overload_gaps_sent));
    gaps.with_label_values(&["upstream"]).inc_by(sum(|c| &c.upstream_gaps_sent));
    gaps.with_label_values(&["bus"]).inc_by(sum(|c| &c.bus_gaps_sent));

    // Registered with TLS off too (reading 0), so dashboards and alerts need no special case.
    let load_tls = |f: fn(&crate::tls::Tls) -> &AtomicU64| t.tls.as_ref().map_or(0, |tls| load(f(tls)));
    let reloads = counter(
        "tickgate_tls_reloads_total",
        "Certificate reloads (SIGHUP): ok took the new pair, failed kept the old one.",
        &["result"],
    )?;
    reloads.with_label_values(&["ok"]).inc_by(load_tls(|tls| &tls.reloads_ok));
    reloads.with_label_values(&["failed"]).inc_by(load_tls(|tls| &tls.reloads_failed));
    gauge(
        "tickgate_tls_certificate_not_after_seconds",
        "When the served certificate expires (Unix time); 0 with TLS off.",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(load_tls(|tls| &tls.not_after) as i64);
    let closed = counter("tickgate_connections_closed_total", "Connections closed, by reason.", &["reason"])?;
    for reason in CloseReason::ALL {
        let n: u64 = s.reactors.iter().map(|r| load(&r.closed_by_reason[reason.index()])).sum();
        closed.with_label_values(&[reason.as_str()]).inc_by(n);
    }
    let http = counter(
        "tickgate_http_responses_total",
        "HTTP requests answered without an upgrade (health checks, scrapes, refused handshakes), by status.",
        &["status"],
    )?;
    for (i, status) in HTTP_STATUSES.iter().enumerate() {
        let n: u64 = s.reactors.iter().map(|r| load(&r.http_by_status[i])).sum();
        http.with_label_values(&[&status.to_string()]).inc_by(n);
    }
    let commands = counter("tickgate_commands_total", "Client commands, by op and result.", &["op", "result"])?;
    for (i, op) in COMMAND_OPS.iter().enumerate() {
        for (j, result) in ["ok", "error"].iter().enumerate() {
            let n: u64 = s.reactors.iter().map(|r| load(&r.commands[i][j])).sum();
            commands.with_label_values(&[op, result]).inc_by(n);
        }
    }

    // Ingest, per source.
    let ingested =
        counter("tickgate_ticks_ingested_total", "Ticks taken from the source, sequenced and published.", &["source"])?;
    let rejected = counter(
        "tickgate_ticks_rejected_total",
        "Upstream messages rejected by the normalizer, by source and reason (each also skipped).",
        &["source", "reason"],
    )?;
    let reconnects = counter("tickgate_source_reconnects_total", "Upstream connections re-established.", &["source"])?;
    let connect_failures = counter(
        "tickgate_source_connect_failures_total",
        "Attempts to connect to the upstream that failed (unreachable, TLS or WebSocket handshake), each retried.",
        &["source"],
    )?;
    let upstream_gaps = counter(
        "tickgate_upstream_gaps_total",
        "Events the upstream's own sequence numbers say were skipped.",
        &["source"],
    )?;
    let silences = counter(
        "tickgate_source_silences_total",
        "Upstream sessions ended because nothing was heard for feed.upstream_silence_ms.",
        &["source"],
    )?;
    let subscription_errors = counter(
        "tickgate_source_subscription_errors_total",
        "Subscriptions the exchange refused (each ends the session).",
        &["source"],
    )?;
    let probes = counter(
        "tickgate_source_probes_total",
        "Listen mode: upstream connections that closed or stayed silent without sending anything.",
        &["source"],
    )?;
    let backoff = float_gauge(
        "tickgate_source_backoff_seconds",
        "The wait before the next attempt to reach the upstream (0 while connected).",
        &["source"],
    )?;
    let upstream_resets = counter(
        "tickgate_upstream_resets_total",
        "upstream_reset notices: the upstream's numbering of a symbol started again, by reason \
         (upstream_restart, seq_jump, replay_loop).",
        &["source", "reason"],
    )?;
    let feed_up = gauge("tickgate_feed_up", "1 while the source is delivering, else 0.", &["source"])?;
    let source_required = gauge(
        "tickgate_source_required",
        "1 if /readyz needs the source delivering, 0 for an optional source.",
        &["source"],
    )?;
    let last_tick_age = float_gauge(
        "tickgate_feed_last_tick_age_seconds",
        "Seconds since the last tick from the source.",
        &["source"],
    )?;
    let paused = s.ingest.paused.load(Ordering::Relaxed);
    for source in &s.ingest.sources {
        let name = &*source.name;
        ingested.with_label_values(&[name]).inc_by(load(&source.ticks));
        for (i, reason) in tickgate_feed::normalize::Reject::REASONS.iter().enumerate() {
            rejected.with_label_values(&[name, reason]).inc_by(load(&source.rejected[i]));
        }
        reconnects.with_label_values(&[name]).inc_by(load(&source.health.reconnects));
        connect_failures.with_label_values(&[name]).inc_by(load(&source.health.connect_failures));
        upstream_gaps.with_label_values(&[name]).inc_by(load(&source.health.upstream_gaps));
        silences.with_label_values(&[name]).inc_by(load(&source.health.silences));
        subscription_errors.with_label_values(&[name]).inc_by(load(&source.health.subscription_errors));
        probes.with_label_values(&[name]).inc_by(load(&source.health.probes));
        backoff.with_label_values(&[name]).set(load(&source.health.backoff_ms) as f64 / 1e3);
        for (i, reason) in tickgate_feed::upstream_seq::ResetReason::REASONS.iter().enumerate() {
            upstream_resets.with_label_values(&[name, reason]).inc_by(load(&source.upstream_resets[i]));
        }
        feed_up.with_label_values(&[name]).set(i64::from(source_ok(source, paused, now_ns).0));
        source_required.with_label_values(&[name]).set(i64::from(source.required));
        last_tick_age
            .with_label_values(&[name])
            .set(age_ns(now_ns, load(&source.last_tick_ns)).min(u64::MAX / 2) as f64 / 1e9);
    }
    counter("tickgate_frames_built_total", "Tick frames encoded (one per tick, whatever the fan-out).", &[])?
        .with_label_values(&[] as &[&str])
        .inc_by(load(&s.ingest.frames_built));
    let missed = counter(
        "tickgate_reactor_ticks_missed_total",
        "Ticks a reactor's full channel could not take (announced to its clients as gaps).",
        &["reactor"],
    )?;
    let wakes =
        counter("tickgate_reactor_wakes_total", "Wake-ups the ingest thread sent a parked reactor.", &["reactor"])?;
    let notices_dropped = counter(
        "tickgate_reactor_notices_dropped_total",
        "upstream_gap notices dropped because over 1,024 waited for room in a reactor's full channel.",
        &["reactor"],
    )?;
    // Registered without a bus too (reading 0), so dashboards and alerts need no special case.
    let no_bus = tickgate_bus::BusStats::default();
    render_bus(s.bus.as_deref().unwrap_or(&no_bus), &counter, &gauge, &float_gauge)?;
    render_deflate(s, &counter, &gauge)?;
    for (id, l) in s.links.iter().enumerate() {
        missed.with_label_values(&[&id.to_string()]).inc_by(load(&l.ticks_missed));
        wakes.with_label_values(&[&id.to_string()]).inc_by(load(&l.wakes));
        notices_dropped.with_label_values(&[&id.to_string()]).inc_by(load(&l.notices_dropped));
    }

    // Per-reactor gauges.
    let connections = gauge("tickgate_connections", "Open connections.", &["reactor"])?;
    let subscriptions = gauge("tickgate_subscriptions", "Subscriptions held by open connections.", &["reactor"])?;
    let queued =
        gauge("tickgate_outbound_queued_bytes", "Bytes queued for clients and not yet written.", &["reactor"])?;
    let bandwidth_capped =
        gauge("tickgate_bandwidth_capped_connections", "Open connections with a bandwidth cap.", &["reactor"])?;
    let bandwidth_held = gauge(
        "tickgate_bandwidth_held_connections",
        "Connections whose bandwidth cap is holding queued bytes back.",
        &["reactor"],
    )?;
    let bandwidth_held_bytes = gauge(
        "tickgate_bandwidth_held_bytes",
        "Bytes queued for connections whose bandwidth cap is holding them back.",
        &["reactor"],
    )?;
    let rate_capped = gauge(
        "tickgate_rate_capped_subscriptions",
        "Subscriptions under a rate cap (max_rate or limits.max_update_rate).",
        &["reactor"],
    )?;
    let history_bytes =
        gauge("tickgate_history_bytes", "Bytes the resume history holds (frames and bookkeeping).", &["reactor"])?;
    let history_events = gauge("tickgate_history_events", "Events the resume history holds.", &["reactor"])?;
    let replays = gauge("tickgate_resume_replays", "Resumes being replayed to their clients.", &["reactor"])?;
    let depth = gauge(
        "tickgate_channel_depth",
        "Ticks waiting in the reactor's channel from the ingest thread.",
        &["reactor"],
    )?;
    let heartbeat = float_gauge(
        "tickgate_reactor_heartbeat_age_seconds",
        "Seconds since the reactor's last housekeeping pass (stuck if large).",
        &["reactor"],
    )?;
    for (id, r) in s.reactors.iter().enumerate() {
        let id = id.to_string();
        connections.with_label_values(&[&id]).set(load(&r.connections) as i64);
        subscriptions.with_label_values(&[&id]).set(load(&r.subscriptions) as i64);
        queued.with_label_values(&[&id]).set(load(&r.queued_bytes) as i64);
        bandwidth_capped.with_label_values(&[&id]).set(load(&r.bandwidth_capped) as i64);
        bandwidth_held.with_label_values(&[&id]).set(load(&r.bandwidth_held) as i64);
        bandwidth_held_bytes.with_label_values(&[&id]).set(load(&r.bandwidth_held_bytes) as i64);
        rate_capped.with_label_values(&[&id]).set(load(&r.rate_capped_subscriptions) as i64);
        history_bytes.with_label_values(&[&id]).set(load(&r.history_bytes) as i64);
        history_events.with_label_values(&[&id]).set(load(&r.history_events) as i64);
        replays.with_label_values(&[&id]).set(load(&r.replays) as i64);
        depth.with_label_values(&[&id]).set(load(&r.channel_depth) as i64);
        heartbeat.with_label_values(&[&id]).set(age_ns(now_ns, load(&r.heartbeat_ns)).min(u64::MAX / 2) as f64 / 1e9);
    }

    let mut out = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    // Latency histograms, summed over the reactors.
    let histograms = [
        (
            "tickgate_delivery_latency_seconds",
            "Ingest to the end of the write pass that handed each delivery to the kernel (frames waiting for a full socket included at that point).",
            0,
        ),
        (
            "tickgate_fanout_batch_seconds",
            "One reactor turn that fanned out ticks: its socket events, fan-out and writes.",
            1,
        ),
    ];
    for (name, help, which) in histograms {
        let mut buckets = [0u64; LATENCY_BUCKETS_NS.len()];
        let (mut count, mut sum_ns) = (0u64, 0u64);
        for r in &s.reactors {
            let h = if which == 0 { &r.delivery_latency } else { &r.fanout_time };
            for (total, b) in buckets.iter_mut().zip(&h.buckets) {
                *total += load(b);
            }
            count += load(&h.count);
            sum_ns = sum_ns.saturating_add(load(&h.sum_ns));
        }
        write_histogram(&mut out, name, help, &buckets, count, sum_ns);
    }
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// Registers a metric family: (name, help, label names).
type Register<'a, T> = dyn Fn(&str, &str, &[&str]) -> Result<T, prometheus::Error> + 'a;

/// The bus of a cluster's publisher or edge (see OPERATIONS.md, "Cluster").
/// permessage-deflate: connections, offers declined, what was compressed (the shared tick frames
/// once each, the per-connection frames) and inflated, and the deflate bombs refused.
fn render_deflate(
    s: &GatewayStats,
    counter: &Register<'_, IntCounterVec>,
    gauge: &Register<'_, IntGaugeVec>,
) -> Result<(), prometheus::Error> {
    use tickgate_protocol::deflate::Decline;
    let none: &[&str] = &[];
    let sum = |f: fn(&crate::stats::ReactorStats) -> &AtomicU64| s.reactors.iter().map(|r| load(f(r))).sum::<u64>();
    let deflate = &s.ingest.deflate;
    gauge("tickgate_deflate_connections", "Open connections that agreed to permessage-deflate.", &[])?
        .with_label_values(none)
        .set(load(&deflate.connections) as i64);
    counter("tickgate_deflate_negotiated_total", "Upgrades that agreed to permessage-deflate.", &[])?
        .with_label_values(none)
        .inc_by(sum(|r| &r.counters.deflate_negotiated));
    let declined = counter(
        "tickgate_deflate_offers_declined_total",
        "permessage-deflate offers declined (the upgrade goes on without them), by reason.",
        &["reason"],
    )?;
    for why in Decline::ALL {
        let n: u64 = s.reactors.iter().map(|r| load(&r.deflate_declined[why.index()])).sum();
        declined.with_label_values(&[why.as_str()]).inc_by(n);
    }
    let messages = counter(
        "tickgate_deflate_messages_total",
        "Messages compressed: shared (each tick once, for every compressing client) or own (one connection's \
         replies, snapshots, lists, echoes).",
        &["kind"],
    )?;
    let raw = counter("tickgate_deflate_raw_bytes_total", "Payload bytes of compressed messages before.", &["kind"])?;
    let compressed =
        counter("tickgate_deflate_compressed_bytes_total", "Payload bytes of compressed messages after.", &["kind"])?;
    messages.with_label_values(&["shared"]).inc_by(load(&deflate.frames));
    raw.with_label_values(&["shared"]).inc_by(load(&deflate.raw_bytes));
    compressed.with_label_values(&["shared"]).inc_by(load(&deflate.compressed_bytes));
    messages.with_label_values(&["own"]).inc_by(sum(|r| &r.deflate_own[0]));
    raw.with_label_values(&["own"]).inc_by(sum(|r| &r.deflate_own[1]));
    compressed.with_label_values(&["own"]).inc_by(sum(|r| &r.deflate_own[2]));
    counter(
        "tickgate_deflate_shared_deliveries_total",
        "Tick deliveries that queued the shared compressed frame (a reference, no compression).",
        &[],
    )?
    .with_label_values(none)
    .inc_by(sum(|r| &r.counters.deflated_deliveries));
    counter("tickgate_inflate_messages_total", "Compressed client messages inflated.", &[])?
        .with_label_values(none)
        .inc_by(sum(|r| &r.inflated[0]));
    counter("tickgate_inflate_compressed_bytes_total", "Their payload bytes as received.", &[])?
        .with_label_values(none)
        .inc_by(sum(|r| &r.inflated[1]));
    counter("tickgate_inflate_bytes_total", "Their payload bytes inflated.", &[])?
        .with_label_values(none)
        .inc_by(sum(|r| &r.inflated[2]));
    counter(
        "tickgate_inflate_too_big_closes_total",
        "Connections closed with 1009: a compressed message past limits.max_message_size, compressed or inflated.",
        &[],
    )?
    .with_label_values(none)
    .inc_by(sum(|r| &r.counters.inflate_too_big));
    Ok(())
}

fn render_bus(
    bus: &tickgate_bus::BusStats,
    counter: &Register<'_, IntCounterVec>,
    gauge: &Register<'_, IntGaugeVec>,
    float_gauge: &Register<'_, GaugeVec>,
) -> Result<(), prometheus::Error> {
    let none: &[&str] = &[];
    gauge("tickgate_bus_connected", "1 while the NATS connection is up.", &[])?
        .with_label_values(none)
        .set(i64::from(bus.connected.load(Ordering::Relaxed)));
    let counters: [(&str, &str, &AtomicU64); 8] = [
        ("tickgate_bus_reconnects_total", "Reconnections to NATS after a loss.", &bus.reconnects),
        ("tickgate_bus_published_total", "Ticks published and acknowledged by the stream.", &bus.published),
        ("tickgate_bus_publish_errors_total", "Publishes that failed or that the stream refused.", &bus.publish_errors),
        (
            "tickgate_bus_publish_dropped_total",
            "Ticks not published: the publish queue was full.",
            &bus.publish_dropped,
        ),
        ("tickgate_bus_received_total", "Ticks read from the stream and delivered (edge).", &bus.received),
        ("tickgate_bus_catch_ups_total", "Catch-ups from the stream after a loss of NATS (edge).", &bus.catch_ups),
        ("tickgate_bus_gaps_total", "Seq skips announced as gap, reason bus (edge).", &bus.gaps),
        ("tickgate_bus_repeats_total", "Ticks read again with a seq already delivered: dropped (edge).", &bus.repeats),
    ];
    for (name, help, value) in counters {
        counter(name, help, &[])?.with_label_values(none).inc_by(load(value));
    }
    let rejected = counter("tickgate_bus_rejected_total", "Bus messages rejected, by reason (edge).", &["reason"])?;
    for (i, reason) in tickgate_bus::payload::Reject::REASONS.iter().enumerate() {
        rejected.with_label_values(&[reason]).inc_by(load(&bus.rejected[i]));
    }
    let fetches = counter(
        "tickgate_bus_resume_fetches_total",
        "Resumes older than the history read from the stream (edge), by outcome: events, not_retained (aged out), \
         unavailable (the bus down, a timeout, an error).",
        &["outcome"],
    )?;
    for (i, outcome) in tickgate_bus::fetch::OUTCOMES.iter().enumerate() {
        fetches.with_label_values(&[outcome]).inc_by(load(&bus.resume_fetches[i]));
    }
    counter("tickgate_bus_resume_fetched_events_total", "Events read from the stream for resumes (edge).", &[])?
        .with_label_values(none)
        .inc_by(load(&bus.resume_fetched_events));
    gauge("tickgate_bus_lag_messages", "Messages of the stream this edge has not read yet.", &[])?
        .with_label_values(none)
        .set(i64::try_from(load(&bus.lag_messages)).unwrap_or(i64::MAX));
    float_gauge("tickgate_bus_lag_seconds", "Age of the last tick read from the stream when it was read (edge).", &[])?
        .with_label_values(none)
        .set(load(&bus.lag_ns) as f64 / 1e9);
    Ok(())
}
