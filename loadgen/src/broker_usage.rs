//! What the broker under test spent, read from /proc/PID: CPU seconds (utime + stime, all threads) and
//! resident memory, sampled at the phase boundaries of a run (`--broker-pid`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
}

/// Reads one sample; None when the process is gone or /proc is unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample { cpu_secs: cpu_secs_from_stat(&stat)?, rss_kib: rss_kib_from_status(&status)? })
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its last ')'.
fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks_per_sec)
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
}

/// Samples taken by the coordinator; turned into a `BrokerUsage` once counts are known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Samples {
    pub baseline: Sample,
    pub connected: Sample,
    pub measure_start: Sample,
    pub measure_end: Sample,
}

impl Samples {
    /// `delivered_in_window`: deliveries received while `measure_start..measure_end` CPU was spent.
    pub fn usage(&self, pid: u32, connections: u64, delivered_in_window: u64) -> BrokerUsage {
        let cpu_secs_measure = (self.measure_end.cpu_secs - self.measure_start.cpu_secs).max(0.0);
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
    }
}
