//! The HTTP side of a connection, sans IO: parse a request head, pick a route, write a response.
//!
//! Every connection starts here. `GET /ws` with a WebSocket upgrade is validated by
//! tungstenite's handshake code and answered with `101 Switching Protocols`; anything else gets
//! a complete plain-text response and the connection is closed after it.

use tickgate_protocol::deflate::{Negotiation, negotiate};
use tungstenite::handshake::server::create_response;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 32;

/// What to do with a complete request head.
#[derive(Debug)]
pub enum Route {
    /// Switch to WebSocket: send `response` (the 101), then treat the bytes after the head as
    /// WebSocket frames.
    /// `deflate` is what the client's permessage-deflate offers come to (the response does not
    /// answer them yet: see [`with_extensions`]).
    Upgrade { response: Vec<u8>, head_len: usize, echo: bool, token: Option<String>, deflate: Negotiation },
    /// Send this response and close.
    Respond(Vec<u8>),
    /// Answer with the Prometheus metrics (`head`: without the body, for a HEAD request).
    Metrics { head: bool },
    /// Answer with readiness: 200 or 503 and a JSON body (`head`: without it).
    Ready { head: bool },
    /// List the connections (`/connz`), with the request's query string.
    Connz { head: bool, query: String },
    /// Answer with liveness: 200 `ok`, or 503 and the failure once the gateway has failed.
    Health { head: bool },
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The public port: the WebSocket endpoint and /healthz, plus /metrics and /readyz unless an
    /// admin port serves those, plus the echo endpoint when it is turned on.
    Public { operational: bool, echo: bool },
    /// The admin port: /healthz, /readyz, /metrics only.
    Admin,
}

/// Outcome of looking at the bytes received so far.
#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Complete(Route),
}

/// The head of `response` (status line and headers, `Content-Length` kept): the answer to a
/// HEAD request.
pub fn without_body(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(p) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(p + 4);
    }
    response
}

/// Parses the request head in `buf` (which holds at most `max_head` bytes) and routes it.
pub fn parse_and_route(buf: &[u8], max_head: usize, surface: Surface, allowed_origins: &[String]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::Complete(Route::Respond(response(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ))),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(head_len)) if req.method == Some("HEAD") => {
            // The same answer as GET, without the body; HEAD never upgrades.
            match route(&req, head_len, surface) {
                Route::Upgrade { .. } => Parsed::Complete(Route::Respond(response(
                    400,
                    "Bad Request",
                    "a WebSocket upgrade must be a GET\n",
                ))),
                Route::Respond(full) => Parsed::Complete(Route::Respond(without_body(full))),
                Route::Metrics { .. } => Parsed::Complete(Route::Metrics { head: true }),
                Route::Ready { .. } => Parsed::Complete(Route::Ready { head: true }),
                Route::Connz { query, .. } => Parsed::Complete(Route::Connz { head: true, query }),
                Route::Health { .. } => Parsed::Complete(Route::Health { head: true }),
            }
        }
        Ok(httparse::Status::Complete(head_len)) => {
            // Browsers always send Origin; native clients send none and are not checked (the
            // allow-list guards against other sites' pages, not against programs).
            if let (false, true, Some(origin)) =
                (allowed_origins.is_empty(), wants_websocket(&req), header(&req, "origin"))
            {
                if !allowed_origins.iter().any(|o| o.as_bytes() == origin) {
                    return Parsed::Complete(Route::Respond(response(
                        403,
                        "Forbidden",
                        "this origin may not open WebSockets here (see limits.allowed_origins)\n",
                    )));
                }
            }
            Parsed::Complete(route(&req, head_len, surface))
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Complete(Route::Respond(response(
            431,
            "Request Header Fields Too Large",
            "too many request headers\n",
        ))),
        Err(e) => {
            Parsed::Complete(Route::Respond(response(400, "Bad Request", &format!("malformed HTTP request: {e}\n"))))
        }
    }
}

