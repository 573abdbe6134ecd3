//! What batching ticks into bus messages would buy: one tick per message (what the publisher
//! does) against several per message, published to a real JetStream the way the publisher
//! publishes (fenced with the expected last sequence, up to 1,024 acknowledgements awaited
//! together, file storage).
//!
//! ```sh
//! cargo run --release -p tickgate-bus --example publish_batching               # 400,000 ticks each
//! cargo run --release -p tickgate-bus --example publish_batching -- 100000 1,4,16
//! ```
//!
//! Starts its own `nats-server -js` on a free loopback port (the store in a temporary folder)
//! and prints, per batch size: ticks/s and messages/s published, and the CPU per tick of this
//! process (the client side, encoding included) and of nats-server. For figures that compare,
//! give each its own core: `NATS_CPU=0 taskset -c 1 target/release/examples/publish_batching`
//! (nats-server is started under `taskset -c $NATS_CPU`).

use std::io::{self, BufRead};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use tickgate_bus::payload;
use tickgate_core::{SymbolId, Tick, TickKind};

/// Acknowledgements awaited together, as the publisher does.
const MAX_IN_FLIGHT: usize = 1024;
const SYMBOLS: u32 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ticks: usize = args.next().map_or(Ok(400_000), |a| a.parse())?;
    let batches: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 4, 16, 64],
    };
    if ticks == 0 || batches.contains(&0) {
        return Err("ticks and batch sizes must be at least 1".into());
    }
    let server = NatsServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!(
        "| ticks per message | ticks/s | messages/s | bytes per message | client µs CPU/tick | nats-server µs CPU/tick |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for batch in batches {
        let row = runtime.block_on(publish(&server.url, ticks, batch, server.child.id()))?;
        println!(
            "| {batch} | {:.0} | {:.0} | {} | {:.2} | {:.2} |",
            row.ticks_per_s, row.messages_per_s, row.message_bytes, row.client_us_per_tick, row.server_us_per_tick
        );
    }
    Ok(())
}

struct Row {
    ticks_per_s: f64,
    messages_per_s: f64,
    message_bytes: usize,
    client_us_per_tick: f64,
    server_us_per_tick: f64,
}

async fn publish(url: &str, ticks: usize, batch: usize, server_pid: u32) -> Result<Row, Box<dyn std::error::Error>> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let name = format!("BATCH{batch}");
    let prefix = format!("batch{batch}");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    // One subject per symbol for single ticks (the publisher's layout); batches mix symbols, so
    // they go to one subject (a batch per symbol would be one tick on all but the busiest).
    let subjects: Vec<async_nats::Subject> = if batch == 1 {
        (0..SYMBOLS).map(|s| format!("{prefix}.SYM{s}").into()).collect()
    } else {
        vec![format!("{prefix}.all").into()]
    };
    let messages = ticks.div_ceil(batch);
    let (client_before, server_before) = (cpu_s(None)?, cpu_s(Some(server_pid))?);
    let start = Instant::now();
    let mut acks = Vec::with_capacity(MAX_IN_FLIGHT);
    let mut body = Vec::with_capacity(batch * 128);
    let mut seq = 0u64;
    for m in 0..messages {
        // The stream's last sequence before this message: the messages before it, all ours.
        let expected = m as u64;
        body.clear();
        for _ in 0..batch {
            seq += 1;
            let tick = tick(seq);
            let other =
                Tick { seq: seq - 1, kind: TickKind::Quote { bid: 99, bid_size: 5, ask: 101, ask_size: 7 }, ..tick };
            payload::encode(&mut body, 1, "SYM", &tick, Some(&other));
        }
        let message = PublishMessage::build().payload(Bytes::copy_from_slice(&body)).expected_last_sequence(expected);
        let subject = subjects[m % subjects.len()].clone();
        acks.push(js.send_publish(subject, message).await?);
        if acks.len() == MAX_IN_FLIGHT || m + 1 == messages {
            for ack in futures_util::future::join_all(acks.drain(..).map(std::future::IntoFuture::into_future)).await {
                ack?;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (client_after, server_after) = (cpu_s(None)?, cpu_s(Some(server_pid))?);
    let message_bytes = body.len();
    js.delete_stream(&name).await?;
    let sent = (messages * batch) as f64;
    Ok(Row {
        ticks_per_s: sent / elapsed,
        messages_per_s: messages as f64 / elapsed,
        message_bytes,
        client_us_per_tick: (client_after - client_before) * 1e6 / sent,
        server_us_per_tick: (server_after - server_before) * 1e6 / sent,
    })
}

fn tick(seq: u64) -> Tick {
    Tick {
        symbol: SymbolId(0),
        seq,
        ts: 1_700_000_000_000_000_000 + seq,
        gw_ts: 1_700_000_000_000_000_000 + seq,
        kind: TickKind::Trade { price: 100_000_000 + (seq % 100) as i64, size: 100 },
    }
}

/// User + system CPU seconds of a process (this one with `None`), from /proc.
fn cpu_s(pid: Option<u32>) -> io::Result<f64> {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path)?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the state.
    // In clock ticks of USER_HZ, 100 a second on Linux.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// A `nats-server -js` of its own, on a free loopback port, its store in a temporary folder.
struct NatsServer {
    child: Child,
    url: String,
    store: std::path::PathBuf,
}

impl NatsServer {
    fn start() -> io::Result<NatsServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let store = std::env::temp_dir().join(format!("tickgate-batching-{}", std::process::id()));
        std::fs::create_dir_all(&store)?;
        let mut command = match std::env::var("NATS_CPU") {
            Ok(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu, "nats-server"]);
                c
            }
            Err(_) => Command::new("nats-server"),
        };
        let mut child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("nats-server: {e} (apt-get install nats-server)")))?;
        // Ready once it says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = io::BufReader::new(child.stderr.take().ok_or_else(|| io::Error::other("no stderr"))?).lines();
        loop {
            let ready = match lines.next() {
                Some(line) => line?.contains("Server is ready"),
                None => return Err(io::Error::other("nats-server ended before it was ready")),
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("nats-server not ready within 10 s"));
            }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(NatsServer { child, url: format!("nats://127.0.0.1:{port}"), store })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
