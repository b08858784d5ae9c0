//! `churn`: connections that come and go all the time, as a fleet of flaky devices makes them. At `--rate`
//! connects/s for `--duration` seconds a client connects, subscribes and stays until `--held` newer ones are
//! open, then leaves. Every `--will-every`-th leaves without DISCONNECT, so the broker must publish its will
//! (QoS 1), which a watcher connection counts. Every `--persistent-every`-th uses one of `--sessions`
//! persistent sessions: each comes back with CONNACK session present, its subscription kept (it does not
//! subscribe again) and the QoS 1 message published to it while it was away. Loss = wills and queued
//! messages that never arrived. Blocking sockets on one thread: the rates are tens per second, not thousands.

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use shardmq::protocol::{decode_packet, ByteStr, Disconnect, Packet, ProtocolVersion, Publish, QoS, Will};

use crate::histogram::{new_latency_histogram, record_us, LatencySummary};
use crate::packets::{self, PACKET_BYTES_MAX};

/// The watcher and the publisher ping when they have been quiet this long (their keepalive is 60 s).
const PING_AFTER: Duration = Duration::from_secs(20);
const KEEPALIVE_SECS: u16 = 60;

#[derive(Args, Clone, Debug)]
pub struct ChurnArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// 3 (= 3.1.1) or 5.
    #[arg(long, default_value_t = 3)]
    pub mqtt_version: u8,
    /// New connections per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Connections open at once: each one leaves when the `--held`-th after it has connected.
    #[arg(long, default_value_t = 20)]
    pub held: usize,
    /// Every N-th connection leaves without DISCONNECT and has a will on `<prefix>/will/<n>` (0 = none).
    #[arg(long, default_value_t = 4)]
    pub will_every: u64,
    /// Every N-th connection (the second of each N) resumes one of --sessions persistent sessions (0 = none).
    #[arg(long, default_value_t = 4)]
    pub persistent_every: u64,
    /// Persistent sessions taken in turn; one returns after --sessions x --persistent-every connects, which
    /// must be more than --held (its previous connection has left by then).
    #[arg(long, default_value_t = 8)]
    pub sessions: usize,
    /// At the end, longest wait for the last wills, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Longest wait for a CONNACK, SUBACK or PUBACK, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub reply_timeout: f64,
    #[arg(long, default_value = "churn")]
    pub client_prefix: String,
    /// File name stem of the summary (default: churn).
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for `<name>.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// What a churn run counts; `lost` and `errors` are what a soak test fails on.
#[derive(Debug, Default, Serialize)]
pub struct ChurnSummary {
    pub scenario: String,
    pub command: String,
    pub rate_target_per_sec: f64,
    pub duration_secs: f64,
    pub connects: u64,
    pub disconnects: u64,
    /// Left without DISCONNECT (each owes a will).
    pub abrupt_closes: u64,
    pub wills_received: u64,
    pub wills_duplicated: u64,
    /// Connects that found their persistent session (CONNACK session present), as expected.
    pub sessions_resumed: u64,
    /// QoS 1 messages published to persistent sessions while they were away, and distinct ones received.
    pub queued_sent: u64,
    pub queued_received: u64,
    pub queued_redelivered: u64,
    /// Wills and queued messages that never arrived.
    pub lost: u64,
    /// Failed connects, refusals, missing replies, sessions not found again.
    pub errors: u64,
    pub first_error: Option<String>,
    pub connack_us: LatencySummary,
}

impl ChurnSummary {
    fn error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// One blocking MQTT connection: packets out, packets in with a deadline.
struct Wire {
    stream: TcpStream,
    version: ProtocolVersion,
    input: BytesMut,
    last_sent: Instant,
}

impl Wire {
    fn open(broker: SocketAddr, version: ProtocolVersion, timeout: Duration) -> Result<Wire, String> {
        let stream = TcpStream::connect_timeout(&broker, timeout).map_err(|err| format!("connect {broker}: {err}"))?;
        stream.set_nodelay(true).map_err(|err| format!("TCP_NODELAY: {err}"))?;
        Ok(Wire { stream, version, input: BytesMut::new(), last_sent: Instant::now() })
    }

    fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut out = BytesMut::new();
        packets::encode(packet, self.version, &mut out)?;
        self.stream.write_all(&out).map_err(|err| format!("write {:?}: {err}", packet.packet_type()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next packet, or None once `deadline` passes first.
    fn receive(&mut self, deadline: Instant) -> Result<Option<Packet>, String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(packet) = decode_packet(&mut self.input, self.version, PACKET_BYTES_MAX)
                .map_err(|err| format!("undecodable packet from the broker: {err}"))?
            {
                return Ok(Some(packet));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left)).map_err(|err| err.to_string())?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(read) => self.input.extend_from_slice(&buf[..read]),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                Err(err) => return Err(format!("read: {err}")),
            }
        }
    }

    /// Reads until a packet `wanted` accepts arrives; PUBLISHes on the way are handed to `on_publish`.
    fn expect<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut wanted: impl FnMut(&Packet) -> Option<T>,
        mut on_publish: impl FnMut(&mut Wire, Publish) -> Result<(), String>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.receive(deadline)? {
                None => return Err(format!("no {what} within {timeout:?}")),
                Some(packet) => {
                    if let Some(found) = wanted(&packet) {
                        return Ok(found);
                    }
                    if let Packet::Publish(publish) = packet {
                        on_publish(self, publish)?;
                    }
                }
            }
        }
    }

    /// PUBACK for a QoS 1 delivery.
    fn acknowledge(&mut self, publish: &Publish) -> Result<(), String> {
        if publish.qos == QoS::AtLeastOnce {
            self.send(&Packet::PubAck(packets::response(publish.packet_id)))?;
        }
        Ok(())
    }
}

fn ignore_publish(wire: &mut Wire, publish: Publish) -> Result<(), String> {
    wire.acknowledge(&publish)
}

fn connack(packet: &Packet) -> Option<(bool, String)> {
    match packet {
        Packet::ConnAck(ack) if ack.reason.is_success() => Some((ack.session_present, String::new())),
        Packet::ConnAck(ack) => Some((false, format!("CONNACK refused: {:?}", ack.reason))),
        _ => None,
    }
}

fn suback(packet: &Packet) -> Option<bool> {
    match packet {
        Packet::SubAck(ack) => Some(ack.reasons.iter().all(|reason| reason.is_success())),
        _ => None,
    }
}

/// How a churning connection behaves.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    /// Leaves without DISCONNECT; its will must be published.
    Will,
    Persistent {
        session: usize,
    },
}

struct Open {
    wire: Wire,
    kind: Kind,
}

/// The wills the watcher has seen, by connection number.
#[derive(Default)]
struct WillTally {
    seen: HashSet<u64>,
    duplicated: u64,
}

struct Churn<'a> {
    args: &'a ChurnArgs,
    broker: SocketAddr,
    version: ProtocolVersion,
    reply_timeout: Duration,
    summary: ChurnSummary,
    connack: Histogram<u64>,
    publisher: Wire,
    publisher_packet_id: u16,
    /// Per persistent session: connected before in this run, and the sequence numbers it is owed.
    session_seen: Vec<bool>,
    owed: Vec<HashSet<u64>>,
    queued_received: HashSet<u64>,
    next_sequence: u64,
    persistent_count: usize,
}

pub fn execute(args: &ChurnArgs) -> Result<(), String> {
    validate(args)?;
    let broker = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {}:{}: {err}", args.host, args.port))?
        .next()
        .ok_or_else(|| format!("{} has no address", args.host))?;
    let version = packets::protocol_version(if args.mqtt_version == 5 { 5 } else { 4 });
    let reply_timeout = Duration::from_secs_f64(args.reply_timeout);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(WillTally::default()));
    let watcher = start_watcher(args, broker, version, reply_timeout, &stop, &tally)?;
    let publisher = helper_connection(args, broker, version, reply_timeout, "pub", None)?;
    let mut churn = Churn {
        args,
        broker,
        version,
        reply_timeout,
        summary: ChurnSummary {
            scenario: "churn".into(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            rate_target_per_sec: args.rate,
            duration_secs: args.duration,
            ..ChurnSummary::default()
        },
        connack: new_latency_histogram(),
        publisher,
        publisher_packet_id: 0,
        session_seen: vec![false; args.sessions],
        owed: vec![HashSet::new(); args.sessions],
        queued_received: HashSet::new(),
        next_sequence: 0,
        persistent_count: 0,
    };
    churn.run();
    churn.sweep_sessions();
    churn.wait_for_wills(&tally);
    stop.store(true, Ordering::Relaxed);
    if let Err(err) = watcher.join().unwrap_or_else(|_| Err("the watcher panicked".into())) {
        churn.summary.error(format!("watcher: {err}"));
    }
    let _ = churn.publisher.send(&Packet::Disconnect(Disconnect::default()));
    let tally = tally.lock().map_err(|_| "will tally poisoned")?;
    churn.finish(&tally)
}

fn validate(args: &ChurnArgs) -> Result<(), String> {
    if !matches!(args.mqtt_version, 3..=5) {
        return Err("--mqtt-version must be 3 (3.1.1) or 5".into());
    }
    if !(args.rate > 0.0 && args.duration >= 0.0 && args.drain >= 0.0 && args.reply_timeout > 0.0) {
        return Err("--rate and --reply-timeout must be > 0, --duration and --drain >= 0".into());
    }
    if args.persistent_every > 0
        && (args.sessions == 0 || (args.sessions as u64) * args.persistent_every <= args.held as u64)
    {
        return Err("--sessions x --persistent-every must exceed --held, so a session's last connection has left \
                    before it returns"
            .into());
    }
    Ok(())
}

/// The publisher (to persistent sessions away) or the watcher (of wills): clean, kept alive by pings.
fn helper_connection(
    args: &ChurnArgs,
    broker: SocketAddr,
    version: ProtocolVersion,
    timeout: Duration,
    role: &str,
    filter: Option<String>,
) -> Result<Wire, String> {
    let mut wire = Wire::open(broker, version, timeout)?;
    let client_id = format!("{}-{role}", args.client_prefix);
    wire.send(&packets::connect(version, &client_id, true, KEEPALIVE_SECS, 0))?;
    let (_, refused) = wire.expect("CONNACK", timeout, connack, ignore_publish)?;
    if !refused.is_empty() {
        return Err(format!("{client_id}: {refused}"));
    }
    if let Some(filter) = filter {
        wire.send(&packets::subscribe(&[filter], QoS::AtLeastOnce))?;
        if !wire.expect("SUBACK", timeout, suback, ignore_publish)? {
            return Err(format!("{client_id}: subscription refused"));
        }
    }
    Ok(wire)
}

/// Subscribes to every will and counts them (by the connection number in the topic) until told to stop.
fn start_watcher(
    args: &ChurnArgs,
    broker: SocketAddr,
    version: ProtocolVersion,
    timeout: Duration,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Mutex<WillTally>>,
) -> Result<JoinHandle<Result<(), String>>, String> {
    let filter = format!("{}/will/+", args.client_prefix);
    let mut wire = helper_connection(args, broker, version, timeout, "watch", Some(filter))?;
    let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
    Ok(thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match wire.receive(Instant::now() + Duration::from_millis(200))? {
                Some(Packet::Publish(publish)) => {
                    wire.acknowledge(&publish)?;
                    let number = publish.topic.rsplit('/').next().and_then(|last| last.parse::<u64>().ok());
                    let number = number.ok_or_else(|| format!("unexpected will topic {}", &*publish.topic))?;
                    let mut tally = tally.lock().map_err(|_| "will tally poisoned")?;
                    if !tally.seen.insert(number) {
                        tally.duplicated += 1;
                    }
                }
                Some(_) => {}
                None if wire.last_sent.elapsed() > PING_AFTER => wire.send(&Packet::PingReq)?,
                None => {}
            }
        }
        wire.send(&Packet::Disconnect(Disconnect::default()))
    }))
}

impl Churn<'_> {
    fn kind(&mut self, number: u64) -> Kind {
        let (will_every, persistent_every) = (self.args.will_every, self.args.persistent_every);
        if will_every > 0 && number % will_every == will_every - 1 {
            Kind::Will
        } else if persistent_every > 0 && number % persistent_every == 1 % persistent_every {
            let session = self.persistent_count % self.args.sessions;
            self.persistent_count += 1;
            Kind::Persistent { session }
        } else {
            Kind::Plain
        }
    }

    /// The churn itself: one connect every 1/rate seconds, bounded in count and in time.
    fn run(&mut self) {
        let connects = (self.args.rate * self.args.duration).ceil() as u64;
        let start = Instant::now();
        let give_up = start + Duration::from_secs_f64(self.args.duration) + self.reply_timeout * 4;
        let mut open: VecDeque<Open> = VecDeque::with_capacity(self.args.held + 1);
        let mut last_progress = start;
        for number in 0..connects {
            let due = start + Duration::from_secs_f64(number as f64 / self.args.rate);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if Instant::now() > give_up {
                self.summary.error(format!("gave up after {number} of {connects} connects: running too late"));
                break;
            }
            let kind = self.kind(number);
            match self.open(number, kind) {
                Ok(connection) => open.push_back(connection),
                Err(err) => self.summary.error(format!("connection {number}: {err}")),
            }
            while open.len() > self.args.held {
                self.close(open.pop_front().expect("more than held"), number);
            }
            self.keep_publisher_alive();
            if !self.args.quiet && last_progress.elapsed() >= Duration::from_secs(10) {
                last_progress = Instant::now();
                eprintln!(
                    "churn: {} connects, {} errors, {} queued sent / {} received",
                    self.summary.connects, self.summary.errors, self.summary.queued_sent, self.summary.queued_received
                );
            }
        }
        while let Some(connection) = open.pop_front() {
            self.close(connection, connects);
        }
    }

    fn client_id(&self, number: u64, kind: Kind) -> String {
        let prefix = &self.args.client_prefix;
        match kind {
            Kind::Plain => format!("{prefix}-c{number}"),
            Kind::Will => format!("{prefix}-w{number}"),
            Kind::Persistent { session } => format!("{prefix}-s{session}"),
        }
    }

    /// Connects (with a will, or resuming a session), checks CONNACK and subscribes where it should.
    fn open(&mut self, number: u64, kind: Kind) -> Result<Open, String> {
        let started = Instant::now();
        let mut wire = Wire::open(self.broker, self.version, self.reply_timeout)?;
        let client_id = self.client_id(number, kind);
        let persistent = matches!(kind, Kind::Persistent { .. });
        let expiry_secs = if persistent { 3600 } else { 0 };
        let mut connect = packets::connect(self.version, &client_id, !persistent, KEEPALIVE_SECS, expiry_secs);
        if let (Kind::Will, Packet::Connect(connect)) = (kind, &mut connect) {
            connect.will = Some(Will {
                topic: ByteStr::from(format!("{}/will/{number}", self.args.client_prefix)),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
            });
        }
        wire.send(&connect)?;
        let (session_present, refused) = wire.expect("CONNACK", self.reply_timeout, connack, ignore_publish)?;
        if !refused.is_empty() {
            return Err(format!("{client_id}: {refused}"));
        }
        record_us(&mut self.connack, started.elapsed().as_micros() as u64);
        self.summary.connects += 1;
        let filter = match kind {
            Kind::Persistent { session } => {
                let seen = std::mem::replace(&mut self.session_seen[session], true);
                if seen && !session_present {
                    return Err(format!("{client_id}: persistent session not found again (session present 0)"));
                }
                if seen {
                    self.summary.sessions_resumed += 1;
                    self.collect_queued(&mut wire, session, Instant::now() + self.reply_timeout)?;
                    return Ok(Open { wire, kind });
                }
                self.session_topic(session)
            }
            Kind::Plain | Kind::Will => format!("{}/c/{number}", self.args.client_prefix),
        };
        wire.send(&packets::subscribe(&[filter], QoS::AtLeastOnce))?;
        if !wire.expect("SUBACK", self.reply_timeout, suback, ignore_publish)? {
            return Err(format!("{client_id}: subscription refused"));
        }
        Ok(Open { wire, kind })
    }

    fn session_topic(&self, session: usize) -> String {
        format!("{}/s/{session}", self.args.client_prefix)
    }

    /// Reads a resumed session's queued messages until every one it is owed has come (or `deadline`).
    fn collect_queued(&mut self, wire: &mut Wire, session: usize, deadline: Instant) -> Result<(), String> {
        while !self.owed[session].is_empty() {
            let Some(packet) = wire.receive(deadline)? else {
                let owed = self.owed[session].len();
                return Err(format!("session {session}: {owed} queued messages missing after the resume"));
            };
            if let Packet::Publish(publish) = packet {
                wire.acknowledge(&publish)?;
                self.account_queued(session, &publish);
            }
        }
        Ok(())
    }

    fn account_queued(&mut self, session: usize, publish: &Publish) {
        let sequence = publish.payload.get(..8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_be_bytes);
        match sequence {
            Some(sequence) if self.owed[session].remove(&sequence) => {
                self.queued_received.insert(sequence);
                self.summary.queued_received += 1;
            }
            Some(sequence) if self.queued_received.contains(&sequence) => self.summary.queued_redelivered += 1,
            _ => self.summary.error(format!("session {session}: unexpected message on {}", &*publish.topic)),
        }
    }

    /// Leaves: a will connection drops the socket; the others DISCONNECT, and a persistent session
    /// then gets one QoS 1 message to find when it comes back.
    fn close(&mut self, mut connection: Open, number: u64) {
        match connection.kind {
            Kind::Will => {
                let _ = connection.wire.stream.shutdown(Shutdown::Both);
                self.summary.abrupt_closes += 1;
            }
            Kind::Plain | Kind::Persistent { .. } => {
                match connection.wire.send(&Packet::Disconnect(Disconnect::default())) {
                    Ok(()) => self.summary.disconnects += 1,
                    Err(err) => self.summary.error(format!("connection closing at {number}: {err}")),
                }
            }
        }
        if let Kind::Persistent { session } = connection.kind {
            if let Err(err) = self.publish_to_session(session) {
                self.summary.error(format!("publisher: {err}"));
            }
        }
    }

    fn publish_to_session(&mut self, session: usize) -> Result<(), String> {
        self.publisher_packet_id = self.publisher_packet_id % u16::MAX + 1;
        let packet_id = self.publisher_packet_id;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let topic = ByteStr::from(self.session_topic(session));
        let publish = packets::publish(&topic, QoS::AtLeastOnce, packet_id, &sequence.to_be_bytes(), 8);
        self.publisher.send(&publish)?;
        self.owed[session].insert(sequence);
        self.summary.queued_sent += 1;
        let puback =
            |packet: &Packet| matches!(packet, Packet::PubAck(ack) if ack.packet_id == packet_id).then_some(());
        self.publisher.expect("PUBACK", self.reply_timeout, puback, ignore_publish)
    }

    fn keep_publisher_alive(&mut self) {
        if self.publisher.last_sent.elapsed() < PING_AFTER {
            return;
        }
        let pong = |packet: &Packet| matches!(packet, Packet::PingResp).then_some(());
        let result = self
            .publisher
            .send(&Packet::PingReq)
            .and_then(|()| self.publisher.expect("PINGRESP", self.reply_timeout, pong, ignore_publish));
        if let Err(err) = result {
            self.summary.error(format!("publisher: {err}"));
        }
    }

    /// At the end, every session visited once more for what it is still owed, then ended (clean start).
    fn sweep_sessions(&mut self) {
        for session in 0..self.args.sessions {
            if !self.session_seen[session] {
                continue;
            }
            // `open` resumes the session and collects what it is owed.
            let result = self
                .open(0, Kind::Persistent { session })
                .and_then(|mut connection| connection.wire.send(&Packet::Disconnect(Disconnect::default())));
            if let Err(err) = result.and_then(|()| self.end_session(session)) {
                self.summary.error(format!("session sweep: {err}"));
            }
        }
    }

    /// Connects with a clean start and no expiry, so the broker forgets the session.
    fn end_session(&mut self, session: usize) -> Result<(), String> {
        let mut wire = Wire::open(self.broker, self.version, self.reply_timeout)?;
        let client_id = self.client_id(0, Kind::Persistent { session });
        wire.send(&packets::connect(self.version, &client_id, true, KEEPALIVE_SECS, 0))?;
        wire.expect("CONNACK", self.reply_timeout, connack, ignore_publish)?;
        self.session_seen[session] = false;
        wire.send(&Packet::Disconnect(Disconnect::default()))
    }

    fn wait_for_wills(&self, tally: &Mutex<WillTally>) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.drain);
        while Instant::now() < deadline {
            match tally.lock() {
                Ok(tally) if tally.seen.len() as u64 >= self.summary.abrupt_closes => return,
                Ok(_) => {}
                Err(_) => return,
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(mut self, tally: &WillTally) -> Result<(), String> {
        let summary = &mut self.summary;
        summary.wills_received = tally.seen.len() as u64;
        summary.wills_duplicated = tally.duplicated;
        summary.lost = summary.abrupt_closes.saturating_sub(summary.wills_received)
            + summary.queued_sent.saturating_sub(summary.queued_received);
        summary.connack_us = LatencySummary::of(&self.connack);
        println!(
            "churn: {} connects ({} DISCONNECT, {} dropped), wills {}/{} ({} duplicated), sessions resumed {}, \
             queued {}/{} ({} redelivered), lost {}, errors {}",
            summary.connects,
            summary.disconnects,
            summary.abrupt_closes,
            summary.wills_received,
            summary.abrupt_closes,
            summary.wills_duplicated,
            summary.sessions_resumed,
            summary.queued_received,
            summary.queued_sent,
            summary.queued_redelivered,
            summary.lost,
            summary.errors
        );
        let connack = &summary.connack_us;
        println!("  CONNACK p50 {} µs  p99 {} µs  max {} µs", connack.p50, connack.p99, connack.max);
        if let Some(error) = &summary.first_error {
            println!("  first error: {error}");
        }
        if let Some(dir) = &self.args.out {
            std::fs::create_dir_all(dir).map_err(|err| format!("create {}: {err}", dir.display()))?;
            let path = dir.join(format!("{}.json", self.args.name.as_deref().unwrap_or("churn")));
            let json = serde_json::to_string_pretty(&summary).map_err(|err| err.to_string())?;
            std::fs::write(&path, json).map_err(|err| format!("write {}: {err}", path.display()))?;
            println!("  wrote {}", path.display());
        }
        Ok(())
    }
}