fn wants_websocket(req: &httparse::Request<'_, '_>) -> bool {
    header(req, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"))
}

fn header<'h>(req: &'h httparse::Request<'_, '_>, name: &str) -> Option<&'h [u8]> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn route(req: &httparse::Request<'_, '_>, head_len: usize, surface: Surface) -> Route {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" && method != "HEAD" {
        return Route::Respond(response(405, "Method Not Allowed", "only GET is served here\n"));
    }
    let operational = matches!(surface, Surface::Admin | Surface::Public { operational: true, .. });
    let echo = matches!(surface, Surface::Public { echo: true, .. });
    match path {
        "/healthz" => Route::Health { head: false },
        "/readyz" if operational => Route::Ready { head: false },
        "/metrics" if operational => Route::Metrics { head: false },
        "/connz" if operational => {
            Route::Connz { head: false, query: target.split_once('?').map_or("", |(_, q)| q).to_string() }
        }
        _ if surface == Surface::Admin => {
            Route::Respond(response(404, "Not Found", "the admin port serves /healthz, /readyz, /metrics and /connz\n"))
        }
        "/echo" if echo => upgrade(req, head_len, true),
        "/ws" => {
            if !wants_websocket(req) {
                return Route::Respond(response(
                    400,
                    "Bad Request",
                    "This is tickgate's WebSocket endpoint: connect with a WebSocket client to ws://<host>/ws \
                     and send {\"op\":\"subscribe\",\"symbols\":[\"AAPL\"]}. See docs/PROTOCOL.md.\n",
                ));
            }
            upgrade(req, head_len, false)
        }
        "/" | "/index.html" => {
            Route::Respond(response_typed(200, "OK", "text/html; charset=utf-8", include_str!("../assets/index.html")))
        }
        _ => {
            Route::Respond(response(404, "Not Found", &format!("no route for {path}; the WebSocket endpoint is /ws\n")))
        }
    }
}

fn upgrade(req: &httparse::Request<'_, '_>, head_len: usize, echo: bool) -> Route {
    let mut builder =
        http::Request::builder().method("GET").uri(req.path.unwrap_or("/ws")).version(match req.version {
            Some(0) => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        });
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let checked = builder
        .body(())
        .map_err(|e| e.to_string())
        .and_then(|request| create_response(&request).map_err(|e| e.to_string()));
    match checked {
        Ok(accept) => {
            let mut out = Vec::with_capacity(160);
            match tungstenite::handshake::server::write_response(&mut out, &accept) {
                Ok(()) => {
                    let offers = req
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                        .map(|h| h.value);
                    Route::Upgrade { response: out, head_len, echo, token: token(req), deflate: negotiate(offers) }
                }
                Err(e) => Route::Respond(response(
                    500,
                    "Internal Server Error",
                    &format!("cannot write upgrade response: {e}\n"),
                )),
            }
        }
        Err(reason) => Route::Respond(response(400, "Bad Request", &format!("invalid WebSocket upgrade: {reason}\n"))),
    }
}

/// An upgrade response (a 101 built here) with `Sec-WebSocket-Extensions: value` added.
pub fn with_extensions(mut response: Vec<u8>, value: &str) -> Vec<u8> {
    if response.ends_with(b"\r\n\r\n") {
        response.truncate(response.len() - 2);
        response.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        response.extend_from_slice(value.as_bytes());
        response.extend_from_slice(b"\r\n\r\n");
    }
    response
}

/// The client's token: `Authorization: Bearer TOKEN`, or `?token=TOKEN` in the URL.
fn token(req: &httparse::Request<'_, '_>) -> Option<String> {
    if let Some(value) = header(req, "authorization") {
        let value = std::str::from_utf8(value).ok()?.trim();
        if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return Some(token.trim().to_string());
        }
    }
    let query = req.path?.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(percent_decode)
}

/// Decodes `%XX` escapes and `+` in a query value; a malformed escape stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A complete `Connection: close` response with a plain-text body.
pub fn response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response_typed(status, reason, "text/plain; charset=utf-8", body)
}

