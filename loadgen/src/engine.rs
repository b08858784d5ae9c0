//! One load thread: an epoll loop (mio) over non-blocking sockets that connects its share of the clients,
//! publishes on an open-loop schedule, receives and accounts deliveries, and answers the QoS handshakes.
//!
//! Reads go into one large per-thread buffer and every complete frame in it is handled before the next
//! read, so a busy subscriber costs about one syscall per socket buffer rather than one per message.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use shardmq::protocol::{decode_packet, ByteStr, ConnAck, Disconnect, Packet, ProtocolVersion, Publish, QoS, SubAck};

use crate::client_shape::ClientShape;
use crate::clock::{now_ns, thread_cpu_ns};
use crate::histogram::{new_latency_histogram, record_us};
use crate::packets::{self, PACKET_BYTES_MAX};
use crate::progress::Progress;
use crate::sequence::{Arrival, SequenceTracker};
use crate::stamp::Stamp;
use crate::timer::TimerFd;
use crate::transport::{Layer, LayerFactory, TransportKind};

/// Value of the start signal that tells a waiting engine to disconnect and give up.
pub const GO_ABORT: u64 = u64::MAX;
const TIMER_TOKEN: Token = Token(usize::MAX);
const READ_BUFFER_BYTES: usize = 512 * 1024;
/// A publisher stops generating (and catches up later, keeping the intended times) above this backlog.
const OUT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Packet ids cycle through 1..=65535, so never more than this many QoS>0 publishes in flight.
const INFLIGHT_MAX: u32 = 65_000;
/// In the reconnect storm a device whose attempt the broker closes tries again, as a real device would, at
/// most this many times (a broker still counting the dropped connections may refuse some at first).
const STORM_RETRIES_MAX: u8 = 5;

/// What every connection of a run shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSettings {
    pub broker: SocketAddr,
    pub source_ip: Option<IpAddr>,
    /// 4 (MQTT 3.1.1) or 5.
    pub mqtt_level: u8,
    pub qos: u8,
    pub payload_bytes: usize,
    pub keepalive_secs: u16,
    pub clean_start: bool,
    pub session_expiry_secs: u32,
    pub connect_concurrency: usize,
    pub connect_timeout_ns: u64,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    /// Longest wait for in-flight deliveries after the last scheduled send.
    pub drain_max_ns: u64,
    /// The drain ends early once nothing arrived for this long and nothing is left to send.
    pub drain_quiet_ns: u64,
    /// After the run, drop every connection without DISCONNECT and connect them all again (reconnect storm).
    #[serde(default)]
    pub reconnect: bool,
    /// Publishers start at the measured phase, so the warm-up holds the connections with pings only (idle).
    #[serde(default)]
    pub publish_after_warmup: bool,
    /// Reconnect storm: the publishers send again for `probe_ns` from storm start + `reconnect_settle_ns`
    /// (one absolute time for every thread and worker), to show that re-established sessions deliver.
    #[serde(default)]
    pub reconnect_settle_ns: u64,
    #[serde(default)]
    pub probe_ns: u64,
    /// How packets and acks are paced on the socket (see `client_shape`).
    #[serde(default)]
    pub client_shape: ClientShape,
    /// How long after its PUBLISH arrived an ack is sent (0 = in the same turn).
    #[serde(default)]
    pub ack_delay_ns: u64,
    /// What the MQTT bytes travel in (`--transport`).
    #[serde(default)]
    pub transport: TransportKind,
    /// The CA the broker's certificate verifies against (TLS kinds).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub websocket_path: String,
}

/// What one connection does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Role {
    /// Sends to `topic` (or to a random device of `targets`) every `period_ns`, the first at t0 + `offset_ns`.
    Publisher {
        publisher: u32,
        topic: String,
        period_ns: f64,
        offset_ns: u64,
        #[serde(default)]
        targets: Option<DeviceTargets>,
    },
    /// Subscribes to `filter` and accounts what arrives.
    Subscriber { filter: String },
    /// Connects, subscribes to its `filters` (if any) in one SUBSCRIBE, pings, and accounts what arrives.
    Idle { filters: Vec<String> },
}

/// A commander's targets: device i (client id `{device_prefix}{i}`) listens on `pattern` expanded for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceTargets {
    pub pattern: String,
    pub device_prefix: String,
    pub devices: u64,
}

impl DeviceTargets {
    pub fn topic(&self, device: u64) -> String {
        crate::plan::expand(&self.pattern, device as usize, &format!("{}{device}", self.device_prefix))
    }
}

/// splitmix64: a small, seedable generator for picking random devices (same sequence every run).
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnSpec {
    pub client_id: String,
    pub role: Role,
}

