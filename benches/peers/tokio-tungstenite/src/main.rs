//! Peer: tokio + tokio-tungstenite, what a Rust developer writes first.
//!
//! - A multi-thread tokio runtime (`--threads`, default: the number of cores).
//! - One `tokio::sync::broadcast` channel per symbol (`--channel-capacity`, default 1024). The
//!   generator task builds each tick's JSON once into a `Utf8Bytes` (a reference-counted `Bytes`)
//!   and sends it to the symbol's channel; every receiver gets a cheap clone.
//! - One task per connection: the socket (split into sink and stream) and a
//!   `tokio_stream::StreamMap` of `BroadcastStream`s, one per subscribed symbol, in one
//!   `tokio::select!` loop. tungstenite frames every message for every connection into its write
//!   buffer (a copy per delivery, as the library does).
//! - Coalescing, as tokio-tungstenite's docs suggest: `feed` a message, then `feed` whatever else
//!   is ready right now (up to `--coalesce`, default 64), then one `flush`. `--coalesce 1` gives
//!   the plain `send` per message (one flush and one write per message).
//! - A receiver that falls more than the channel capacity behind gets `RecvError::Lagged(n)`: the
//!   idiomatic code just carries on, so a lagging client loses those ticks silently (counted in
//!   the exit line, never told to the client). No other per-connection limit.
//! - tungstenite's default buffers: a 128 KiB read buffer allocated per connection (most of this
//!   peer's memory per connection) and a 128 KiB write buffer target. `--read-buffer BYTES` sets
//!   `WebSocketConfig::read_buffer_size` instead (0, the default, keeps the library's default).
//!
//! Run: peer-tokio --port 9001 --symbols-file symbols.txt --rate 5000 [--threads 2]

#[path = "../../common/tickgen.rs"]
mod tickgen;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast;
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use tickgen::{Args, Op, TickGen};

const NAME: &str = "tokio-tungstenite";
const USAGE: &str = "usage: peer-tokio [--host 127.0.0.1] [--port 9001] [--symbols-file FILE] [--rate 5000]
                  [--threads CORES] [--channel-capacity 1024] [--coalesce 64] [--read-buffer 0]";

struct Universe {
    names: Vec<String>,
    index: HashMap<String, usize>,
    channels: Vec<broadcast::Sender<Utf8Bytes>>,
    welcome: Utf8Bytes,
    coalesce: usize,
    /// `WebSocketConfig` for accepted connections; None: the library's defaults.
    config: Option<WebSocketConfig>,
}

#[derive(Default)]
struct Stats {
    ticks: AtomicU64,
    deliveries: AtomicU64,
    lagged: AtomicU64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse(
        &[
            ("host", "127.0.0.1"),
            ("port", "9001"),
            ("symbols-file", ""),
            ("rate", "5000"),
            ("threads", "0"),
            ("channel-capacity", "1024"),
            ("coalesce", "64"),
            ("read-buffer", "0"),
        ],
        USAGE,
    );
    tickgen::raise_nofile_limit();
    let names = tickgen::load_symbols(args.str("symbols-file"));
    let capacity: usize = args.num::<usize>("channel-capacity").max(1);
    let universe = Arc::new(Universe {
        index: names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect(),
        channels: names.iter().map(|_| broadcast::channel(capacity).0).collect(),
        names,
        welcome: Utf8Bytes::from(tickgen::welcome(NAME)),
        coalesce: args.num::<usize>("coalesce").max(1),
        config: match args.num::<usize>("read-buffer") {
            0 => None,
            n => Some(WebSocketConfig::default().read_buffer_size(n)),
        },
    });
    let rate: f64 = args.num("rate");
    let mut threads: usize = args.num("threads");
    if threads == 0 {
        threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    let addr = format!("{}:{}", args.str("host"), args.str("port"));
    let stats = Arc::new(Stats::default());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(&addr).await?;
        println!("ready {NAME} port={}", listener.local_addr()?.port());
        tokio::spawn(generate(universe.clone(), rate, stats.clone()));

        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, universe.clone(), stats.clone()));
                    }
                    Err(e) => {
                        // EMFILE and the like: back off a little rather than spin.
                        eprintln!("{NAME}: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok::<(), std::io::Error>(())
    })?;
    eprintln!(
        "{NAME}: ticks={} deliveries={} lagged_dropped={}",
        stats.ticks.load(Ordering::Relaxed),
        stats.deliveries.load(Ordering::Relaxed),
        stats.lagged.load(Ordering::Relaxed)
    );
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// The generator task: every millisecond, the ticks due, each built once and broadcast.
async fn generate(universe: Arc<Universe>, rate: f64, stats: Arc<Stats>) {
    let mut tickgen = TickGen::new(universe.names.clone(), rate);
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let due = tickgen.due();
        if due == 0 {
            continue;
        }
        for _ in 0..due {
            let mut json = String::with_capacity(192);
            let i = tickgen.next_tick(&mut json);
            // An error only means nobody is subscribed to the symbol.
            let _ = universe.channels[i].send(Utf8Bytes::from(json));
        }
        stats.ticks.fetch_add(due, Ordering::Relaxed);
    }
}

/// One connection: handshake, welcome, then commands in and ticks out until either side closes.
async fn serve(stream: TcpStream, universe: Arc<Universe>, stats: Arc<Stats>) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, universe.config).await else { return };
    let (mut sink, mut source) = ws.split();
    if sink.send(Message::Text(universe.welcome.clone())).await.is_err() {
        return;
    }
    let mut subs: StreamMap<usize, BroadcastStream<Utf8Bytes>> = StreamMap::new();
    loop {
        tokio::select! {
            incoming = source.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let replies = match tickgen::parse_command(&text, &universe.index) {
                        Ok(cmd) => {
                            for &i in &cmd.known {
                                match cmd.op {
                                    Op::Subscribe => {
                                        if !subs.contains_key(&i) {
                                            let rx = universe.channels[i].subscribe();
                                            subs.insert(i, BroadcastStream::new(rx));
                                        }
                                    }
                                    Op::Unsubscribe => {
                                        subs.remove(&i);
                                    }
                                }
                            }
                            cmd.replies(&universe.names)
                        }
                        Err(e) => vec![e],
                    };
                    for r in replies {
                        if sink.send(Message::text(r)).await.is_err() {
                            return;
                        }
                    }
                }
                // tungstenite has queued the close reply: send it, then drop the connection.
                Some(Ok(Message::Close(_))) => {
                    let _ = sink.flush().await;
                    return;
                }
                Some(Err(_)) | None => return,
                // Pings are answered by tungstenite itself; pongs and binary frames are ignored.
                Some(Ok(_)) => {}
            },
            Some((_, item)) = subs.next(), if !subs.is_empty() => {
                let mut fed = 0u64;
                let mut next = Some(item);
                while let Some(item) = next.take() {
                    match item {
                        Ok(text) => {
                            if sink.feed(Message::Text(text)).await.is_err() {
                                return;
                            }
                            fed += 1;
                        }
                        // The idiomatic code carries on: those ticks are lost for this client.
                        Err(BroadcastStreamRecvError::Lagged(n)) => {
                            stats.lagged.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    if fed < universe.coalesce as u64 {
                        if let Some(Some((_, item))) = subs.next().now_or_never() {
                            next = Some(item);
                        }
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                stats.deliveries.fetch_add(fed, Ordering::Relaxed);
            }
        }
    }
}
