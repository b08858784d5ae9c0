//! A timerfd registered in the event loop, so a send schedule can wake the loop with microsecond precision
//! (epoll's own timeout only has millisecond resolution) without spinning a core.

use std::io;
use std::os::fd::RawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

pub struct TimerFd {
    fd: RawFd,
    armed_at_ns: u64,
}

impl TimerFd {
    pub fn new(registry: &Registry, token: Token) -> io::Result<TimerFd> {
        // SAFETY: plain syscall, the fd is owned by the returned value and closed on drop.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Without this the kernel may add up to 50 µs of slack to every wake-up.
        // SAFETY: prctl with PR_SET_TIMERSLACK takes a plain integer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        registry.register(&mut SourceFd(&fd), token, Interest::READABLE)?;
        Ok(TimerFd { fd, armed_at_ns: 0 })
    }

    /// Fire at the absolute CLOCK_MONOTONIC time `deadline_ns` (no-op if already armed for it).
    pub fn arm_at(&mut self, deadline_ns: u64) {
        if deadline_ns == self.armed_at_ns {
            return;
        }
        self.armed_at_ns = deadline_ns;
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000).max(1) as libc::c_long,
            },
        };
        // SAFETY: fd is a live timerfd; spec is a valid itimerspec.
        unsafe { libc::timerfd_settime(self.fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
    }

    /// Consume the expiry so the (edge-triggered) fd can signal again.
    pub fn acknowledge(&mut self) {
        let mut expirations = 0u64;
        // SAFETY: reads at most 8 bytes into a u64 we own; a non-blocking read of an unexpired timer fails harmlessly.
        unsafe { libc::read(self.fd, (&mut expirations as *mut u64).cast(), 8) };
        self.armed_at_ns = 0;
    }
}

impl Drop for TimerFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}
