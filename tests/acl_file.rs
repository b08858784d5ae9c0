//! The Mosquitto ACL file against the real broker and real clients (mosquitto_pub / mosquitto_sub), in a
//! chat: every user may publish only under `chat/{user}/` (`pattern write chat/%u/#`) and read `chat/#`;
//! a monitor reads everything but bob's private topics. Publishes without write access are refused (v5
//! PUBACK 0x87) or acknowledged and dropped (3.1.1), subscriptions without read access are refused (v5
//! 0x87, 3.1.1 0x80), and a `#` subscriber gets only what it may read, retained messages included. An
//! ACL file with a syntax error stops the broker at start, naming file:line.
#![allow(non_snake_case)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardmq::auth::{PasswordFile, PasswordHash};
use support::mosquitto_clients::{self, settle, CliVersion, Subscriber};
use support::{skip_on_mosquitto, unique, Broker, BrokerLimits};

const ACL: &str = "\
# anonymous clients: nothing
user alice
topic read chat/#
user bob
topic read chat/#
user mon
topic read #
topic write news/#
topic deny chat/bob/private/#
pattern write chat/%u/#
";

const USERS: [(&str, &str); 3] = [("alice", "alice-pw"), ("bob", "bob-pw"), ("mon", "mon-pw")];

fn login(user: &str) -> Option<(&'static str, &'static str)> {
    USERS.iter().find(|(name, _)| *name == user).copied()
}

