//! The data directory and each shard's segments.
//!
//! ```text
//! DIR/FORMAT                 "shardmq-log <version>\nshards <count>\n": a directory written by another
//!                            format version or shard count is refused, never half read
//! DIR/shard-<k>/<n>.seg      segments; each starts with a 24-byte header (magic, version, shard, shard
//!                            count, kind) then frames. Kind `snapshot` (written by compaction) holds the
//!                            whole live state; recovery starts at the newest one and replays every later
//!                            segment. Appends go to the newest segment.
//! ```
//! Compaction writes `<n+1>.tmp`, syncs it, renames it to `<n+1>.seg`, syncs the directory, then deletes
//! the older segments: a crash at any point leaves either the old segments or the new snapshot in force.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::frame::{append_frame, scan_frames, ScanEnd};
use super::record::Record;
use super::state::RecoveredState;

/// Version of the on-disk format (directory layout, header, records).
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"SHARDMQL";
const HEADER_BYTES: usize = 24;
const KIND_SNAPSHOT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("persistence: {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("persistence: {path} was written by format version {found}; this shardmq reads version {expected} only (move the directory away or start the version that wrote it)")]
    FormatVersion { path: PathBuf, found: String, expected: u32 },
    #[error("persistence: {path} was written with {found} shards, this broker runs {expected} (start with `shards = {found}` or move the directory away)")]
    ShardCount { path: PathBuf, found: usize, expected: usize },
    #[error("persistence: {path} is not a shardmq log segment (bad header)")]
    NotASegment { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.to_path_buf(), source }
}

/// The data directory, checked against this build's format and the broker's shard count.
#[derive(Clone, Debug)]
pub struct LogDir {
    root: PathBuf,
    shards: usize,
}

impl LogDir {
    pub fn open(root: &Path, shards: usize) -> Result<LogDir, PersistError> {
        fs::create_dir_all(root).map_err(io_error(root))?;
        let format = root.join("FORMAT");
        let expected = format!("shardmq-log {FORMAT_VERSION}\nshards {shards}\n");
        match fs::read_to_string(&format) {
            Ok(text) => check_format(&format, &text, shards)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                write_synced(&format, expected.as_bytes())?;
                sync_dir(root)?;
            }
            Err(source) => return Err(PersistError::Io { path: format, source }),
        }
        Ok(LogDir { root: root.to_path_buf(), shards })
    }

    pub fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join(format!("shard-{shard}"))
    }
}

fn check_format(path: &Path, text: &str, shards: usize) -> Result<(), PersistError> {
    let mut lines = text.lines();
    let version = lines.next().and_then(|line| line.strip_prefix("shardmq-log ")).unwrap_or("unknown");
    if version != FORMAT_VERSION.to_string() {
        return Err(PersistError::FormatVersion { path: path.into(), found: version.into(), expected: FORMAT_VERSION });
    }
    let found = lines.next().and_then(|line| line.strip_prefix("shards ")).and_then(|count| count.parse().ok());
    match found {
        Some(found) if found == shards => Ok(()),
        Some(found) => Err(PersistError::ShardCount { path: path.into(), found, expected: shards }),
        None => {
            Err(PersistError::FormatVersion { path: path.into(), found: "unreadable".into(), expected: FORMAT_VERSION })
        }
    }
}

/// One shard's open log: the segment appends go to.
#[derive(Debug)]
pub struct ShardLog {
    dir: PathBuf,
    shard: usize,
    shards: usize,
    segment: u64,
    file: File,
    /// Bytes of frames in the segments recovery would read (the live log).
    log_bytes: u64,
    /// Length of the segment appends go to (where a failed write is cut back to).
    file_len: u64,
    /// Blocks are allocated (fallocate, size unchanged) up to this offset of the segment, so appends up to
    /// it cannot fail for want of space.
    reserved_to: u64,
}

