//! Mosquitto's command-line clients (`mosquitto_pub`, `mosquitto_sub`, Debian package mosquitto-clients)
//! as test clients, with user names and passwords, read back from their `-d` debug output: the CONNACK,
//! PUBACK and SUBACK codes they print, and the messages a subscriber got.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{EVENT_TIMEOUT, SILENCE};

/// Protocol version flag of the Mosquitto clients (`-V`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CliVersion {
    V311,
    V5,
}

impl CliVersion {
    fn flag(self) -> &'static str {
        match self {
            CliVersion::V311 => "mqttv311",
            CliVersion::V5 => "mqttv5",
        }
    }
}

/// Credentials for a client: `(user, password)`, or anonymous.
pub type Login<'a> = Option<(&'a str, &'a str)>;

fn base_args(port: u16, version: CliVersion, login: Login<'_>) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-V".into(),
        version.flag().into(),
        "-d".into(),
    ];
    if let Some((user, password)) = login {
        args.extend(["-u".into(), user.into(), "-P".into(), password.into()]);
    }
    args
}

/// What one `mosquitto_pub` run printed.
pub struct PubOutcome {
    pub connack: Option<u8>,
    pub puback: Option<u8>,
    pub output: String,
}

impl PubOutcome {
    /// The PUBLISH was accepted: PUBACK / PUBREC 0x00, or 0x10 No matching subscribers.
    pub fn accepted(&self) -> bool {
        matches!(self.puback, Some(0 | 0x10))
    }
}

/// Publishes one message (`-q qos`, `-r` when `retain`) and returns the codes the client printed.
pub fn publish(
    port: u16,
    version: CliVersion,
    login: Login<'_>,
    topic: &str,
    payload: &str,
    qos: u8,
    retain: bool,
) -> PubOutcome {
    let mut args = base_args(port, version, login);
    args.extend(["-t".into(), topic.into(), "-m".into(), payload.into(), "-q".into(), qos.to_string()]);
    if retain {
        args.push("-r".into());
    }
    let output = Command::new("mosquitto_pub")
        .args(&args)
        .output()
        .expect("run mosquitto_pub (apt-get install mosquitto-clients)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    PubOutcome { connack: connack_code(&text), puback: puback_code(&text), output: text }
}

/// The CONNACK code in `-d` output: `received CONNACK (5)`; for v5 the reason code.
pub fn connack_code(output: &str) -> Option<u8> {
    let after = output.split("received CONNACK (").nth(1)?;
    after.split(')').next()?.trim().parse().ok()
}

/// `received PUBACK (Mid: 1, RC:135)`; 3.1.1 PUBACKs have no code (printed without RC: 0 here).
fn puback_code(output: &str) -> Option<u8> {
    let line = output.lines().find(|line| line.contains("received PUBACK") || line.contains("received PUBREC"))?;
    Some(line.split("RC:").nth(1).and_then(|rest| rest.trim_end_matches(')').trim().parse().ok()).unwrap_or(0))
}

/// A running `mosquitto_sub` printing `MSG topic payload` per message.
pub struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Granted QoS / reason code per filter, from `Subscribed (mid: 1): 0, 135`.
    pub granted: Vec<u8>,
    pub connack: Option<u8>,
}

impl Subscriber {
    /// Subscribes to `filters` at QoS 1 and waits for the SUBACK (or for the client to give up).
    pub fn start(port: u16, version: CliVersion, login: Login<'_>, client_id: &str, filters: &[&str]) -> Subscriber {
        let mut args = base_args(port, version, login);
        args.extend(["-i".into(), client_id.into(), "-q".into(), "1".into(), "-F".into(), "MSG %t %p".into()]);
        for filter in filters {
            args.extend(["-t".into(), (*filter).into()]);
        }
        // mosquitto_sub buffers stdout when it is a pipe; line-buffered, each line arrives as printed.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg("mosquitto_sub")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mosquitto_sub (apt-get install mosquitto-clients)");
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut subscriber = Subscriber { child, lines, granted: Vec::new(), connack: None };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while let Some(line) = subscriber.next_line(deadline) {
            if let Some(code) = connack_code(&line) {
                subscriber.connack = Some(code);
            }
            if let Some(codes) = line.strip_prefix("Subscribed (mid: 1): ") {
                subscriber.granted = codes.split(',').filter_map(|code| code.trim().parse().ok()).collect();
                break;
            }
        }
        subscriber
    }

    fn next_line(&self, deadline: Instant) -> Option<String> {
        self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
    }

    /// Messages (`topic payload`) received until `count` arrived or the wait ran out, then `SILENCE`
    /// more to catch any that must not arrive.
    pub fn messages(&self, count: usize) -> Vec<String> {
        let mut messages = Vec::new();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while messages.len() < count {
            match self.next_line(deadline) {
                Some(line) => messages.extend(line.strip_prefix("MSG ").map(str::to_string)),
                None => break,
            }
        }
        let quiet_until = Instant::now() + SILENCE;
        while let Some(line) = self.next_line(quiet_until) {
            messages.extend(line.strip_prefix("MSG ").map(str::to_string));
        }
        messages
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits a little so a subscription made on one shard is known before a publish on another (the SUBACK
/// already waits for that in shardmq; Mosquitto has one thread).
pub fn settle() {
    thread::sleep(Duration::from_millis(50));
}
