//! The one way into a running shard from outside it: stopping it, and running a job on its thread with
//! its core (the HTTP API publishing, a reload swapping rules, a metrics scrape reading counters).
//!
//! Each shard keeps one read of its own eventfd armed in its ring; a stop or a queued job writes to
//! that eventfd, so a sleeping shard wakes through I/O, with no flag polling and no timer. Jobs wait in
//! a mutex-guarded queue: this is the cold path (a few per second at most), never used per message, so
//! the lock is never on the data path and never contended by it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::{ShardCore, ShardId};

/// Work run on a shard's thread between two turns, with its core. Actions the job queues on the core
/// (writes, closes, mesh messages) are carried out in the same turn.
pub type Job = Box<dyn FnOnce(&mut ShardCore, Instant) + Send>;

/// Why a job did not run or gave no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("there is no shard {0}")]
    NoSuchShard(ShardId),
    #[error("shard {0} has stopped")]
    Stopped(ShardId),
    #[error("shard {shard} did not answer within {timeout:?}")]
    Timeout { shard: ShardId, timeout: Duration },
}

/// The handle to every shard, held by whoever needs to reach them (cheap to clone).
#[derive(Clone)]
pub struct Control {
    ends: Arc<[Arc<End>]>,
}

/// A shard's side: the eventfd its ring reads and the jobs waiting for it.
pub struct ControlReceiver {
    end: Arc<End>,
}

struct End {
    eventfd: OwnedFd,
    stop: AtomicBool,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Set when the shard has left its loop: later jobs are refused at once instead of never running.
    closed: bool,
}

impl End {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A poisoned lock only means a job's sender panicked while pushing: the vector is still whole.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: write(2) of 8 bytes from a local onto an eventfd we own. It can only fail if the
        // counter would overflow, and then the shard has a wake-up pending anyway.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// One control channel per shard; element `i` of the receivers goes to shard `i`.
pub fn control_channels(shards: usize) -> io::Result<(Control, Vec<ControlReceiver>)> {
    let mut ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        // SAFETY: plain eventfd(2); the descriptor is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ends.push(Arc::new(End { eventfd, stop: AtomicBool::new(false), queue: Mutex::default() }));
    }
    let receivers = ends.iter().map(|end| ControlReceiver { end: end.clone() }).collect();
    Ok((Control { ends: ends.into() }, receivers))
}

impl Control {
    pub fn shard_count(&self) -> usize {
        self.ends.len()
    }

    /// Tells every shard to stop (repeating it is harmless).
    pub fn stop_all(&self) {
        for end in self.ends.iter() {
            end.stop.store(true, Ordering::Release);
            end.wake();
        }
    }

    /// Queues `job` on `shard` and wakes it; returns at once. The job is dropped unrun if the shard
    /// stops first.
    pub fn run_on(
        &self,
        shard: ShardId,
        job: impl FnOnce(&mut ShardCore, Instant) + Send + 'static,
    ) -> Result<(), ControlError> {
        let end = self.ends.get(shard).ok_or(ControlError::NoSuchShard(shard))?;
        {
            let mut queue = end.queue();
            if queue.closed {
                return Err(ControlError::Stopped(shard));
            }
            queue.jobs.push(Box::new(job));
        }
        end.wake();
        Ok(())
    }

