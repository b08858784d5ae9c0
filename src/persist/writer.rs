//! `LogWriter`: the side thread that owns one shard's log. The shard never touches the disk: at the end of
//! each turn it hands the turn's frames over a channel (`submit`), and goes on. The thread writes every
//! batch waiting for it, then (in `sync`) one fdatasync for all of them (group commit), publishes the
//! sequence number now durable and rings the shard's doorbell (an eventfd the shard's ring reads), which
//! lets the held acknowledgements go.
//!
//! The thread also replays what it writes into a `RecoveredState` (the live state as the log says), so
//! compaction is its own business: when the log passes `compact_ratio` x the live size (and
//! `compact_min_bytes`), it rewrites the state as a new snapshot segment without asking the shard. The
//! cost is a second copy of the queued messages in memory (see ARCHITECTURE.md).
//!
//! A full disk: the thread keeps `reserve_bytes` allocated past the end of the log and probes the free
//! space (after writes, and every `PROBE_INTERVAL` when idle). When the reserve cannot be topped up or
//! less than `reserve_bytes` is free, it reports the disk full (`is_failing`, and the doorbell rings so
//! the shard learns at once): the core refuses new QoS 1/2 publishes while the records it accepted before
//! still land in the reserve. A write that fails all the same is undone (the file is cut back to its last
//! whole frame), logged, and retried every `RETRY_INTERVAL` with everything that arrived since; nothing
//! is acknowledged meanwhile in `sync`. Once space returns (a probe or a retry succeeds) the report
//! clears, with a log line.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::frame::scan_frames;
use super::log::ShardLog;
use super::record::Record;
use super::settings::{Durability, PersistenceSettings};
use super::state::RecoveredState;

const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How often an idle healthy writer checks the free space (a filler elsewhere on the disk is noticed
/// without waiting for a write).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

enum Command {
    Append { frames: Vec<u8>, seq: u64 },
    Stop,
}

struct Shared {
    durable_seq: AtomicU64,
    failing: AtomicBool,
    doorbell: OwnedFd,
    syncs: AtomicU64,
    compactions: AtomicU64,
}

/// What the writer has done, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub durable_seq: u64,
    pub syncs: u64,
    pub compactions: u64,
}

pub struct LogWriter {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts shard `shard`'s writer over its opened log and the state recovered from it.
    pub fn start(
        shard: usize,
        log: ShardLog,
        state: RecoveredState,
        settings: &PersistenceSettings,
    ) -> std::io::Result<LogWriter> {
        // SAFETY: plain eventfd(2); the descriptor is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            durable_seq: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            doorbell: unsafe { OwnedFd::from_raw_fd(fd) },
            syncs: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let live_bytes = log.log_bytes();
        let mut thread_state = WriterThread {
            shard,
            log,
            state,
            rx,
            shared: Arc::clone(&shared),
            durability: settings.durability,
            interval: Duration::from_millis(settings.interval_ms.max(1)),
            compact_ratio: settings.compact_ratio.max(2),
            compact_min_bytes: settings.compact_min_bytes,
            live_bytes,
            pending: Vec::new(),
            pending_seq: 0,
            unsynced: false,
            reserve_bytes: settings.reserve_bytes,
            write_failed: false,
            space_low: None,
            next_probe: Instant::now(),
        };
        let thread = std::thread::Builder::new().name(format!("persist-{shard}")).spawn(move || thread_state.run())?;
        Ok(LogWriter { tx, shared, thread: Some(thread) })
    }

    /// Hands over one turn's frames; `seq` numbers the last record in them.
    pub fn submit(&self, frames: Vec<u8>, seq: u64) {
        let _ = self.tx.send(Command::Append { frames, seq });
    }

    /// Every record up to this number is on disk (in `sync`; written, in the other modes).
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// The eventfd the writer writes after each sync.
    pub fn doorbell_fd(&self) -> RawFd {
        self.shared.doorbell.as_raw_fd()
    }

    /// The disk is full: the last write or sync failed and has not succeeded since, or the free space is
    /// below `reserve_bytes`. New QoS 1/2 publishes are refused meanwhile.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            durable_seq: self.durable_seq(),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            compactions: self.shared.compactions.load(Ordering::Relaxed),
        }
    }

    /// Writes and syncs what was submitted, then ends the thread.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

struct WriterThread {
    shard: usize,
    log: ShardLog,
    state: RecoveredState,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    durability: Durability,
    interval: Duration,
    compact_ratio: u64,
    compact_min_bytes: u64,
    /// Size of the log right after the last compaction (or at start).
    live_bytes: u64,
    /// Frames not yet written (a batch being gathered, or waiting after a failed write).
    pending: Vec<u8>,
    pending_seq: u64,
    /// Written but not synced (`periodic`).
    unsynced: bool,
    reserve_bytes: u64,
    /// The last write or sync failed.
    write_failed: bool,
    /// Why the space probe finds the disk full, if it does.
    space_low: Option<String>,
    next_probe: Instant,
}

