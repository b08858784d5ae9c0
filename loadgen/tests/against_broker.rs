//! loadgen end to end against a real broker: the shardmq binary of this workspace (built by scripts/test),
//! or Mosquitto when `LOADGEN_E2E_BROKER=mosquitto`. Checks counts, rate control and the output files.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Broker {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("loadgen-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shardmq_binary() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let preferred = if cfg!(debug_assertions) { ["debug", "release"] } else { ["release", "debug"] };
    preferred.iter().map(|profile| target.join(profile).join("shardmq")).find(|path| path.exists())
}

/// Starts the broker under test, or None (with the reason printed) when the shardmq binary is not built.
fn start_broker(tag: &str) -> Option<Broker> {
    let dir = TempDir::new(tag);
    if std::env::var("LOADGEN_E2E_BROKER").as_deref() == Ok("mosquitto") {
        return Some(start_mosquitto(dir));
    }
    let Some(binary) = shardmq_binary() else {
        eprintln!("SKIPPED: no target/{{release,debug}}/shardmq; run scripts/test (it builds the broker first)");
        return None;
    };
    let mut child = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shardmq");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("shardmq printed its listening line");
    let port = line.rsplit(':').next().and_then(|port| port.trim().parse().ok()).expect("port in the listening line");
    Some(Broker { child, port, _dir: dir })
}

