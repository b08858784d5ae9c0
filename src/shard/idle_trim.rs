//! Giving memory back when a shard goes quiet. A burst (thousands of CONNECTs at once, a flood) grows the
//! shard's scratch vectors and queues and leaves the allocator holding freed pages it purges only when the
//! thread next allocates, which an idle shard never does: measured as ~2.5-3 MiB per shard kept after the
//! first connect burst of an idle fleet (perf/SCALE.md). When a shard is about to sleep, at most once per
//! `TRIM_INTERVAL`, it shrinks what it holds beyond a small capacity and calls the process's allocator
//! hook (the binary sets mimalloc's `mi_collect`; a library user may set their own or none).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most this often; a trim walks the thread's allocator pages, tens of microseconds.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Capacity a scratch vector keeps through a trim (elements); beyond it, it is shrunk to this.
pub const KEPT_CAPACITY: usize = 64;

static ALLOCATOR_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets what a quiet shard calls on its own thread to return the allocator's free pages (once per
/// process; later calls are ignored). The hook must be cheap and must not block.
pub fn set_allocator_hook(hook: fn()) {
    let _ = ALLOCATOR_HOOK.set(hook);
}

/// When a shard last trimmed, and whether anything ran since (a shard that stayed asleep has nothing new
/// to give back).
#[derive(Debug)]
pub struct IdleTrim {
    last: Instant,
    busy_since: bool,
}

impl IdleTrim {
    pub fn new(now: Instant) -> IdleTrim {
        IdleTrim { last: now, busy_since: false }
    }

    /// A turn did work (completions, mesh, jobs).
    pub fn note_busy(&mut self) {
        self.busy_since = true;
    }

    /// For a shard about to sleep at `now`: whether to trim now (recorded as done), and otherwise when a
    /// trim falls due, so the sleep ends in time for it (a fleet that goes idle right after a trim must
    /// not keep the burst's memory until its next keep-alive).
    pub fn check(&mut self, now: Instant) -> TrimStep {
        if !self.busy_since {
            return TrimStep::Nothing;
        }
        let due = self.last + TRIM_INTERVAL;
        if now < due {
            return TrimStep::At(due);
        }
        self.last = now;
        self.busy_since = false;
        TrimStep::Now
    }
}

/// What `IdleTrim::check` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimStep {
    /// Nothing ran since the last trim.
    Nothing,
    Now,
    /// Not before this instant: wake for it.
    At(Instant),
}

/// Shrinks `vec` to `KEPT_CAPACITY` when it holds more capacity than that and is empty.
pub fn shrink_scratch<T>(vec: &mut Vec<T>) {
    if vec.is_empty() && vec.capacity() > KEPT_CAPACITY {
        vec.shrink_to(KEPT_CAPACITY);
    }
}

/// Calls the allocator hook, if one is set.
pub fn return_free_pages() {
    if let Some(hook) = ALLOCATOR_HOOK.get() {
        hook();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_comes_only_after_work_at_most_once_per_interval_and_the_sleep_waits_for_it() {
        let start = Instant::now();
        let mut trim = IdleTrim::new(start);
        assert_eq!(trim.check(start + TRIM_INTERVAL * 2), TrimStep::Nothing, "nothing ran: nothing to give back");
        trim.note_busy();
        assert_eq!(trim.check(start + TRIM_INTERVAL / 2), TrimStep::At(start + TRIM_INTERVAL), "too soon: wake for it");
        assert_eq!(trim.check(start + TRIM_INTERVAL * 2), TrimStep::Now);
        assert_eq!(trim.check(start + TRIM_INTERVAL * 3), TrimStep::Nothing, "done, and nothing ran since");
        trim.note_busy();
        let later = start + TRIM_INTERVAL * 2 + TRIM_INTERVAL / 2;
        assert_eq!(trim.check(later), TrimStep::At(start + TRIM_INTERVAL * 3), "one interval after the last trim");
        assert_eq!(trim.check(start + TRIM_INTERVAL * 4), TrimStep::Now);
    }

    #[test]
    fn only_an_empty_vector_beyond_the_kept_capacity_shrinks() {
        let mut big: Vec<u64> = Vec::with_capacity(10_000);
        shrink_scratch(&mut big);
        assert!(big.capacity() < 10_000 && big.capacity() >= KEPT_CAPACITY);
        let mut busy: Vec<u64> = Vec::with_capacity(10_000);
        busy.push(1);
        shrink_scratch(&mut busy);
        assert_eq!(busy.capacity(), 10_000, "never while it holds something");
    }
}
