//! Which CPUs the shards run on: the process affinity mask (`sched_getaffinity`), the default shard count
//! taken from it, and the CPU each shard is pinned to.
//!
//! Shards are pinned only to CPUs the process may use. When there are more shards than allowed CPUs
//! (`taskset -c 0 shardmq --shards 2`), shards share CPUs round-robin (both on CPU 0 in that example) and
//! the runtime logs a warning: that is a legal setup for tests and small machines, just not a fast one.

use std::io;

/// CPUs in this process's affinity mask, ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it and we only read it after success.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpus: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the process affinity mask holds no CPU"));
    }
    Ok(cpus)
}

/// The CPU each of `shards` shards is pinned to: the allowed CPUs in order, wrapping around when there are
/// more shards than CPUs. `allowed` must not be empty.
pub fn shard_cpus(shards: usize, allowed: &[usize]) -> Vec<usize> {
    assert!(!allowed.is_empty(), "no CPU to place shards on");
    (0..shards).map(|shard| allowed[shard % allowed.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_of_this_process_is_read() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        let online = std::thread::available_parallelism().unwrap().get();
        assert!(cpus.len() <= online.max(cpus.len()));
        assert!(cpus.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn shards_take_allowed_cpus_in_order() {
        assert_eq!(shard_cpus(2, &[3, 5, 7]), vec![3, 5]);
        assert_eq!(shard_cpus(1, &[0]), vec![0]);
    }

    #[test]
    fn more_shards_than_cpus_share_only_allowed_cpus() {
        assert_eq!(shard_cpus(2, &[0]), vec![0, 0]);
        assert_eq!(shard_cpus(5, &[2, 6]), vec![2, 6, 2, 6, 2]);
    }

    #[test]
    fn a_restricted_mask_is_honoured() {
        // Restrict this test thread to its first allowed CPU and read the mask back.
        let first = allowed_cpus().unwrap()[0];
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(first, &mut set) };
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(rc, 0);
        assert_eq!(allowed_cpus().unwrap(), vec![first]);
    }
}
