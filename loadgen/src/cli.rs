//! Command line: one subcommand per scenario sharing `RunArgs`, plus `compare` and `plot`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::churn::ChurnArgs;
use crate::client_shape::ClientShape;
use crate::engine::EngineSettings;
use crate::plan::{PlanOptions, Scenario};
use crate::stamp::STAMP_BYTES;
use crate::transport::TransportKind;

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Open-loop MQTT load generator with HdrHistogram latency")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// P publishers (default 100) -> S subscribers (default 1) on "loadgen/fanin/{id}".
    FanIn(RunArgs),
    /// P publishers (default 1) -> S subscribers (default 100) on one topic.
    FanOut(RunArgs),
    /// N pairs (--pairs, default 100): publisher i -> subscriber i on "loadgen/p2p/{id}".
    P2p(RunArgs),
    /// Publishers -> one `$share/loadgen/...` group of S subscribers (default 4).
    Shared(RunArgs),
    /// K connects (--connections) as fast as allowed: connects/s and CONNACK latency.
    ConnStorm(RunArgs),
    /// Hold K idle connections (devices), PINGREQ every --keepalive seconds; --warmup is a pings-only window,
    /// then --publishers send commands to random devices at --rate during --duration.
    Idle(RunArgs),
    /// Connections that keep coming and going at --rate connects/s: some leave without DISCONNECT (their
    /// wills must arrive), some resume persistent sessions (which must keep subscription and queued messages).
    Churn(ChurnArgs),
    /// Side-by-side table and SVG percentile plot of several run summaries.
    Compare {
        files: Vec<PathBuf>,
        /// Where to write the SVG (default: compare.svg beside the first file).
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// SVG percentile plot of one run summary.
    Plot {
        file: PathBuf,
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Internal: a worker process started by `--workers`; reads its job from stdin.
    #[command(hide = true)]
    Worker,
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// 3 (= 3.1.1) or 5.
    #[arg(long, default_value_t = 3)]
    pub mqtt_version: u8,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size; the first 20 bytes carry publisher id, sequence and intended send time.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Total publishes per second over all publishers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up phase before it, seconds (its latencies go to their own histogram).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Longest wait for in-flight deliveries after the last send, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Persistent sessions (clean session / clean start = 0) instead of clean ones.
    #[arg(long)]
    pub persistent: bool,
    /// v5 session expiry for --persistent sessions, seconds.
    #[arg(long, default_value_t = 3600)]
    pub session_expiry: u32,
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Publish topic; `{id}` = publisher index, `{client_id}` = its client id.
    #[arg(long)]
    pub topic: Option<String>,
    /// Subscription filter per subscriber / idle connection, e.g. 'devices/{client_id}/cmd'.
    #[arg(long)]
    pub sub_pattern: Option<String>,
    /// idle: each connection also joins N shared groups, `$share/g/fleet/0` .. `$share/g/fleet/{N-1}`
    /// (in the same SUBSCRIBE as its own filter).
    #[arg(long, default_value_t = 0)]
    pub shared_subs: usize,
    #[arg(long)]
    pub publishers: Option<usize>,
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// p2p: number of publisher/subscriber pairs.
    #[arg(long)]
    pub pairs: Option<usize>,
    /// conn-storm / idle: number of connections.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Load threads per process (each one event loop).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Worker processes; worker i binds its sockets to 127.0.0.(1+i) to get past one process' file
    /// limit and one address' port range.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Most TCP/MQTT handshakes in progress at once per thread.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    #[arg(long, default_value = "lg")]
    pub client_prefix: String,
    /// Name of what is measured, carried into the summary (e.g. "mosquitto").
    #[arg(long, default_value = "broker")]
    pub label: String,
    /// File name stem of the outputs (default: the scenario).
    #[arg(long)]
    pub name: Option<String>,
    /// Directory for `<name>.json` and `<name>.<phase>.hgrm`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Broker process to sample CPU seconds and RSS from (/proc).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Step the rate up (x --max-step) until p99 exceeds --max-p99-us or messages are lost.
    #[arg(long)]
    pub max: bool,
    #[arg(long, default_value_t = 10_000)]
    pub max_p99_us: u64,
    #[arg(long, default_value_t = 1.5)]
    pub max_step: f64,
    #[arg(long, default_value_t = 10)]
    pub max_steps: usize,
    /// idle: after the hold, drop every connection at once (no DISCONNECT) and reconnect them all,
    /// measuring reconnects/s, CONNACK latency and how many sessions survived (with --persistent).
    #[arg(long)]
    pub reconnect: bool,
    /// idle --reconnect: seconds from the storm's start until the publishers probe the devices again.
    #[arg(long, default_value_t = 15.0)]
    pub reconnect_settle: f64,
    /// idle --reconnect: seconds the publishers send to random devices after the storm (0 = no probe).
    #[arg(long, default_value_t = 5.0)]
    pub probe: f64,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// How connections pace packets and acks on the socket: `batched` (TCP_NODELAY, one write per turn)
    /// or `paho` (as paho-mqtt: Nagle on, one write per packet, each ack in its own write at once).
    #[arg(long, value_enum, default_value_t = ClientShape::Batched)]
    pub client_shape: ClientShape,
    /// Send each PUBACK/PUBREC this long after its PUBLISH arrived, microseconds (paho's network thread
    /// sends it after a wake-up through its socket pair: ~0.1-1 ms). 0 = in the same turn.
    #[arg(long, default_value_t = 0)]
    pub ack_delay_us: u64,
    /// What the MQTT bytes travel in: plain `tcp`, `tls`, `ws` (WebSocket, one masked binary frame per
    /// write, as MQTT.js) or `wss`. Point `--port` at the broker's listener for it.
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    pub transport: TransportKind,
    /// PEM CA the broker's certificate must verify against, for the name `localhost` (tls, wss).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Request path of the WebSocket upgrade (ws, wss).
    #[arg(long, default_value = "/mqtt")]
    pub websocket_path: String,
}

impl RunArgs {
    pub fn plan_options(&self, scenario: Scenario, rate_per_sec: f64) -> PlanOptions {
        let (publishers, subscribers, topic) = match scenario {
            Scenario::FanIn => (100, 1, "loadgen/fanin/{id}"),
            Scenario::FanOut => (1, 100, "loadgen/fanout"),
            Scenario::P2p => (self.pairs.unwrap_or(100), 0, "loadgen/p2p/{id}"),
            Scenario::Shared => (1, 4, "loadgen/shared"),
            Scenario::ConnStorm | Scenario::Idle => (0, 0, "loadgen/idle"),
        };
        let publishers = self.publishers.unwrap_or(publishers);
        PlanOptions {
            scenario,
            publishers,
            subscribers: self.subscribers.unwrap_or(subscribers),
            connections: self.connections,
            rate_per_sec,
            topic: self.topic.clone().unwrap_or_else(|| topic.to_string()),
            sub_pattern: self.sub_pattern.clone(),
            shared_subs: self.shared_subs,
            client_prefix: self.client_prefix.clone(),
        }
    }

    pub fn validate(&self, scenario: Scenario) -> Result<(), String> {
        if self.payload_bytes < STAMP_BYTES {
            return Err(format!("--payload-bytes must be at least {STAMP_BYTES} (the send stamp)"));
        }
        if !matches!(self.mqtt_version, 3..=5) {
            return Err("--mqtt-version must be 3 (3.1.1) or 5".into());
        }
        if self.threads == 0 || self.workers == 0 || self.workers > 250 {
            return Err("--threads must be >= 1 and --workers between 1 and 250".into());
        }
        if !(self.rate >= 0.0
            && self.duration >= 0.0
            && self.drain >= 0.0
            && self.reconnect_settle >= 0.0
            && self.probe >= 0.0)
        {
            return Err("--rate, --duration, --drain, --reconnect-settle and --probe must be >= 0".into());
        }
        if scenario == Scenario::Idle && self.publishers.unwrap_or(0) > 0 && self.sub_pattern.is_none() {
            return Err("idle --publishers send to the devices' --sub-pattern topics: give --sub-pattern".into());
        }
        Ok(())
    }

    pub fn broker_addr(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve {}:{}: {err}", self.host, self.port))?
            .next()
            .ok_or_else(|| format!("{} has no address", self.host))
    }

    /// Warm-up and duration actually used: conn-storm has neither, idle's warm-up (pings only) defaults to 0.
    pub fn phases_secs(&self, scenario: Scenario) -> (f64, f64) {
        match scenario {
            Scenario::ConnStorm => (0.0, 0.0),
            Scenario::Idle => (self.warmup.unwrap_or(0.0), self.duration),
            _ => (self.warmup.unwrap_or(2.0), self.duration),
        }
    }

    pub fn engine_settings(&self, scenario: Scenario, broker: SocketAddr, worker: usize) -> EngineSettings {
        let (warmup_secs, duration_secs) = self.phases_secs(scenario);
        let source_ip = (self.workers > 1 && broker.ip().is_loopback())
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + worker as u8)));
        let idle_commands =
            scenario == Scenario::Idle && self.sub_pattern.is_some() && self.publishers.unwrap_or(0) > 0;
        let has_traffic = idle_commands || !matches!(scenario, Scenario::ConnStorm | Scenario::Idle);
        let probe = idle_commands && self.reconnect;
        EngineSettings {
            broker,
            source_ip,
            mqtt_level: if self.mqtt_version == 5 { 5 } else { 4 },
            qos: self.qos,
            payload_bytes: self.payload_bytes,
            keepalive_secs: self.keepalive,
            clean_start: !self.persistent,
            session_expiry_secs: if self.persistent { self.session_expiry } else { 0 },
            connect_concurrency: self.connect_concurrency.max(1),
            connect_timeout_ns: (self.connect_timeout * 1e9) as u64,
            warmup_ns: (warmup_secs * 1e9) as u64,
            duration_ns: (duration_secs * 1e9) as u64,
            drain_max_ns: if has_traffic { (self.drain * 1e9) as u64 } else { 0 },
            drain_quiet_ns: 300_000_000,
            reconnect: self.reconnect && scenario == Scenario::Idle,
            publish_after_warmup: scenario == Scenario::Idle,
            reconnect_settle_ns: if probe { (self.reconnect_settle * 1e9) as u64 } else { 0 },
            probe_ns: if probe { (self.probe * 1e9) as u64 } else { 0 },
            client_shape: self.client_shape,
            ack_delay_ns: self.ack_delay_us * 1000,
            transport: self.transport,
            ca_file: self.ca_file.clone(),
            websocket_path: self.websocket_path.clone(),
        }
    }
}