/// Counters of one thread (summed over threads and workers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Counters {
    pub sent: u64,
    pub sent_measure: u64,
    pub acked: u64,
    /// Distinct deliveries of our messages.
    pub delivered: u64,
    pub delivered_measure: u64,
    /// Distinct deliveries *received* during the measured phase, whenever sent: the broker's throughput
    /// over the same window its CPU time is sampled in.
    pub received_in_window: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Messages from before this run (retained or queued in a persistent session) or not ours.
    pub stale: u64,
    pub pings: u64,
    /// PINGREQs sent during the warm-up phase (idle: the pings-only window the broker's CPU is sampled over).
    pub pings_warmup: u64,
    pub pongs: u64,
    pub connections: u64,
    pub sessions_present: u64,
    pub connections_lost: u64,
    /// Reconnect storm: connections re-established, and how many found their session (CONNACK session present).
    pub reconnections: u64,
    pub reconnect_sessions_present: u64,
    /// Storm attempts the broker closed before CONNACK, tried again (at most STORM_RETRIES_MAX per device).
    pub reconnect_retries: u64,
    /// After the storm: messages the publishers sent to devices, and how many of them the devices received.
    pub probe_sent: u64,
    pub probe_delivered: u64,
    /// CPU time the load threads themselves spent from t0 to the end of the drain (connecting excluded).
    pub loadgen_cpu_us: u64,
}

impl Counters {
    pub fn add(&mut self, other: &Counters) {
        self.sent += other.sent;
        self.sent_measure += other.sent_measure;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.delivered_measure += other.delivered_measure;
        self.received_in_window += other.received_in_window;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.stale += other.stale;
        self.pings += other.pings;
        self.pings_warmup += other.pings_warmup;
        self.pongs += other.pongs;
        self.connections += other.connections;
        self.sessions_present += other.sessions_present;
        self.connections_lost += other.connections_lost;
        self.reconnections += other.reconnections;
        self.reconnect_sessions_present += other.reconnect_sessions_present;
        self.reconnect_retries += other.reconnect_retries;
        self.probe_sent += other.probe_sent;
        self.probe_delivered += other.probe_delivered;
        self.loadgen_cpu_us += other.loadgen_cpu_us;
    }
}

/// Everything a thread measured.
pub struct ThreadReport {
    pub counters: Counters,
    pub sent_by_publisher: Vec<(u32, u64)>,
    pub warmup: Histogram<u64>,
    pub measure: Histogram<u64>,
    pub connack: Histogram<u64>,
    pub ping: Histogram<u64>,
    pub first_connect_ns: u64,
    pub last_connack_ns: u64,
    /// The reconnect storm's CONNACK latencies and window (empty / 0 without `--reconnect`).
    pub reconnect_connack: Histogram<u64>,
    pub reconnect_first_connect_ns: u64,
    pub reconnect_last_connack_ns: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    TcpConnecting,
    AwaitConnAck,
    AwaitSubAck,
    Ready,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Publish,
    Ping,
    /// Acks held back by `--ack-delay-us` are due.
    Ack,
}

struct Conn {
    spec: ConnSpec,
    stream: Option<TcpStream>,
    /// TLS / WebSocket state (None for plain TCP), and the socket bytes it produced not yet written.
    layer: Option<Box<Layer>>,
    wire: BytesMut,
    state: State,
    /// Bytes of a packet not yet complete.
    partial: BytesMut,
    out: BytesMut,
    /// Publishers: the topic, shared by every PUBLISH they build.
    topic: ByteStr,
    connect_started_ns: u64,
    ping_sent_ns: u64,
    next_sequence: u64,
    /// The first sequence of the current schedule (the post-storm probe starts a new one).
    sequence_base: u64,
    /// Picks the device of each command (publishers with targets).
    random_state: u64,
    /// Storm attempts of this connection that were closed before CONNACK.
    retries: u8,
    next_packet_id: u16,
    inflight: u32,
    inflight_max: u32,
    waiting_for_room: bool,
    trackers: Vec<SequenceTracker>,
    /// Encoded acks held back until their due time (`--ack-delay-us`), oldest first.
    delayed_acks: VecDeque<(u64, BytesMut)>,
}

impl Conn {
    fn new(spec: ConnSpec) -> Conn {
        let (topic, random_state) = match &spec.role {
            Role::Publisher { topic, publisher, .. } => (ByteStr::from(topic.as_str()), u64::from(*publisher) << 32),
            _ => (ByteStr::from(""), 0),
        };
        Conn {
            spec,
            stream: None,
            layer: None,
            wire: BytesMut::new(),
            state: State::NotStarted,
            partial: BytesMut::new(),
            out: BytesMut::new(),
            topic,
            connect_started_ns: 0,
            ping_sent_ns: 0,
            next_sequence: 0,
            sequence_base: 0,
            random_state,
            retries: 0,
            next_packet_id: 0,
            inflight: 0,
            inflight_max: INFLIGHT_MAX,
            waiting_for_room: false,
            trackers: Vec::new(),
            delayed_acks: VecDeque::new(),
        }
    }

    fn queued_bytes(&self) -> usize {
        self.out.len() + self.wire.len()
    }
}

/// Phase boundaries, absolute CLOCK_MONOTONIC ns; all u64::MAX until the coordinator picks t0.
#[derive(Clone, Copy)]
struct Timeline {
    t0_ns: u64,
    /// When the publishers' schedule starts: t0, or the measured phase for idle runs.
    publish_start_ns: u64,
    measure_start_ns: u64,
    publish_end_ns: u64,
}

