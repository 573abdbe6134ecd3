//! `http_request`: arbitrary bytes into `tickgate_server::http::parse_and_route`.
//!
//! Contract: never panics, with no origin allow-list or with one, on each surface. Also checked,
//! cheaply: a `Partial` verdict only below the head limit; an upgrade's `head_len` lies inside
//! the buffer and its response is a 101; every other response is a whole `HTTP/1.1` response
//! with a real status code.

use tickgate_server::http::{Parsed, Route, Surface, parse_and_route, status_of};

/// The head limit the brief (and the server's default) uses.
pub const MAX_HEAD: usize = 8192;

/// The surface under test first; the other two reach the echo and admin routes.
pub const SURFACES: [Surface; 3] = [
    Surface::Public { operational: true, echo: false },
    Surface::Public { operational: false, echo: true },
    Surface::Admin,
];

/// No allow-list (every origin passes), and one that refuses every other origin (403).
fn allow_lists() -> [Vec<String>; 2] {
    [Vec::new(), vec!["https://example.invalid".to_string()]]
}

pub fn check(data: &[u8]) {
    for (surface, allowed) in SURFACES.into_iter().flat_map(|s| allow_lists().map(move |a| (s, a))) {
        match parse_and_route(data, MAX_HEAD, surface, &allowed) {
            Parsed::Partial => {
                assert!(data.len() < MAX_HEAD, "Partial for a {}-byte buffer (limit {MAX_HEAD})", data.len())
            }
            Parsed::Complete(Route::Upgrade { response, head_len, .. }) => {
                assert!(head_len > 0 && head_len <= data.len(), "head_len {head_len} of {} bytes", data.len());
                assert_eq!(status_of(&response), 101, "{}", String::from_utf8_lossy(&response));
                assert!(response.ends_with(b"\r\n\r\n"), "{}", String::from_utf8_lossy(&response));
            }
            Parsed::Complete(Route::Respond(response)) => {
                assert!(response.starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&response));
                let status = status_of(&response);
                assert!((200..600).contains(&status), "status {status}: {}", String::from_utf8_lossy(&response));
            }
            Parsed::Complete(
                Route::Metrics { .. } | Route::Ready { .. } | Route::Health { .. } | Route::Connz { .. },
            ) => {}
        }
    }
}