/// A complete `Connection: close` response with a body of the given content type.
pub fn response_typed(status: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status code of a response built here.
pub fn status_of(response: &[u8]) -> u16 {
    response.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(raw: &str) -> String {
        match parse_and_route(raw.as_bytes(), 8192, PUBLIC, &[]) {
            Parsed::Complete(Route::Respond(bytes)) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    const PUBLIC: Surface = Surface::Public { operational: true, echo: false };

    #[test]
    fn operational_routes_follow_the_surface() {
        let route = |raw: &str, surface| match parse_and_route(raw.as_bytes(), 8192, surface, &[]) {
            Parsed::Complete(Route::Metrics { head: false }) => "metrics".to_string(),
            Parsed::Complete(Route::Ready { head: false }) => "ready".to_string(),
            Parsed::Complete(Route::Metrics { head: true }) => "head metrics".to_string(),
            Parsed::Complete(Route::Ready { head: true }) => "head ready".to_string(),
            Parsed::Complete(Route::Health { head }) => format!("health head={head}"),
            Parsed::Complete(Route::Respond(r)) => status_of(&r).to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n", PUBLIC), "metrics");
        assert_eq!(route("GET /readyz HTTP/1.1\r\n\r\n", PUBLIC), "ready");
        assert_eq!(route("HEAD /metrics HTTP/1.1\r\n\r\n", PUBLIC), "head metrics");
        assert_eq!(route("HEAD /readyz HTTP/1.1\r\n\r\n", Surface::Admin), "head ready");
        let public_only = Surface::Public { operational: false, echo: false };
        assert_eq!(route("GET /echo HTTP/1.1\r\n\r\n", public_only), "404", "off unless turned on");
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n", public_only), "404");
        assert_eq!(route("GET /healthz HTTP/1.1\r\n\r\n", public_only), "health head=false");
        assert_eq!(route("HEAD /healthz HTTP/1.1\r\n\r\n", Surface::Admin), "health head=true");
        assert_eq!(route("GET /metrics HTTP/1.1\r\n\r\n", Surface::Admin), "metrics");
        assert_eq!(route("GET /ws HTTP/1.1\r\n\r\n", Surface::Admin), "404");
    }

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn upgrades_a_valid_websocket_request() {
        let mut raw = UPGRADE.as_bytes().to_vec();
        raw.extend_from_slice(&[0x81, 0x80]);
        match parse_and_route(&raw, 8192, PUBLIC, &[]) {
            Parsed::Complete(Route::Upgrade { response, head_len, .. }) => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("HTTP/1.1 101"), "{text}");
                assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455 sample accept key: {text}");
                assert_eq!(head_len, UPGRADE.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_deflate_offers_and_answers_them() {
        let offer = |extra: &str| {
            let raw = UPGRADE.replace("Host: x\r\n", &format!("Host: x\r\n{extra}"));
            match parse_and_route(raw.as_bytes(), 8192, PUBLIC, &[]) {
                Parsed::Complete(Route::Upgrade { deflate, response, .. }) => (deflate, response),
                other => panic!("{other:?}"),
            }
        };
        let (none, _) = offer("");
        assert_eq!(none, Negotiation::default());
        let (n, response) = offer(
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        );
        assert_eq!(n.declined, vec![tickgate_protocol::deflate::Decline::WindowBitsOutOfRange]);
        let answer = with_extensions(response, &n.agreed.unwrap().response());
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(
            text.ends_with(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover\r\n\r\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let token_of = |raw: &str| match parse_and_route(raw.as_bytes(), 8192, PUBLIC, &[]) {
            Parsed::Complete(Route::Upgrade { token, .. }) => token,
            other => panic!("{other:?}"),
        };
        let with = |path: &str, extra: &str| {
            UPGRADE.replace("GET /ws ", &format!("GET {path} ")).replace("Host: x\r\n", &format!("Host: x\r\n{extra}"))
        };
        assert_eq!(token_of(&with("/ws", "Authorization: Bearer abc.def\r\n")), Some("abc.def".into()));
        assert_eq!(token_of(&with("/ws?x=1&token=a%2Bb.c", "")), Some("a+b.c".into()));
        assert_eq!(token_of(&with("/ws", "")), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn answers_everything_else_plainly() {
        assert!(respond("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(respond("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").contains("WebSocket endpoint"));
        let bad_version = UPGRADE.replace("Version: 13", "Version: 8");
        assert!(respond(&bad_version).contains("invalid WebSocket upgrade"));
        assert!(respond("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(respond("POST /ws HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let head = respond("HEAD / HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "no body: {head:?}");
        assert!(respond(&UPGRADE.replace("GET", "HEAD")).starts_with("HTTP/1.1 400"), "HEAD never upgrades");
        assert!(respond("GET / HTTP/1.1\r\n\r\n").contains("text/html"));
        assert!(respond("\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn limits_the_head() {
        assert!(matches!(parse_and_route(b"GET /ws HTTP/1.1\r\nHost: x\r\n", 8192, PUBLIC, &[]), Parsed::Partial));
        let long = format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(600));
        assert!(respond_limited(&long, 512).starts_with("HTTP/1.1 431"));
    }

    fn respond_limited(raw: &str, max: usize) -> String {
        match parse_and_route(raw.as_bytes(), max, PUBLIC, &[]) {
            Parsed::Complete(Route::Respond(bytes)) => String::from_utf8(bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }
}