    /// Runs `job` on `shard` and waits for what it returns, at most `timeout`.
    pub fn call<R: Send + 'static>(
        &self,
        shard: ShardId,
        timeout: Duration,
        job: impl FnOnce(&mut ShardCore, Instant) -> R + Send + 'static,
    ) -> Result<R, ControlError> {
        let answer = self.ask(shard, job)?;
        wait_for(shard, &answer, Instant::now() + timeout, timeout)
    }

    /// Runs `job` on every shard at once and waits for all their answers (in shard order), at most
    /// `timeout` in all.
    pub fn call_all<R: Send + 'static>(
        &self,
        timeout: Duration,
        job: impl Fn(&mut ShardCore, Instant) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, ControlError> {
        let job = Arc::new(job);
        let deadline = Instant::now() + timeout;
        let answers: Vec<_> = (0..self.shard_count())
            .map(|shard| {
                let job = job.clone();
                self.ask(shard, move |core, now| job(core, now))
            })
            .collect::<Result<_, _>>()?;
        answers.iter().enumerate().map(|(shard, answer)| wait_for(shard, answer, deadline, timeout)).collect()
    }

    fn ask<R: Send + 'static>(
        &self,
        shard: ShardId,
        job: impl FnOnce(&mut ShardCore, Instant) -> R + Send + 'static,
    ) -> Result<mpsc::Receiver<R>, ControlError> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.run_on(shard, move |core, now| {
            // The caller may have given up waiting: then nobody wants the answer.
            let _ = answer.send(job(core, now));
        })?;
        Ok(answered)
    }

    /// Stops every shard on the first SIGINT or SIGTERM, and calls `on_reload` (on the signal thread)
    /// for each SIGHUP.
    pub fn on_signals(&self, on_reload: impl Fn() + Send + 'static) -> io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let control = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading");
                    on_reload();
                } else {
                    tracing::info!(signal, "stopping");
                    control.stop_all();
                }
            }
        })?;
        Ok(())
    }
}

/// Waits for one shard's answer until `deadline`; a dropped job (the shard stopped) is `Stopped`.
fn wait_for<R>(
    shard: ShardId,
    answer: &mpsc::Receiver<R>,
    deadline: Instant,
    timeout: Duration,
) -> Result<R, ControlError> {
    match answer.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(value) => Ok(value),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ControlError::Timeout { shard, timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ControlError::Stopped(shard)),
    }
}

impl ControlReceiver {
    /// The eventfd the shard keeps a read armed on.
    pub fn fd(&self) -> RawFd {
        self.end.eventfd.as_raw_fd()
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.end.stop.load(Ordering::Acquire)
    }

    /// Moves the waiting jobs into `jobs` (in the order they were queued).
    pub fn take_jobs(&self, jobs: &mut Vec<Job>) {
        jobs.append(&mut self.end.queue().jobs);
    }

    /// The shard has left its loop: refuse later jobs and drop the waiting ones (their callers see
    /// `Stopped`).
    pub fn close(&self) {
        let jobs = {
            let mut queue = self.end.queue();
            queue.closed = true;
            std::mem::take(&mut queue.jobs)
        };
        drop(jobs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_seen_by_every_shard() {
        let (control, receivers) = control_channels(2).unwrap();
        assert!(receivers.iter().all(|receiver| !receiver.stop_requested()));
        control.stop_all();
        assert!(receivers.iter().all(ControlReceiver::stop_requested));
    }

    #[test]
    fn a_queued_job_makes_the_eventfd_readable() {
        let (control, receivers) = control_channels(1).unwrap();
        let readable = |fd| {
            let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: poll(2) on one descriptor we own, not waiting.
            unsafe { libc::poll(&mut poll, 1, 0) > 0 }
        };
        assert!(!readable(receivers[0].fd()));
        control.run_on(0, |_, _| {}).unwrap();
        assert!(readable(receivers[0].fd()));
        let mut jobs = Vec::new();
        receivers[0].take_jobs(&mut jobs);
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn a_closed_shard_refuses_jobs_and_callers_learn_it_stopped() {
        let (control, receivers) = control_channels(2).unwrap();
        let waiting = {
            let control = control.clone();
            std::thread::spawn(move || control.call(1, Duration::from_secs(10), |_, _| 7))
        };
        // The job is queued before the shard closes: closing drops it, and its caller sees Stopped.
        while receivers[1].end.queue().jobs.is_empty() {
            std::thread::yield_now();
        }
        receivers[1].close();
        assert_eq!(waiting.join().unwrap(), Err(ControlError::Stopped(1)));
        assert_eq!(control.run_on(1, |_, _| {}), Err(ControlError::Stopped(1)));
        assert_eq!(control.run_on(5, |_, _| {}), Err(ControlError::NoSuchShard(5)));
    }

    #[test]
    fn a_call_nobody_runs_times_out() {
        let (control, _receivers) = control_channels(1).unwrap();
        let timeout = Duration::from_millis(20);
        assert_eq!(control.call(0, timeout, |_, _| ()), Err(ControlError::Timeout { shard: 0, timeout }));
    }
}