impl WriterThread {
    fn run(&mut self) {
        let mut next_sync = Instant::now() + self.interval;
        let mut stopping = false;
        while !stopping {
            let probe = self.next_probe.saturating_duration_since(Instant::now());
            let wait = match (self.durability, self.pending.is_empty()) {
                _ if self.write_failed => RETRY_INTERVAL,
                (_, false) => RETRY_INTERVAL,
                (Durability::Periodic, true) if self.unsynced => next_sync.saturating_duration_since(Instant::now()),
                _ => Duration::from_secs(3600),
            };
            let wait = if self.reserve_bytes > 0 { wait.min(probe) } else { wait };
            match self.rx.recv_timeout(wait) {
                Ok(command) => stopping |= self.take(command),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => stopping = true,
            }
            // Group commit: everything already waiting goes in the same write and sync.
            while let Ok(command) = self.rx.try_recv() {
                stopping |= self.take(command);
            }
            let had_pending = !self.pending.is_empty();
            let written = self.write_pending();
            let reserve_half_used = had_pending && self.log.reserve_left_bytes() < self.reserve_bytes / 2;
            if self.reserve_bytes > 0 && (reserve_half_used || Instant::now() >= self.next_probe) {
                self.probe_space();
            }
            if !written {
                continue;
            }
            let sync_now = match self.durability {
                Durability::Sync => true,
                Durability::Periodic => stopping || Instant::now() >= next_sync,
                Durability::None => false,
            };
            if sync_now && self.unsynced {
                if let Err(err) = self.log.sync() {
                    if !self.write_failed {
                        error!(shard = self.shard, %err, "persistence: sync failed; retrying, nothing new is acknowledged until it succeeds");
                    }
                    self.set_write_failed(true);
                    continue;
                }
                self.set_write_failed(false);
                self.unsynced = false;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                next_sync = Instant::now() + self.interval;
            }
            self.publish_durable();
            self.maybe_compact();
        }
    }

    /// Takes one command; true when it asks the thread to stop.
    fn take(&mut self, command: Command) -> bool {
        match command {
            Command::Append { frames, seq } => {
                for payload in scan_frames(&frames).payloads {
                    match Record::decode(payload) {
                        Ok(record) => self.state.apply(record),
                        Err(err) => warn!(shard = self.shard, %err, "persistence: record the writer cannot read back"),
                    }
                }
                self.pending.extend_from_slice(&frames);
                self.pending_seq = self.pending_seq.max(seq);
                false
            }
            Command::Stop => true,
        }
    }

