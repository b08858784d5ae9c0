//! Starting and stopping the broker under test: the real shardmq binary on `127.0.0.1:0` with 2 shards, or
//! Mosquitto when `SHARDMQ_TEST_BROKER=mosquitto`, so every test can first be validated against a broker
//! that is known to work.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Shards of the shardmq broker under test: 2, so every cross-shard path runs.
pub const SHARDS: usize = 2;
/// Generous: a start takes ~10-20 ms on a quiet machine, but 32 brokers started at once beside 8 busy loops
/// on the 2 CPUs they are pinned to took up to 4.9 s each (CPU contention, no lost wakeup: the start times
/// spread evenly), and a loaded CI run starts many brokers in parallel. A broker that truly hangs still fails.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
const LISTENING_PREFIX: &str = "shardmq listening on 127.0.0.1:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Shardmq,
    Mosquitto,
}

impl BrokerKind {
    /// The broker chosen by `SHARDMQ_TEST_BROKER` (`mosquitto`, or shardmq when unset).
    pub fn from_env() -> BrokerKind {
        match std::env::var("SHARDMQ_TEST_BROKER").as_deref() {
            Ok("mosquitto") => BrokerKind::Mosquitto,
            Ok("shardmq") | Err(_) => BrokerKind::Shardmq,
            Ok(other) => panic!("SHARDMQ_TEST_BROKER={other}: expected `shardmq` or `mosquitto`"),
        }
    }
}

/// Limits a test needs set to something other than the default, written in each broker's own config.
#[derive(Clone, Debug, Default)]
pub struct BrokerLimits {
    pub packet_size_max_bytes: Option<u32>,
    /// How long a connection may stay open without sending CONNECT (shardmq only: Mosquitto has no knob).
    pub connect_timeout_secs: Option<u32>,
    /// Cap on keep-alive, sent to v5 clients as Server Keep Alive.
    pub keepalive_max_secs: Option<u16>,
    /// Highest QoS granted and accepted (v5 Maximum QoS).
    pub qos_max: Option<u8>,
    /// v5 Retain Available: false refuses retained PUBLISHes.
    pub retain_available: Option<bool>,
    /// Most messages queued for an offline session.
    pub session_queue_max_messages: Option<usize>,
    /// Extra lines for the `[mqtt]` table of shardmq's config, verbatim.
    pub shardmq_mqtt_toml: Option<String>,
    /// Connections open at once; more are refused (shardmq `connections_max`, Mosquitto's listener option).
    pub connections_max: Option<usize>,
    /// Extra top-level lines of shardmq's config (runtime fields such as socket buffer caps), verbatim.
    pub shardmq_toml: Option<String>,
    /// shardmq's log filter, used instead of `RUST_LOG` (tests that read log lines at a given level).
    pub log_filter: Option<String>,
}

