//! `/connz`: the node's connections, sorted by what says who is behind (queued bytes, how long
//! the queue has waited for a write, gaps sent, messages sent), paginated (after nats-server's
//! `/connz`).
//!
//! Connections live on their reactors' threads, so a request is gathered, not read: the reactor
//! that got the request posts it on the [`Board`] and parks the HTTP connection; every reactor
//! sees the new generation at its next housekeeping pass (within about 100 ms), lists its own
//! connections, keeps the first `offset + limit` by the sort key, and posts them; once every
//! reactor has answered (or after [`GATHER_TIMEOUT`], naming those that did not), the first
//! reactor merges and answers. One request at a time; the lock is taken a few times per
//! request, never on the per-message path. The cost is bounded: one pass over each reactor's
//! connections, and at most `offset + limit` rows ([`MAX_OFFSET`] + [`MAX_LIMIT`]) from each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

/// Rows per page at most, and by default.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `offset` accepted.
pub const MAX_OFFSET: usize = 100_000;
/// How long the reactor that got the request waits for the others.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the rows are sorted by, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    QueuedBytes,
    WaitingMs,
    GapsSent,
    MessagesSent,
}

impl SortKey {
    const ALL: [(&'static str, SortKey); 4] = [
        ("queued_bytes", SortKey::QueuedBytes),
        ("waiting_ms", SortKey::WaitingMs),
        ("gaps_sent", SortKey::GapsSent),
        ("messages_sent", SortKey::MessagesSent),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("queued_bytes", |(n, _)| n)
    }

    fn of(self, row: &ConnInfo) -> u64 {
        match self {
            SortKey::QueuedBytes => row.queued_bytes,
            SortKey::WaitingMs => row.waiting_ms,
            SortKey::GapsSent => row.gaps_sent,
            SortKey::MessagesSent => row.messages_sent,
        }
    }
}

/// A `/connz` request: `?sort=queued_bytes&offset=0&limit=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub sort: SortKey,
    pub offset: usize,
    pub limit: usize,
}

impl Query {
    /// Parses the query string of the request target (without the `?`); unknown parameters are
    /// refused, so a typo does not silently sort by the default.
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query { sort: SortKey::QueuedBytes, offset: 0, limit: DEFAULT_LIMIT };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |max: usize| -> Result<usize, String> {
                match value.parse::<usize>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!("{key} must be an integer from 0 to {max}, got {value:?}")),
                }
            };
            match key {
                "sort" => {
                    q.sort = SortKey::ALL.iter().find(|(n, _)| *n == value).map(|(_, k)| *k).ok_or_else(|| {
                        format!("sort must be queued_bytes, waiting_ms, gaps_sent or messages_sent, got {value:?}")
                    })?
                }
                "offset" => q.offset = number(MAX_OFFSET)?,
                "limit" => {
                    q.limit = number(MAX_LIMIT)?;
                    if q.limit == 0 {
                        return Err(format!("limit must be from 1 to {MAX_LIMIT}"));
                    }
                }
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(format!("unknown parameter {shown:?}; /connz takes sort, offset and limit"));
                }
            }
        }
        Ok(q)
    }
}

/// One connection, as `/connz` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub reactor: usize,
    /// As in the `welcome`: `r<reactor>-<n>`.
    pub session: String,
    pub client: String,
    pub user: Option<String>,
    pub subscriptions: usize,
    pub policy: &'static str,
    /// Its bandwidth cap, if it has one.
    pub max_bytes_per_second: Option<u32>,
    pub queued_bytes: u64,
    /// How long its queue has waited without a byte written (0 when empty): the age of the
    /// oldest queued frame for a client that reads nothing.
    pub waiting_ms: u64,
    pub gaps_sent: u64,
    /// Frames written to it (events, replies, control frames).
    pub messages_sent: u64,
    pub age_ms: u64,
}

/// Keeps the first `query.offset + query.limit` rows by the sort key, largest first (ties by
/// session, for a stable order).
pub fn keep_first(rows: &mut Vec<ConnInfo>, query: &Query) {
    rows.sort_unstable_by(|a, b| {
        query.sort.of(b).cmp(&query.sort.of(a)).then_with(|| (a.reactor, &a.session).cmp(&(b.reactor, &b.session)))
    });
    rows.truncate(query.offset.saturating_add(query.limit));
}

/// One reactor's answer to a generation.
#[derive(Debug, Clone, Default)]
struct Answer {
    generation: u64,
    connections: usize,
    rows: Vec<ConnInfo>,
}

#[derive(Debug, Default)]
struct Posted {
    /// The request under way: its generation and query.
    request: Option<(u64, Query)>,
    answers: Vec<Answer>,
}

/// Where reactors post their part of a `/connz` request.
#[derive(Debug, Default)]
pub struct Board {
    /// The newest request's generation (read by every reactor at housekeeping).
    generation: AtomicU64,
    posted: Mutex<Posted>,
}

