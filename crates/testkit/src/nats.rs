//! A real `nats-server -js` for tests of the cluster: a random loopback port, a store in a
//! temporary folder, killed (and the folder removed) on drop. No mock stands in for NATS.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server` with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts one on a free port. Panics, saying what to do, when `nats-server` is not
    /// installed (scripts/test.sh installs Debian's): a test of the cluster cannot pass
    /// without a real bus, and must not pass silently.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`NatsServer::start`] with more arguments (`--user`, `--pass`, ...).
    pub fn start_with(extra: &[&str]) -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let store = std::env::temp_dir().join(format!("tickgate-nats-{}-{port}", std::process::id()));
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut server = Self { child: None, port, store, extra };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}): install it (apt-get install nats-server) or run scripts/test.sh, which does")
            });
        self.child = Some(child);
        let deadline = Instant::now() + crate::PATIENCE;
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {} in time", self.addr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// Kills it (SIGKILL); its store stays, for [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port with its store emptied: the stream is gone.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