pub struct Engine {
    settings: EngineSettings,
    layers: LayerFactory,
    version: ProtocolVersion,
    qos: QoS,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    conns: Vec<Conn>,
    due: BinaryHeap<Reverse<(u64, Due, usize)>>,
    read_buffer: Vec<u8>,
    timeline: Timeline,
    counters: Counters,
    warmup: Histogram<u64>,
    measure: Histogram<u64>,
    connack: Histogram<u64>,
    ping: Histogram<u64>,
    first_connect_ns: u64,
    last_connack_ns: u64,
    last_receive_ns: u64,
    first_error: Option<String>,
    progress: Arc<Progress>,
    progress_published_ns: u64,
    /// In the reconnect storm: a CONNACK with session present is trusted (no new SUBSCRIBE).
    reconnecting: bool,
    /// After the storm: deliveries count as probe deliveries, outside the latency histograms.
    probing: bool,
    /// Storm attempts to start again (closed by the broker before CONNACK).
    retry_queue: Vec<usize>,
}

impl Engine {
    pub fn new(settings: EngineSettings, specs: Vec<ConnSpec>, progress: Arc<Progress>) -> io::Result<Engine> {
        let poll = Poll::new()?;
        let timer = TimerFd::new(poll.registry(), TIMER_TOKEN)?;
        let layers = LayerFactory::new(settings.transport, settings.ca_file.as_deref(), &settings.websocket_path)
            .map_err(io::Error::other)?;
        Ok(Engine {
            layers,
            version: packets::protocol_version(settings.mqtt_level),
            qos: packets::qos(settings.qos),
            settings,
            poll,
            events: Events::with_capacity(1024),
            timer,
            conns: specs.into_iter().map(Conn::new).collect(),
            due: BinaryHeap::new(),
            read_buffer: vec![0; READ_BUFFER_BYTES],
            timeline: Timeline {
                t0_ns: u64::MAX,
                publish_start_ns: u64::MAX,
                measure_start_ns: u64::MAX,
                publish_end_ns: u64::MAX,
            },
            counters: Counters::default(),
            warmup: new_latency_histogram(),
            measure: new_latency_histogram(),
            connack: new_latency_histogram(),
            ping: new_latency_histogram(),
            first_connect_ns: u64::MAX,
            last_connack_ns: 0,
            last_receive_ns: 0,
            first_error: None,
            progress,
            progress_published_ns: 0,
            reconnecting: false,
            probing: false,
            retry_queue: Vec::new(),
        })
    }

    /// Connects every client (at most `connect_concurrency` handshakes at once) and waits for its CONNACK
    /// and SUBACK. Any refusal or socket error here fails the run with a message naming the cause.
    pub fn establish(&mut self) -> Result<(), String> {
        let deadline_ns = now_ns() + self.settings.connect_timeout_ns;
        let mut next_to_start = 0;
        loop {
            let mut in_progress = 0;
            let mut ready = 0;
            for conn in &self.conns {
                match conn.state {
                    State::TcpConnecting | State::AwaitConnAck | State::AwaitSubAck => in_progress += 1,
                    State::Ready => ready += 1,
                    _ => {}
                }
            }
            if ready == self.conns.len() {
                return Ok(());
            }
            if let Some(error) = self.first_error.take() {
                return Err(error);
            }
            while in_progress < self.settings.connect_concurrency {
                if let Some(index) = self.retry_queue.pop() {
                    self.start_connect(index)?;
                } else if next_to_start < self.conns.len() {
                    self.start_connect(next_to_start)?;
                    next_to_start += 1;
                } else {
                    break;
                }
                in_progress += 1;
            }
            if now_ns() > deadline_ns {
                return Err(format!(
                    "only {ready} of {} connections to {} completed CONNECT/SUBSCRIBE within {} s",
                    self.conns.len(),
                    self.settings.broker,
                    self.settings.connect_timeout_ns / 1_000_000_000
                ));
            }
            self.turn(deadline_ns).map_err(|err| format!("event loop: {err}"))?;
        }
    }

    /// Keeps the connections alive (pings) until `go` holds t0 (0 = wait, `GO_ABORT` = give up), then runs
    /// the scheduled phases and the drain, disconnects, and returns what was measured.
    pub fn run(mut self, go: &AtomicU64) -> Result<ThreadReport, String> {
        let t0_ns = loop {
            match go.load(Ordering::Acquire) {
                0 => self.turn(now_ns() + 5_000_000).map_err(|err| format!("event loop: {err}"))?,
                GO_ABORT => {
                    self.disconnect_all();
                    return Err("run aborted".into());
                }
                t0_ns => break t0_ns,
            }
        };
        let measure_start_ns = t0_ns + self.settings.warmup_ns;
        let publish_end_ns = measure_start_ns + self.settings.duration_ns;
        let publish_start_ns = if self.settings.publish_after_warmup { measure_start_ns } else { t0_ns };
        self.timeline = Timeline { t0_ns, publish_start_ns, measure_start_ns, publish_end_ns };
        self.schedule_publishers();
        let cpu_start_ns = thread_cpu_ns();
        while now_ns() < publish_end_ns {
            self.turn(publish_end_ns).map_err(|err| format!("event loop: {err}"))?;
        }
        self.drain()?;
        self.counters.loadgen_cpu_us = thread_cpu_ns().saturating_sub(cpu_start_ns) / 1000;
        let reconnect = if self.settings.reconnect { Some(self.reconnect_storm()?) } else { None };
        self.disconnect_all();
        self.publish_progress(true);
        let mut report = self.into_report();
        if let Some((connack, first_connect_ns, last_connack_ns)) = reconnect {
            (report.reconnect_connack, report.reconnect_first_connect_ns, report.reconnect_last_connack_ns) =
                (connack, first_connect_ns, last_connack_ns);
        }
        Ok(report)
    }

