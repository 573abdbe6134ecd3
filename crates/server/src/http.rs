//! The HTTP side of a connection, sans IO: parse a request head, pick a route, write a response.
//!
//! Every connection starts here. `GET /ws` with a WebSocket upgrade is validated by
//! tungstenite's handshake code and answered with `101 Switching Protocols`; anything else gets
//! a complete plain-text response and the connection is closed after it.

use tungstenite::handshake::server::create_response;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 32;

/// What to do with a complete request head.
#[derive(Debug)]
pub enum Route {
    /// Switch to WebSocket: send `response` (the 101), then treat the bytes after the head as
    /// WebSocket frames.
    Upgrade { response: Vec<u8>, head_len: usize },
    /// Send this response and close.
    Respond(Vec<u8>),
}

/// Outcome of looking at the bytes received so far.
#[derive(Debug)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    Complete(Route),
}

/// Parses the request head in `buf` (which holds at most `max_head` bytes) and routes it.
pub fn parse_and_route(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::Complete(Route::Respond(response(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ))),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(head_len)) => Parsed::Complete(route(&req, head_len)),
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

fn header<'h>(req: &'h httparse::Request<'_, '_>, name: &str) -> Option<&'h [u8]> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn route(req: &httparse::Request<'_, '_>, head_len: usize) -> Route {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" && method != "HEAD" {
        return Route::Respond(response(405, "Method Not Allowed", "only GET is served here\n"));
    }
    match path {
        "/ws" => {
            let wants_upgrade = header(req, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
            if !wants_upgrade {
                return Route::Respond(response(
                    400,
                    "Bad Request",
                    "This is tickgate's WebSocket endpoint: connect with a WebSocket client to ws://<host>/ws \
                     and send {\"op\":\"subscribe\",\"symbols\":[\"AAPL\"]}. See docs/PROTOCOL.md.\n",
                ));
            }
            upgrade(req, head_len)
        }
        "/healthz" => Route::Respond(response(200, "OK", "ok\n")),
        "/" => Route::Respond(response(
            200,
            "OK",
            "tickgate market-data gateway\n\nWebSocket endpoint: /ws\nHealth: /healthz\n",
        )),
        _ => {
            Route::Respond(response(404, "Not Found", &format!("no route for {path}; the WebSocket endpoint is /ws\n")))
        }
    }
}

fn upgrade(req: &httparse::Request<'_, '_>, head_len: usize) -> Route {
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
                Ok(()) => Route::Upgrade { response: out, head_len },
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

/// A complete `Connection: close` response with a plain-text body.
pub fn response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(raw: &str) -> String {
        match parse_and_route(raw.as_bytes(), 8192) {
            Parsed::Complete(Route::Respond(bytes)) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn upgrades_a_valid_websocket_request() {
        let mut raw = UPGRADE.as_bytes().to_vec();
        raw.extend_from_slice(&[0x81, 0x80]);
        match parse_and_route(&raw, 8192) {
            Parsed::Complete(Route::Upgrade { response, head_len }) => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("HTTP/1.1 101"), "{text}");
                assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455 sample accept key: {text}");
                assert_eq!(head_len, UPGRADE.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_everything_else_plainly() {
        assert!(respond("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(respond("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").contains("WebSocket endpoint"));
        let bad_version = UPGRADE.replace("Version: 13", "Version: 8");
        assert!(respond(&bad_version).contains("invalid WebSocket upgrade"));
        assert!(respond("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(respond("GET /healthz HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(respond("POST /ws HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(respond("GET / HTTP/1.1\r\n\r\n").contains("/ws"));
        assert!(respond("\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn limits_the_head() {
        assert!(matches!(parse_and_route(b"GET /ws HTTP/1.1\r\nHost: x\r\n", 8192), Parsed::Partial));
        let long = format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(600));
        assert!(respond_limited(&long, 512).starts_with("HTTP/1.1 431"));
    }

    fn respond_limited(raw: &str, max: usize) -> String {
        match parse_and_route(raw.as_bytes(), max) {
            Parsed::Complete(Route::Respond(bytes)) => String::from_utf8(bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }
}
