//! The real binary's command line: `--help`, `--version`, `config default`, running from a Mosquitto
//! `mosquitto.conf` (driven with mosquitto_pub/mosquitto_sub), refusing one that would weaken security, and
//! the start-up warning about anonymous access.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shardmq::config::Config;

const BINARY: &str = env!("CARGO_BIN_EXE_shardmq");
/// Generous: brokers start in milliseconds, but CI runs many test binaries at once on few CPUs.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

fn shardmq(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).env("NO_COLOR", "1").output().expect("run shardmq")
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardmq-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("free port").port()
}

#[test]
fn help_explains_every_flag_and_subcommand() {
    let output = shardmq(&["--help"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let help = stdout_of(&output);
    for expected in [
        "--config <FILE>",
        "--mosquitto-config <FILE>",
        "--shards <N>",
        "--listen <ADDR:PORT>",
        "--version",
        "config",
        "passwd",
        "include_dir",
        "Port 0 picks a free port",
    ] {
        assert!(help.contains(expected), "`{expected}` missing from --help:\n{help}");
    }
    let short = stdout_of(&shardmq(&["-h"]));
    assert!(short.contains("--listen") && short.len() < help.len(), "-h is the short help:\n{short}");
}

#[test]
fn version_prints_the_crate_version() {
    let output = shardmq(&["--version"]);
    assert!(output.status.success());
    assert_eq!(stdout_of(&output).trim(), format!("shardmq {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_default_prints_a_file_that_parses_back_to_the_defaults() {
    let output = shardmq(&["config", "default"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = stdout_of(&output);
    assert_eq!(Config::from_toml(&text).expect("default config parses"), Config::default());
    assert!(text.lines().filter(|line| line.starts_with('#')).count() > 40, "every field is commented");
}

#[test]
fn unknown_flags_and_bad_values_exit_non_zero_naming_them() {
    let output = shardmq(&["--listn", "127.0.0.1:0"]);
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("--listn"), "{}", stderr_of(&output));
    let output = shardmq(&["--shards", "0", "--listen", "127.0.0.1:0"]);
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("shards"), "{}", stderr_of(&output));
}

/// A running broker, killed when dropped; its stderr is collected.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> (Running, String) {
        let mut child = Command::new(BINARY)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shardmq");
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let mut stderr = child.stderr.take().expect("piped");
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            let _ = err_tx.send(text);
        });
        let listening = line_rx.recv_timeout(STARTUP_TIMEOUT);
        let mut running = Running { child, stderr: err_rx };
        match listening {
            Ok(line) => (running, line),
            Err(_) => panic!("no `shardmq listening` line; stderr:\n{}", running.stop()),
        }
    }

    /// Stops the broker and returns everything it logged.
    fn stop(&mut self) -> String {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn mosquitto_client(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} (scripts/test installs mosquitto-clients): {err}"))
}

#[test]
fn runs_from_a_mosquitto_conf_and_serves_mosquitto_clients() {
    let dir = temp_dir("mosquitto-run");
    let port = free_loopback_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "# a Mosquitto 2 config\nper_listener_settings false\nlistener {port} 127.0.0.1\n\
             allow_anonymous true\nmax_queued_messages 100\nconnection backup\n"
        ),
    )
    .expect("write conf");
    let (mut broker, listening) =
        Running::start(&["--mosquitto-config", conf.to_str().expect("utf-8 path"), "--shards", "2"]);
    assert_eq!(listening, format!("shardmq listening on 127.0.0.1:{port}"));

    let port_text = port.to_string();
    let topic = format!("cli/mosquitto-conf/{}", std::process::id());
    let published = mosquitto_client(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &port_text, "-t", &topic, "-m", "from mosquitto_pub", "-q", "1", "-r"],
    );
    assert!(published.status.success(), "mosquitto_pub: {}", stderr_of(&published));
    // The retained message reaches a subscriber that connects after it was published, so no timing race.
    let received = mosquitto_client(
        "mosquitto_sub",
        &["-h", "127.0.0.1", "-p", &port_text, "-t", &topic, "-C", "1", "-W", "10", "-q", "1"],
    );
    assert!(received.status.success(), "mosquitto_sub: {}", stderr_of(&received));
    assert_eq!(stdout_of(&received).trim(), "from mosquitto_pub");

    let log = broker.stop();
    let conf_line = format!("{}:6: warning: `connection`", conf.display());
    assert_eq!(log.lines().filter(|line| line.contains(&conf_line)).count(), 1, "one line for the bridge:\n{log}");
    assert!(!log.contains("anonymous clients may connect"), "a loopback-only listener is not exposed:\n{log}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn refused(conf_text: &str, name: &str) -> (PathBuf, Output) {
    let dir = temp_dir(name);
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, conf_text).expect("write conf");
    let output = shardmq(&["--mosquitto-config", conf.to_str().expect("utf-8 path"), "--shards", "1"]);
    (conf, output)
}