    /// At one absolute time for every thread and worker (end of the drain window), drops every connection at
    /// once (no DISCONNECT, like a network outage) and establishes them all again; a session the broker
    /// resumed is not subscribed again. Then the publishers probe the devices (`probe_ns`).
    /// Returns the storm's CONNACK histogram and connect window; the first connect's figures stay as they were.
    fn reconnect_storm(&mut self) -> Result<(Histogram<u64>, u64, u64), String> {
        let storm_start_ns = self.timeline.publish_end_ns + self.settings.drain_max_ns;
        while now_ns() < storm_start_ns {
            self.turn(storm_start_ns).map_err(|err| format!("event loop: {err}"))?;
        }
        // The probe's timeline is set before reconnecting, so a device that resumes late still accounts it.
        let probe_start_ns = storm_start_ns + self.settings.reconnect_settle_ns;
        let probe_end_ns = probe_start_ns + self.settings.probe_ns;
        self.timeline = Timeline {
            t0_ns: probe_start_ns,
            publish_start_ns: probe_start_ns,
            measure_start_ns: probe_start_ns,
            publish_end_ns: probe_end_ns,
        };
        self.probing = true;
        for conn in &mut self.conns {
            conn.sequence_base = conn.next_sequence;
            if let Some(mut stream) = conn.stream.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            conn.state = State::NotStarted;
            conn.retries = 0;
            conn.partial.clear();
            conn.out.clear();
            conn.wire.clear();
            conn.inflight = 0;
            conn.waiting_for_room = false;
        }
        self.due.clear();
        let saved_connack = std::mem::replace(&mut self.connack, new_latency_histogram());
        let saved =
            (self.first_connect_ns, self.last_connack_ns, self.counters.connections, self.counters.sessions_present);
        self.first_connect_ns = u64::MAX;
        self.last_connack_ns = 0;
        self.reconnecting = true;
        let established = self.establish();
        self.reconnecting = false;
        established?;
        self.counters.reconnections = self.counters.connections - saved.2;
        self.counters.reconnect_sessions_present = self.counters.sessions_present - saved.3;
        let storm = (std::mem::replace(&mut self.connack, saved_connack), self.first_connect_ns, self.last_connack_ns);
        (self.first_connect_ns, self.last_connack_ns, self.counters.connections, self.counters.sessions_present) =
            saved;
        if self.settings.probe_ns > 0 {
            self.probe_devices(probe_start_ns)?;
        }
        self.probing = false;
        Ok(storm)
    }

    /// After the storm: waits for `probe_start_ns`, runs the publishers' schedule again over the probe window
    /// and drains; counts what was sent and what the devices received in that window.
    fn probe_devices(&mut self, probe_start_ns: u64) -> Result<(), String> {
        let (sent_before, delivered_before) = (self.counters.sent, self.counters.delivered);
        while now_ns() < probe_start_ns {
            self.turn(probe_start_ns).map_err(|err| format!("event loop: {err}"))?;
        }
        self.schedule_publishers();
        while now_ns() < self.timeline.publish_end_ns {
            self.turn(self.timeline.publish_end_ns).map_err(|err| format!("event loop: {err}"))?;
        }
        self.drain()?;
        self.counters.probe_sent = self.counters.sent - sent_before;
        self.counters.probe_delivered = self.counters.delivered - delivered_before;
        Ok(())
    }

    fn drain(&mut self) -> Result<(), String> {
        let drain_end_ns = self.timeline.publish_end_ns + self.settings.drain_max_ns;
        self.last_receive_ns = self.last_receive_ns.max(self.timeline.publish_end_ns);
        loop {
            let now = now_ns();
            let quiet = now.saturating_sub(self.last_receive_ns) >= self.settings.drain_quiet_ns;
            if now >= drain_end_ns || (quiet && self.nothing_left_to_send()) {
                return Ok(());
            }
            let wake_ns = (now + self.settings.drain_quiet_ns / 4).min(drain_end_ns);
            self.turn(wake_ns).map_err(|err| format!("event loop: {err}"))?;
        }
    }

    fn nothing_left_to_send(&self) -> bool {
        self.conns.iter().all(|conn| {
            conn.state != State::Ready
                || (conn.queued_bytes() == 0
                    && conn.inflight == 0
                    && !conn.waiting_for_room
                    && conn.delayed_acks.is_empty())
        })
    }

    fn schedule_publishers(&mut self) {
        for (index, conn) in self.conns.iter().enumerate() {
            if let Role::Publisher { offset_ns, .. } = conn.spec.role {
                self.due.push(Reverse((self.timeline.publish_start_ns + offset_ns, Due::Publish, index)));
            }
        }
    }

