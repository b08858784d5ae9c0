//! The live progress line on stderr for long runs: send and delivery rates and the p99 so far, read from
//! counters each load thread publishes a few times a second.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What one load thread (or one worker process, as seen by the parent) last published.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub p99_us: AtomicU64,
}

pub struct ProgressPrinter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressPrinter {
    /// Prints one line per second to stderr until dropped. `as_json` writes machine lines to stdout instead
    /// (how a worker process reports to its parent).
    pub fn start(sources: Vec<Arc<Progress>>, as_json: bool) -> ProgressPrinter {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let (mut last_sent, mut last_delivered) = (0u64, 0u64);
            while !stop_seen.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let sent: u64 = sources.iter().map(|p| p.sent.load(Ordering::Relaxed)).sum();
                let delivered: u64 = sources.iter().map(|p| p.delivered.load(Ordering::Relaxed)).sum();
                let p99_us = sources.iter().map(|p| p.p99_us.load(Ordering::Relaxed)).max().unwrap_or(0);
                if as_json {
                    println!(r#"{{"progress":{{"sent":{sent},"delivered":{delivered},"p99_us":{p99_us}}}}}"#);
                } else {
                    eprint!(
                        "\r[{:>4}s] sent {:>10}/s  delivered {:>11}/s  total delivered {:>12}  p99 {:>8} µs ",
                        started.elapsed().as_secs(),
                        sent.saturating_sub(last_sent),
                        delivered.saturating_sub(last_delivered),
                        delivered,
                        p99_us
                    );
                    let _ = std::io::stderr().flush();
                }
                (last_sent, last_delivered) = (sent, delivered);
            }
            if !as_json {
                eprintln!();
            }
        });
        ProgressPrinter { stop, handle: Some(handle) }
    }
}

impl Drop for ProgressPrinter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