/// Opens (creating if new) shard `shard`'s log, replays it and cuts a torn or corrupt tail.
pub fn open_shard_log(dir: &LogDir, shard: usize) -> Result<(ShardLog, RecoveredState), PersistError> {
    let shard_dir = dir.shard_dir(shard);
    fs::create_dir_all(&shard_dir).map_err(io_error(&shard_dir))?;
    let mut segments = list_segments(&shard_dir)?;
    let mut kinds = Vec::with_capacity(segments.len());
    for &number in &segments {
        kinds.push(read_header(&segment_path(&shard_dir, number), shard, dir.shards)?);
    }
    // Older segments than the newest snapshot are what a compaction left behind when it was cut short.
    if let Some(start) = kinds.iter().rposition(|&kind| kind == KIND_SNAPSHOT) {
        for &number in &segments[..start] {
            let path = segment_path(&shard_dir, number);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        segments.drain(..start);
    }
    let mut state = RecoveredState::default();
    let mut log_bytes = 0;
    let mut records = 0u64;
    for (index, &number) in segments.iter().enumerate() {
        let path = segment_path(&shard_dir, number);
        let bytes = fs::read(&path).map_err(io_error(&path))?;
        let body = &bytes[HEADER_BYTES.min(bytes.len())..];
        let scan = scan_frames(body);
        let mut valid = scan.valid_len(body.len());
        let mut end = scan.end;
        let mut offset = 0;
        for payload in scan.payloads {
            match Record::decode(payload) {
                Ok(record) => state.apply(record),
                Err(err) => {
                    warn!(shard, segment = %path.display(), offset, error = %err, "persistence: unreadable record, log cut here");
                    valid = offset;
                    end = ScanEnd::Corrupt { offset };
                    break;
                }
            }
            records += 1;
            offset += super::frame::FRAME_HEADER_BYTES + payload.len();
        }
        log_bytes += valid as u64;
        if end != ScanEnd::Clean {
            let what =
                if matches!(end, ScanEnd::Torn { .. }) { "torn (a write cut short)" } else { "corrupt (checksum)" };
            warn!(shard, segment = %path.display(), offset = valid, dropped_bytes = body.len() - valid, "persistence: {what} tail cut");
            let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
            file.set_len((HEADER_BYTES + valid) as u64).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            // Records after a cut cannot be trusted to follow on from it.
            for &later in &segments[index + 1..] {
                let later_path = segment_path(&shard_dir, later);
                let aside = later_path.with_extension("cut");
                warn!(shard, segment = %later_path.display(), "persistence: segment after a cut set aside (.cut)");
                fs::rename(&later_path, &aside).map_err(io_error(&later_path))?;
            }
            segments.truncate(index + 1);
            break;
        }
    }
    let segment = match segments.last() {
        Some(&number) => number,
        None => {
            let number = 1;
            write_segment(&shard_dir, number, shard, dir.shards, KIND_SNAPSHOT, &[])?;
            number
        }
    };
    let path = segment_path(&shard_dir, segment);
    let file = OpenOptions::new().append(true).open(&path).map_err(io_error(&path))?;
    let file_len = file.metadata().map_err(io_error(&path))?.len();
    info!(
        shard,
        records,
        sessions = state.sessions.len(),
        retained = state.retained.len(),
        skipped = state.skipped_records,
        "persistence: log replayed"
    );
    let log =
        ShardLog { dir: shard_dir, shard, shards: dir.shards, segment, file, log_bytes, file_len, reserved_to: 0 };
    Ok((log, state))
}

impl ShardLog {
    /// Appends frames (already framed by `append_frame`). A failed write is cut back off, so the segment
    /// never holds half a batch that later appends would follow.
    pub fn append(&mut self, frames: &[u8]) -> Result<(), PersistError> {
        let path = segment_path(&self.dir, self.segment);
        if let Err(err) = self.file.write_all(frames) {
            // Cutting back also frees the reserve past the end.
            let _ = self.file.set_len(self.file_len);
            self.reserved_to = self.file_len;
            return Err(PersistError::Io { path, source: err });
        }
        self.log_bytes += frames.len() as u64;
        self.file_len += frames.len() as u64;
        Ok(())
    }

    /// Bytes that can still be appended into space already allocated.
    pub fn reserve_left_bytes(&self) -> u64 {
        self.reserved_to.saturating_sub(self.file_len)
    }

    /// Allocates `bytes` past the end of the segment without changing its size (fallocate
    /// `FALLOC_FL_KEEP_SIZE`: recovery reads only up to the size), so the records accepted before the
    /// broker learns that the disk is full still find room. A file system without fallocate counts as
    /// reserved (the free-space probe and a failed write still catch a full disk there).
    pub fn reserve(&mut self, bytes: u64) -> Result<(), PersistError> {
        let path = segment_path(&self.dir, self.segment);
        // SAFETY: fallocate(2) on the descriptor we own; no memory is passed.
        let result = unsafe {
            libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, self.file_len as i64, bytes as i64)
        };
        if result != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(PersistError::Io { path, source: err });
            }
        }
        self.reserved_to = self.file_len + bytes;
        Ok(())
    }

    /// Bytes an unprivileged writer may still allocate on the log's file system (fstatvfs).
    pub fn free_bytes(&self) -> Result<u64, PersistError> {
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: fstatvfs(2) fills the struct we pass on success, which is checked before reading it.
        let stat = unsafe {
            if libc::fstatvfs(self.file.as_raw_fd(), stat.as_mut_ptr()) != 0 {
                let source = std::io::Error::last_os_error();
                return Err(PersistError::Io { path: segment_path(&self.dir, self.segment), source });
            }
            stat.assume_init()
        };
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Makes every appended byte durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), PersistError> {
        self.file.sync_data().map_err(io_error(&segment_path(&self.dir, self.segment)))
    }

    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Rewrites the log as one snapshot segment of `state` and drops the older segments. Returns the
    /// snapshot's size.
    pub fn compact(&mut self, state: &RecoveredState) -> Result<u64, PersistError> {
        let mut frames = Vec::new();
        let mut payload = Vec::new();
        state.snapshot_records(|record| {
            payload.clear();
            record.encode(&mut payload);
            append_frame(&mut frames, &payload);
        });
        let next = self.segment + 1;
        write_segment(&self.dir, next, self.shard, self.shards, KIND_SNAPSHOT, &frames)?;
        let path = segment_path(&self.dir, next);
        self.file = OpenOptions::new().append(true).open(&path).map_err(io_error(&path))?;
        let old = self.segment;
        self.segment = next;
        self.log_bytes = frames.len() as u64;
        self.file_len = (HEADER_BYTES + frames.len()) as u64;
        self.reserved_to = 0;
        for number in list_segments(&self.dir)?.into_iter().filter(|&number| number <= old) {
            let path = segment_path(&self.dir, number);
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(self.log_bytes)
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

/// Segment numbers in order; stray `.tmp` files (a compaction cut short) are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>, PersistError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let number = path.file_stem().and_then(|stem| stem.to_str()).and_then(|stem| stem.parse::<u64>().ok());
        match (path.extension().and_then(|ext| ext.to_str()), number) {
            (Some("seg"), Some(number)) => numbers.push(number),
            (Some("tmp"), _) => fs::remove_file(&path).map_err(io_error(&path))?,
            _ => {}
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn header(shard: usize, shards: usize, kind: u8) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(shard as u32).to_le_bytes());
    header[16..20].copy_from_slice(&(shards as u32).to_le_bytes());
    header[20] = kind;
    header
}

/// The segment's kind, after checking it belongs to this format, shard and shard count.
fn read_header(path: &Path, shard: usize, shards: usize) -> Result<u8, PersistError> {
    let mut header = [0; HEADER_BYTES];
    let mut file = File::open(path).map_err(io_error(path))?;
    std::io::Read::read_exact(&mut file, &mut header).map_err(|_| PersistError::NotASegment { path: path.into() })?;
    if &header[..8] != MAGIC {
        return Err(PersistError::NotASegment { path: path.into() });
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if word(8) != FORMAT_VERSION {
        return Err(PersistError::FormatVersion {
            path: path.into(),
            found: word(8).to_string(),
            expected: FORMAT_VERSION,
        });
    }
    if word(16) as usize != shards {
        return Err(PersistError::ShardCount { path: path.into(), found: word(16) as usize, expected: shards });
    }
    if word(12) as usize != shard {
        return Err(PersistError::NotASegment { path: path.into() });
    }
    Ok(header[20])
}

/// Writes a whole segment through a `.tmp` file, synced, renamed into place, directory synced.
fn write_segment(
    dir: &Path,
    number: u64,
    shard: usize,
    shards: usize,
    kind: u8,
    frames: &[u8],
) -> Result<(), PersistError> {
    let tmp = dir.join(format!("{number:016}.tmp"));
    let mut bytes = Vec::with_capacity(HEADER_BYTES + frames.len());
    bytes.extend_from_slice(&header(shard, shards, kind));
    bytes.extend_from_slice(frames);
    if let Err(err) = write_synced(&tmp, &bytes) {
        // A full disk: the half-written copy must not keep the space it took.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    let path = segment_path(dir, number);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut file = File::create(path).map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir).and_then(|file| file.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::stored_delivery;
    use super::*;
    use crate::protocol::ByteStr;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shardmq-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn frames(records: &[Record]) -> Vec<u8> {
        let mut frames = Vec::new();
        for record in records {
            let mut payload = Vec::new();
            record.encode(&mut payload);
            append_frame(&mut frames, &payload);
        }
        frames
    }

    fn session(client_id: &str) -> Record {
        Record::SessionPut {
            client_id: ByteStr::from(client_id),
            expiry_interval_secs: 60,
            username: None,
            listener: 0,
            will: None,
        }
    }

    fn enqueue(client_id: &str, payload: &str) -> Record {
        Record::Enqueue { client_id: ByteStr::from(client_id), delivery: stored_delivery(payload) }
    }

    fn last_segment(dir: &LogDir) -> PathBuf {
        let shard_dir = dir.shard_dir(0);
        segment_path(&shard_dir, *list_segments(&shard_dir).unwrap().last().unwrap())
    }

    #[test]
    fn appended_records_are_recovered_after_reopening() {
        let root = temp_dir("reopen");
        let dir = LogDir::open(&root, 2).unwrap();
        let (mut log, state) = open_shard_log(&dir, 1).unwrap();
        assert!(state.sessions.is_empty());
        log.append(&frames(&[session("a"), enqueue("a", "1")])).unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, state) = open_shard_log(&LogDir::open(&root, 2).unwrap(), 1).unwrap();
        assert_eq!(state.sessions[&ByteStr::from("a")].queue.len(), 1);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_log_appends_after_it() {
        let root = temp_dir("torn");
        let dir = LogDir::open(&root, 1).unwrap();
        let (mut log, _) = open_shard_log(&dir, 0).unwrap();
        let whole = frames(&[session("a"), enqueue("a", "1")]);
        let torn = frames(&[enqueue("a", "2")]);
        log.append(&whole).unwrap();
        log.append(&torn[..torn.len() - 3]).unwrap();
        drop(log);
        let (mut log, state) = open_shard_log(&dir, 0).unwrap();
        assert_eq!(state.sessions[&ByteStr::from("a")].queue.len(), 1, "the torn record is gone");
        assert_eq!(fs::metadata(last_segment(&dir)).unwrap().len() as usize, HEADER_BYTES + whole.len(), "cut on disk");
        log.append(&frames(&[enqueue("a", "3")])).unwrap();
        drop(log);
        let (_, state) = open_shard_log(&dir, 0).unwrap();
        let payloads: Vec<_> =
            state.sessions[&ByteStr::from("a")].queue.iter().map(|d| d.message.payload.clone()).collect();
        assert_eq!(payloads, vec![&b"1"[..], b"3"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_corrupt_record_cuts_the_log_where_it_starts() {
        let root = temp_dir("corrupt");
        let dir = LogDir::open(&root, 1).unwrap();
        let (mut log, _) = open_shard_log(&dir, 0).unwrap();
        let first = frames(&[session("a")]);
        log.append(&first).unwrap();
        log.append(&frames(&[enqueue("a", "1"), enqueue("a", "2")])).unwrap();
        drop(log);
        let path = last_segment(&dir);
        let mut bytes = fs::read(&path).unwrap();
        let flip = HEADER_BYTES + first.len() + 12;
        bytes[flip] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (_, state) = open_shard_log(&dir, 0).unwrap();
        assert!(state.sessions[&ByteStr::from("a")].queue.is_empty(), "nothing after the bad record is trusted");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, HEADER_BYTES + first.len());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn compaction_keeps_the_live_state_in_one_smaller_segment() {
        let root = temp_dir("compact");
        let dir = LogDir::open(&root, 1).unwrap();
        let (mut log, mut state) = open_shard_log(&dir, 0).unwrap();
        let mut records = vec![session("a")];
        for index in 0..100 {
            records.push(enqueue("a", &format!("m{index}")));
            records.push(Record::QueueDropFront { client_id: ByteStr::from("a") });
        }
        records.push(enqueue("a", "last"));
        log.append(&frames(&records)).unwrap();
        records.into_iter().for_each(|record| state.apply(record));
        let before = log.log_bytes();
        let after = log.compact(&state).unwrap();
        assert!(after * 10 < before, "{after} vs {before}");
        log.append(&frames(&[enqueue("a", "after")])).unwrap();
        drop(log);
        assert_eq!(list_segments(&dir.shard_dir(0)).unwrap().len(), 1, "older segments deleted");
        let (_, recovered) = open_shard_log(&dir, 0).unwrap();
        let payloads: Vec<_> =
            recovered.sessions[&ByteStr::from("a")].queue.iter().map(|d| d.message.payload.clone()).collect();
        assert_eq!(payloads, vec![&b"last"[..], b"after"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_compaction_cut_short_leaves_the_old_segments_in_force() {
        let root = temp_dir("compact-crash");
        let dir = LogDir::open(&root, 1).unwrap();
        let (mut log, _) = open_shard_log(&dir, 0).unwrap();
        log.append(&frames(&[session("a"), enqueue("a", "1")])).unwrap();
        drop(log);
        fs::write(dir.shard_dir(0).join(format!("{:016}.tmp", 2)), b"half a snapshot").unwrap();
        let (_, state) = open_shard_log(&dir, 0).unwrap();
        assert_eq!(state.sessions[&ByteStr::from("a")].queue.len(), 1);
        assert!(!dir.shard_dir(0).join(format!("{:016}.tmp", 2)).exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_directory_of_another_version_or_shard_count_is_refused() {
        let root = temp_dir("refuse");
        LogDir::open(&root, 2).unwrap();
        let err = LogDir::open(&root, 4).unwrap_err();
        assert!(matches!(err, PersistError::ShardCount { found: 2, expected: 4, .. }), "{err}");
        assert!(err.to_string().contains("shards = 2"), "{err}");
        fs::write(root.join("FORMAT"), "shardmq-log 99\nshards 2\n").unwrap();
        let err = LogDir::open(&root, 2).unwrap_err();
        assert!(matches!(err, PersistError::FormatVersion { .. }), "{err}");
        assert!(err.to_string().contains("version 99"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }
}
