//! Which connections have something to read, without a task per connection. Each connection's socket
//! waits in glommio with a waker that is just its `ConnId` (no allocation); waking it appends the id to
//! this thread's ready list and wakes the shard's single read pump. An idle connection therefore costs no
//! task and no future, only glommio's pending poll on its socket.
//!
//! The list is thread-local: a shard is one executor on one thread, and glommio wakes a socket's waiters
//! from the reactor of the thread that owns the socket.

use std::cell::RefCell;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::broker::ConnId;

#[derive(Default)]
struct ReadyConnections {
    ids: Vec<ConnId>,
    pump: Option<Waker>,
}

thread_local! {
    static READY: RefCell<ReadyConnections> = RefCell::new(ReadyConnections::default());
}

/// Queues `conn` for the read pump of this thread and wakes the pump.
pub fn mark_ready(conn: ConnId) {
    let pump = READY.with(|ready| {
        let mut ready = ready.borrow_mut();
        ready.ids.push(conn);
        ready.pump.take()
    });
    if let Some(pump) = pump {
        pump.wake();
    }
}

/// The waker a connection's socket waits with: waking it marks the connection ready.
pub fn conn_waker(conn: ConnId) -> Waker {
    // SAFETY: the data pointer is the connection id itself, never dereferenced; the vtable functions
    // below only copy it.
    unsafe { Waker::from_raw(RawWaker::new(conn.0 as usize as *const (), &CONN_WAKER_VTABLE)) }
}

static CONN_WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_conn_waker, wake_conn, wake_conn, drop_conn_waker);

unsafe fn clone_conn_waker(data: *const ()) -> RawWaker {
    RawWaker::new(data, &CONN_WAKER_VTABLE)
}

unsafe fn wake_conn(data: *const ()) {
    mark_ready(ConnId(data as usize as u64));
}

unsafe fn drop_conn_waker(_: *const ()) {}

/// Moves the ready connections into `batch` (which must be empty), or registers the pump's waker and
/// returns `Pending` when there are none.
pub fn poll_ready(cx: &mut Context<'_>, batch: &mut Vec<ConnId>) -> Poll<()> {
    READY.with(|ready| {
        let mut ready = ready.borrow_mut();
        if ready.ids.is_empty() {
            ready.pump = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut ready.ids, batch);
        Poll::Ready(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct CountingWake(AtomicUsize);
    impl std::task::Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waking_a_connection_queues_it_and_wakes_the_pump_once() {
        let pump = Arc::new(CountingWake(AtomicUsize::new(0)));
        let pump_waker = Waker::from(pump.clone());
        let mut cx = Context::from_waker(&pump_waker);
        let mut batch = Vec::new();
        assert!(poll_ready(&mut cx, &mut batch).is_pending());

        let waker = conn_waker(ConnId(7));
        waker.wake_by_ref();
        waker.clone().wake();
        conn_waker(ConnId(9)).wake();
        assert_eq!(pump.0.load(Ordering::SeqCst), 1, "the pump is woken once until it polls again");

        assert!(poll_ready(&mut cx, &mut batch).is_ready());
        assert_eq!(batch, vec![ConnId(7), ConnId(7), ConnId(9)]);
        batch.clear();
        assert!(poll_ready(&mut cx, &mut batch).is_pending());
    }
}
