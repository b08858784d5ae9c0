//! Locked-memory budget: how much io_uring memory and ring depth each shard's executor gets so that all
//! shards fit under RLIMIT_MEMLOCK (`ulimit -l`), and a clear error when they cannot.
//!
//! glommio registers one io-memory buffer with each of its three rings (main, latency, poll); without
//! CAP_IPC_LOCK the kernel charges each registration to RLIMIT_MEMLOCK, and kernels before 5.12 also charge
//! the rings themselves. The broker does socket I/O, not DMA file I/O, so it needs far less than glommio's
//! 10 MiB default.

/// io memory a shard asks for when the limit allows it.
pub const PREFERRED_IO_MEMORY_BYTES: usize = 512 * 1024;
/// glommio never allocates less than this.
pub const MIN_IO_MEMORY_BYTES: usize = 64 * 1024;
/// glommio refuses to start an executor when RLIMIT_MEMLOCK is below this.
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// Deep rings are cheap (kernels since 5.12 do not charge them to RLIMIT_MEMLOCK) and the kernel sizes its
/// poll-cancel hash table from the ring: ilog2(CQ entries) - 5 bits, at most 256 buckets. glommio cancels a
/// timeout on every reactor turn and each cancel first walks one bucket of pending socket polls, so with 256
/// entries (16 buckets) and 1,000 idle connections that walk was 9% of the broker's CPU at 1,500 msgs/s;
/// 4096 entries (256 buckets) brought it to 1.6% (perf, perf/RESULTS.md "Low-rate CPU").
pub const PREFERRED_RING_DEPTH: usize = 4096;
pub const MIN_RING_DEPTH: usize = 32;
/// Each registered buffer is charged once per ring.
const RINGS_PER_EXECUTOR: usize = 3;
/// Share of the limit shards may plan to use; the rest is slack for the kernel's own rounding.
const USABLE_PERCENT: u64 = 75;

/// What each shard's executor is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoBudget {
    pub io_memory_bytes: usize,
    pub ring_depth: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IoBudgetError {
    #[error(
        "locked memory limit (ulimit -l) is {limit_kib} KiB; glommio needs at least {} KiB to start; \
         raise `ulimit -l`",
        GLOMMIO_MIN_MEMLOCK_BYTES / 1024
    )]
    BelowGlommioMinimum { limit_kib: u64 },
    #[error(
        "locked memory limit (ulimit -l) is {limit_kib} KiB, too small for {shards} shards (each needs at least \
         {needed_kib} KiB); run fewer shards (--shards) or raise `ulimit -l`"
    )]
    TooManyShards { limit_kib: u64, shards: usize, needed_kib: u64 },
    #[error(
        "io_memory_bytes = {requested} does not fit: {shards} shards under a locked memory limit of {limit_kib} \
         KiB allow at most {allowed} per shard; lower io_memory_bytes or remove it to size it automatically"
    )]
    OverrideTooLarge { requested: usize, shards: usize, limit_kib: u64, allowed: usize },
    #[error("io_memory_bytes = {requested} is below glommio's minimum of {MIN_IO_MEMORY_BYTES}")]
    OverrideTooSmall { requested: usize },
}

/// The current RLIMIT_MEMLOCK soft limit in bytes; `None` when unlimited.
pub fn memlock_limit_bytes() -> std::io::Result<Option<u64>> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// Locked bytes one executor's rings take at `depth` (SQ entries 64 B, CQ twice as many 16 B entries,
/// the index array, and a page of headers), rounded up to pages.
fn ring_bytes(depth: usize) -> usize {
    let bytes = depth * 64 + depth * 2 * 16 + depth * 4 + 4096;
    bytes.div_ceil(4096) * 4096 * RINGS_PER_EXECUTOR
}

fn locked_bytes(budget: IoBudget) -> usize {
    budget.io_memory_bytes * RINGS_PER_EXECUTOR + ring_bytes(budget.ring_depth)
}