fn write_files(acl: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(unique("shardmq-acltest"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut passwords = PasswordFile::default();
    for (user, password) in USERS {
        passwords.set(user, PasswordHash::new_pbkdf2(password.as_bytes()));
    }
    let password_path = dir.join("pw");
    passwords.write(&password_path).expect("write password file");
    let acl_path = dir.join("acl");
    std::fs::write(&acl_path, acl).expect("write acl");
    (password_path, acl_path)
}

fn auth_toml(password_file: &Path, acl_file: &Path) -> String {
    format!(
        "[auth]\nallow_anonymous = false\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        password_file.display(),
        acl_file.display()
    )
}

/// shardmq with the chat password and ACL files, or None (test skipped) against Mosquitto, whose config
/// the harness writes without them.
fn chat_broker() -> Option<Broker> {
    let (password_file, acl_file) = write_files(ACL);
    let broker = Broker::start_with(&BrokerLimits {
        shardmq_toml: Some(auth_toml(&password_file, &acl_file)),
        ..BrokerLimits::default()
    });
    (!skip_on_mosquitto(&broker, "the harness starts Mosquitto without the ACL file")).then_some(broker)
}

fn subscribe(broker: &Broker, version: CliVersion, user: &str, filters: &[&str]) -> Subscriber {
    let subscriber = Subscriber::start(broker.port(), version, login(user), &unique(user), filters);
    assert_eq!(subscriber.connack, Some(0), "{user} connects");
    subscriber
}

#[test]
fn a_publish_to_another_users_topic_is_refused_with_0x87_and_reaches_nobody__v5() {
    let Some(broker) = chat_broker() else { return };
    let bob = subscribe(&broker, CliVersion::V5, "bob", &["chat/#"]);
    let mon = subscribe(&broker, CliVersion::V5, "mon", &["#"]);
    assert_eq!(bob.granted, [1]);
    assert_eq!(mon.granted, [1]);
    settle();
    let refused =
        mosquitto_clients::publish(broker.port(), CliVersion::V5, login("alice"), "chat/bob/x", "forged", 1, false);
    assert_eq!(refused.puback, Some(0x87), "{}", refused.output);
    let allowed =
        mosquitto_clients::publish(broker.port(), CliVersion::V5, login("alice"), "chat/alice/x", "hello", 1, false);
    assert_eq!(allowed.puback, Some(0), "{}", allowed.output);
    assert_eq!(bob.messages(1), ["chat/alice/x hello"]);
    assert_eq!(mon.messages(1), ["chat/alice/x hello"]);
    assert!(broker.log().contains("PUBLISH not authorized"), "the refusal is logged at debug");
}

#[test]
fn a_publish_without_write_access_is_acknowledged_and_dropped__v311() {
    let Some(broker) = chat_broker() else { return };
    let bob = subscribe(&broker, CliVersion::V311, "bob", &["chat/#"]);
    settle();
    for qos in [0, 1, 2] {
        let outcome = mosquitto_clients::publish(
            broker.port(),
            CliVersion::V311,
            login("alice"),
            "chat/bob/x",
            "forged",
            qos,
            false,
        );
        assert_eq!(outcome.connack, Some(0));
        if qos > 0 {
            assert_eq!(outcome.puback, Some(0), "QoS {qos}: acknowledged as Mosquitto does: {}", outcome.output);
        }
    }
    let allowed =
        mosquitto_clients::publish(broker.port(), CliVersion::V311, login("alice"), "chat/alice/x", "hello", 2, false);
    assert_eq!(allowed.puback, Some(0));
    assert_eq!(bob.messages(1), ["chat/alice/x hello"]);
}

#[test]
fn a_hash_subscriber_receives_only_what_it_may_read() {
    let Some(broker) = chat_broker() else { return };
    for version in [CliVersion::V311, CliVersion::V5] {
        let alice = subscribe(&broker, version, "alice", &["#"]);
        let mon = subscribe(&broker, version, "mon", &["#"]);
        assert_eq!(alice.granted, [1], "{version:?}: `#` overlaps alice's read rule, so it is granted");
        settle();
        let port = broker.port();
        for (user, topic) in [("bob", "chat/bob/private/diary"), ("bob", "chat/bob/open"), ("mon", "news/1")] {
            let outcome = mosquitto_clients::publish(port, version, login(user), topic, "m", 1, false);
            assert!(outcome.accepted(), "{user} may write {topic}: {}", outcome.output);
        }
        let mut got = alice.messages(2);
        got.sort();
        assert_eq!(got, ["chat/bob/open m", "chat/bob/private/diary m"], "{version:?}: alice reads chat/#, not news/1");
        let mut got = mon.messages(2);
        got.sort();
        assert_eq!(got, ["chat/bob/open m", "news/1 m"], "{version:?}: mon may not read chat/bob/private/#");
    }
}

#[test]
fn retained_messages_sent_on_subscribe_are_filtered_by_read_access() {
    let Some(broker) = chat_broker() else { return };
    let port = broker.port();
    let topic_base = unique("r");
    let private = format!("chat/bob/private/{topic_base}");
    let open = format!("chat/bob/{topic_base}");
    for topic in [&private, &open] {
        let outcome = mosquitto_clients::publish(port, CliVersion::V5, login("bob"), topic, "kept", 1, true);
        assert!(outcome.accepted(), "{}", outcome.output);
    }
    let mon = subscribe(&broker, CliVersion::V5, "mon", &["chat/bob/#"]);
    assert_eq!(mon.messages(1), [format!("{open} kept")]);
    let alice = subscribe(&broker, CliVersion::V311, "alice", &["#"]);
    let mut got = alice.messages(2);
    got.sort();
    let mut expected = [format!("{open} kept"), format!("{private} kept")];
    expected.sort();
    assert_eq!(got, expected, "alice may read all of chat/#");
}

#[test]
fn a_subscription_without_read_access_is_refused__v5_0x87_v311_0x80() {
    let Some(broker) = chat_broker() else { return };
    let v5 = subscribe(&broker, CliVersion::V5, "alice", &["secret/#", "chat/+/x"]);
    assert_eq!(v5.granted, [0x87, 1]);
    let v311 = subscribe(&broker, CliVersion::V311, "alice", &["secret/#", "chat/+/x"]);
    assert_eq!(v311.granted, [0x80, 1]);
    let mon = subscribe(&broker, CliVersion::V5, "mon", &["chat/bob/private/#"]);
    assert_eq!(mon.granted, [0x87], "a deny rule covering the whole filter refuses it");
}

#[test]
fn a_will_without_write_access_is_not_published() {
    let Some(broker) = chat_broker() else { return };
    let bob = subscribe(&broker, CliVersion::V5, "bob", &["chat/#"]);
    settle();
    let port = broker.port().to_string();
    for (topic, payload) in [("chat/bob/will", "forged will"), ("chat/alice/will", "alice gone")] {
        // A subscriber that is killed leaves without DISCONNECT, so its will is due.
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "alice-pw", "-t", "chat/alice/in"])
            .args(["--will-topic", topic, "--will-payload", payload, "-V", "mqttv5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        let deadline = Instant::now() + Duration::from_secs(5);
        while broker.log().matches("client connected").count() < 2 + usize::from(topic.contains("alice")) {
            assert!(Instant::now() < deadline, "alice connected");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill mosquitto_sub");
        let _ = child.wait();
    }
    assert_eq!(bob.messages(1), ["chat/alice/will alice gone"]);
}

#[test]
fn an_acl_file_with_a_syntax_error_stops_the_broker_naming_file_and_line() {
    let (password_file, acl_file) = write_files("user alice\ntopic read chat/#\ntopc write chat/alice/#\n");
    let config = acl_file.with_file_name("shardmq.toml");
    std::fs::write(&config, auth_toml(&password_file, &acl_file)).expect("write config");
    let binary = std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string());
    let output = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run shardmq");
    assert!(!output.status.success(), "the broker must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:3: unknown keyword `topc`", acl_file.display());
    assert!(stderr.contains(&expected), "expected {expected:?} in: {stderr}");
    assert!(output.stdout.is_empty(), "never printed a listening line");
}
