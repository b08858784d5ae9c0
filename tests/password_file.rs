//! Mosquitto password files work both ways: a file written by Debian's `mosquitto_passwd` is accepted by
//! shardmq (right password in; wrong password, unknown user and anonymous clients refused, MQTT 3.1.1 and
//! 5), a file written by `shardmq passwd` is accepted by Debian's `mosquitto` broker, and `shardmq passwd`
//! behaves like `mosquitto_passwd` (`-c`, `-b`, `-D`, `-U`, prompts).
#![allow(non_snake_case)]

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use rumqttc::ConnectReturnCode as V4Code;
use shardmq::auth::PasswordFile;
use support::mosquitto_clients::{self, CliVersion};
use support::{unique, v4, v5, Broker, BrokerKind, BrokerLimits};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("shardmq-pwtest"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn shardmq_passwd(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shardmq passwd");
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("shardmq passwd finishes")
}

fn mosquitto_passwd(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("mosquitto_passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mosquitto_passwd (apt-get install mosquitto)");
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("mosquitto_passwd finishes")
}

fn auth_broker(password_file: &Path) -> Broker {
    let auth = format!("[auth]\nallow_anonymous = false\npassword_file = \"{}\"\n", password_file.display());
    Broker::start_with(&BrokerLimits { shardmq_toml: Some(auth), ..BrokerLimits::default() })
}

#[tokio::test]
async fn a_file_written_by_mosquitto_passwd_lets_in_the_right_password_only__v311() {
    let path = temp_path("pw");
    assert!(mosquitto_passwd(&["-c", "-b", path.to_str().unwrap(), "alice", "s3cret"], None).status.success());
    let broker = auth_broker(&path);
    if broker.kind() == BrokerKind::Mosquitto {
        return; // the broker under test reads its own config; this test is about shardmq reading the file
    }
    let login = |user: &str, password: &str| {
        let mut options = v4::options(broker.port(), &unique("pw311"));
        options.set_credentials(user, password);
        options
    };
    let client = v4::V4Client::try_connect(login("alice", "s3cret")).await.expect("right password");
    assert_eq!(client.connack.code, V4Code::Success);
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        match v4::V4Client::try_connect(login(user, password)).await {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, V4Code::BadUserNamePassword, "{user}")
            }
            other => panic!("{user}/{password}: expected return code 4, got {:?}", other.map(|c| c.connack)),
        }
    }
    match v4::V4Client::try_connect(v4::options(broker.port(), &unique("anon"))).await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, V4Code::NotAuthorized)
        }
        other => panic!("anonymous: expected return code 5, got {:?}", other.map(|c| c.connack)),
    }
    let refused = broker.wait_for_log_line(Duration::from_secs(2), |line| {
        line.contains("CONNECT refused") && line.contains("wrong password")
    });
    let refused = refused.expect("a refusal log line naming the reason");
    assert!(refused.contains("client_id=pw311-"), "{refused}");
    assert!(!broker.log().contains("wrong\""), "the password never reaches the log");
}

#[tokio::test]
async fn a_file_written_by_mosquitto_passwd_lets_in_the_right_password_only__v5() {
    let path = temp_path("pw");
    assert!(mosquitto_passwd(&["-c", "-b", path.to_str().unwrap(), "alice", "s3cret"], None).status.success());
    assert!(mosquitto_passwd(&["-H", "sha512", "-b", path.to_str().unwrap(), "legacy", "old"], None).status.success());
    let broker = auth_broker(&path);
    if broker.kind() == BrokerKind::Mosquitto {
        return;
    }
    let login = |user: &str, password: &str| {
        let mut options = v5::options(broker.port(), &unique("pw5"));
        options.set_credentials(user, password);
        options
    };
    for (user, password) in [("alice", "s3cret"), ("legacy", "old")] {
        let client = v5::V5Client::try_connect(login(user, password)).await.unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(client.connack.code, V5Code::Success);
    }
    for (user, password) in [("alice", "S3cret"), ("nobody", "s3cret"), ("legacy", "new")] {
        match v5::V5Client::try_connect(login(user, password)).await {
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
                assert_eq!(code, V5Code::BadUserNamePassword, "{user}: 0x86")
            }
            other => panic!("{user}: expected CONNACK 0x86, got {:?}", other.map(|c| c.connack)),
        }
    }
    match v5::V5Client::try_connect(v5::options(broker.port(), &unique("anon5"))).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, V5Code::NotAuthorized, "anonymous: 0x87")
        }
        other => panic!("anonymous: expected CONNACK 0x87, got {:?}", other.map(|c| c.connack)),
    }
}

