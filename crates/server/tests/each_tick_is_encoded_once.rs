//! A tick's frame is built once, whatever the number of subscribers: with forty subscribers,
//! frames built still track ticks one for one while deliveries grow forty-fold.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tickgate_server::{Gateway, GatewayStats};
use tickgate_testkit::{TestClient, eventually, start_gateway};

#[derive(Debug, Clone, Copy)]
struct Totals {
    ticks: u64,
    frames: u64,
    deliveries: u64,
}

fn totals(stats: &GatewayStats) -> Totals {
    Totals {
        frames: stats.ingest.frames_built.load(Ordering::Relaxed),
        ticks: stats.ingest.ticks.load(Ordering::Relaxed),
        // Every offer of a tick to a subscriber: queued, conflated or dropped by a slow reader.
        deliveries: stats
            .reactors
            .iter()
            .map(|r| {
                let c = &r.counters;
                c.deliveries.load(Ordering::Relaxed)
                    + c.conflated.load(Ordering::Relaxed)
                    + c.dropped.load(Ordering::Relaxed)
            })
            .sum(),
    }
}

/// Pauses the feed and waits until every reactor has fanned out, and counted, every tick it was
/// sent: the two sides of the ratio then cover the same ticks however slow the machine is.
fn settled_totals(gateway: &Gateway) -> Totals {
    gateway.feed_control().pause();
    let stats = gateway.stats();
    let ticks = || stats.ingest.ticks.load(Ordering::Relaxed);
    eventually("the feed stopped", || {
        let before = ticks();
        std::thread::sleep(Duration::from_millis(50));
        ticks() == before
    });
    let beats: Vec<u64> = stats.reactors.iter().map(|r| r.heartbeat_ns.load(Ordering::Relaxed)).collect();
    eventually("every reactor published its counters with its channel empty", || {
        stats.reactors.iter().zip(&beats).all(|(r, &beat)| {
            r.heartbeat_ns.load(Ordering::Relaxed) > beat && r.channel_depth.load(Ordering::Relaxed) == 0
        })
    });
    totals(stats)
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

#[test]
fn frames_built_track_ticks_while_deliveries_grow_with_subscribers() {
    let gateway = start_gateway(|c| {
        c.sim.symbols = 10;
        c.sim.rate = 4_000.0;
    });
    let all: Vec<String> = gateway.symbols().iter().map(|(_, s)| s.name.to_string()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();

    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut c = TestClient::connect(gateway.local_addr());
        c.subscribe(&all);
        clients.push(c);
    }
    // Keep the clients reading so none falls behind.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    c.recv();
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    let before = settled_totals(&gateway);
    gateway.feed_control().resume();
    std::thread::sleep(Duration::from_millis(1500));
    let after = settled_totals(&gateway);
    stop.store(true, Ordering::Relaxed);

    let ticks = after.ticks - before.ticks;
    let frames = after.frames - before.frames;
    let deliveries = after.deliveries - before.deliveries;
    assert!(ticks > 1_000, "the market ticked: {ticks}");
    let frames_per_tick = ratio(frames, ticks);
    let deliveries_per_tick = ratio(deliveries, ticks);
    assert!((0.97..=1.03).contains(&frames_per_tick), "one frame per tick, got {frames_per_tick:.3}");
    assert!((38.0..=42.0).contains(&deliveries_per_tick), "forty deliveries per tick, got {deliveries_per_tick:.2}");
    drop(gateway);
    for r in readers {
        let _ = r.join();
    }
}
