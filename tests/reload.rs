//! SIGHUP against the real broker with real clients (mosquitto_pub / mosquitto_sub): the password and
//! ACL files are read again and apply to clients already connected, without dropping them; a file with
//! an error is refused with file:line and the previous rules stay; validation rules are compiled again.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use shardmq::auth::{PasswordFile, PasswordHash};
use support::mosquitto_clients::{self, settle, CliVersion, Subscriber};
use support::{skip_on_mosquitto, unique, Broker, BrokerLimits};

const LOG_WAIT: Duration = Duration::from_secs(10);

struct Files {
    dir: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(unique("shardmq-reload"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn passwords(&self, users: &[(&str, &str)]) -> PathBuf {
        let mut file = PasswordFile::default();
        for (user, password) in users {
            file.set(user, PasswordHash::new_pbkdf2(password.as_bytes()));
        }
        let path = self.path("pw");
        // Written beside and renamed, as editors and `mosquitto_passwd` do: the broker never reads half a file.
        let temp = self.path("pw.new");
        file.write(&temp).expect("write password file");
        std::fs::rename(&temp, &path).expect("rename password file");
        path
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn auth_toml(password_file: &Path, acl_file: &Path) -> String {
    format!(
        "[auth]\nallow_anonymous = false\npassword_file = \"{}\"\nacl_file = \"{}\"\n",
        password_file.display(),
        acl_file.display()
    )
}

fn start(toml: String) -> Option<Broker> {
    let broker = Broker::start_with(&BrokerLimits {
        shardmq_toml: Some(toml),
        log_filter: Some("info".into()),
        ..BrokerLimits::default()
    });
    (!skip_on_mosquitto(&broker, "the harness starts Mosquitto without these files")).then_some(broker)
}

/// Sends SIGHUP and waits for the reload's log line about `what`.
fn hang_up(broker: &Broker, what: &str) -> String {
    let already = broker.log().matches(what).count();
    // SAFETY: kill(2) on the broker child process.
    unsafe { libc::kill(broker.pid() as libc::pid_t, libc::SIGHUP) };
    broker
        .wait_for_log_line(LOG_WAIT, |_| broker_log_count(broker, what) > already)
        .unwrap_or_else(|| panic!("no reload line containing {what:?} after SIGHUP; log:\n{}", broker.log()));
    broker.log().lines().rfind(|line| line.contains(what)).unwrap_or_default().to_string()
}

fn broker_log_count(broker: &Broker, what: &str) -> usize {
    broker.log().matches(what).count()
}

const ACL: &str = "user alice\ntopic readwrite chat/#\nuser carol\ntopic readwrite chat/#\n";

#[test]
fn a_user_added_to_the_password_file_may_connect_after_sighup_and_connected_clients_stay() {
    let files = Files::new();
    let passwords = files.passwords(&[("alice", "alice-pw")]);
    let acl = files.write("acl", ACL);
    let Some(broker) = start(auth_toml(&passwords, &acl)) else { return };
    let alice = Subscriber::start(broker.port(), CliVersion::V5, Some(("alice", "alice-pw")), "alice", &["chat/#"]);
    assert_eq!(alice.connack, Some(0), "alice connects");
    let before = mosquitto_clients::publish(
        broker.port(),
        CliVersion::V5,
        Some(("carol", "carol-pw")),
        "chat/carol",
        "x",
        1,
        false,
    );
    assert_eq!(before.connack, Some(0x86), "carol is unknown before the reload: {}", before.output);

    files.passwords(&[("alice", "alice-pw"), ("carol", "carol-pw")]);
    hang_up(&broker, "reload: password and ACL files read again");
    settle();
    let after = mosquitto_clients::publish(
        broker.port(),
        CliVersion::V311,
        Some(("carol", "carol-pw")),
        "chat/carol",
        "hello after reload",
        1,
        false,
    );
    assert_eq!(after.connack, Some(0), "carol connects after the reload: {}", after.output);
    assert_eq!(
        alice.messages(1),
        vec!["chat/carol hello after reload".to_string()],
        "alice's connection from before the reload is still up and subscribed"
    );
}

#[test]
fn a_read_right_removed_on_sighup_stops_deliveries_to_a_subscription_made_before() {
    let files = Files::new();
    let passwords = files.passwords(&[("alice", "alice-pw"), ("carol", "carol-pw")]);
    let acl = files.write("acl", ACL);
    let Some(broker) = start(auth_toml(&passwords, &acl)) else { return };
    let alice = Subscriber::start(broker.port(), CliVersion::V311, Some(("alice", "alice-pw")), "alice", &["chat/#"]);
    assert_eq!(alice.granted, vec![1], "alice may read chat/#");
    let carol = Some(("carol", "carol-pw"));
    let sent = mosquitto_clients::publish(broker.port(), CliVersion::V5, carol, "chat/room", "before", 1, false);
    assert!(sent.accepted(), "{}", sent.output);
    assert_eq!(alice.messages(1), vec!["chat/room before".to_string()]);

    files.write("acl", "user alice\ntopic write chat/#\nuser carol\ntopic readwrite chat/#\n");
    hang_up(&broker, "reload: password and ACL files read again");
    let sent = mosquitto_clients::publish(broker.port(), CliVersion::V5, carol, "chat/room", "after", 1, false);
    assert!(sent.accepted(), "carol may still publish: {}", sent.output);
    assert_eq!(alice.messages(1), Vec::<String>::new(), "alice lost read access: nothing is delivered to her");
}

#[test]
fn an_acl_file_with_a_syntax_error_on_sighup_is_refused_with_file_and_line_and_the_old_rules_stay() {
    let files = Files::new();
    let passwords = files.passwords(&[("alice", "alice-pw"), ("carol", "carol-pw")]);
    let acl = files.write("acl", ACL);
    let Some(broker) = start(auth_toml(&passwords, &acl)) else { return };
    let alice = Subscriber::start(broker.port(), CliVersion::V5, Some(("alice", "alice-pw")), "alice", &["chat/#"]);
    assert_eq!(alice.granted, vec![1]);

    files.write("acl", "user alice\ntopic readwrite chat/#\ntopc write chat/#\n");
    let line = hang_up(&broker, "reload: password/ACL file refused");
    let named = format!("{}:3", acl.display());
    assert!(line.contains(&named), "the refusal names {named}: {line}");

    let carol = Some(("carol", "carol-pw"));
    let sent = mosquitto_clients::publish(broker.port(), CliVersion::V5, carol, "chat/room", "still", 1, false);
    assert!(sent.accepted(), "carol keeps her write access from the old file: {}", sent.output);
    assert_eq!(alice.messages(1), vec!["chat/room still".to_string()], "alice keeps her read access");
}

#[test]
fn a_forbidden_word_added_on_sighup_is_rejected_and_a_broken_word_list_keeps_the_old_one() {
    let files = Files::new();
    let words = files.write("words", "spam\n");
    let toml = format!(
        "[[validation]]\nfilter = \"chat/#\"\nforbidden_words_file = \"{}\"\non_invalid = \"reject\"\n",
        words.display()
    );
    let Some(broker) = start(toml) else { return };
    let publish = |payload: &str| {
        mosquitto_clients::publish(broker.port(), CliVersion::V5, None, "chat/room", payload, 1, false).puback
    };
    assert_eq!(publish("eggs and spam"), Some(0x99), "spam is forbidden from the start");
    assert!(matches!(publish("eggs and ham"), Some(0 | 0x10)), "ham is allowed before the reload");

    files.write("words", "spam\nham\n");
    hang_up(&broker, "reload: validation rules compiled again");
    assert_eq!(publish("eggs and ham"), Some(0x99), "ham is forbidden after the reload");

    std::fs::remove_file(files.path("words")).expect("remove the word list");
    hang_up(&broker, "reload: validation rules refused");
    assert_eq!(publish("eggs and ham"), Some(0x99), "the rules from before the failed reload stay");
}
