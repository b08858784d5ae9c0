//! Limits the runtime enforces, on the real binary: `max_connections` (the connection over the limit is
//! closed at accept, as Mosquitto and EMQX do, with a log line saying why; a slot frees when a client
//! leaves), the SO_SNDBUF/SO_RCVBUF caps seen on the broker's own sockets, and a locked-memory limit too
//! small for glommio reported as a clear error with a non-zero exit, not a panic.

mod support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::raw::{self, Level, PacketFields, RawClient, Received};
use support::{unique, Broker, BrokerLimits, EVENT_TIMEOUT};

const MAX_CONNECTIONS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_over_max_connections_is_closed_without_connack_and_a_slot_frees_when_a_client_leaves() {
    let limits = BrokerLimits { max_connections: Some(MAX_CONNECTIONS), ..BrokerLimits::default() };
    let broker = Broker::start_with(&limits);
    // Checked by hand: Mosquitto also closes at accept ("denied: max_connections exceeded").
    if support::skip_on_mosquitto(
        &broker,
        "Mosquitto 2.0.11 admits one connection too many after a connection \
        closed before CONNECT, which the harness's readiness probe is",
    ) {
        return;
    }
    let mut clients = Vec::new();
    for n in 0..MAX_CONNECTIONS {
        let level = if n % 2 == 0 { Level::V5 } else { Level::V311 };
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &unique("limit"), true, 30, None)).await;
        clients.push((client, level));
    }
    for level in [Level::V5, Level::V311] {
        let mut over = RawClient::connect(broker.port(), level).await;
        over.send(&raw::connect(level, &unique("over-limit"), true, 30, None)).await;
        let before_close = over.expect_closed().await;
        assert!(before_close.is_empty(), "{level:?}: closed at accept, no CONNACK: {before_close:?}");
    }
    let refusal = broker.wait_for_log_line(EVENT_TIMEOUT, |line| {
        line.contains("WARN") && line.contains("connection refused: max_connections reached")
    });
    assert!(refusal.is_some(), "no refusal line:\n{}", broker.log());

    let (mut leaving, level) = clients.pop().expect("a connected client");
    leaving.send(&raw::disconnect(level, 0)).await;
    leaving.expect_closed().await;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let mut next = RawClient::connect(broker.port(), Level::V5).await;
        next.send(&raw::connect(Level::V5, &unique("freed"), true, 30, None)).await;
        match next.receive(EVENT_TIMEOUT).await {
            Received::Packet(connack) => {
                assert_eq!(connack.connack().1, 0, "CONNACK in the freed slot");
                break;
            }
            other => assert!(Instant::now() < deadline, "the slot never freed: last attempt {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (client, _) in &mut clients {
        client.expect_alive().await;
    }
}

/// `rb`/`tb` (receive and send buffer sizes) of the established sockets on local port `port`, by peer
/// port, from `ss -tm`; None when `ss` is not installed.
fn server_socket_buffers(port: u16) -> Option<HashMap<u16, (u32, u32)>> {
    let filter = format!("( sport = :{port} )");
    let output = Command::new("ss").args(["-tmnH", "state", "established", &filter]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut buffers = HashMap::new();
    let mut peer_port = None;
    // Each socket is a line `Recv-Q Send-Q Local:Port Peer:Port`, its `skmem:(...)` on the same line or
    // the next, depending on the ss version.
    for line in text.lines() {
        let columns: Vec<&str> = line.split_whitespace().take_while(|column| !column.starts_with("skmem")).collect();
        if columns.len() >= 4 {
            peer_port = columns[3].rsplit(':').next().and_then(|port| port.parse::<u16>().ok());
        }
        let Some((_, memory)) = line.split_once("skmem:(") else { continue };
        let field = |name: &str| {
            memory
                .split([',', ')'])
                .find_map(|part| part.strip_prefix(name))
                .and_then(|value| value.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("no {name} in ss output {line:?}"))
        };
        if let Some(peer) = peer_port.take() {
            buffers.insert(peer, (field("rb"), field("tb")));
        }
    }
    Some(buffers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_buffer_caps_apply_to_every_accepted_socket_also_after_a_handoff() {
    let caps = "socket_send_buffer_bytes = 8192\nsocket_recv_buffer_bytes = 4096";
    let limits = BrokerLimits { shardmq_toml: Some(caps.into()), ..BrokerLimits::default() };
    let broker = Broker::start_with(&limits);
    if support::skip_on_mosquitto(&broker, "the buffer caps are shardmq config fields") {
        return;
    }
    // Ids homed on both shards, so whichever shard accepts, some connections are moved by dup(2).
    let mut clients = Vec::new();
    for id in support::spread_client_ids("buffers", 6) {
        let mut client = RawClient::connect(broker.port(), Level::V5).await;
        client.handshake(&raw::connect(Level::V5, &id, true, 30, None)).await;
        clients.push(client);
    }
    let Some(buffers) = server_socket_buffers(broker.port()) else {
        eprintln!("skipped: `ss` (iproute2) is not installed");
        return;
    };
    for client in &clients {
        let port = client.local_port();
        let socket = buffers.get(&port).unwrap_or_else(|| panic!("no broker socket for peer port {port}: {buffers:?}"));
        // Linux doubles what SO_RCVBUF / SO_SNDBUF ask for and reports the doubled size.
        assert_eq!(*socket, (2 * 4096, 2 * 8192), "(rb, tb) of the broker's socket for peer port {port}");
    }
}

/// Runs the broker with RLIMIT_MEMLOCK lowered to `limit_bytes`; returns its exit code and stderr.
fn run_with_memlock(limit_bytes: u64, shards: usize) -> (Option<i32>, String) {
    let binary = std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string());
    let mut command = Command::new(binary);
    command.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
    // SAFETY: setrlimit(2) is async-signal-safe; it only lowers this child's own limit before exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: limit_bytes, rlim_max: limit_bytes };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start shardmq");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll shardmq").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill(); // it started although it should not have; the assertions below say so
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("wait for shardmq");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_locked_memory_limit_too_small_for_glommio_is_a_clear_error_and_exit_1_not_a_panic() {
    // Below glommio's own minimum, and enough for one shard but not for two.
    for (limit_bytes, shards, says) in
        [(256 * 1024, 1, "glommio needs at least"), (530_000, 2, "too small for 2 shards")]
    {
        let (code, stderr) = run_with_memlock(limit_bytes, shards);
        assert_eq!(code, Some(1), "exit code with memlock {limit_bytes}: stderr {stderr}");
        assert!(!stderr.contains("panicked"), "panic instead of an error: {stderr}");
        let line = stderr.lines().find(|line| line.starts_with("shardmq: ")).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("ulimit -l") && line.contains(says), "{line}");
    }
}
