//! The event stream of one rumqttc client: a task polls the client's event loop (and stops at the first
//! connection error, so rumqttc never silently reconnects) and the test picks the events it waits for,
//! keeping the others for later waits.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many unpicked events a failure message shows.
const BACKLOG_SHOWN: usize = 20;

pub struct EventStream<E> {
    receiver: mpsc::UnboundedReceiver<E>,
    backlog: VecDeque<E>,
    poller: JoinHandle<()>,
    ended: bool,
}

impl<E: std::fmt::Debug + Send + 'static> EventStream<E> {
    /// Events arrive on `receiver` from `poller`, the task that owns the client's event loop.
    pub fn new(receiver: mpsc::UnboundedReceiver<E>, poller: JoinHandle<()>) -> Self {
        EventStream { receiver, backlog: VecDeque::new(), poller, ended: false }
    }

    /// The first event (kept ones first) that `wanted` accepts, or None after `timeout` or when the
    /// connection's events ended without one.
    pub async fn wait_for(&mut self, timeout: Duration, mut wanted: impl FnMut(&E) -> bool) -> Option<E> {
        if let Some(index) = self.backlog.iter().position(&mut wanted) {
            return self.backlog.remove(index);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Err(_elapsed) => return None,
                Ok(None) => self.ended = true,
                Ok(Some(event)) if wanted(&event) => return Some(event),
                Ok(Some(event)) => self.backlog.push_back(event),
            }
        }
        None
    }

    /// The last events received and not picked, for failure messages.
    pub fn backlog(&self) -> Vec<&E> {
        let skip = self.backlog.len().saturating_sub(BACKLOG_SHOWN);
        self.backlog.iter().skip(skip).collect()
    }

    /// Drops the connection without a DISCONNECT packet (the socket closes with the event loop).
    pub async fn abort(&mut self) {
        self.poller.abort();
        let _ = (&mut self.poller).await;
        self.ended = true;
    }
}

impl<E> Drop for EventStream<E> {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