    /// One pass of the loop: fire what is due, then wait (at most until `wake_ns`) for socket events.
    fn turn(&mut self, wake_ns: u64) -> io::Result<()> {
        let now = now_ns();
        self.fire_due(now);
        let next_due_ns = self.due.peek().map_or(u64::MAX, |Reverse((at, _, _))| *at);
        let wake_ns = wake_ns.min(next_due_ns).min(now + 100_000_000);
        self.timer.arm_at(wake_ns.max(now + 1));
        let timeout = Duration::from_nanos(wake_ns.saturating_sub(now)) + Duration::from_millis(1);
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|event| {
                (
                    event.token().0,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                    event.is_writable(),
                )
            })
            .collect();
        for (token, readable, writable) in ready {
            if token == TIMER_TOKEN.0 {
                self.timer.acknowledge();
                continue;
            }
            if let Err(error) = self.on_socket_event(token, readable, writable) {
                self.lose_connection(token, error);
            }
        }
        self.publish_progress(false);
        Ok(())
    }

    fn fire_due(&mut self, now: u64) {
        while let Some(&Reverse((at, due, index))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.conns[index].state != State::Ready {
                continue;
            }
            let queued = match due {
                Due::Publish => self.publish_due(index, now),
                Due::Ping => self.send_ping(index, now),
                Due::Ack => self.release_acks(index, now),
            };
            if let Err(error) = queued.and_then(|()| self.flush(index)) {
                self.lose_connection(index, error);
            }
        }
    }

    fn start_connect(&mut self, index: usize) -> Result<(), String> {
        let broker = self.settings.broker;
        let stream = open_socket(broker, self.settings.source_ip, self.settings.client_shape)
            .map_err(|err| connect_error_text(broker, &err))?;
        let layer = self.layers.layer(index as u64 ^ now_ns())?;
        let conn = &mut self.conns[index];
        conn.stream = Some(stream);
        conn.layer = layer;
        conn.wire.clear();
        conn.state = State::TcpConnecting;
        // A retried storm attempt keeps its first start: CONNACK latency includes the refusals.
        if conn.retries == 0 {
            conn.connect_started_ns = now_ns();
        }
        self.first_connect_ns = self.first_connect_ns.min(conn.connect_started_ns);
        let stream = conn.stream.as_mut().expect("just set");
        self.poll
            .registry()
            .register(stream, Token(index), Interest::READABLE | Interest::WRITABLE)
            .map_err(|err| format!("epoll register: {err}"))
    }

    fn on_socket_event(&mut self, index: usize, readable: bool, writable: bool) -> Result<(), String> {
        if self.conns[index].state == State::TcpConnecting {
            if !self.check_tcp_connected(index)? {
                return Ok(());
            }
            self.send_connect(index)?;
        }
        if readable {
            self.read_ready(index)?;
        }
        if writable || self.conns[index].queued_bytes() > 0 {
            self.flush(index)?;
        }
        Ok(())
    }

    fn check_tcp_connected(&mut self, index: usize) -> Result<bool, String> {
        let broker = self.settings.broker;
        let Some(stream) = self.conns[index].stream.as_ref() else { return Ok(false) };
        if let Ok(Some(err)) | Err(err) = stream.take_error() {
            return Err(connect_error_text(broker, &err));
        }
        match stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(connect_error_text(broker, &err)),
        }
    }

    fn send_connect(&mut self, index: usize) -> Result<(), String> {
        let settings = &self.settings;
        let conn = &mut self.conns[index];
        let connect = packets::connect(
            self.version,
            &conn.spec.client_id,
            settings.clean_start,
            settings.keepalive_secs,
            settings.session_expiry_secs,
        );
        packets::encode(&connect, self.version, &mut conn.out)?;
        conn.state = State::AwaitConnAck;
        Ok(())
    }

    /// Reads until the socket is empty (edge-triggered), handling every complete packet as it goes.
    fn read_ready(&mut self, index: usize) -> Result<(), String> {
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let result = self.read_loop(index, &mut buffer);
        self.read_buffer = buffer;
        result
    }

    fn read_loop(&mut self, index: usize, buffer: &mut [u8]) -> Result<(), String> {
        loop {
            let Some(stream) = self.conns[index].stream.as_mut() else { return Ok(()) };
            let read = match stream.read(buffer) {
                Ok(0) => return Err(format!("broker closed the connection of {}", self.conns[index].spec.client_id)),
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(format!("read from broker: {err}")),
            };
            let received_ns = now_ns();
            self.last_receive_ns = received_ns;
            let mut bytes = std::mem::take(&mut self.conns[index].partial);
            let conn = &mut self.conns[index];
            match conn.layer.as_mut() {
                Some(layer) => {
                    layer.receive(&buffer[..read], &mut bytes, &mut conn.wire)?;
                    write_queued(conn.stream.as_mut(), None, &mut BytesMut::new(), &mut conn.wire)?;
                }
                None => bytes.extend_from_slice(&buffer[..read]),
            }
            let handled = self.handle_packets(index, &mut bytes, received_ns);
            self.conns[index].partial = bytes;
            handled?;
            if read < buffer.len() {
                // A short read emptied the socket; new data raises a new edge, so skip the WouldBlock read.
                return Ok(());
            }
        }
    }

    /// Decodes and handles every complete packet at the front of `bytes`, leaving a partial one there.
    fn handle_packets(&mut self, index: usize, bytes: &mut BytesMut, received_ns: u64) -> Result<(), String> {
        loop {
            match decode_packet(bytes, self.version, PACKET_BYTES_MAX) {
                Ok(Some(packet)) => self.handle_packet(index, packet, received_ns)?,
                Ok(None) => return Ok(()),
                Err(err) => return Err(format!("malformed packet from broker: {err}")),
            }
        }
    }

    fn handle_packet(&mut self, index: usize, packet: Packet, received_ns: u64) -> Result<(), String> {
        let conn = &mut self.conns[index];
        match packet {
            Packet::Publish(publish) => self.on_publish(index, &publish, received_ns)?,
            Packet::ConnAck(connack) => self.on_connack(index, &connack, received_ns)?,
            Packet::SubAck(suback) => self.on_suback(index, &suback)?,
            Packet::PubAck(_) | Packet::PubComp(_) => self.on_publish_completed(index, received_ns)?,
            Packet::PubRec(pubrec) => {
                packets::encode(&Packet::PubRel(packets::response(pubrec.packet_id)), self.version, &mut conn.out)?
            }
            Packet::PubRel(pubrel) => {
                packets::encode(&Packet::PubComp(packets::response(pubrel.packet_id)), self.version, &mut conn.out)?
            }
            Packet::PingResp => {
                self.counters.pongs += 1;
                let sent_ns = std::mem::take(&mut conn.ping_sent_ns);
                if sent_ns > 0 {
                    record_us(&mut self.ping, received_ns.saturating_sub(sent_ns) / 1000);
                }
            }
            Packet::Disconnect(Disconnect { reason, .. }) => {
                return Err(format!(
                    "broker sent DISCONNECT to {}: {} (0x{:02x})",
                    conn.spec.client_id,
                    reason.name(),
                    reason.0
                ))
            }
            other => return Err(format!("unexpected {:?} from broker", other.packet_type())),
        }
        if self.settings.client_shape.write_per_packet() {
            // The ack (if any) goes out now, alone, as paho's network loop sends it.
            let conn = &mut self.conns[index];
            write_queued(conn.stream.as_mut(), conn.layer.as_deref_mut(), &mut conn.out, &mut conn.wire)?;
        }
        Ok(())
    }

    fn on_connack(&mut self, index: usize, connack: &ConnAck, received_ns: u64) -> Result<(), String> {
        let conn = &mut self.conns[index];
        if !connack.reason.is_success() {
            return Err(format!(
                "broker refused CONNECT of {}: {} (0x{:02x})",
                conn.spec.client_id,
                connack.reason.name(),
                connack.reason.0
            ));
        }
        record_us(&mut self.connack, received_ns.saturating_sub(conn.connect_started_ns) / 1000);
        self.last_connack_ns = self.last_connack_ns.max(received_ns);
        self.counters.connections += 1;
        self.counters.sessions_present += u64::from(connack.session_present);
        let receive_maximum = connack.properties.receive_maximum;
        conn.inflight_max = receive_maximum.map_or(INFLIGHT_MAX, |max| u32::from(max).min(INFLIGHT_MAX));
        let filters: &[String] = match &conn.spec.role {
            Role::Subscriber { filter } => std::slice::from_ref(filter),
            Role::Idle { filters } => filters,
            Role::Publisher { .. } => &[],
        };
        // A session resumed after the storm keeps its subscriptions; not subscribing again is what shows it.
        let resumed = self.reconnecting && connack.session_present;
        if filters.is_empty() || resumed {
            conn.state = State::Ready;
        } else {
            packets::encode(&packets::subscribe(filters, self.qos), self.version, &mut conn.out)?;
            conn.state = State::AwaitSubAck;
        }
        self.schedule_ping(index, received_ns);
        Ok(())
    }

    fn on_suback(&mut self, index: usize, suback: &SubAck) -> Result<(), String> {
        let conn = &mut self.conns[index];
        if let Some(reason) = suback.reasons.iter().find(|reason| !reason.is_success() && reason.0 >= 0x80) {
            let filter = match &conn.spec.role {
                Role::Subscriber { filter } => filter.clone(),
                Role::Idle { filters } => filters.join(" "),
                Role::Publisher { .. } => String::new(),
            };
            return Err(format!(
                "broker refused SUBSCRIBE of {} to {filter:?}: {} (0x{:02x})",
                conn.spec.client_id,
                reason.name(),
                reason.0
            ));
        }
        conn.state = State::Ready;
        Ok(())
    }

    fn on_publish(&mut self, index: usize, publish: &Publish, received_ns: u64) -> Result<(), String> {
        let ack = match publish.qos {
            QoS::AtLeastOnce => Some(Packet::PubAck(packets::response(publish.packet_id))),
            QoS::ExactlyOnce => Some(Packet::PubRec(packets::response(publish.packet_id))),
            QoS::AtMostOnce => None,
        };
        if let Some(ack) = ack {
            self.queue_ack(index, &ack, received_ns)?;
        }
        let conn = &mut self.conns[index];
        let Some(stamp) = Stamp::from_payload(&publish.payload) else {
            self.counters.stale += 1;
            return Ok(());
        };
        if stamp.intended_ns < self.timeline.t0_ns.min(received_ns) || stamp.intended_ns >= self.timeline.publish_end_ns
        {
            self.counters.stale += 1;
            return Ok(());
        }
        let publisher = stamp.publisher as usize;
        if conn.trackers.len() <= publisher {
            conn.trackers.resize(publisher + 1, SequenceTracker::default());
        }
        match conn.trackers[publisher].record(stamp.sequence) {
            Arrival::Duplicate => {
                self.counters.duplicates += 1;
                return Ok(());
            }
            Arrival::Late => self.counters.out_of_order += 1,
            Arrival::InOrder | Arrival::Gap => {}
        }
        self.counters.delivered += 1;
        if self.probing {
            return Ok(());
        }
        let in_window = received_ns >= self.timeline.measure_start_ns && received_ns < self.timeline.publish_end_ns;
        self.counters.received_in_window += u64::from(in_window);
        let latency_us = received_ns.saturating_sub(stamp.intended_ns) / 1000;
        if stamp.intended_ns >= self.timeline.measure_start_ns {
            self.counters.delivered_measure += 1;
            record_us(&mut self.measure, latency_us);
        } else {
            record_us(&mut self.warmup, latency_us);
        }
        Ok(())
    }

    /// Queues the ack of a received PUBLISH: at once, or after `ack_delay_ns` (as a client whose network
    /// thread is woken to send it does).
    fn queue_ack(&mut self, index: usize, ack: &Packet, received_ns: u64) -> Result<(), String> {
        let delay_ns = self.settings.ack_delay_ns;
        let conn = &mut self.conns[index];
        if delay_ns == 0 {
            return packets::encode(ack, self.version, &mut conn.out);
        }
        let mut encoded = BytesMut::new();
        packets::encode(ack, self.version, &mut encoded)?;
        let due_ns = received_ns + delay_ns;
        conn.delayed_acks.push_back((due_ns, encoded));
        self.due.push(Reverse((due_ns, Due::Ack, index)));
        Ok(())
    }

    /// Moves the held-back acks that are due to the output (each in its own write with `write_per_packet`).
    fn release_acks(&mut self, index: usize, now: u64) -> Result<(), String> {
        let per_packet = self.settings.client_shape.write_per_packet();
        let conn = &mut self.conns[index];
        while conn.delayed_acks.front().is_some_and(|(due_ns, _)| *due_ns <= now) {
            let Some((_, encoded)) = conn.delayed_acks.pop_front() else { break };
            conn.out.extend_from_slice(&encoded);
            if per_packet {
                write_queued(conn.stream.as_mut(), conn.layer.as_deref_mut(), &mut conn.out, &mut conn.wire)?;
            }
        }
        Ok(())
    }

    fn on_publish_completed(&mut self, index: usize, now: u64) -> Result<(), String> {
        self.counters.acked += 1;
        let conn = &mut self.conns[index];
        conn.inflight = conn.inflight.saturating_sub(1);
        if conn.waiting_for_room {
            self.publish_due(index, now)?;
        }
        Ok(())
    }

    /// Sends every message whose intended time has come, unless the socket backlog or the in-flight window
    /// is full; then it waits for room and catches up later with the original intended times.
    fn publish_due(&mut self, index: usize, now: u64) -> Result<(), String> {
        let (qos, version, payload_bytes, probing) =
            (self.qos, self.version, self.settings.payload_bytes, self.probing);
        let per_packet = self.settings.client_shape.write_per_packet();
        let Timeline { publish_start_ns, measure_start_ns, publish_end_ns, .. } = self.timeline;
        let conn = &mut self.conns[index];
        let Role::Publisher { publisher, period_ns, offset_ns, ref targets, .. } = conn.spec.role else {
            return Ok(());
        };
        conn.waiting_for_room = false;
        loop {
            let scheduled = conn.next_sequence - conn.sequence_base;
            let intended_ns = publish_start_ns + offset_ns + (scheduled as f64 * period_ns) as u64;
            if intended_ns >= publish_end_ns {
                return Ok(());
            }
            if intended_ns > now {
                self.due.push(Reverse((intended_ns, Due::Publish, index)));
                return Ok(());
            }
            if conn.queued_bytes() >= OUT_BYTES_MAX || (qos != QoS::AtMostOnce && conn.inflight >= conn.inflight_max) {
                conn.waiting_for_room = true;
                return Ok(());
            }
            let mut packet_id = 0;
            if qos != QoS::AtMostOnce {
                conn.next_packet_id = conn.next_packet_id.checked_add(1).unwrap_or(1);
                packet_id = conn.next_packet_id;
                conn.inflight += 1;
            }
            let stamp = Stamp { publisher, sequence: conn.next_sequence, intended_ns }.to_bytes();
            let topic = match targets {
                Some(targets) => {
                    ByteStr::from(targets.topic(next_random(&mut conn.random_state) % targets.devices.max(1)).as_str())
                }
                None => conn.topic.clone(),
            };
            packets::encode(&packets::publish(&topic, qos, packet_id, &stamp, payload_bytes), version, &mut conn.out)?;
            if per_packet {
                write_queued(conn.stream.as_mut(), conn.layer.as_deref_mut(), &mut conn.out, &mut conn.wire)?;
            }
            conn.next_sequence += 1;
            self.counters.sent += 1;
            self.counters.sent_measure += u64::from(intended_ns >= measure_start_ns && !probing);
        }
    }

    fn schedule_ping(&mut self, index: usize, now: u64) {
        if self.settings.keepalive_secs > 0 {
            let interval_ns = u64::from(self.settings.keepalive_secs) * 1_000_000_000;
            self.due.push(Reverse((now + interval_ns, Due::Ping, index)));
        }
    }

    fn send_ping(&mut self, index: usize, now: u64) -> Result<(), String> {
        let conn = &mut self.conns[index];
        packets::encode(&Packet::PingReq, self.version, &mut conn.out)?;
        conn.ping_sent_ns = now;
        self.counters.pings += 1;
        self.counters.pings_warmup += u64::from(now >= self.timeline.t0_ns && now < self.timeline.measure_start_ns);
        self.schedule_ping(index, now);
        Ok(())
    }

    fn flush(&mut self, index: usize) -> Result<(), String> {
        let conn = &mut self.conns[index];
        write_queued(conn.stream.as_mut(), conn.layer.as_deref_mut(), &mut conn.out, &mut conn.wire)?;
        if conn.waiting_for_room && conn.queued_bytes() < OUT_BYTES_MAX / 2 && conn.state == State::Ready {
            self.publish_due(index, now_ns())?;
        }
        Ok(())
    }

    fn lose_connection(&mut self, index: usize, error: String) {
        let conn = &mut self.conns[index];
        if conn.state == State::Closed {
            return;
        }
        if conn.state == State::Ready {
            self.counters.connections_lost += 1;
        }
        let retry = self.reconnecting && conn.state != State::Ready && conn.retries < STORM_RETRIES_MAX;
        conn.state = if retry { State::NotStarted } else { State::Closed };
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if retry {
            conn.retries += 1;
            conn.partial.clear();
            conn.out.clear();
            conn.wire.clear();
            self.counters.reconnect_retries += 1;
            self.retry_queue.push(index);
            return;
        }
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }

    fn disconnect_all(&mut self) {
        for conn in &mut self.conns {
            if let Some(mut stream) = conn.stream.take() {
                let mut bytes = BytesMut::new();
                let disconnect = Packet::Disconnect(Disconnect::default());
                if conn.state == State::Ready && packets::encode(&disconnect, self.version, &mut bytes).is_ok() {
                    let _ = write_queued(Some(&mut stream), conn.layer.as_deref_mut(), &mut bytes, &mut conn.wire);
                }
                let _ = self.poll.registry().deregister(&mut stream);
            }
            conn.state = State::Closed;
        }
    }

    fn publish_progress(&mut self, force: bool) {
        let now = now_ns();
        if !force && now < self.progress_published_ns + 200_000_000 {
            return;
        }
        self.progress_published_ns = now;
        self.progress.sent.store(self.counters.sent, Ordering::Relaxed);
        self.progress.delivered.store(self.counters.delivered, Ordering::Relaxed);
        let p99 = if self.measure.is_empty() {
            self.warmup.value_at_quantile(0.99)
        } else {
            self.measure.value_at_quantile(0.99)
        };
        self.progress.p99_us.store(p99, Ordering::Relaxed);
    }

    fn into_report(self) -> ThreadReport {
        let sent_by_publisher = self
            .conns
            .iter()
            .filter_map(|conn| match conn.spec.role {
                Role::Publisher { publisher, .. } => Some((publisher, conn.next_sequence)),
                _ => None,
            })
            .collect();
        ThreadReport {
            counters: self.counters,
            sent_by_publisher,
            warmup: self.warmup,
            measure: self.measure,
            connack: self.connack,
            ping: self.ping,
            first_connect_ns: self.first_connect_ns,
            last_connack_ns: self.last_connack_ns,
            reconnect_connack: new_latency_histogram(),
            reconnect_first_connect_ns: u64::MAX,
            reconnect_last_connack_ns: 0,
            first_error: self.first_error,
        }
    }
}

