//! Stopping the shards. SIGINT/SIGTERM (or a failed start) reaches every shard as a write to its own
//! eventfd, on which the shard keeps one read request armed in its ring: a sleeping shard wakes through
//! I/O, with no flag polling and no timer that has to fire.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The process side: one eventfd per shard.
#[derive(Clone)]
pub struct StopSender {
    ends: Arc<[Arc<OwnedFd>]>,
}

/// A shard's end: the eventfd its ring reads.
pub struct StopReceiver {
    fd: Arc<OwnedFd>,
}

/// One stop channel per shard; element `i` of the receivers goes to shard `i`.
pub fn stop_channels(shards: usize) -> io::Result<(StopSender, Vec<StopReceiver>)> {
    let mut ends = Vec::with_capacity(shards);
    for _ in 0..shards {
        // SAFETY: plain eventfd(2); the descriptor is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        ends.push(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    let receivers = ends.iter().map(|fd| StopReceiver { fd: fd.clone() }).collect();
    Ok((StopSender { ends: ends.into() }, receivers))
}

impl StopSender {
    /// Tells every shard to stop (repeating it is harmless).
    pub fn stop_all(&self) {
        for end in self.ends.iter() {
            let one: u64 = 1;
            // SAFETY: write(2) of 8 bytes from a local onto an eventfd we own.
            unsafe { libc::write(end.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Stops every shard on the first SIGINT or SIGTERM.
    pub fn on_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let sender = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for signal in signals.forever() {
                tracing::info!(signal, "stopping");
                sender.stop_all();
            }
        })?;
        Ok(())
    }
}

impl StopReceiver {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether a stop was requested, without waiting (for a shard that is not in its loop yet).
    pub fn requested(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll(2) on one descriptor we own, not waiting.
        unsafe { libc::poll(&mut poll, 1, 0) > 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_seen_by_every_shard() {
        let (sender, receivers) = stop_channels(2).unwrap();
        assert!(receivers.iter().all(|receiver| !receiver.requested()));
        sender.stop_all();
        assert!(receivers.iter().all(StopReceiver::requested));
    }
}
