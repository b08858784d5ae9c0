//! Which connections have something to read (or, for a blocked writer, room to write), without a task or
//! a glommio poll per connection. Every socket of a shard is registered once, edge-triggered, in one epoll
//! instance per shard thread, tagged with its `ConnId`. The shard's read pump waits on that epoll instance
//! through a single glommio poll (the `Doorbell`) and drains it with `epoll_wait`. An idle connection
//! therefore costs no task, no future and no glommio poll source (about 500 bytes each), only its epoll
//! entry in the kernel.
//!
//! The local ready list carries connections that epoll will not report again although they need reading:
//! new and adopted connections, and those the pump left with input still pending (it reads a few times
//! per connection per turn). It is thread-local because a shard is one executor on one thread.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;
use futures_lite::AsyncRead;

use crate::broker::ConnId;

/// Events taken from epoll per `epoll_wait` call (more are taken by calling again).
const EVENTS_PER_WAIT: usize = 256;
const READ_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
const WRITE_EVENTS: u32 = READ_EVENTS | libc::EPOLLOUT as u32;
const CLOSED_EVENTS: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

#[derive(Default)]
struct ShardReadiness {
    /// Connections epoll reported, read first in the pump's next round: input that arrived on an
    /// established connection (a PUBACK, say) goes to the core before a newer connection's CONNECT.
    reported: Vec<ConnId>,
    /// Connections marked to be read (new, adopted, or left with input pending).
    marked: Vec<ConnId>,
    pump: Option<Waker>,
    /// Writer tasks waiting for room in their socket.
    writers: AHashMap<ConnId, Waker>,
    epoll: Option<OwnedFd>,
}

thread_local! {
    static READINESS: RefCell<ShardReadiness> = RefCell::new(ShardReadiness::default());
}

impl ShardReadiness {
    fn epoll_fd(&mut self) -> io::Result<RawFd> {
        if let Some(epoll) = &self.epoll {
            return Ok(epoll.as_raw_fd());
        }
        // SAFETY: plain epoll_create1(2); the descriptor is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = epoll.as_raw_fd();
        self.epoll = Some(epoll);
        Ok(raw)
    }
}

fn epoll_ctl(op: libc::c_int, fd: RawFd, conn: ConnId, events: u32) -> io::Result<()> {
    READINESS.with(|readiness| {
        let epoll = readiness.borrow_mut().epoll_fd()?;
        let mut event = libc::epoll_event { events, u64: conn.0 };
        // SAFETY: epoll_ctl(2) on descriptors this shard owns, with a valid event struct.
        if unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Watches the socket `fd` of `conn` for input (and end of stream) on this shard.
pub fn register(fd: RawFd, conn: ConnId) -> io::Result<()> {
    epoll_ctl(libc::EPOLL_CTL_ADD, fd, conn, READ_EVENTS)
}

/// Stops watching `fd` (before it moves to another shard: a duplicate keeps the socket open).
pub fn deregister(fd: RawFd) {
    if let Err(err) = epoll_ctl(libc::EPOLL_CTL_DEL, fd, ConnId(0), 0) {
        tracing::debug!(%err, "epoll deregistration failed");
    }
}

/// Queues `conn` for the read pump of this thread and wakes the pump.
pub fn mark_ready(conn: ConnId) {
    let pump = READINESS.with(|readiness| {
        let mut readiness = readiness.borrow_mut();
        readiness.marked.push(conn);
        readiness.pump.take()
    });
    if let Some(pump) = pump {
        pump.wake();
    }
}

/// Resolves once the socket `fd` of `conn` has room to write (or failed). Call only after a write found
/// it full. Dropping the future forgets the wait.
pub async fn writable(fd: RawFd, conn: ConnId) -> io::Result<()> {
    let mut armed = false;
    let guard = WriterGuard(conn);
    let result = std::future::poll_fn(|cx| {
        if armed && READINESS.with(|readiness| !readiness.borrow().writers.contains_key(&conn)) {
            return Poll::Ready(Ok(()));
        }
        READINESS.with(|readiness| readiness.borrow_mut().writers.insert(conn, cx.waker().clone()));
        if !armed {
            armed = true;
            // Modifying re-checks the socket: if it has room already, the event comes at once.
            if let Err(err) = epoll_ctl(libc::EPOLL_CTL_MOD, fd, conn, WRITE_EVENTS) {
                return Poll::Ready(Err(err));
            }
        }
        Poll::Pending
    })
    .await;
    drop(guard);
    result
}

/// Removes a writer's waker when its wait ends or is dropped.
struct WriterGuard(ConnId);

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let _ = READINESS.try_with(|readiness| readiness.borrow_mut().writers.remove(&self.0));
    }
}

/// The one glommio poll of the shard, on its epoll instance. glommio 0.9 offers readiness only through its
/// socket types, whose constructor arms a poll for input on the descriptor; so the doorbell is such a
/// stream over a duplicate of the epoll descriptor. It rings once (the poll completes, a read then fails
/// with ENOTSOCK, which only says "look") and is replaced by a fresh one after each ring.
pub struct Doorbell {
    stream: Option<glommio::net::TcpStream>,
}

impl Doorbell {
    /// Must be created inside the shard's executor (glommio registers the poll with its reactor).
    pub fn new() -> io::Result<Self> {
        let mut doorbell = Doorbell { stream: None };
        doorbell.arm()?;
        Ok(doorbell)
    }

    fn arm(&mut self) -> io::Result<()> {
        let epoll = READINESS.with(|readiness| readiness.borrow_mut().epoll_fd())?;
        // SAFETY: fcntl(2) duplicating a descriptor we own; the duplicate is owned by the stream.
        let duplicate = unsafe { libc::fcntl(epoll, libc::F_DUPFD_CLOEXEC, 0) };
        if duplicate < 0 {
            return Err(io::Error::last_os_error());
        }
        self.stream = Some(unsafe { <glommio::net::TcpStream as FromRawFd>::from_raw_fd(duplicate) });
        Ok(())
    }

    /// `Ready` when the epoll instance may have events (the doorbell is then re-armed).
    fn poll_ring(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Without a stream (re-arming failed, logged) nothing will ring again.
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Pending;
        };
        let mut byte = [0u8; 1];
        match Pin::new(stream).poll_read(cx, &mut byte) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.stream = None;
                if let Err(err) = self.arm() {
                    tracing::error!(%err, "cannot re-arm the shard's epoll doorbell");
                }
                Poll::Ready(())
            }
        }
    }
}