/// Sizes each shard's io memory and ring depth so `shards` executors fit under `limit` (None = unlimited).
/// `io_memory_override` is the config's `io_memory_bytes`.
pub fn plan(limit: Option<u64>, shards: usize, io_memory_override: Option<usize>) -> Result<IoBudget, IoBudgetError> {
    assert!(shards > 0);
    if let Some(requested) = io_memory_override {
        if requested < MIN_IO_MEMORY_BYTES {
            return Err(IoBudgetError::OverrideTooSmall { requested });
        }
    }
    let preferred = IoBudget {
        io_memory_bytes: io_memory_override.unwrap_or(PREFERRED_IO_MEMORY_BYTES),
        ring_depth: PREFERRED_RING_DEPTH,
    };
    let Some(limit) = limit else {
        return Ok(preferred);
    };
    let limit_kib = limit / 1024;
    if limit < GLOMMIO_MIN_MEMLOCK_BYTES {
        return Err(IoBudgetError::BelowGlommioMinimum { limit_kib });
    }
    let per_shard = (limit * USABLE_PERCENT / 100 / shards as u64) as usize;
    if locked_bytes(preferred) <= per_shard {
        return Ok(preferred);
    }
    let smallest = IoBudget { io_memory_bytes: MIN_IO_MEMORY_BYTES, ring_depth: MIN_RING_DEPTH };
    if locked_bytes(smallest) > per_shard {
        let needed_kib = (locked_bytes(smallest) as u64 * 100 / USABLE_PERCENT).div_ceil(1024);
        return Err(IoBudgetError::TooManyShards { limit_kib, shards, needed_kib });
    }
    // Keep the preferred ring depth if the minimum io memory still fits beside it, else shrink both.
    let mut ring_depth = PREFERRED_RING_DEPTH;
    while ring_depth > MIN_RING_DEPTH && locked_bytes(IoBudget { ring_depth, ..smallest }) > per_shard {
        ring_depth /= 2;
    }
    let room = (per_shard - ring_bytes(ring_depth)) / RINGS_PER_EXECUTOR;
    let allowed = room / 4096 * 4096;
    if let Some(requested) = io_memory_override {
        return Err(IoBudgetError::OverrideTooLarge { requested, shards, limit_kib, allowed });
    }
    Ok(IoBudget { io_memory_bytes: allowed.min(PREFERRED_IO_MEMORY_BYTES), ring_depth })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn unlimited_gets_the_preferred_sizes() {
        let budget = plan(None, 64, None).unwrap();
        assert_eq!(budget, IoBudget { io_memory_bytes: PREFERRED_IO_MEMORY_BYTES, ring_depth: PREFERRED_RING_DEPTH });
    }

    #[test]
    fn eight_mib_fits_two_shards_at_preferred_sizes() {
        let budget = plan(Some(8 * MIB), 2, None).unwrap();
        assert_eq!(budget.io_memory_bytes, PREFERRED_IO_MEMORY_BYTES);
        assert!(locked_bytes(budget) as u64 * 2 <= 8 * MIB);
    }

    #[test]
    fn many_shards_shrink_io_memory_but_stay_under_the_limit() {
        for shards in [4, 8, 16, 24] {
            let budget = plan(Some(8 * MIB), shards, None).unwrap();
            assert!(budget.io_memory_bytes >= MIN_IO_MEMORY_BYTES);
            assert!(budget.io_memory_bytes < PREFERRED_IO_MEMORY_BYTES, "{shards} shards: {budget:?}");
            assert!((locked_bytes(budget) * shards) as u64 <= 8 * MIB, "{shards} shards: {budget:?}");
        }
    }

    #[test]
    fn too_many_shards_is_a_clear_error() {
        let err = plan(Some(8 * MIB), 200, None).unwrap_err();
        assert!(matches!(err, IoBudgetError::TooManyShards { shards: 200, .. }));
        assert!(err.to_string().contains("ulimit -l"), "{err}");
    }

    #[test]
    fn a_limit_below_glommios_minimum_is_refused() {
        let err = plan(Some(256 * 1024), 1, None).unwrap_err();
        assert_eq!(err, IoBudgetError::BelowGlommioMinimum { limit_kib: 256 });
    }

    #[test]
    fn an_override_that_does_not_fit_is_refused() {
        let err = plan(Some(8 * MIB), 2, Some(4 * MIB as usize)).unwrap_err();
        assert!(matches!(err, IoBudgetError::OverrideTooLarge { .. }), "{err}");
        assert!(plan(Some(8 * MIB), 2, Some(1024)).is_err());
        assert_eq!(plan(Some(8 * MIB), 2, Some(256 * 1024)).unwrap().io_memory_bytes, 256 * 1024);
    }

    #[test]
    fn this_process_limit_is_readable() {
        memlock_limit_bytes().unwrap();
    }
}