    /// Writes the pending frames; false (logged once per failure run) if the write failed.
    fn write_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        match self.log.append(&self.pending) {
            Ok(()) => {
                self.set_write_failed(false);
                self.pending.clear();
                self.unsynced = true;
                true
            }
            Err(err) => {
                if !self.write_failed {
                    error!(shard = self.shard, %err, "persistence: write failed (disk full?); retrying every {} ms, new QoS 1/2 publishes are refused and nothing new is acknowledged until it succeeds", RETRY_INTERVAL.as_millis());
                }
                self.set_write_failed(true);
                false
            }
        }
    }

    /// Tops the reserve up when half of it is used and checks the free space; reports the disk full (or
    /// no longer full) to the shard.
    fn probe_space(&mut self) {
        self.next_probe = Instant::now() + PROBE_INTERVAL;
        let reserve = self.reserve_bytes;
        let mut trouble = None;
        if self.log.reserve_left_bytes() < reserve / 2 {
            if let Err(err) = self.log.reserve(reserve) {
                trouble = Some(format!("cannot reserve {reserve} bytes for the log ({err})"));
            }
        }
        if trouble.is_none() {
            trouble = match self.log.free_bytes() {
                Ok(free) if free < reserve => Some(format!(
                    "{free} bytes free on the data directory's file system, less than reserve_bytes = {reserve}"
                )),
                Ok(_) => None,
                Err(err) => Some(format!("cannot read the free space ({err})")),
            };
        }
        match (&self.space_low, &trouble) {
            (None, Some(why)) => warn!(
                shard = self.shard,
                "persistence: disk full: {why}; new QoS 1/2 publishes are refused (v5 reason 0x97) until space returns"
            ),
            (Some(_), None) => {
                info!(shard = self.shard, "persistence: disk space is back; QoS 1/2 publishes are accepted again")
            }
            _ => {}
        }
        self.space_low = trouble;
        self.report_failing();
    }

    fn set_write_failed(&mut self, failed: bool) {
        if self.write_failed && !failed {
            info!(shard = self.shard, "persistence: writes succeed again");
        }
        self.write_failed = failed;
        self.report_failing();
    }

    /// Publishes the disk-full state; the doorbell rings on a change so the shard learns it this turn.
    fn report_failing(&mut self) {
        let failing = self.write_failed || self.space_low.is_some();
        if self.shared.failing.swap(failing, Ordering::AcqRel) != failing {
            self.ring_doorbell();
        }
    }

    fn ring_doorbell(&self) {
        let one: u64 = 1;
        // SAFETY: write(2) of 8 bytes from a local onto the eventfd we own.
        unsafe { libc::write(self.shared.doorbell.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn publish_durable(&mut self) {
        let durable = match self.durability {
            Durability::Sync if self.unsynced => return,
            _ => self.pending_seq,
        };
        if self.shared.durable_seq.swap(durable, Ordering::AcqRel) != durable && self.durability == Durability::Sync {
            self.ring_doorbell();
        }
    }

    fn maybe_compact(&mut self) {
        let threshold = self.live_bytes.saturating_mul(self.compact_ratio).max(self.compact_min_bytes);
        // A snapshot needs room too; the log waits until the disk has some again.
        if self.log.log_bytes() <= threshold || self.shared.failing.load(Ordering::Relaxed) {
            return;
        }
        let before = self.log.log_bytes();
        let started = Instant::now();
        match self.log.compact(&self.state) {
            Ok(live_bytes) => {
                self.live_bytes = live_bytes;
                self.unsynced = false;
                self.shared.compactions.fetch_add(1, Ordering::Relaxed);
                info!(
                    shard = self.shard,
                    before_bytes = before,
                    after_bytes = live_bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "persistence: log compacted"
                );
            }
            Err(err) => error!(shard = self.shard, %err, "persistence: compaction failed; the log goes on growing"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::append_frame;
    use super::super::log::{open_shard_log, LogDir};
    use super::*;
    use crate::protocol::ByteStr;

    fn put(client_id: &str) -> Vec<u8> {
        let record = Record::SessionPut {
            client_id: ByteStr::from(client_id),
            expiry_interval_secs: 60,
            username: None,
            listener: 0,
            will: None,
        };
        let mut payload = Vec::new();
        record.encode(&mut payload);
        let mut frames = Vec::new();
        append_frame(&mut frames, &payload);
        frames
    }

    fn wait_durable(writer: &LogWriter, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.durable_seq() < seq {
            assert!(Instant::now() < deadline, "not durable: {:?}", writer.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An empty one-shard data directory under the temp dir, named `prefix`-pid, and its shard 0 log.
    fn fresh_log(prefix: &str) -> (std::path::PathBuf, LogDir, ShardLog, RecoveredState) {
        let root = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = LogDir::open(&root, 1).unwrap();
        let (log, state) = open_shard_log(&dir, 0).unwrap();
        (root, dir, log, state)
    }

    #[test]
    fn sync_mode_publishes_durable_sequence_and_compacts_on_its_own() {
        let (root, dir, log, state) = fresh_log("shardmq-writer");
        let settings = PersistenceSettings {
            dir: Some(root.clone()),
            durability: Durability::Sync,
            compact_min_bytes: 4096,
            ..PersistenceSettings::default()
        };
        let writer = LogWriter::start(0, log, state, &settings).unwrap();
        // The same session put again and again: live state stays one record, so the log is compacted.
        for seq in 1..=500 {
            writer.submit(put("same"), seq);
        }
        wait_durable(&writer, 500);
        let stats = writer.stats();
        assert!(stats.syncs >= 1 && stats.syncs <= 500, "{stats:?}");
        // Compaction follows the sync that published the sequence number.
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.stats().compactions == 0 {
            assert!(Instant::now() < deadline, "never compacted: {:?}", writer.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.stop();
        let (log, state) = open_shard_log(&dir, 0).unwrap();
        assert_eq!(state.sessions.len(), 1);
        assert!(log.log_bytes() < 8192, "{}", log.log_bytes());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn reports_the_disk_full_when_the_reserve_cannot_be_allocated_and_keeps_writing() {
        let (root, dir, log, state) = fresh_log("shardmq-writer-full");
        // More than any test machine has free: the probe must call the disk full.
        let settings = PersistenceSettings {
            dir: Some(root.clone()),
            durability: Durability::Sync,
            reserve_bytes: 1 << 50,
            ..PersistenceSettings::default()
        };
        let writer = LogWriter::start(0, log, state, &settings).unwrap();
        writer.submit(put("kept"), 1);
        wait_durable(&writer, 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !writer.is_failing() {
            assert!(Instant::now() < deadline, "the disk was never reported full");
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.stop();
        let (_, state) = open_shard_log(&dir, 0).unwrap();
        assert_eq!(state.sessions.len(), 1, "what was submitted is still written");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