/// Moves what epoll reports into the ready list and wakes writers whose socket has room.
fn drain_epoll() {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    loop {
        let epoll = READINESS.with(|readiness| readiness.borrow_mut().epoll_fd());
        let Ok(epoll) = epoll else { return };
        // SAFETY: epoll_wait(2) into a buffer of EVENTS_PER_WAIT entries, without blocking.
        let count = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS_PER_WAIT as i32, 0) };
        if count <= 0 {
            return;
        }
        let mut woken = Vec::new();
        READINESS.with(|readiness| {
            let mut readiness = readiness.borrow_mut();
            for event in &events[..count as usize] {
                let (flags, conn) = (event.events, ConnId(event.u64));
                if flags & (READ_EVENTS | CLOSED_EVENTS) != 0 {
                    readiness.reported.push(conn);
                }
                if flags & (libc::EPOLLOUT as u32 | CLOSED_EVENTS) != 0 && !readiness.writers.is_empty() {
                    woken.extend(readiness.writers.remove(&conn));
                }
            }
        });
        woken.into_iter().for_each(Waker::wake);
        if (count as usize) < EVENTS_PER_WAIT {
            return;
        }
    }
}

/// Moves the connections ready to read into `batch` (which must be empty; those epoll reported first), or arranges for the pump to be
/// woken (by the doorbell or `mark_ready`) and returns `Pending` when there are none.
pub fn poll_ready(cx: &mut Context<'_>, batch: &mut Vec<ConnId>, doorbell: &mut Doorbell) -> Poll<()> {
    while doorbell.poll_ring(cx).is_ready() {
        drain_epoll();
    }
    READINESS.with(|readiness| {
        let mut readiness = readiness.borrow_mut();
        if readiness.reported.is_empty() && readiness.marked.is_empty() {
            readiness.pump = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut readiness.reported, batch);
        batch.append(&mut readiness.marked);
        Poll::Ready(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn marked_and_epoll_reported_connections_reach_the_pump() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("executor");
        executor.run(async {
            let mut doorbell = Doorbell::new().expect("doorbell");
            let (ours, mut peer) = UnixStream::pair().expect("socket pair");
            register(ours.as_raw_fd(), ConnId(7)).expect("register");
            let mut batch = Vec::new();

            mark_ready(ConnId(9));
            std::future::poll_fn(|cx| poll_ready(cx, &mut batch, &mut doorbell)).await;
            assert_eq!(batch, vec![ConnId(9)], "marked connections come first, nothing else is ready");
            batch.clear();

            peer.write_all(b"x").expect("write");
            std::future::poll_fn(|cx| poll_ready(cx, &mut batch, &mut doorbell)).await;
            assert_eq!(batch, vec![ConnId(7)], "input on a registered socket rings the doorbell");
            batch.clear();

            peer.write_all(b"y").expect("write");
            std::future::poll_fn(|cx| poll_ready(cx, &mut batch, &mut doorbell)).await;
            assert_eq!(batch, vec![ConnId(7)], "the re-armed doorbell rings again (edge-triggered: new input)");
            peer.write_all(b"z").expect("write");
            mark_ready(ConnId(9));
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            std::future::poll_fn(|cx| poll_ready(cx, &mut batch, &mut doorbell)).await;
            assert_eq!(batch, vec![ConnId(7), ConnId(9)], "input on established connections is read first");
            deregister(ours.as_raw_fd());
        });
    }
}