fn start_mosquitto(dir: TempDir) -> Broker {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = dir.0.join("mosquitto.conf");
    std::fs::write(&config, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let child =
        Command::new("mosquitto").arg("-c").arg(&config).stderr(Stdio::null()).spawn().expect("spawn mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child, port, _dir: dir }
}

/// Runs loadgen with `args` against the broker and returns its JSON summary.
fn run_loadgen(broker: &Broker, scenario: &str, args: &[&str]) -> Value {
    let out = TempDir::new(&format!("{scenario}-out"));
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg(scenario)
        .args(["--port", &broker.port.to_string(), "--quiet", "--name", "run"])
        .arg("--out")
        .arg(&out.0)
        .args(args)
        .output()
        .expect("run loadgen");
    assert!(output.status.success(), "loadgen failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(out.0.join("run.json").exists());
    let text = std::fs::read_to_string(out.0.join("run.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn count(summary: &Value, field: &str) -> u64 {
    summary["counters"][field].as_u64().unwrap_or_else(|| panic!("counters.{field} in {summary}"))
}

#[test]
fn fan_out_delivers_every_message_to_every_subscriber_once() {
    let Some(broker) = start_broker("fan-out") else { return };
    let summary =
        run_loadgen(&broker, "fan-out", &["--subscribers", "5", "--rate", "400", "--warmup", "0.5", "--duration", "1"]);
    // 400/s for 1.5 s on a fixed schedule: exactly 600 sends.
    assert_eq!(count(&summary, "sent"), 600);
    assert_eq!(count(&summary, "delivered"), 3000);
    assert_eq!(summary["expected"], 3000);
    assert_eq!(summary["lost"], 0);
    assert_eq!(count(&summary, "duplicates"), 0);
    assert_eq!(count(&summary, "out_of_order"), 0);
    assert_eq!(summary["latency_us"]["count"], 2000, "the measured phase holds the last 400 sends x 5");
}

#[test]
fn open_loop_rate_is_held_within_one_percent() {
    let Some(broker) = start_broker("rate") else { return };
    let started = Instant::now();
    let summary =
        run_loadgen(&broker, "p2p", &["--pairs", "4", "--rate", "3000", "--warmup", "0.5", "--duration", "2"]);
    let elapsed = started.elapsed();
    let sent_per_sec = summary["sent_per_sec"].as_f64().unwrap();
    assert!((sent_per_sec - 3000.0).abs() <= 30.0, "measured send rate {sent_per_sec}");
    let sent = count(&summary, "sent");
    assert!((7496..=7500).contains(&sent), "3000/s for 2.5 s, got {sent}");
    assert!(elapsed < Duration::from_secs(15), "run bounded in time, took {elapsed:?}");
    assert_eq!(count(&summary, "delivered"), sent);
}

#[test]
fn p2p_qos1_over_mqtt5_is_acknowledged_and_delivered_exactly() {
    let Some(broker) = start_broker("qos1") else { return };
    let args =
        ["--pairs", "10", "--qos", "1", "--mqtt-version", "5", "--rate", "1000", "--warmup", "0.2", "--duration", "1"];
    let summary = run_loadgen(&broker, "p2p", &args);
    let sent = count(&summary, "sent");
    assert_eq!(sent, 1200);
    assert_eq!(count(&summary, "acked"), sent);
    assert_eq!(count(&summary, "delivered"), sent);
    assert_eq!(summary["lost"], 0);
}

/// The paho client shape (Nagle on, one write per packet, acks held back and sent alone) still completes
/// every exchange: each held-back PUBACK goes out, and the drain waits for them.
#[test]
fn paho_client_shape_with_delayed_acks_acknowledges_and_delivers_everything() {
    let Some(broker) = start_broker("paho-shape") else { return };
    let args = [
        "--pairs",
        "10",
        "--qos",
        "1",
        "--rate",
        "500",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--client-shape",
        "paho",
        "--ack-delay-us",
        "300",
    ];
    let summary = run_loadgen(&broker, "p2p", &args);
    assert_eq!(summary["client_shape"], "paho");
    let sent = count(&summary, "sent");
    assert_eq!(sent, 600);
    assert_eq!(count(&summary, "acked"), sent);
    assert_eq!(count(&summary, "delivered"), sent);
    assert_eq!(summary["lost"], 0);
}

#[test]
fn conn_storm_connects_every_client() {
    let Some(broker) = start_broker("storm") else { return };
    let summary = run_loadgen(&broker, "conn-storm", &["--connections", "300"]);
    assert_eq!(count(&summary, "connections"), 300);
    assert_eq!(summary["connack_us"]["count"], 300);
    assert!(summary["connects_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn refused_connection_is_reported_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["fan-out", "--port", &port.to_string(), "--quiet", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connection refused"), "{stderr}");
}

#[test]
fn churn_gets_every_will_and_every_message_queued_for_a_persistent_session() {
    for version in ["3", "5"] {
        let Some(broker) = start_broker(&format!("churn-v{version}")) else { return };
        let args = ["--mqtt-version", version, "--rate", "40", "--duration", "2", "--held", "5", "--sessions", "3"];
        let summary = run_loadgen(&broker, "churn", &args);
        assert_eq!(summary["errors"], 0, "{summary}");
        assert_eq!(summary["lost"], 0, "{summary}");
        assert_eq!(summary["connects"], 80 + 3, "80 churned + one sweep connect per session: {summary}");
        assert_eq!(summary["abrupt_closes"], 20, "one in four leaves without DISCONNECT");
        assert_eq!(summary["wills_received"], 20);
        assert_eq!(summary["sessions_resumed"], 20 - 3 + 3, "every persistent connect after a session's first");
        assert_eq!(summary["queued_sent"], 20, "one message per persistent leave");
        assert_eq!(summary["queued_received"], 20);
    }
}

#[test]
fn reconnect_storm_finds_every_persistent_session_again() {
    let Some(broker) = start_broker("reconnect") else { return };
    let args = ["--connections", "200", "--duration", "0.5", "--reconnect", "--persistent", "--mqtt-version", "5"];
    let summary = run_loadgen(&broker, "idle", &args);
    assert_eq!(count(&summary, "connections"), 200);
    assert_eq!(count(&summary, "sessions_present"), 0, "first connect starts fresh sessions");
    assert_eq!(count(&summary, "reconnections"), 200);
    assert_eq!(count(&summary, "reconnect_sessions_present"), 200);
    assert_eq!(summary["reconnect_connack_us"]["count"], 200);
}

#[test]
fn worker_processes_merge_their_counts_and_histograms() {
    let Some(broker) = start_broker("workers") else { return };
    let args = [
        "--subscribers",
        "6",
        "--workers",
        "2",
        "--threads",
        "2",
        "--rate",
        "200",
        "--warmup",
        "0.5",
        "--duration",
        "1",
    ];
    let summary = run_loadgen(&broker, "fan-out", &args);
    assert_eq!(count(&summary, "sent"), 300);
    assert_eq!(count(&summary, "connections"), 7);
    assert_eq!(count(&summary, "delivered"), 1800);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["latency_us"]["count"], 1200, "both workers' measured histograms merged");
}

#[test]
fn idle_devices_with_shared_groups_get_commands_and_resumed_sessions_still_deliver() {
    let Some(broker) = start_broker("commands") else { return };
    let args = [
        "--connections",
        "200",
        "--sub-pattern",
        "devices/{client_id}/cmd",
        "--shared-subs",
        "2",
        "--publishers",
        "2",
        "--rate",
        "200",
        "--qos",
        "1",
        "--mqtt-version",
        "5",
        "--persistent",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--drain",
        "1",
        "--reconnect",
        "--reconnect-settle",
        "1",
        "--probe",
        "1",
    ];
    let summary = run_loadgen(&broker, "idle", &args);
    assert_eq!(count(&summary, "connections"), 202, "200 devices + 2 commanders");
    // 200/s for 1 s in the measured phase, then 200/s for 1 s after the storm.
    assert_eq!(count(&summary, "probe_sent"), 200);
    assert_eq!(count(&summary, "sent"), 400);
    assert_eq!(summary["latency_us"]["count"], 200, "only the measured phase's commands are in the histogram");
    assert_eq!(count(&summary, "reconnect_sessions_present"), 202);
    assert_eq!(count(&summary, "probe_delivered"), 200, "resumed sessions (not subscribed again) still deliver");
    assert_eq!(count(&summary, "delivered"), 400);
    assert_eq!(summary["lost"], 0);
}

#[test]
fn idle_warmup_is_pings_only_and_gives_broker_cpu_per_ping() {
    let Some(broker) = start_broker("pings") else { return };
    let pid = broker.child.id().to_string();
    let args =
        ["--connections", "100", "--keepalive", "1", "--warmup", "2.5", "--duration", "0.5", "--broker-pid", &pid];
    let summary = run_loadgen(&broker, "idle", &args);
    let pings_warmup = count(&summary, "pings_warmup");
    // Every connection pings once a second from its CONNACK on: 2 or 3 times in a 2.5 s window.
    assert!((200..=300).contains(&pings_warmup), "pings in the warm-up: {pings_warmup}");
    assert!(summary["broker"]["cpu_us_per_ping"].as_f64().is_some(), "{}", summary["broker"]);
}
