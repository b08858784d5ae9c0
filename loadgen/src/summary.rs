//! The JSON summary of one run (what `compare` and `plot` read back) and the files written per run:
//! `<name>.json` plus one `.hgrm` percentile file per phase histogram.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker_usage::BrokerUsage;
use crate::engine::{Counters, ThreadReport};
use crate::histogram::{hgrm_text, LatencySummary};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSummary {
    /// Which broker (or setup) this run measured, e.g. "shardmq-1core".
    pub label: String,
    pub scenario: String,
    pub command: String,
    pub started_unix_secs: u64,
    pub mqtt_version: u8,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub connections: usize,
    pub rate_target_per_sec: f64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub workers: usize,
    pub threads: usize,
    pub counters: Counters,
    /// Deliveries the sent messages should have produced.
    pub expected: u64,
    /// expected - delivered, after the drain.
    pub lost: u64,
    /// Sends per second scheduled in the measured phase.
    pub sent_per_sec: f64,
    /// Deliveries received per second during the measured phase (throughput, also when the broker lags).
    pub delivered_per_sec: f64,
    /// Delivery latency (receive time - intended send time) in the measured phase.
    pub latency_us: LatencySummary,
    pub warmup_latency_us: LatencySummary,
    /// From starting the TCP connect to receiving CONNACK.
    pub connack_us: LatencySummary,
    /// Connections divided by the time from the first connect to the last CONNACK.
    pub connects_per_sec: f64,
    pub ping_rtt_us: LatencySummary,
    /// `--reconnect`: CONNACK latency and rate of the storm that reconnects every client at once.
    #[serde(default)]
    pub reconnect_connack_us: LatencySummary,
    #[serde(default)]
    pub reconnects_per_sec: f64,
    pub broker: Option<BrokerUsage>,
    /// First connection error seen during the run (connections lost), if any.
    pub first_error: Option<String>,
    /// `--max` only: each step tried, and the highest rate that kept p99 and loss within bounds.
    pub max_steps: Vec<MaxStep>,
    pub max_sustainable_rate_per_sec: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MaxStep {
    pub rate_target_per_sec: f64,
    pub delivered_per_sec: f64,
    pub p99_us: u64,
    pub lost: u64,
    pub passed: bool,
}

impl RunSummary {
    /// Fills the measured fields from a merged report.
    pub fn absorb(&mut self, report: &ThreadReport, deliveries_per_message: u64) {
        self.counters = report.counters.clone();
        self.expected = report.sent_by_publisher.iter().map(|(_, sent)| sent * deliveries_per_message).sum();
        self.lost = self.expected.saturating_sub(report.counters.delivered);
        if self.duration_secs > 0.0 {
            self.sent_per_sec = report.counters.sent_measure as f64 / self.duration_secs;
            self.delivered_per_sec = report.counters.received_in_window as f64 / self.duration_secs;
        }
        self.latency_us = LatencySummary::of(&report.measure);
        self.warmup_latency_us = LatencySummary::of(&report.warmup);
        self.connack_us = LatencySummary::of(&report.connack);
        self.ping_rtt_us = LatencySummary::of(&report.ping);
        let connect_window_ns = report.last_connack_ns.saturating_sub(report.first_connect_ns);
        if report.counters.connections > 0 && connect_window_ns > 0 {
            self.connects_per_sec = report.counters.connections as f64 * 1e9 / connect_window_ns as f64;
        }
        self.reconnect_connack_us = LatencySummary::of(&report.reconnect_connack);
        let storm_window_ns = report.reconnect_last_connack_ns.saturating_sub(report.reconnect_first_connect_ns);
        if report.counters.reconnections > 0 && storm_window_ns > 0 && report.reconnect_first_connect_ns != u64::MAX {
            self.reconnects_per_sec = report.counters.reconnections as f64 * 1e9 / storm_window_ns as f64;
        }
        self.first_error = report.first_error.clone();
    }

    pub fn print(&self) {
        let counters = &self.counters;
        println!("{} {} ({}): {} connections", self.label, self.scenario, self.command, counters.connections);
        if counters.sent > 0 || counters.delivered > 0 {
            println!(
                "  sent {} ({:.0}/s measured)  delivered {} ({:.0}/s received in the measured phase)  expected {}  lost {}  duplicates {}  out-of-order {}",
                counters.sent,
                self.sent_per_sec,
                counters.delivered,
                self.delivered_per_sec,
                self.expected,
                self.lost,
                counters.duplicates,
                counters.out_of_order
            );
            print_latency("latency", &self.latency_us);
        }
        if counters.loadgen_cpu_us > 0 && counters.delivered > 0 {
            let cpu_secs = counters.loadgen_cpu_us as f64 / 1e6;
            println!(
                "  loadgen cpu {cpu_secs:.2} s (t0 to end of drain): {:.0} deliveries per loadgen cpu-second",
                counters.delivered as f64 / cpu_secs
            );
        }
        println!("  connects/s {:.0}", self.connects_per_sec);
        print_latency("connack", &self.connack_us);
        if counters.reconnections > 0 {
            println!(
                "  reconnect storm: {} reconnected at {:.0}/s, {} found their session, {} attempts closed by the broker and retried",
                counters.reconnections, self.reconnects_per_sec, counters.reconnect_sessions_present, counters.reconnect_retries
            );
            print_latency("reconnect connack", &self.reconnect_connack_us);
            if counters.probe_sent > 0 {
                println!(
                    "  after the storm: {} commands sent, {} delivered",
                    counters.probe_sent, counters.probe_delivered
                );
            }
        }
        if self.ping_rtt_us.count > 0 {
            print_latency("ping rtt", &self.ping_rtt_us);
        }
        if let Some(broker) = &self.broker {
            println!(
                "  broker pid {}: cpu {:.2} s measured ({}), rss {} -> {} -> {} KiB ({} per connection)",
                broker.pid,
                broker.cpu_secs_measure,
                broker.cpu_secs_per_million_deliveries.map_or("-".into(), |cpu| format!("{cpu:.3} s per M deliveries")),
                broker.rss_baseline_kib,
                broker.rss_connected_kib,
                broker.rss_loaded_kib,
                broker.rss_per_connection_bytes.map_or("-".into(), |bytes| format!("{bytes:.0} B")),
            );
        }
        if let Some(broker) = &self.broker {
            if let Some(per_ping) = broker.cpu_us_per_ping {
                let threads: Vec<String> = broker
                    .cpu_secs_warmup_by_thread
                    .iter()
                    .filter(|(_, cpu)| *cpu > 0.0)
                    .map(|(name, cpu)| format!("{name} {cpu:.2} s"))
                    .collect();
                println!(
                    "  pings-only window: broker cpu {:.2} s for {} pings = {per_ping:.1} µs per PINGREQ ({})",
                    broker.cpu_secs_warmup,
                    counters.pings_warmup,
                    threads.join(", ")
                );
            }
            if let Some(rss_kib) = broker.rss_after_reconnect_kib {
                println!(
                    "  broker rss after the reconnect storm: {rss_kib} KiB (before it: {} KiB)",
                    broker.rss_loaded_kib
                );
            }
        }
        if let Some(rate) = self.max_sustainable_rate_per_sec {
            println!("  max sustainable rate: {rate:.0} msgs/s");
        }
        if let Some(error) = &self.first_error {
            println!("  warning: {} connection(s) lost; first: {error}", counters.connections_lost);
        }
    }

    /// Writes `<dir>/<name>.json` and the `.hgrm` files; returns the JSON path.
    pub fn write(&self, dir: &Path, name: &str, report: &ThreadReport) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir).map_err(|err| format!("create {}: {err}", dir.display()))?;
        let json_path = dir.join(format!("{name}.json"));
        let json = serde_json::to_string_pretty(self).map_err(|err| err.to_string())?;
        std::fs::write(&json_path, json).map_err(|err| format!("write {}: {err}", json_path.display()))?;
        let phases = [
            ("measure", &report.measure),
            ("warmup", &report.warmup),
            ("connack", &report.connack),
            ("ping", &report.ping),
            ("reconnect-connack", &report.reconnect_connack),
        ];
        for (phase, histogram) in phases {
            if !histogram.is_empty() {
                let path = dir.join(format!("{name}.{phase}.hgrm"));
                std::fs::write(&path, hgrm_text(histogram))
                    .map_err(|err| format!("write {}: {err}", path.display()))?;
            }
        }
        Ok(json_path)
    }

    pub fn read(path: &Path) -> Result<RunSummary, String> {
        let text = std::fs::read_to_string(path).map_err(|err| format!("read {}: {err}", path.display()))?;
        serde_json::from_str(&text).map_err(|err| format!("{}: not a loadgen summary: {err}", path.display()))
    }
}

fn print_latency(what: &str, latency: &LatencySummary) {
    if latency.count == 0 {
        return;
    }
    println!(
        "  {what} µs: p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (n={})",
        latency.p50, latency.p90, latency.p99, latency.p999, latency.p9999, latency.max, latency.count
    );
}