/// Writes a connection's queued bytes until done or the socket is full (the rest waits for writable).
/// With a layer, the MQTT bytes of `out` go through it into `wire`, which is what is written.
/// Takes the fields, not the `Conn`, so callers may hold a borrow of its spec.
fn write_queued(
    stream: Option<&mut TcpStream>,
    layer: Option<&mut Layer>,
    out: &mut BytesMut,
    wire: &mut BytesMut,
) -> Result<(), String> {
    let Some(stream) = stream else { return Ok(()) };
    let out = match layer {
        Some(layer) => {
            layer.send(out, wire)?;
            wire
        }
        None if wire.is_empty() => out,
        None => {
            wire.extend_from_slice(out);
            out.clear();
            wire
        }
    };
    while !out.is_empty() {
        match stream.write(out) {
            Ok(written) => out.advance(written),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(format!("write to broker: {err}")),
        }
    }
    Ok(())
}

fn open_socket(broker: SocketAddr, source_ip: Option<IpAddr>, shape: ClientShape) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(broker), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(shape.no_delay())?;
    if let Some(ip) = source_ip {
        // Choose the port at connect() time, when the broker's address is known: a bind to port 0 alone must
        // find a port free for every destination, which gets slow (and stalls this event loop) with tens of
        // thousands of TIME_WAIT sockets left by a reconnect storm.
        let enable: libc::c_int = 1;
        // SAFETY: setsockopt reads `enable` (a c_int, size passed) on a socket this function owns.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&enable as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&broker.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) || err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) => return Err(err),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn connect_error_text(broker: SocketAddr, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("cannot connect to {broker}: connection refused (is the broker running and listening there?)")
        }
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => {
            format!("cannot connect to {broker}: {err} (out of local ports? use --workers to spread over 127.0.0.x)")
        }
        _ if err.raw_os_error() == Some(libc::EMFILE) => {
            format!("cannot open a socket to {broker}: too many open files (ulimit -n); use --workers N")
        }
        _ => format!("cannot connect to {broker}: {err}"),
    }
}
