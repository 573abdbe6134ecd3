//! Through real sockets: `/connz` on the admin port lists the connections of every reactor,
//! sorted by what says who is behind, paginated; a client that stopped reading comes first by
//! queued bytes. Bad queries get a 400 that names the problem; the public port does not serve it
//! when an admin port is set.

use std::time::Duration;

use serde_json::Value;
use tickgate_testkit::{TestClient, eventually, http_request, start_gateway};

fn connz(addr: std::net::SocketAddr, query: &str) -> (u16, String) {
    let response = http_request(addr, &format!("GET /connz{query} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let status = response[9..12].parse().unwrap_or(0);
    let body = response.find("\r\n\r\n").map_or(String::new(), |i| response[i + 4..].to_string());
    (status, body)
}

#[test]
fn connz_lists_every_reactors_connections_with_the_one_behind_first() {
    let gateway = start_gateway(|c| {
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.server.socket_send_buffer = 4096;
        c.limits.write_deadline_ms = 60_000;
    });
    let admin = gateway.admin_addr().expect("admin port bound");
    let names: Vec<String> = gateway.symbols().iter().take(50).map(|(_, s)| s.name.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Two clients that read (one per reactor, most likely), and one that stops reading.
    let mut readers: Vec<TestClient> = (0..2).map(|_| TestClient::connect(gateway.local_addr())).collect();
    for r in &mut readers {
        r.subscribe(&names[..2]);
    }
    let mut stalled = TestClient::connect_with_receive_buffer(gateway.local_addr(), 4096);
    stalled.subscribe(&names);
    let stalled_session = stalled.welcome["session"].as_str().unwrap().to_string();

    let mut first = Value::Null;
    eventually("the stalled client is first by queued bytes", || {
        // The readers keep up: they drain what is queued (a busy market never lets a read time
        // out, so for a bounded while).
        for r in &mut readers {
            r.ws.get_ref().set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let until = std::time::Instant::now() + Duration::from_millis(50);
            while std::time::Instant::now() < until && r.ws.read().is_ok() {}
        }
        let (status, body) = connz(admin, "?sort=queued_bytes&limit=2");
        assert_eq!(status, 200, "{body}");
        first = serde_json::from_str(&body).unwrap();
        first["connections"][0]["session"] == stalled_session.as_str()
            && first["connections"][0]["queued_bytes"].as_u64() > Some(0)
    });
    assert_eq!(first["total"], 3, "{first}");
    assert_eq!(first["count"], 2);
    assert_eq!(first["missing_reactors"], serde_json::json!([]));
    let row = &first["connections"][0];
    assert_eq!(row["subscriptions"], 50);
    assert_eq!(row["policy"], "conflate");
    assert_eq!(row["max_bytes_per_second"], Value::Null, "no bandwidth cap");
    assert!(row["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(row["waiting_ms"].as_u64().is_some() && row["messages_sent"].as_u64().is_some());
    // The next page starts after the first.
    let (_, body) = connz(admin, "?sort=queued_bytes&offset=1&limit=2");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["count"], 2);
    // The two readers, in either order (their queues move between the two requests).
    let sessions: Vec<&str> =
        page["connections"].as_array().unwrap().iter().map(|c| c["session"].as_str().unwrap()).collect();
    assert!(!sessions.contains(&stalled_session.as_str()), "{page}");
    // Sorted by messages sent: a reader first (the stalled client's writes are blocked).
    let (_, body) = connz(admin, "?sort=messages_sent&limit=1");
    let by_sent: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(by_sent["connections"][0]["session"], stalled_session.as_str(), "{by_sent}");

    for (query, says) in [("?sort=age", "sort must be"), ("?limit=0", "limit must be"), ("?who=1", "unknown parameter")]
    {
        let (status, body) = connz(admin, query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    assert_eq!(connz(gateway.local_addr(), "").0, 404, "only on the admin port when one is set");
}
