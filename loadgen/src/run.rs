//! Running a job: load threads in this process, or worker processes (`--workers N`, each a re-exec of this
//! binary with its own source address) coordinated over their stdin/stdout, and merging what they measured.
//!
//! Worker protocol, one JSON or text line each: parent -> child the `Job`, then `go <t0_ns>` or `abort`;
//! child -> parent `{"ready":..}`, `{"progress":..}` lines, then `{"result":..}`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::engine::{ConnSpec, Counters, Engine, EngineSettings, ThreadReport, GO_ABORT};
use crate::histogram::{from_hex, merge, new_latency_histogram, to_hex};
use crate::progress::Progress;

/// What one process runs: shared settings and the connections of each of its threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub settings: EngineSettings,
    pub threads: Vec<Vec<ConnSpec>>,
}

/// Runs a job's threads here. Once all are connected (or one failed), `start` gets the outcome and returns
/// the t0 to start at, or None to abort.
pub fn run_job(
    job: Job,
    progress: &[Arc<Progress>],
    start: impl FnOnce(Result<(), String>) -> Option<u64>,
) -> Result<ThreadReport, String> {
    let go = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for (index, specs) in job.threads.into_iter().enumerate() {
        let (settings, go, ready_tx) = (job.settings.clone(), go.clone(), ready_tx.clone());
        let progress = progress.get(index).cloned().unwrap_or_default();
        handles.push(std::thread::spawn(move || -> Result<ThreadReport, String> {
            let mut engine = match Engine::new(settings, specs, progress) {
                Ok(engine) => engine,
                Err(err) => {
                    let _ = ready_tx.send(Err(format!("event loop setup: {err}")));
                    return Err("setup failed".into());
                }
            };
            let established = engine.establish();
            let failed = established.is_err();
            let _ = ready_tx.send(established);
            if failed {
                return Err("setup failed".into());
            }
            engine.run(&go)
        }));
    }
    drop(ready_tx);
    let outcome = ready_rx.iter().take(handles.len()).find(Result::is_err).unwrap_or(Ok(()));
    let failure = outcome.as_ref().err().cloned();
    go.store(start(outcome).unwrap_or(GO_ABORT), Ordering::Release);
    let mut reports = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(err)) => return Err(failure.unwrap_or(err)),
            Err(_) => return Err("a load thread panicked".into()),
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    Ok(merge_reports(reports))
}

/// Sums counters and histograms; the connect window spans the earliest connect to the last CONNACK.
pub fn merge_reports(reports: Vec<ThreadReport>) -> ThreadReport {
    let mut merged = ThreadReport {
        counters: Counters::default(),
        sent_by_publisher: Vec::new(),
        warmup: new_latency_histogram(),
        measure: new_latency_histogram(),
        connack: new_latency_histogram(),
        ping: new_latency_histogram(),
        first_connect_ns: u64::MAX,
        last_connack_ns: 0,
        reconnect_connack: new_latency_histogram(),
        reconnect_first_connect_ns: u64::MAX,
        reconnect_last_connack_ns: 0,
        first_error: None,
    };
    for report in reports {
        merged.counters.add(&report.counters);
        merged.sent_by_publisher.extend(report.sent_by_publisher);
        merge(&mut merged.warmup, &report.warmup);
        merge(&mut merged.measure, &report.measure);
        merge(&mut merged.connack, &report.connack);
        merge(&mut merged.ping, &report.ping);
        merged.first_connect_ns = merged.first_connect_ns.min(report.first_connect_ns);
        merged.last_connack_ns = merged.last_connack_ns.max(report.last_connack_ns);
        merge(&mut merged.reconnect_connack, &report.reconnect_connack);
        merged.reconnect_first_connect_ns = merged.reconnect_first_connect_ns.min(report.reconnect_first_connect_ns);
        merged.reconnect_last_connack_ns = merged.reconnect_last_connack_ns.max(report.reconnect_last_connack_ns);
        merged.first_error = merged.first_error.or(report.first_error);
    }
    merged.sent_by_publisher.sort_unstable();
    merged
}

