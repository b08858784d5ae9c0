//! `[[validation]]` rules on the real broker (2 shards), with raw clients so every field of the answers is
//! checked: the chat example (a clean message reaches the room, a forbidden word is diverted to the
//! sender's `rejected` topic with the rule named, the schema refuses a message without `text`), v5 reason
//! code and reason string, 3.1.1 behaviour, `disconnect`, and a broken schema file or bad regex refusing
//! to start with the file and the rule named.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardmq::protocol::Packet;
use support::raw::{self, Level, RawClient, Received};
use support::{unique, Broker, BrokerLimits, SILENCE};

/// A directory of rule files for one test, removed when dropped.
struct RuleFiles(PathBuf);

impl RuleFiles {
    fn new() -> RuleFiles {
        let dir = std::env::temp_dir().join(unique("shardmq-validation-itest"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        RuleFiles(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write rule file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for RuleFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SCHEMA: &str = r#"{"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}"#;

/// The chat example: messages on `chat/messages/ROOM/USER` must match the schema (else rejected) and
/// contain no forbidden word (else diverted to `chat/messages/ROOM/USER/rejected`); on `firehose/#` a
/// payload over 16 bytes ends the connection.
fn chat_config(files: &RuleFiles) -> String {
    let schema = files.write("chat.schema.json", SCHEMA);
    let words = files.write("words.txt", "# chat moderation\nspam\nregex:buy\\s+now\n");
    format!(
        r#"
[[validation]]
name = "chat-schema"
filter = "chat/messages/+/+"
json_schema_file = "{schema}"

[[validation]]
name = "chat-words"
filter = "chat/messages/+/+"
forbidden_words_file = "{words}"
case_insensitive = true
on_invalid = "divert"
divert_to = "chat/messages/{{2}}/{{3}}/rejected"

[[validation]]
filter = "firehose/#"
max_payload_bytes = 16
on_invalid = "disconnect"
"#
    )
}

fn start_chat_broker(files: &RuleFiles) -> Option<Broker> {
    let broker =
        Broker::start_with(&BrokerLimits { shardmq_toml: Some(chat_config(files)), ..BrokerLimits::default() });
    (!support::skip_on_mosquitto(&broker, "Mosquitto has no message validation")).then_some(broker)
}

async fn client(broker: &Broker, level: Level, prefix: &str) -> RawClient {
    let mut client = RawClient::connect(broker.port(), level).await;
    client.handshake(&raw::connect(level, &unique(prefix), true, 30, None)).await;
    client
}

async fn subscribed(broker: &Broker, level: Level, filter: &str) -> RawClient {
    let mut client = client(broker, level, "sub").await;
    client.send(&raw::subscribe(level, 1, &[(filter, 1)])).await;
    assert!(matches!(client.expect_packet().await, Packet::SubAck(_)));
    client
}

async fn expect_nothing(client: &mut RawClient) {
    match client.receive(SILENCE).await {
        Received::Timeout => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

/// The next packet, which must be a PUBLISH: (topic, payload, user properties).
async fn next_publish(client: &mut RawClient) -> (String, String, Vec<(String, String)>) {
    match client.expect_packet().await {
        Packet::Publish(publish) => (
            publish.topic.to_string(),
            String::from_utf8_lossy(&publish.payload).into_owned(),
            publish
                .properties
                .user_properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        ),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn chat_clean_message_reaches_the_room_and_a_forbidden_word_goes_to_the_senders_rejected_topic() {
    let files = RuleFiles::new();
    let Some(broker) = start_chat_broker(&files) else { return };
    let room = unique("room");
    let mut members = subscribed(&broker, Level::V5, &format!("chat/messages/{room}/+")).await;
    let mut alice_rejected = subscribed(&broker, Level::V5, &format!("chat/messages/{room}/alice/rejected")).await;
    let mut alice = client(&broker, Level::V5, "alice").await;
    let topic = format!("chat/messages/{room}/alice");

    alice.send(&raw::publish(Level::V5, &topic, 1, false, 1, br#"{"text": "hello all"}"#)).await;
    assert!(matches!(alice.expect_packet().await, Packet::PubAck(ack) if ack.reason.0 == 0));
    assert_eq!(next_publish(&mut members).await.1, r#"{"text": "hello all"}"#);

    alice.send(&raw::publish(Level::V5, &topic, 1, true, 2, br#"{"text": "Buy  NOW, cheap SPAM"}"#)).await;
    assert!(matches!(alice.expect_packet().await, Packet::PubAck(ack) if ack.packet_id == 2));
    let (diverted_topic, payload, properties) = next_publish(&mut alice_rejected).await;
    assert_eq!(diverted_topic, format!("{topic}/rejected"));
    assert_eq!(payload, r#"{"text": "Buy  NOW, cheap SPAM"}"#);
    assert_eq!(properties[0], ("shardmq-rejected-by".to_string(), "chat-words".to_string()));
    // Both lines match; the report names the first of them in the file.
    assert!(properties[1].1.contains("forbidden word (words.txt line 2)"), "{properties:?}");
    expect_nothing(&mut members).await;
}

#[tokio::test]
async fn v5_schema_refusal_is_0x99_with_the_rule_in_the_reason_string() {
    let files = RuleFiles::new();
    let Some(broker) = start_chat_broker(&files) else { return };
    let room = unique("room");
    let mut members = subscribed(&broker, Level::V5, &format!("chat/messages/{room}/+")).await;
    let mut bob = client(&broker, Level::V5, "bob").await;
    let topic = format!("chat/messages/{room}/bob");
    bob.send(&raw::publish(Level::V5, &topic, 1, false, 5, br#"{"txt": "typo"}"#)).await;
    match bob.expect_packet().await {
        Packet::PubAck(ack) => {
            assert_eq!((ack.packet_id, ack.reason.0), (5, 0x99));
            let text = ack.properties.reason_string.as_deref().unwrap_or_default();
            assert!(text.contains("chat-schema") && text.contains("\"text\" is a required property"), "{text}");
        }
        other => panic!("expected PUBACK 0x99, got {other:?}"),
    }
    bob.send(&raw::publish(Level::V5, &topic, 2, false, 6, b"not json")).await;
    assert!(matches!(bob.expect_packet().await, Packet::PubRec(rec) if rec.reason.0 == 0x99));
    bob.send(&raw::publish(Level::V5, &topic, 0, false, 0, b"{}")).await;
    bob.expect_alive().await;
    expect_nothing(&mut members).await;
}

#[tokio::test]
async fn v311_refusals_are_acknowledged_and_dropped_and_diverts_still_arrive() {
    let files = RuleFiles::new();
    let Some(broker) = start_chat_broker(&files) else { return };
    let room = unique("room");
    let mut members = subscribed(&broker, Level::V311, &format!("chat/messages/{room}/+")).await;
    let mut carol_rejected = subscribed(&broker, Level::V311, &format!("chat/messages/{room}/carol/rejected")).await;
    let mut carol = client(&broker, Level::V311, "carol").await;
    let topic = format!("chat/messages/{room}/carol");
    carol.send(&raw::publish(Level::V311, &topic, 1, false, 7, br#"{"no": "text"}"#)).await;
    assert!(matches!(carol.expect_packet().await, Packet::PubAck(ack) if ack.packet_id == 7));
    carol.send(&raw::publish(Level::V311, &topic, 2, false, 8, b"[]")).await;
    assert!(matches!(carol.expect_packet().await, Packet::PubRec(rec) if rec.packet_id == 8));
    carol.send(&raw::publish_ack(raw::PUBREL, 8)).await;
    assert!(matches!(carol.expect_packet().await, Packet::PubComp(comp) if comp.packet_id == 8));
    expect_nothing(&mut members).await;
    carol.send(&raw::publish(Level::V311, &topic, 1, false, 9, br#"{"text": "spam"}"#)).await;
    assert!(matches!(carol.expect_packet().await, Packet::PubAck(_)));
    assert_eq!(next_publish(&mut carol_rejected).await.0, format!("{topic}/rejected"));
    expect_nothing(&mut members).await;
}

#[tokio::test]
async fn disconnect_rule_ends_v5_with_0x99_and_v311_with_a_close() {
    let files = RuleFiles::new();
    let Some(broker) = start_chat_broker(&files) else { return };
    let mut v5 = client(&broker, Level::V5, "hose5").await;
    v5.send(&raw::publish(Level::V5, "firehose/a", 0, false, 0, b"short")).await;
    v5.expect_alive().await;
    v5.send(&raw::publish(Level::V5, "firehose/a", 0, false, 0, b"this is longer than sixteen bytes")).await;
    v5.expect_disconnect_and_close(0x99).await;
    let mut v311 = client(&broker, Level::V311, "hose4").await;
    v311.send(&raw::publish(Level::V311, "firehose/b/c", 1, false, 3, b"this is longer than sixteen bytes")).await;
    assert!(v311.expect_closed().await.is_empty(), "closed without a PUBACK");
}

/// Runs the binary with `config` and returns its exit success and stderr; it must exit by itself.
fn run_to_exit(config: &str) -> (bool, String) {
    let files = RuleFiles::new();
    let path = files.write("broker.toml", config);
    let binary = std::env::var("SHARDMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardmq").to_string());
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--config", &path])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardmq");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for shardmq").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shardmq started with a broken validation rule");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("shardmq output");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_broken_schema_file_refuses_to_start_naming_file_and_rule() {
    if support::BrokerKind::from_env() == support::BrokerKind::Mosquitto {
        return;
    }
    let files = RuleFiles::new();
    let schema = files.write("broken.schema.json", r#"{"type": "object", "required": "text"}"#);
    let config = format!(
        "[[validation]]\nfilter = \"a/#\"\nmax_payload_bytes = 9\n\n[[validation]]\nfilter = \"chat/+\"\njson_schema_file = \"{schema}\"\n"
    );
    let (success, stderr) = run_to_exit(&config);
    assert!(!success, "{stderr}");
    assert!(stderr.contains("validation rule 1 (filter \"chat/+\")") && stderr.contains(&schema), "{stderr}");
}

#[test]
fn a_bad_regex_refuses_to_start_naming_file_line_and_rule() {
    if support::BrokerKind::from_env() == support::BrokerKind::Mosquitto {
        return;
    }
    let files = RuleFiles::new();
    let words = files.write("words.txt", "fine\nregex:[unclosed\n");
    let config = format!("[[validation]]\nfilter = \"chat/#\"\nforbidden_words_file = \"{words}\"\n");
    let (success, stderr) = run_to_exit(&config);
    assert!(!success, "{stderr}");
    assert!(stderr.contains("validation rule 0 (filter \"chat/#\")"), "{stderr}");
    assert!(stderr.contains(&format!("{words} line 2: bad regex")), "{stderr}");
}

#[test]
fn an_unknown_check_and_a_divert_without_target_refuse_to_start() {
    if support::BrokerKind::from_env() == support::BrokerKind::Mosquitto {
        return;
    }
    let (success, stderr) = run_to_exit("[[validation]]\nfilter = \"x\"\nmax_payload = 3\n");
    assert!(!success && stderr.contains("unknown check or field `max_payload`"), "{stderr}");
    let (success, stderr) =
        run_to_exit("[[validation]]\nfilter = \"x\"\nrequire_json = true\non_invalid = \"divert\"\n");
    assert!(
        !success && stderr.contains("validation rule 0 (filter \"x\"): on_invalid = \"divert\" needs `divert_to`"),
        "{stderr}"
    );
}
