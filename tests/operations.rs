//! What an operator sees and does: one info line per connection event (connect, refuse with reason,
//! disconnect with reason, takeover) naming the client, plain log text unless stderr is a terminal (and
//! never with NO_COLOR), and SIGINT stopping the broker as cleanly as SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::raw::{self, Level, PacketFields, RawClient};
use support::{client_id_on_shard, unique, Broker, BrokerLimits, EVENT_TIMEOUT};

fn has_field(line: &str, name: &str, value: &str) -> bool {
    let wanted = format!("{name}={value}");
    line.split_whitespace().any(|word| word == wanted)
}

/// Waits for the line with `message` about `client_id` and asserts its level.
fn expect_line(broker: &Broker, level: &str, message: &str, client_id: &str) -> String {
    let line = broker
        .wait_for_log_line(EVENT_TIMEOUT, |line| line.contains(message) && has_field(line, "client_id", client_id))
        .unwrap_or_else(|| panic!("no `{message}` line for {client_id}:\n{}", broker.log()));
    assert!(line.split_whitespace().any(|word| word == level), "not at {level}: {line}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuse_disconnect_and_takeover_are_logged_with_client_id_and_reason_at_info_level() {
    // The broker logs at info only: every line checked here must be visible at the default level.
    let limits = BrokerLimits {
        log_filter: Some("info".into()),
        shardmq_mqtt_toml: Some("client_id_length_max_bytes = 40".into()),
        ..BrokerLimits::default()
    };
    let broker = Broker::start_with(&limits);
    if support::skip_on_mosquitto(&broker, "checks shardmq's log format") {
        return;
    }
    for level in [Level::V311, Level::V5] {
        let leaves = unique("leaves");
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &leaves, true, 30, None)).await;
        expect_line(&broker, "INFO", "client connected", &leaves);
        client.send(&raw::disconnect(level, 0)).await;
        client.expect_closed().await;
        let line = expect_line(&broker, "INFO", "client disconnected", &leaves);
        assert!(line.contains("reason=client sent DISCONNECT"), "{line}");

        let drops = unique("drops");
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &drops, true, 30, None)).await;
        drop(client);
        let line = expect_line(&broker, "INFO", "client disconnected", &drops);
        assert!(line.contains("reason=connection closed by the client or the network"), "{line}");

        let too_long = format!("{}-{}", unique("refused"), "x".repeat(40));
        let mut refused = RawClient::connect(broker.port(), level).await;
        refused.send(&raw::connect(level, &too_long, true, 30, None)).await;
        let connack = refused.expect_packet().await;
        assert_ne!(connack.connack().1, 0, "{level:?}: an over-long client id is refused");
        let line = expect_line(&broker, "WARN", "CONNECT refused", &too_long);
        assert!(line.contains("client_id_length_max_bytes") && line.contains("reason="), "{line}");

        // The two connections of the takeover are homed on different shards' listeners at random; the
        // session is on its home shard either way.
        let taken = client_id_on_shard("taken", 1);
        let mut old = RawClient::connect(broker.port(), level).await;
        old.handshake(&raw::connect(level, &taken, true, 30, None)).await;
        let mut new = RawClient::connect(broker.port(), level).await;
        new.handshake(&raw::connect(level, &taken, true, 30, None)).await;
        old.expect_closed().await;
        expect_line(&broker, "INFO", "session taken over by a new connection", &taken);
        let line = broker
            .wait_for_log_line(EVENT_TIMEOUT, |line| {
                line.contains("client disconnected") && has_field(line, "client_id", &taken)
            })
            .expect("the old connection's disconnect line");
        assert!(line.contains("INFO") && line.contains("reason=session taken over"), "{line}");
    }
    assert!(!broker.log().contains('\u{1b}'), "ANSI escape codes in a piped log");
}

fn shardmq_binary() -> String {
    std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string())
}

/// Runs the broker with its stderr on `stderr` until it is listening, stops it with SIGTERM, and returns
/// its exit code.
fn run_briefly(stderr: Stdio, no_color: bool) -> Option<i32> {
    let mut command = Command::new(shardmq_binary());
    command.args(["--listen", "127.0.0.1:0", "--shards", "1"]).env("RUST_LOG", "info").env_remove("NO_COLOR");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("start");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    assert!(line.starts_with("shardmq listening on"), "{line:?}");
    // SAFETY: kill(2) on the child we started and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait().expect("wait for shardmq").code()
}

/// What the broker writes to a pseudo-terminal as its stderr; None where no pseudo-terminal can be opened
/// (a container without /dev/pts).
fn log_on_a_terminal(no_color: bool) -> Option<String> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty(3) fills in two new descriptors, which we own from here on.
    let opened =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    if opened != 0 {
        eprintln!("terminal part skipped: openpty: {}", std::io::Error::last_os_error());
        return None;
    }
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        // Reading the master ends with EIO once the child, the last holder of the slave, has exited.
        let _ = std::fs::File::from(master).read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    assert_eq!(run_briefly(Stdio::from(slave), no_color), Some(0));
    Some(reader.join().expect("pty reader"))
}

#[test]
fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    // stderr to a file, as under systemd or with `2>broker.log`.
    let path = std::env::temp_dir().join(format!("{}.log", unique("shardmq-stderr")));
    let file = std::fs::File::create(&path).expect("create log file");
    assert_eq!(run_briefly(Stdio::from(file), false), Some(0));
    let in_file = std::fs::read_to_string(&path).expect("read log file");
    let _ = std::fs::remove_file(&path);
    assert!(in_file.contains("INFO"), "{in_file}");
    assert!(!in_file.contains('\u{1b}'), "colour codes in a log file: {in_file:?}");

    let Some(terminal) = log_on_a_terminal(false) else {
        return;
    };
    assert!(terminal.contains('\u{1b}'), "no colour on a terminal: {terminal:?}");
    let terminal_no_color = log_on_a_terminal(true).expect("a second pseudo-terminal");
    assert!(terminal_no_color.contains("INFO"), "{terminal_no_color:?}");
    assert!(!terminal_no_color.contains('\u{1b}'), "colour despite NO_COLOR: {terminal_no_color:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_sends_disconnect_0x8b_to_v5_clients_and_exits_0_like_sigterm() {
    let mut broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 closes without DISCONNECT 0x8B") {
        return;
    }
    let mut v5 = RawClient::connect(broker.port(), Level::V5).await;
    v5.handshake(&raw::connect(Level::V5, &unique("sigint-v5"), true, 30, None)).await;
    let mut v311 = RawClient::connect(broker.port(), Level::V311).await;
    v311.handshake(&raw::connect(Level::V311, &unique("sigint-v311"), true, 30, None)).await;
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| broker.stop_with(libc::SIGINT));
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?} after SIGINT, expected 0");
    assert!(started.elapsed() < Duration::from_secs(3));
    v5.expect_disconnect_and_close(0x8B).await;
    assert!(v311.expect_closed().await.is_empty(), "3.1.1 has no server DISCONNECT");
}
