//! The one sampler of the process's memory budget (`memory_max_bytes`): a small thread that reads the
//! process's resident size from `/proc/self/statm` every `SAMPLE_INTERVAL` and reports it to the shared
//! [`MemoryBudget`], which the shards read as one atomic. Started only when a budget is set; it logs one
//! line when shedding starts (warn) and one when it ends (info), and stops once the shards are gone.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{MemoryBudget, PressureChange};

/// How often resident memory is read: often enough to stop a connect storm within a fraction of a
/// second, rare enough to cost nothing (one read of a small /proc file).
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// Starts the sampler of `budget` (none without a budget, or when the thread or /proc cannot be had:
/// logged, and the broker runs without shedding).
pub fn start(budget: &Arc<MemoryBudget>) -> Option<JoinHandle<()>> {
    let max_bytes = budget.max_bytes()?;
    let statm = match File::open("/proc/self/statm") {
        Ok(file) => file,
        Err(err) => {
            tracing::error!(%err, "cannot read /proc/self/statm: memory_max_bytes is not enforced");
            return None;
        }
    };
    let watched = Arc::downgrade(budget);
    let spawned = std::thread::Builder::new().name("shardmq-memory".into()).spawn(move || sample(&watched, &statm));
    match spawned {
        Ok(handle) => {
            tracing::info!(memory_max_bytes = max_bytes, "memory budget set: load is shed above it");
            Some(handle)
        }
        Err(err) => {
            tracing::error!(%err, "cannot start the memory sampler: memory_max_bytes is not enforced");
            None
        }
    }
}

/// Samples until every shard has dropped the budget (the broker stopped).
fn sample(watched: &Weak<MemoryBudget>, statm: &File) {
    let page_bytes = page_size();
    loop {
        let Some(budget) = watched.upgrade() else { return };
        match resident_pages(statm) {
            Ok(pages) => report(&budget, pages.saturating_mul(page_bytes)),
            Err(err) => {
                tracing::error!(%err, "cannot read /proc/self/statm: memory_max_bytes is no longer enforced");
                return;
            }
        }
        drop(budget);
        std::thread::sleep(SAMPLE_INTERVAL);
    }
}

fn report(budget: &MemoryBudget, resident_bytes: u64) {
    let (max_bytes, recover_below_bytes) = (budget.max_bytes(), budget.recover_below_bytes());
    match budget.observe(resident_bytes) {
        Some(PressureChange::Started) => tracing::warn!(
            resident_bytes,
            memory_max_bytes = max_bytes,
            recover_below_bytes,
            "memory over memory_max_bytes: shedding load (new CONNECTs refused with 0x97 Quota exceeded / \
             return code 3, QoS 0 to clients with unsent bytes dropped) until it is below 90% of it"
        ),
        Some(PressureChange::Ended) => tracing::info!(
            resident_bytes,
            memory_max_bytes = max_bytes,
            "memory below 90% of memory_max_bytes again: shedding ended, CONNECTs are accepted"
        ),
        None => {}
    }
}

/// The second field of `/proc/self/statm`: resident pages. Read with `pread` at offset 0, which the
/// kernel answers afresh each time, so the file stays open.
fn resident_pages(statm: &File) -> io::Result<u64> {
    let mut buf = [0u8; 128];
    let read = statm.read_at(&mut buf, 0)?;
    parse_resident_pages(&buf[..read])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/statm format"))
}

fn parse_resident_pages(statm: &[u8]) -> Option<u64> {
    std::str::from_utf8(statm).ok()?.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&size| size > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_pages_are_the_second_field_of_statm() {
        assert_eq!(parse_resident_pages(b"12345 678 90 1 0 2345 0\n"), Some(678));
        assert_eq!(parse_resident_pages(b"12345"), None);
        let statm = File::open("/proc/self/statm").expect("/proc/self/statm");
        let pages = resident_pages(&statm).expect("readable");
        assert!(pages > 0 && resident_pages(&statm).is_ok(), "read again at offset 0");
    }
}