#[test]
fn an_unsupported_security_directive_stops_the_start_naming_file_and_line() {
    let port = free_loopback_port();
    let text = format!("listener {port} 127.0.0.1\n\n# dynamic security\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n");
    let (conf, output) = refused(&text, "refuse-plugin");
    assert!(!output.status.success(), "started despite `plugin`");
    let stderr = stderr_of(&output);
    let expected = format!("{}:4: error: `plugin`", conf.display());
    assert_eq!(stderr.lines().filter(|line| line.contains(&expected)).count(), 1, "{stderr}");
    assert!(!stdout_of(&output).contains("listening"), "it must not have listened");
    std::fs::remove_dir_all(conf.parent().expect("dir")).expect("clean up");
}

#[test]
fn every_refused_directive_gets_its_own_line() {
    let text = "listener 1883 127.0.0.1\nrequire_certificate true\ncrlfile /etc/crl.pem\nauth_plugin /x.so\n";
    let (conf, output) = refused(text, "refuse-several");
    assert!(!output.status.success());
    let stderr = stderr_of(&output);
    let path = conf.display().to_string();
    for line in [":1: error: `listener`", ":3: error: `crlfile`", ":4: error: `auth_plugin`"] {
        assert!(stderr.contains(&format!("{path}{line}")), "`{line}` missing:\n{stderr}");
    }
    std::fs::remove_dir_all(conf.parent().expect("dir")).expect("clean up");
}

#[test]
fn tls_and_websocket_listeners_of_a_mosquitto_conf_are_parsed() {
    // Not served by the runtime yet: only their conversion is checked here (see src/config/mosquitto).
    let dir = temp_dir("mosquitto-parse");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, "pem").expect("cert");
    std::fs::write(&key, "pem").expect("key");
    let conf = dir.join("mosquitto.conf");
    let text = format!(
        "listener 8883\ncertfile {}\nkeyfile {}\nlistener 9001 127.0.0.1\nprotocol websockets\n",
        cert.display(),
        key.display()
    );
    std::fs::write(&conf, text).expect("conf");
    let converted = shardmq::config::mosquitto::read(&conf).expect("converts");
    let listeners = converted.config.effective_listeners().expect("valid listeners");
    let kinds: Vec<_> = listeners.iter().map(|listener| (listener.bind.as_str(), listener.transport)).collect();
    use shardmq::config::TransportKind;
    assert_eq!(kinds, vec![("0.0.0.0:8883", TransportKind::Tls), ("127.0.0.1:9001", TransportKind::Ws)]);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn anonymous_access_on_a_reachable_listener_is_one_warning_at_start() {
    let (mut broker, listening) = Running::start(&["--listen", "0.0.0.0:0", "--shards", "1"]);
    assert!(listening.starts_with("shardmq listening on 0.0.0.0:"), "{listening}");
    let log = broker.stop();
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains("anonymous clients may connect")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("password_file") && warnings[0].contains("shardmq passwd"), "{}", warnings[0]);
}

#[test]
fn a_loopback_listener_gives_no_anonymous_warning() {
    let (mut broker, _) = Running::start(&["--listen", "127.0.0.1:0", "--shards", "1"]);
    let log = broker.stop();
    assert!(log.contains("all shards accepting"), "{log}");
    assert!(!log.contains("anonymous clients may connect"), "{log}");
}
