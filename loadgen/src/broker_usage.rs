//! What the broker under test spent, read from /proc/PID: CPU seconds (utime + stime, all threads and per
//! named thread, e.g. shardmq's `shard-N`) and resident memory, sampled at the phase boundaries of a run
//! (`--broker-pid`).

use serde::{Deserialize, Serialize};

use crate::engine::Counters;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel (stime): syscalls, and on loopback the peer's TCP receive.
    pub system_secs: f64,
    pub rss_kib: u64,
    /// (thread name, CPU seconds) of every thread of the process.
    pub threads: Vec<(String, f64)>,
}

/// Reads one sample; None when the process is gone or /proc is unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let (user_secs, system_secs) = user_and_system_secs(&stat)?;
    Some(Sample {
        cpu_secs: user_secs + system_secs,
        system_secs,
        rss_kib: rss_kib_from_status(&status)?,
        threads: thread_cpu_secs(pid),
    })
}

fn thread_cpu_secs(pid: u32) -> Vec<(String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    // Threads of one name (glommio starts helpers named like their shard) are summed.
    let mut by_name = std::collections::BTreeMap::<String, f64>::new();
    for stat in tasks.filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok()) {
        if let (Some(name), Some(cpu_secs)) = (thread_name_from_stat(&stat), cpu_secs_from_stat(&stat)) {
            *by_name.entry(name).or_default() += cpu_secs;
        }
    }
    by_name.into_iter().collect()
}

fn thread_name_from_stat(stat: &str) -> Option<String> {
    Some(stat[stat.find('(')? + 1..stat.rfind(')')?].to_string())
}

fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    user_and_system_secs(stat).map(|(user, system)| user + system)
}

/// utime and stime (fields 14 and 15) in seconds. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its last ')'.
fn user_and_system_secs(stat: &str) -> Option<(f64, f64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime as f64 / ticks_per_sec, stime as f64 / ticks_per_sec))
}

fn rss_kib_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The broker's usage over one run, as written in the JSON summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrokerUsage {
    pub pid: u32,
    /// Before loadgen opened any connection.
    pub rss_baseline_kib: u64,
    /// With every connection established (and subscribed).
    pub rss_connected_kib: u64,
    /// At the end of the scheduled phase, before draining and disconnecting.
    pub rss_loaded_kib: u64,
    /// CPU seconds spent while loadgen connected its clients.
    pub cpu_secs_connect: f64,
    /// CPU seconds spent in the measured phase (after warm-up, until the last scheduled send).
    pub cpu_secs_measure: f64,
    pub cpu_secs_per_million_deliveries: Option<f64>,
    /// (connected RSS - baseline RSS) / connections.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds over the warm-up phase; for idle runs a pings-only window.
    #[serde(default)]
    pub cpu_secs_warmup: f64,
    /// Of which in the kernel (stime).
    #[serde(default)]
    pub cpu_system_secs_warmup: f64,
    #[serde(default)]
    pub cpu_system_secs_measure: f64,
    /// Same window per broker thread (name, CPU seconds), e.g. shardmq's `shard-0`, `shard-1`.
    #[serde(default)]
    pub cpu_secs_warmup_by_thread: Vec<(String, f64)>,
    /// Broker CPU per PINGREQ: warm-up CPU / pings sent in it, when nothing else was sent in that window.
    #[serde(default)]
    pub cpu_us_per_ping: Option<f64>,
    /// RSS at the end of the warm-up (idle: after the pings-only window).
    #[serde(default)]
    pub rss_after_warmup_kib: u64,
    /// `--reconnect`: RSS at the end of the post-storm probe, every connection re-established.
    #[serde(default)]
    pub rss_after_reconnect_kib: Option<u64>,
}

/// Samples taken by the coordinator; turned into a `BrokerUsage` once counts are known.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub baseline: Sample,
    pub connected: Sample,
    pub warmup_start: Sample,
    pub measure_start: Sample,
    pub measure_end: Sample,
    pub after_reconnect: Option<Sample>,
}

