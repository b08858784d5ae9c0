//! Limits the runtime enforces, on the real binary: `connections_max` (the connection over the limit is
//! closed at accept, as Mosquitto and EMQX do, with a log line saying why; a slot frees when a client
//! leaves), the SO_SNDBUF/SO_RCVBUF caps seen on the broker's own sockets, and, for an unprivileged broker, rings
//! sized to the locked-memory limit (or a clear error with a non-zero exit when even the smallest does not fit).

mod support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::raw::{self, Level, PacketFields, RawClient, Received};
use support::{unique, Broker, BrokerLimits, EVENT_TIMEOUT};

const CONNECTIONS_MAX: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_over_max_connections_is_closed_without_connack_and_a_slot_frees_when_a_client_leaves() {
    let limits = BrokerLimits { connections_max: Some(CONNECTIONS_MAX), ..BrokerLimits::default() };
    let broker = Broker::start_with(&limits);
    // Checked by hand: Mosquitto also closes at accept ("denied: connections_max exceeded").
    if support::skip_on_mosquitto(
        &broker,
        "Mosquitto 2.0.11 admits one connection too many after a connection \
        closed before CONNECT, which the harness's readiness probe is",
    ) {
        return;
    }
    let mut clients = Vec::new();
    for n in 0..CONNECTIONS_MAX {
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
        line.contains("WARN") && line.contains("connection refused: connections_max reached")
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

/// The broker binary, started with RLIMIT_MEMLOCK lowered to `limit_bytes` and, when the tests run as
/// root, as the unprivileged user `nobody` (root's CAP_IPC_LOCK would ignore the limit).
fn start_unprivileged_with_memlock(limit_bytes: u64, shards: usize) -> std::process::Child {
    let binary = std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string());
    let mut command = Command::new(binary);
    command.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
    // SAFETY: setrlimit(2) and setuid(2) are async-signal-safe; they only change this child before exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: limit_bytes, rlim_max: limit_bytes };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().expect("start shardmq")
}

#[test]
fn an_unprivileged_broker_sizes_its_rings_to_a_64_kib_memlock_limit_and_serves() {
    use std::io::{BufRead, Read, Write};
    // Unprivileged io_uring rings are charged to RLIMIT_MEMLOCK: two shards get rings small enough to
    // fit 64 KiB together (a full submission queue is submitted early; nothing else changes).
    let mut child = start_unprivileged_with_memlock(64 * 1024, 2);
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    if !line.starts_with("shardmq listening on ") {
        let _ = child.kill();
        let output = child.wait_with_output().expect("wait");
        panic!("no listening line ({line:?}); stderr: {}", String::from_utf8_lossy(&output.stderr));
    }
    let addr: std::net::SocketAddr = line.trim().trim_start_matches("shardmq listening on ").parse().expect("address");
    for n in 0..20 {
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let id = format!("memz{n:02}");
        let mut connect = vec![0x10, 12 + id.len() as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, id.len() as u8];
        connect.extend_from_slice(id.as_bytes());
        client.write_all(&connect).unwrap();
        let mut connack = [0u8; 4];
        client.read_exact(&mut connack).expect("CONNACK");
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait for shardmq");
    assert_eq!(status.code(), Some(0), "a clean stop");
}

#[test]
fn a_locked_memory_limit_too_small_for_any_ring_is_a_clear_error_and_exit_1_not_a_panic() {
    let child = start_unprivileged_with_memlock(8 * 1024, 2);
    let output = child.wait_with_output().expect("wait for shardmq");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic instead of an error: {stderr}");
    let line = stderr.lines().find(|line| line.starts_with("shardmq: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("ulimit -l") && line.contains("2 shards"), "{line}");
}

/// Starts the binary on `config` (no `--listen`, so its `[[listeners]]` apply); returns it, its first
/// listener's port and its log.
fn start_with_config(config: &str) -> (std::process::Child, u16, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::{BufRead, BufReader};
    let path = std::env::temp_dir().join(format!("{}.toml", unique("listener-cap")));
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("--config")
        .arg(&path)
        .args(["--shards", "2"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardmq");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("listening line");
    let port = first.trim().rsplit(':').next().and_then(|port| port.parse().ok()).expect("port in the first line");
    (child, port, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_own_max_connections_closes_the_connection_over_it_at_accept() {
    let (mut child, port, log) =
        start_with_config("connections_max = 100\n[[listeners]]\nbind = \"127.0.0.1:0\"\nconnections_max = 2\n");
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = RawClient::connect(port, Level::V5).await;
        client.handshake(&raw::connect(Level::V5, &unique("cap"), true, 30, None)).await;
        clients.push(client);
    }
    let mut over = RawClient::connect(port, Level::V5).await;
    over.send(&raw::connect(Level::V5, &unique("over-cap"), true, 30, None)).await;
    let before_close = over.expect_closed().await;
    assert!(before_close.is_empty(), "closed at accept, no CONNACK: {before_close:?}");
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !log.lock().unwrap().contains("connection refused: listeners[0].connections_max reached (2)") {
        assert!(Instant::now() < deadline, "no refusal line naming the listener:\n{}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for client in &mut clients {
        client.expect_alive().await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A blocking v3.1.1 CONNECT from `source`; true when a CONNACK came back, false when the broker closed
/// the socket without one.
fn connects_from(port: u16, source: &str) -> (bool, std::net::TcpStream) {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let source: std::net::SocketAddr = format!("{source}:0").parse().expect("source address");
    socket.bind(&source.into()).expect("bind the source address");
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("broker address");
    socket.connect(&target.into()).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).expect("timeout");
    stream.write_all(&raw::connect(Level::V311, &unique("per-address"), true, 30, None)).expect("CONNECT");
    let mut connack = [0u8; 4];
    let answered = matches!(stream.read(&mut connack), Ok(4) if connack[0] == 0x20 && connack[3] == 0);
    (answered, stream)
}

#[test]
fn the_connection_past_connections_per_address_max_is_closed_at_accept_and_other_addresses_are_served() {
    let limits =
        BrokerLimits { shardmq_toml: Some("connections_per_address_max = 2\n".into()), ..BrokerLimits::default() };
    let broker = Broker::start_with(&limits);
    if support::skip_on_mosquitto(&broker, "Mosquitto has no per-address connection limit") {
        return;
    }
    // The harness's readiness probe came from 127.0.0.1 and is gone; its place frees when the shard
    // sees the close, so the first connections may need a moment.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut held = Vec::new();
    while held.len() < 2 {
        let (answered, stream) = connects_from(broker.port(), "127.0.0.1");
        if answered {
            held.push(stream);
        } else {
            assert!(Instant::now() < deadline, "two connections from 127.0.0.1 never got in:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (third, _closed) = connects_from(broker.port(), "127.0.0.1");
    assert!(!third, "a third connection from 127.0.0.1 must be closed without CONNACK");
    let (other, _kept) = connects_from(broker.port(), "127.0.0.2");
    assert!(other, "another address is still served");
    drop(held);
}