/// A `ThreadReport` as it travels from a worker to its parent (histograms V2-serialized, hex).
#[derive(Debug, Serialize, Deserialize)]
pub struct PortableReport {
    counters: Counters,
    sent_by_publisher: Vec<(u32, u64)>,
    warmup: String,
    measure: String,
    connack: String,
    ping: String,
    first_connect_ns: u64,
    last_connack_ns: u64,
    reconnect_connack: String,
    reconnect_first_connect_ns: u64,
    reconnect_last_connack_ns: u64,
    first_error: Option<String>,
}

impl PortableReport {
    pub fn from_report(report: &ThreadReport) -> PortableReport {
        PortableReport {
            counters: report.counters.clone(),
            sent_by_publisher: report.sent_by_publisher.clone(),
            warmup: to_hex(&report.warmup),
            measure: to_hex(&report.measure),
            connack: to_hex(&report.connack),
            ping: to_hex(&report.ping),
            first_connect_ns: report.first_connect_ns,
            last_connack_ns: report.last_connack_ns,
            reconnect_connack: to_hex(&report.reconnect_connack),
            reconnect_first_connect_ns: report.reconnect_first_connect_ns,
            reconnect_last_connack_ns: report.reconnect_last_connack_ns,
            first_error: report.first_error.clone(),
        }
    }

    pub fn into_report(self) -> Result<ThreadReport, String> {
        Ok(ThreadReport {
            counters: self.counters,
            sent_by_publisher: self.sent_by_publisher,
            warmup: from_hex(&self.warmup)?,
            measure: from_hex(&self.measure)?,
            connack: from_hex(&self.connack)?,
            ping: from_hex(&self.ping)?,
            first_connect_ns: self.first_connect_ns,
            last_connack_ns: self.last_connack_ns,
            reconnect_connack: from_hex(&self.reconnect_connack)?,
            reconnect_first_connect_ns: self.reconnect_first_connect_ns,
            reconnect_last_connack_ns: self.reconnect_last_connack_ns,
            first_error: self.first_error,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// One line per worker process per phase: the large report is read once, boxing it saves nothing.
#[allow(clippy::large_enum_variant)]
enum WorkerLine {
    Ready(Result<(), String>),
    Progress { sent: u64, delivered: u64, p99_us: u64 },
    Result(Result<PortableReport, String>),
}

/// The child side (hidden `worker` subcommand): job from stdin, lines to stdout.
pub fn worker_main() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut next_line = move || lines.next().and_then(Result::ok).unwrap_or_default();
    let job: Job = serde_json::from_str(&next_line()).map_err(|err| format!("worker job: {err}"))?;
    let progress: Vec<Arc<Progress>> = job.threads.iter().map(|_| Arc::default()).collect();
    let reporter = spawn_progress_lines(progress.clone());
    let result = run_job(job, &progress, |ready| {
        emit(&WorkerLine::Ready(ready.clone()));
        ready.ok()?;
        next_line().strip_prefix("go ").and_then(|t0| t0.trim().parse().ok())
    });
    reporter.store(true, Ordering::Relaxed);
    emit(&WorkerLine::Result(result.map(|report| PortableReport::from_report(&report))));
    Ok(())
}

fn spawn_progress_lines(progress: Vec<Arc<Progress>>) -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_seen = stop.clone();
    std::thread::spawn(move || {
        while !stop_seen.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let sent = progress.iter().map(|p| p.sent.load(Ordering::Relaxed)).sum();
            let delivered = progress.iter().map(|p| p.delivered.load(Ordering::Relaxed)).sum();
            let p99_us = progress.iter().map(|p| p.p99_us.load(Ordering::Relaxed)).max().unwrap_or(0);
            if !stop_seen.load(Ordering::Relaxed) {
                emit(&WorkerLine::Progress { sent, delivered, p99_us });
            }
        }
    });
    stop
}

fn emit(line: &WorkerLine) {
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, line);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
}