impl Samples {
    /// Combines the samples with what loadgen counted: connections, deliveries received while
    /// `measure_start..measure_end` CPU was spent, and pings sent in the warm-up.
    pub fn usage(&self, pid: u32, counters: &Counters) -> BrokerUsage {
        let (connections, delivered_in_window) = (counters.connections, counters.received_in_window);
        let cpu_secs_measure = (self.measure_end.cpu_secs - self.measure_start.cpu_secs).max(0.0);
        let cpu_secs_warmup = (self.measure_start.cpu_secs - self.warmup_start.cpu_secs).max(0.0);
        let sent_in_warmup = counters.sent - counters.sent_measure - counters.probe_sent;
        let cpu_secs_warmup_by_thread = self
            .measure_start
            .threads
            .iter()
            .map(|(name, end)| {
                let start =
                    self.warmup_start.threads.iter().find(|(other, _)| other == name).map_or(0.0, |(_, cpu)| *cpu);
                (name.clone(), (end - start).max(0.0))
            })
            .collect();
        let rss_growth_kib = self.connected.rss_kib.max(self.measure_end.rss_kib).saturating_sub(self.baseline.rss_kib);
        BrokerUsage {
            pid,
            rss_baseline_kib: self.baseline.rss_kib,
            rss_connected_kib: self.connected.rss_kib,
            rss_loaded_kib: self.measure_end.rss_kib,
            cpu_secs_connect: (self.connected.cpu_secs - self.baseline.cpu_secs).max(0.0),
            cpu_secs_measure,
            cpu_secs_per_million_deliveries: (delivered_in_window > 0)
                .then(|| cpu_secs_measure * 1e6 / delivered_in_window as f64),
            rss_per_connection_bytes: (connections > 0).then(|| rss_growth_kib as f64 * 1024.0 / connections as f64),
            cpu_secs_warmup,
            cpu_system_secs_warmup: (self.measure_start.system_secs - self.warmup_start.system_secs).max(0.0),
            cpu_system_secs_measure: (self.measure_end.system_secs - self.measure_start.system_secs).max(0.0),
            cpu_secs_warmup_by_thread,
            cpu_us_per_ping: (counters.pings_warmup > 0 && sent_in_warmup == 0)
                .then(|| cpu_secs_warmup * 1e6 / counters.pings_warmup as f64),
            rss_after_warmup_kib: self.measure_start.rss_kib,
            rss_after_reconnect_kib: self.after_reconnect.as_ref().map(|sample| sample.rss_kib),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces() {
        let stat = "1234 (my (odd) broker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_secs_from_stat(stat), Some(300.0 / ticks));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let sample = sample(std::process::id()).expect("own /proc entry");
        assert!(sample.rss_kib > 0);
        assert!(!sample.threads.is_empty(), "at least this thread");
    }

    #[test]
    fn thread_names_may_hold_spaces_and_parentheses() {
        assert_eq!(thread_name_from_stat("77 (shard-1 (x)) S 1 2").as_deref(), Some("shard-1 (x)"));
    }

    #[test]
    fn cpu_per_ping_comes_from_a_pings_only_warmup() {
        let at = |cpu_secs| Sample {
            cpu_secs,
            system_secs: 0.0,
            rss_kib: 1000,
            threads: vec![("shard-0".into(), cpu_secs)],
        };
        let samples =
            Samples { warmup_start: at(1.0), measure_start: at(1.5), measure_end: at(2.0), ..Samples::default() };
        let mut counters = Counters { pings_warmup: 10_000, connections: 100, ..Counters::default() };
        let usage = samples.usage(1, &counters);
        assert_eq!(usage.cpu_us_per_ping, Some(50.0));
        assert_eq!(usage.cpu_secs_warmup_by_thread, vec![("shard-0".to_string(), 0.5)]);
        counters.sent = 5;
        assert_eq!(samples.usage(1, &counters).cpu_us_per_ping, None, "sends in the window: not pings alone");
    }
}
