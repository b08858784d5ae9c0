//! Stopping the shards. SIGINT/SIGTERM (or a failed start) reaches every shard as one byte on its own
//! socket pair, so a parked executor wakes through I/O: no flag polling, no timer that has to fire.

use std::cell::RefCell;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;

use futures_lite::AsyncRead;

/// The process side: one socket per shard.
pub struct StopSender {
    ends: Vec<UnixStream>,
}

/// A shard's end, before its executor runs.
pub struct StopReceiver {
    fd: OwnedFd,
}

/// A shard's end inside its executor.
pub struct ShardStop {
    stream: RefCell<glommio::net::UnixStream>,
}

/// One stop channel per shard; element `i` of the receivers goes to shard `i`.
pub fn stop_channels(shards: usize) -> io::Result<(StopSender, Vec<StopReceiver>)> {
    let mut ends = Vec::with_capacity(shards);
    let mut receivers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (ours, theirs) = UnixStream::pair()?;
        ends.push(ours);
        receivers.push(StopReceiver { fd: theirs.into() });
    }
    Ok((StopSender { ends }, receivers))
}

impl StopSender {
    /// Tells every shard to stop (repeating it is harmless).
    pub fn stop_all(&self) {
        for mut end in &self.ends {
            let _ = end.write(&[1]);
        }
    }

    /// Stops every shard on the first SIGINT or SIGTERM.
    pub fn on_signals(self: &Arc<Self>) -> io::Result<()> {
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
    /// Registers the socket with this thread's executor.
    pub fn into_shard_stop(self) -> ShardStop {
        // SAFETY: the descriptor is ours; ownership moves into the glommio stream.
        let stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.fd.into_raw_fd()) };
        ShardStop { stream: RefCell::new(stream) }
    }
}

impl ShardStop {
    /// Completes once a stop was requested (or the process side is gone).
    pub async fn wait(&self) {
        let mut byte = [0u8; 1];
        let _ = std::future::poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, &mut byte)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_shard_wakes_on_stop() {
        let (sender, mut receivers) = stop_channels(1).unwrap();
        let receiver = receivers.pop().unwrap();
        let shard = std::thread::spawn(move || {
            let executor =
                glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(64 * 1024).make().unwrap();
            executor.run(async move {
                let stop = receiver.into_shard_stop();
                let started = std::time::Instant::now();
                stop.wait().await;
                started.elapsed()
            })
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        sender.stop_all();
        let waited = shard.join().unwrap();
        assert!(waited >= std::time::Duration::from_millis(150), "woke before the stop: {waited:?}");
    }
}