/// Another `/connz` is being gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl Board {
    fn posted(&self) -> std::sync::MutexGuard<'_, Posted> {
        self.posted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts a request; returns its generation.
    pub fn begin(&self, query: Query) -> Result<u64, Busy> {
        let mut posted = self.posted();
        if posted.request.is_some() {
            return Err(Busy);
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        posted.request = Some((generation, query));
        self.generation.store(generation, Ordering::Release);
        Ok(generation)
    }

    /// The request a reactor that last answered `answered` still has to answer.
    pub fn pending(&self, answered: u64) -> Option<(u64, Query)> {
        if self.generation.load(Ordering::Acquire) <= answered {
            return None;
        }
        self.posted().request
    }

    /// A reactor's part of `generation`.
    pub fn answer(&self, reactor: usize, generation: u64, connections: usize, rows: Vec<ConnInfo>) {
        let mut posted = self.posted();
        if posted.request.map(|(g, _)| g) != Some(generation) {
            return;
        }
        if posted.answers.len() <= reactor {
            posted.answers.resize_with(reactor + 1, Answer::default);
        }
        posted.answers[reactor] = Answer { generation, connections, rows };
    }

    /// Once all `reactors` answered `generation` (or `give_up`), ends the request and returns the
    /// body of the answer.
    pub fn finish(&self, generation: u64, reactors: usize, give_up: bool) -> Option<String> {
        let mut posted = self.posted();
        let (g, query) = posted.request?;
        if g != generation {
            return None;
        }
        let answered = |r: usize| posted.answers.get(r).is_some_and(|a| a.generation == generation);
        let missing: Vec<usize> = (0..reactors).filter(|&r| !answered(r)).collect();
        if !missing.is_empty() && !give_up {
            return None;
        }
        let mut rows = Vec::new();
        let mut total = 0;
        for answer in posted.answers.iter_mut().filter(|a| a.generation == generation) {
            total += answer.connections;
            rows.append(&mut answer.rows);
        }
        posted.request = None;
        drop(posted);
        keep_first(&mut rows, &query);
        let page: Vec<_> = rows.into_iter().skip(query.offset).map(row_json).collect();
        let body = json!({
            "total": total,
            "offset": query.offset,
            "limit": query.limit,
            "sort": query.sort.as_str(),
            "count": page.len(),
            "missing_reactors": missing,
            "connections": page,
        });
        Some(format!("{body:#}\n"))
    }
}

fn row_json(row: ConnInfo) -> serde_json::Value {
    json!({
        "reactor": row.reactor,
        "session": row.session,
        "client": row.client,
        "user": row.user,
        "subscriptions": row.subscriptions,
        "policy": row.policy,
        "max_bytes_per_second": row.max_bytes_per_second,
        "queued_bytes": row.queued_bytes,
        "waiting_ms": row.waiting_ms,
        "gaps_sent": row.gaps_sent,
        "messages_sent": row.messages_sent,
        "age_ms": row.age_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(reactor: usize, n: u64, queued: u64, gaps: u64) -> ConnInfo {
        ConnInfo {
            reactor,
            session: format!("r{reactor}-{n}"),
            client: "127.0.0.1:1".into(),
            user: None,
            subscriptions: 1,
            policy: "conflate",
            max_bytes_per_second: None,
            queued_bytes: queued,
            waiting_ms: 0,
            gaps_sent: gaps,
            messages_sent: n,
            age_ms: 0,
        }
    }

    #[test]
    fn parses_queries_and_names_what_is_wrong() {
        assert_eq!(Query::parse("").unwrap(), Query { sort: SortKey::QueuedBytes, offset: 0, limit: 100 });
        let q = Query::parse("sort=gaps_sent&offset=10&limit=5").unwrap();
        assert_eq!(q, Query { sort: SortKey::GapsSent, offset: 10, limit: 5 });
        for (bad, says) in [
            ("sort=age", "sort must be"),
            ("limit=0", "limit must be"),
            ("limit=1001", "limit must be an integer from 0 to 1000"),
            ("offset=-1", "offset must be"),
            ("offset=99999999999999999999999", "offset must be"),
            ("user=x", "unknown parameter \"user\""),
        ] {
            assert!(Query::parse(bad).unwrap_err().contains(says), "{bad}");
        }
    }

    #[test]
    fn merges_every_reactors_part_sorted_and_paginated() {
        let board = Board::default();
        let query = Query::parse("sort=queued_bytes&offset=1&limit=2").unwrap();
        let generation = board.begin(query).unwrap();
        assert_eq!(board.begin(query), Err(Busy), "one request at a time");
        assert_eq!(board.pending(0).map(|(g, _)| g), Some(generation));
        assert_eq!(board.pending(generation), None, "answered already");
        let mut part0 = vec![row(0, 1, 10, 0), row(0, 2, 500, 3), row(0, 3, 7, 0)];
        keep_first(&mut part0, &query);
        assert_eq!(part0.len(), 3);
        board.answer(0, generation, 3, part0);
        assert_eq!(board.finish(generation, 2, false), None, "reactor 1 has not answered");
        board.answer(1, generation, 1, vec![row(1, 1, 100, 1)]);
        let body: serde_json::Value = serde_json::from_str(&board.finish(generation, 2, false).unwrap()).unwrap();
        assert_eq!(body["total"], 4);
        let sessions: Vec<&str> =
            body["connections"].as_array().unwrap().iter().map(|c| c["session"].as_str().unwrap()).collect();
        assert_eq!(sessions, ["r1-1", "r0-1"], "500 is on the first page, then 100 and 10");
        assert!(board.begin(query).is_ok(), "finished: the next request may start");
    }

    #[test]
    fn a_reactor_that_does_not_answer_is_named() {
        let board = Board::default();
        let generation = board.begin(Query::parse("").unwrap()).unwrap();
        board.answer(0, generation, 1, vec![row(0, 1, 1, 0)]);
        let body: serde_json::Value = serde_json::from_str(&board.finish(generation, 2, true).unwrap()).unwrap();
        assert_eq!(body["missing_reactors"], json!([1]));
        assert_eq!(body["count"], 1);
    }
}
