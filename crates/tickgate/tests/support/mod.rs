//! The `tickgate` binary run as an operator runs it: started with arguments, its output read
//! as it comes, signalled with `kill`, waited for.

#![allow(dead_code)] // Each test file uses its own part.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tickgate");

/// Long enough for a start or a shutdown on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `tickgate` under an open-files limit of `limit` (set by a shell that then becomes tickgate).
pub fn with_open_files_limit(limit: usize) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), BIN]);
    command
}

/// A running (or just exited) `tickgate` process.
pub struct Tickgate {
    pub child: Child,
    /// Every line of standard output so far (logs included: tracing writes there).
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// The thread reading standard error, until it has read all of it.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    listening: Receiver<SocketAddr>,
}

/// How a start ended.
pub enum Started {
    Listening(SocketAddr),
    Exited(ExitStatus),
}

impl Tickgate {
    /// Spawns `command` (a `Command::new(BIN)` with its arguments) with its output captured.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tickgate starts");
        let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(String::new())));
        let (found, listening) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .strip_prefix("tickgate listening: WebSocket ")
                    .and_then(|rest| rest.strip_prefix("ws://").or_else(|| rest.strip_prefix("wss://")))
                    .and_then(|rest| rest.strip_suffix("/ws"))
                    .and_then(|addr| addr.parse::<SocketAddr>().ok())
                {
                    let _ = found.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let text = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                text.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Self { child, stdout, stderr, stderr_reader: Some(stderr_reader), listening }
    }

    /// `tickgate ARGS` with `env` set, started: panics unless it says where it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> (Self, SocketAddr) {
        let mut command = Command::new(BIN);
        command.args(args).envs(env.iter().copied());
        let mut tickgate = Self::spawn(command);
        match tickgate.started() {
            Started::Listening(addr) => (tickgate, addr),
            Started::Exited(status) => panic!("tickgate exited ({status}): {}", tickgate.stderr()),
        }
    }

    /// Waits until the process says where it listens, or exits.
    pub fn started(&mut self) -> Started {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(addr) = self.listening.recv_timeout(Duration::from_millis(10)) {
                return Started::Listening(addr);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Started::Exited(status);
            }
        }
        panic!("tickgate neither listened nor exited within {PATIENCE:?}");
    }

    /// Sends `signal` (a name `kill` knows: TERM, HUP, USR2...).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([format!("-{signal}"), pid]).status().expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// Waits for the exit, at most `within`.
    pub fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}; output:\n{}", self.stdout());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Standard error so far; all of it once the process has exited.
    pub fn stderr(&mut self) -> String {
        if !self.running() {
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until standard output has a line containing `needle`.
    pub fn wait_for_line(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.stdout.lock().unwrap().iter().any(|line| line.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no line with {needle:?} within {PATIENCE:?}; output:\n{}", self.stdout());
    }
}

impl Drop for Tickgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file that is removed when dropped.
pub struct TempConfig(std::path::PathBuf);

impl TempConfig {
    pub fn new(name: &str, text: &str) -> Self {
        let name = format!("tickgate-{}-{}.toml", std::process::id(), name.replace(':', "-"));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write the configuration");
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