/// The parent side: one child per job, same contract as `run_job` (the `progress` entries mirror children).
pub fn run_workers(
    jobs: Vec<Job>,
    progress: &[Arc<Progress>],
    start: impl FnOnce(Result<(), String>) -> Option<u64>,
) -> Result<ThreadReport, String> {
    let exe = std::env::current_exe().map_err(|err| format!("own executable: {err}"))?;
    let mut children: Vec<(Child, ChildStdin)> = Vec::new();
    let (line_tx, line_rx) = mpsc::channel::<(usize, WorkerLine)>();
    for (index, job) in jobs.iter().enumerate() {
        let mut child = Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| format!("spawn worker: {err}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let job_line = serde_json::to_string(job).map_err(|err| err.to_string())?;
        writeln!(stdin, "{job_line}").map_err(|err| format!("send job to worker: {err}"))?;
        let line_tx = line_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(parsed) = serde_json::from_str::<WorkerLine>(&line) {
                    let _ = line_tx.send((index, parsed));
                }
            }
        });
        children.push((child, stdin));
    }
    drop(line_tx);
    let result = coordinate_workers(&mut children, &line_rx, progress, start);
    for (mut child, stdin) in children {
        drop(stdin);
        let _ = child.wait();
    }
    result
}

fn coordinate_workers(
    children: &mut [(Child, ChildStdin)],
    lines: &mpsc::Receiver<(usize, WorkerLine)>,
    progress: &[Arc<Progress>],
    start: impl FnOnce(Result<(), String>) -> Option<u64>,
) -> Result<ThreadReport, String> {
    let (mut ready, mut results) = (0, 0);
    let mut outcome = Ok(());
    let mut reports = Vec::new();
    let mut start = Some(start);
    let mut failure = None;
    while results < children.len() {
        let Ok((index, line)) = lines.recv() else {
            failure = failure.or(Some("a worker process exited without a result".to_string()));
            break;
        };
        match line {
            WorkerLine::Ready(result) => {
                ready += 1;
                if outcome.is_ok() {
                    outcome = result;
                }
            }
            WorkerLine::Progress { sent, delivered, p99_us } => {
                if let Some(slot) = progress.get(index) {
                    slot.sent.store(sent, Ordering::Relaxed);
                    slot.delivered.store(delivered, Ordering::Relaxed);
                    slot.p99_us.store(p99_us, Ordering::Relaxed);
                }
            }
            WorkerLine::Result(result) => {
                results += 1;
                match result.and_then(PortableReport::into_report) {
                    Ok(report) => reports.push(report),
                    Err(err) => failure = failure.or(Some(err)),
                }
            }
        }
        if ready == children.len() {
            if let Some(start) = start.take() {
                let command = match start(outcome.clone()) {
                    Some(t0_ns) => format!("go {t0_ns}"),
                    None => "abort".to_string(),
                };
                for (_, stdin) in children.iter_mut() {
                    let _ = writeln!(stdin, "{command}");
                }
            }
        }
    }
    outcome?;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(merge_reports(reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::record_us;

    fn report_with(values: &[u64]) -> ThreadReport {
        let mut report = merge_reports(Vec::new());
        for &value in values {
            record_us(&mut report.measure, value);
            report.counters.delivered += 1;
        }
        report
    }

    #[test]
    fn histograms_merged_across_workers_equal_one_histogram_of_all_values() {
        let values: Vec<u64> = (0..30_000u64).map(|i| (i * 7919) % 250_000 + 1).collect();
        let single = report_with(&values);
        let parts: Vec<ThreadReport> = values
            .chunks(7_000)
            .map(|chunk| {
                let portable = PortableReport::from_report(&report_with(chunk));
                let line = serde_json::to_string(&portable).unwrap();
                serde_json::from_str::<PortableReport>(&line).unwrap().into_report().unwrap()
            })
            .collect();
        let merged = merge_reports(parts);
        assert_eq!(merged.measure, single.measure);
        assert_eq!(merged.counters.delivered, 30_000);
        assert_eq!(merged.measure.value_at_quantile(0.99), single.measure.value_at_quantile(0.99));
    }
}