/// A running broker on a loopback port; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Broker {
    kind: BrokerKind,
    port: u16,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    config_path: Option<PathBuf>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(&BrokerLimits::default())
    }

    pub fn start_with(limits: &BrokerLimits) -> Broker {
        match BrokerKind::from_env() {
            BrokerKind::Shardmq => start_shardmq(limits),
            BrokerKind::Mosquitto => start_mosquitto(limits),
        }
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id (for reading its CPU time and memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits up to `timeout` for a log line `wanted` accepts, and returns it.
    pub fn wait_for_log_line(&self, timeout: Duration, mut wanted: impl FnMut(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|line| wanted(line)) {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the broker to exit; None if it had to be killed.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` (SIGTERM, SIGINT) and waits for the broker to exit; None if it had to be killed.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on the child we spawned and have not yet reaped.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        eprintln!("broker pid {pid} ignored signal {signal} for {SHUTDOWN_GRACE:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop_with(libc::SIGTERM);
        }
        if thread::panicking() {
            eprintln!("---- {:?} broker log (port {}) ----\n{}", self.kind, self.port, self.log());
        }
        if let Some(path) = &self.config_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn start_shardmq(limits: &BrokerLimits) -> Broker {
    let binary = std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string());
    let mut command = Command::new(&binary);
    command.args(["--listen", "127.0.0.1:0", "--shards", &SHARDS.to_string()]);
    let config = shardmq_config(limits);
    let config_path = (!config.is_empty()).then(|| write_temp_file("shardmq", "toml", &config));
    if let Some(path) = &config_path {
        command.arg("--config").arg(path);
    }
    if let Some(filter) = &limits.log_filter {
        command.env("RUST_LOG", filter);
    } else if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "debug");
    }
    command.env("NO_COLOR", "1"); // plain log text when a failure prints it
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let stderr = capture(child.stderr.take().expect("stderr is piped"));
    let lines = stdout_lines(child.stdout.take().expect("stdout is piped"));
    let mut broker = Broker { kind: BrokerKind::Shardmq, port: 0, child, stderr, config_path };
    broker.port = wait_for_listening_line(&lines, &mut broker);
    broker
}

fn shardmq_config(limits: &BrokerLimits) -> String {
    let mut mqtt = String::new();
    if let Some(bytes) = limits.packet_size_max_bytes {
        mqtt.push_str(&format!("packet_size_max_bytes = {bytes}\n"));
    }
    if let Some(secs) = limits.keepalive_max_secs {
        mqtt.push_str(&format!("keepalive_max_secs = {secs}\n"));
    }
    if let Some(count) = limits.session_queue_max_messages {
        mqtt.push_str(&format!("session_queue_max_messages = {count}\n"));
    }
    if let Some(qos) = limits.qos_max {
        mqtt.push_str(&format!("qos_max = {qos}\n"));
    }
    if let Some(available) = limits.retain_available {
        mqtt.push_str(&format!("retain_available = {available}\n"));
    }
    if let Some(secs) = limits.connect_timeout_secs {
        mqtt.push_str(&format!("connect_timeout_secs = {secs}\n"));
    }
    if let Some(extra) = &limits.shardmq_mqtt_toml {
        mqtt.push_str(extra);
        mqtt.push('\n');
    }
    let mut top = String::new();
    if let Some(count) = limits.connections_max {
        top.push_str(&format!("connections_max = {count}\n"));
    }
    if let Some(extra) = &limits.shardmq_toml {
        top.push_str(extra);
        top.push('\n');
    }
    if mqtt.is_empty() {
        return top;
    }
    format!("{top}[mqtt]\n{mqtt}")
}

fn wait_for_listening_line(lines: &mpsc::Receiver<String>, broker: &mut Broker) -> u16 {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = line.trim_end().strip_prefix(LISTENING_PREFIX) {
                    return port
                        .parse()
                        .unwrap_or_else(|_| panic!("shardmq printed a listening line with a bad port: {line:?}"));
                }
                seen.push(line);
            }
            Err(_) => {
                let status = broker.child.try_wait().ok().flatten();
                panic!(
                    "shardmq did not print `{LISTENING_PREFIX}PORT` on stdout within {STARTUP_TIMEOUT:?} \
                     (exit status: {status:?}).\nstdout so far: {seen:?}\nstderr:\n{}",
                    broker.log()
                );
            }
        }
    }
}

fn start_mosquitto(limits: &BrokerLimits) -> Broker {
    let port = free_port();
    let mut config = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type all\nset_tcp_nodelay true\n"
    );
    if let Some(bytes) = limits.packet_size_max_bytes {
        config.push_str(&format!("max_packet_size {bytes}\n"));
    }
    if let Some(secs) = limits.keepalive_max_secs {
        config.push_str(&format!("max_keepalive {secs}\n"));
    }
    if let Some(count) = limits.session_queue_max_messages {
        config.push_str(&format!("max_queued_messages {count}\n"));
    }
    if let Some(qos) = limits.qos_max {
        config.push_str(&format!("max_qos {qos}\n"));
    }
    if let Some(available) = limits.retain_available {
        config.push_str(&format!("retain_available {available}\n"));
    }
    if let Some(count) = limits.connections_max {
        config.push_str(&format!("max_connections {count}\n"));
    }
    let config_path = write_temp_file("mosquitto", "conf", &config);
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mosquitto (apt-get install mosquitto): {e}"));
    let stderr = capture(child.stderr.take().expect("stderr is piped"));
    let broker = Broker { kind: BrokerKind::Mosquitto, port, child, stderr, config_path: Some(config_path) };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen on {port}:\n{}", broker.log());
        thread::sleep(Duration::from_millis(20));
    }
    broker
}

/// A port nobody listens on right now (Mosquitto cannot bind port 0 and report it; the `[metrics]`
/// listener is not printed with its port).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn write_temp_file(prefix: &str, extension: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.{extension}", super::unique(&format!("{prefix}-itest"))));
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn capture(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
        }
    });
    buffer
}

fn stdout_lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        // Keep draining after the listening line so a later print never hits a closed pipe.
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    receiver
}
