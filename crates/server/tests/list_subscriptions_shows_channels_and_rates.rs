//! `list_subscriptions` through a real socket: each subscription with its channels and the rate
//! cap in force (the client's `max_rate`, lowered to the gateway's cap), in the universe's
//! order, and the connection's policy; channels and rates follow later commands.

use serde_json::json;
use tickgate_testkit::{TestClient, eventually, metric, start_gateway};

#[test]
fn each_subscription_shows_its_channels_and_max_rate() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 4;
        c.limits.max_update_rate = 10;
    });
    let names: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let (a, b, c) = (&names[0], &names[1], &names[2]);
    let mut client = TestClient::connect(gateway.local_addr());

    client.send_json(json!({"op":"list_subscriptions","id":0}));
    let reply = client.recv_type("subscriptions");
    assert_eq!(reply, json!({"type":"subscriptions","id":0,"symbols":[],"subscriptions":[],"policy":"conflate"}));

    // Subscribed out of the universe's order, with different channels and rates.
    client.send_json(json!({"op":"subscribe","symbols":[c],"channels":["trades"],"max_rate":2,"policy":"drop"}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"subscribe","symbols":[a]}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"subscribe","symbols":[b],"channels":["quotes"],"max_rate":500}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"list_subscriptions","id":"l"}));
    let reply = client.recv_type("subscriptions");
    assert_eq!(
        reply,
        json!({"type":"subscriptions","id":"l","symbols":[a,b,c],"subscriptions":[
            {"symbol":a,"channels":["trades","quotes"],"max_rate":10},
            {"symbol":b,"channels":["quotes"],"max_rate":10},
            {"symbol":c,"channels":["trades"],"max_rate":2},
        ],"policy":"drop"}),
        "the gateway's cap applies where the client asked for more or nothing"
    );
    let addr = gateway.local_addr();
    eventually("the rate-capped subscriptions are counted", || {
        (0..2)
            .filter_map(|r| metric(addr, &format!("tickgate_rate_capped_subscriptions{{reactor=\"{r}\"}}")))
            .sum::<f64>()
            == 3.0
    });

    // Channels add up and drop; a later subscribe sets the rate.
    client.send_json(json!({"op":"subscribe","symbols":[c],"channels":["quotes"],"max_rate":1}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"unsubscribe","symbols":[a],"channels":["trades"]}));
    client.recv_type("unsubscribed");
    client.send_json(json!({"op":"unsubscribe","symbols":[b]}));
    client.recv_type("unsubscribed");
    client.send_json(json!({"op":"list_subscriptions"}));
    let reply = client.recv_type("subscriptions");
    assert_eq!(
        reply["subscriptions"],
        json!([
            {"symbol":a,"channels":["quotes"],"max_rate":10},
            {"symbol":c,"channels":["trades","quotes"],"max_rate":1},
        ])
    );
    assert_eq!(reply["symbols"], json!([a, c]));
}

#[test]
fn without_a_cap_no_max_rate_is_shown() {
    let gateway = start_gateway(|c| c.sim.symbols = 2);
    let name = gateway.symbols().iter().next().unwrap().1.name.to_string();
    let mut client = TestClient::connect(gateway.local_addr());
    client.send_json(json!({"op":"subscribe","symbols":[name],"max_rate":4}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"subscribe","symbols":[name]}));
    client.recv_type("subscribed");
    client.send_json(json!({"op":"list_subscriptions"}));
    let reply = client.recv_type("subscriptions");
    assert_eq!(
        reply["subscriptions"],
        json!([{"symbol":name,"channels":["trades","quotes"]}]),
        "a subscribe without max_rate lifts the client's cap"
    );
}