/// A port nobody listens on right now (Mosquitto cannot bind port 0 and report it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Debian's mosquitto on a free loopback port with `password_file`. It drops root privileges to the
/// `mosquitto` user before reading the file, so the file and its directory must be world-readable.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    fn start(password_file: &Path) -> Mosquitto {
        use std::os::unix::fs::PermissionsExt;
        let dir = password_file.parent().expect("file in a dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o644)).expect("chmod file");
        let port = free_port();
        let config = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            password_file.display()
        );
        std::fs::write(&config, text).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_file_written_by_shardmq_passwd_is_accepted_by_mosquitto() {
    let path = temp_path("pw");
    let file = path.to_str().unwrap();
    assert!(shardmq_passwd(&["-c", "-b", file, "alice", "s3cret"], None).status.success());
    assert!(shardmq_passwd(&["-b", file, "bob", "other pw"], None).status.success());
    assert!(shardmq_passwd(&["-H", "sha512", "-b", file, "legacy", "old"], None).status.success());
    let mosquitto = Mosquitto::start(&path);
    for version in [CliVersion::V311, CliVersion::V5] {
        for (user, password) in [("alice", "s3cret"), ("bob", "other pw"), ("legacy", "old")] {
            let outcome =
                mosquitto_clients::publish(mosquitto.port, version, Some((user, password)), "t", "x", 0, false);
            assert_eq!(outcome.connack, Some(0), "{version:?} {user}: {}", outcome.output);
        }
        let outcome = mosquitto_clients::publish(mosquitto.port, version, Some(("alice", "wrong")), "t", "x", 0, false);
        assert!(outcome.connack.is_some_and(|code| code != 0), "{version:?} wrong password: {}", outcome.output);
    }
}

fn users(path: &Path) -> Vec<String> {
    PasswordFile::load(path).expect("a valid password file").users().map(str::to_string).collect()
}

/// The same operations through both tools give the same exit status and the same users.
#[test]
fn shardmq_passwd_behaves_like_mosquitto_passwd_for_c_b_and_D() {
    let ours = temp_path("ours");
    let theirs = temp_path("theirs");
    let steps: &[&[&str]] = &[
        &["-c", "-b", "FILE", "alice", "a"],
        &["-b", "FILE", "bob", "b"],
        &["-b", "FILE", "alice", "a2"],
        &["-D", "FILE", "bob"],
        &["-D", "FILE", "bob"],
        &["-b", "FILE", "with:colon", "x"],
        &["-b", "FILE", "carol", ""],
    ];
    for step in steps {
        let with = |path: &Path| -> Vec<String> {
            step.iter().map(|arg| if *arg == "FILE" { path.display().to_string() } else { arg.to_string() }).collect()
        };
        let (our_args, their_args) = (with(&ours), with(&theirs));
        let our = shardmq_passwd(&our_args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let their = mosquitto_passwd(&their_args.iter().map(String::as_str).collect::<Vec<_>>(), None);
        assert_eq!(our.status.success(), their.status.success(), "{step:?}: ours {our:?}, theirs {their:?}");
        assert_eq!(users(&ours), users(&theirs), "{step:?}");
    }
    assert_eq!(users(&ours), ["alice", "carol"]);
    let file = PasswordFile::load(&ours).unwrap();
    assert!(file.verify("alice", b"a2") && !file.verify("alice", b"a") && file.verify("carol", b""));
    assert!(
        !shardmq_passwd(&["-b", "/nonexistent/pw", "u", "p"], None).status.success(),
        "updating needs the file (-c creates)"
    );
    assert!(
        !shardmq_passwd(&[ours.to_str().unwrap(), "u", "p"], None).status.success(),
        "a password argument needs -b"
    );
}

#[test]
fn shardmq_passwd_c_overwrites_the_file() {
    let path = temp_path("pw");
    let file = path.to_str().unwrap();
    assert!(shardmq_passwd(&["-c", "-b", file, "alice", "a"], None).status.success());
    assert!(shardmq_passwd(&["-c", "-b", file, "bob", "b"], None).status.success());
    assert_eq!(users(&path), ["bob"]);
}

#[test]
fn shardmq_passwd_U_hashes_a_plaintext_file_and_keeps_existing_hashes() {
    let path = temp_path("pw");
    std::fs::write(&path, "u1:plain1\nu2:plain:2\n").unwrap();
    let out = shardmq_passwd(&["-U", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("plain1"), "{text}");
    let file = PasswordFile::load(&path).unwrap();
    assert!(file.verify("u1", b"plain1") && file.verify("u2", b"plain:2"));
    // Run again: mosquitto_passwd -U would hash the hashes; we keep them, so the passwords still work.
    assert!(shardmq_passwd(&["-U", path.to_str().unwrap()], None).status.success());
    assert!(PasswordFile::load(&path).unwrap().verify("u1", b"plain1"));
    // And Mosquitto's own tool reads what we wrote.
    assert!(mosquitto_passwd(&["-b", path.to_str().unwrap(), "u3", "p3"], None).status.success());
    assert_eq!(users(&path), ["u1", "u2", "u3"]);
}

#[test]
fn shardmq_passwd_without_b_reads_the_password_twice_from_stdin() {
    let path = temp_path("pw");
    let file = path.to_str().unwrap();
    let out = shardmq_passwd(&["-c", file, "alice"], Some("typed pw\ntyped pw\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(PasswordFile::load(&path).unwrap().verify("alice", b"typed pw"));
    let mismatch = shardmq_passwd(&[file, "bob"], Some("one\ntwo\n"));
    assert!(!mismatch.status.success());
    assert!(String::from_utf8_lossy(&mismatch.stderr).contains("do not match"));
    assert_eq!(users(&path), ["alice"], "nothing written on a mismatch");
}
