//! One connection on its shard: the socket, at most a partial packet and the frames the socket has not
//! taken yet (`ConnSlot`); the shard's read pump (read -> decode -> core for every ready connection) and,
//! only while a socket is full, a writer task for it.
//!
//! An idle connection holds its descriptor and a few flags: no read buffer (reads land in the shard's
//! buffer), no task and no glommio poll (the shard's epoll reports it, see `readiness`), no timer
//! (keep-alive lives in the core's timer wheel) and no queue capacity.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;

use super::readiness;
use super::vectored_write::write_frames;
use super::{PermitGuard, ShardReadBuffer};
use crate::broker::ConnId;
use crate::protocol::{decode_packet, ProtocolVersion};
use crate::shard::placement::{move_target, Handoff};
use crate::shard::turn::{Shard, ShardMeshItem};

/// Reads one ready connection gets before the pump moves on to the next.
const READS_PER_WAKE: usize = 4;
/// How long a closing connection may take to accept its last frames before it is closed anyway.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ConnSlot {
    pub conn: ConnId,
    socket: OwnedFd,
    partial: RefCell<Option<BytesMut>>,
    unsent: RefCell<VecDeque<Bytes>>,
    writer_active: Cell<bool>,
    /// The core closed it (or the server is stopping): write what is left, then close the socket.
    closing: Cell<bool>,
    /// The core no longer knows this connection (lost, closed or handed off).
    ended: Cell<bool>,
    /// The first packet has been seen, so home-shard placement is decided.
    placed: Cell<bool>,
    /// Input was malformed or the connection moved: nothing more is read here.
    reading_stopped: Cell<bool>,
    _permit: PermitGuard,
}

/// What a read produced.
enum Filled {
    /// Input: the partial packet plus the new bytes.
    Data(BytesMut),
    /// Nothing to read now.
    Empty,
    Eof,
    Failed(io::Error),
}

/// Whether the reader keeps reading after feeding input to the core.
#[derive(PartialEq, Eq)]
enum InputStep {
    Continue,
    /// Malformed input or the connection moved to another shard: stop reading here.
    Stop,
}

impl ConnSlot {
    fn new(conn: ConnId, socket: OwnedFd, permit: PermitGuard) -> Self {
        ConnSlot {
            conn,
            socket,
            partial: RefCell::new(None),
            unsent: RefCell::new(VecDeque::new()),
            writer_active: Cell::new(false),
            closing: Cell::new(false),
            ended: Cell::new(false),
            placed: Cell::new(false),
            reading_stopped: Cell::new(false),
            _permit: permit,
        }
    }

    pub fn writer_active(&self) -> bool {
        self.writer_active.get()
    }

    pub fn mark_closing(&self) {
        self.closing.set(true);
        self.ended.set(true);
    }

    /// Marks the connection ended; true the first time (the core must then be told).
    pub fn mark_ended(&self) -> bool {
        !self.ended.replace(true)
    }

    pub fn queue_frames(&self, frames: impl Iterator<Item = Bytes>) {
        self.unsent.borrow_mut().extend(frames);
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Writes the unsent frames now (one `sendmsg`); if the socket is full, a writer task finishes later.
    /// A closing connection whose frames are all out is shut down, which also ends its reader.
    pub fn write_or_wait(self: &Rc<Self>, shard: &Rc<Shard>) {
        let result = write_frames(self.fd(), &mut self.unsent.borrow_mut());
        match result {
            Ok(_) if self.unsent.borrow().is_empty() => {
                self.release_unsent();
                self.finish_if_closing();
            }
            Ok(_) => self.spawn_writer(shard),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.spawn_writer(shard),
            Err(err) => self.write_failed(shard, &err),
        }
    }

    /// Drops the (empty) unsent queue's capacity, so an idle connection keeps nothing from its last burst.
    fn release_unsent(&self) {
        *self.unsent.borrow_mut() = VecDeque::new();
    }

    fn finish_if_closing(&self) {
        if self.closing.get() {
            self.unsent.borrow_mut().clear();
            // SAFETY: plain shutdown(2) on a descriptor this slot owns; wakes the reader with EOF.
            unsafe { libc::shutdown(self.fd(), libc::SHUT_RDWR) };
        }
    }

    fn write_failed(&self, shard: &Shard, err: &io::Error) {
        tracing::debug!(shard = shard.id, conn = self.conn.0, %err, "write failed");
        shard.connection_ended(self);
        self.closing.set(true);
        self.finish_if_closing();
    }

    fn spawn_writer(self: &Rc<Self>, shard: &Rc<Shard>) {
        if self.writer_active.replace(true) {
            return;
        }
        let writer = drain_when_writable(shard.clone(), self.clone());
        if shard.gate.spawn(writer).map(|task| task.detach()).is_err() {
            self.writer_active.set(false);
            self.closing.set(true);
            self.finish_if_closing();
        }
    }

    /// Reads into the shard's buffer; the bytes come back as this connection's input (its partial packet
    /// plus the new bytes). While waiting, the connection holds no buffer.
    fn fill(&self, reads: &RefCell<ShardReadBuffer>) -> Filled {
        let mut reads = reads.borrow_mut();
        let scratch = reads.scratch();
        loop {
            // SAFETY: recv(2) into the shard's buffer, which outlives the call.
            let read = unsafe { libc::recv(self.fd(), scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT) };
            if read > 0 {
                let partial = self.partial.borrow_mut().take();
                return Filled::Data(reads.take_input(read as usize, partial));
            }
            if read == 0 {
                return Filled::Eof;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Filled::Empty,
                _ => return Filled::Failed(err),
            }
        }
    }

    /// Keeps what is left of the input as the partial packet; nothing is kept when it was all decoded.
    fn keep_partial(&self, input: BytesMut) {
        *self.partial.borrow_mut() = (!input.is_empty()).then_some(input);
    }
}

/// A socket accepted by this shard: open it in the core and start reading.
pub fn open_accepted(shard: &Rc<Shard>, stream: TcpStream, permit: PermitGuard) {
    // The connection keeps only the descriptor: glommio's stream (and the poll it armed) goes now.
    let socket = match duplicate_fd(stream.as_raw_fd()) {
        Ok(socket) => socket,
        Err(err) => return tracing::warn!(shard = shard.id, %err, "cannot take over an accepted socket; closing it"),
    };
    drop(stream);
    set_nodelay(shard, &socket);
    let conn = shard.core.borrow_mut().open_connection(Instant::now());
    if let Err(err) = readiness::register(socket.as_raw_fd(), conn) {
        tracing::warn!(shard = shard.id, %err, "cannot watch an accepted socket; closing it");
        shard.core.borrow_mut().connection_lost(conn, Instant::now());
        return;
    }
    let slot = Rc::new(ConnSlot::new(conn, socket, permit));
    shard.conns.borrow_mut().insert(conn, slot);
    readiness::mark_ready(conn);
    // The core armed the connect timeout: the turn task must look at the new deadline.
    shard.request_turn();
}

fn set_nodelay(shard: &Shard, socket: &OwnedFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) with a pointer to an int that lives across the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        tracing::debug!(shard = shard.id, err = %io::Error::last_os_error(), "cannot set TCP_NODELAY");
    }
}

/// A new descriptor for the socket `fd` (close-on-exec), owned by the caller.
fn duplicate_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup(2) of a descriptor the caller holds; the result is a new descriptor nobody else owns.
    let duplicate = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if duplicate < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(duplicate) })
}

/// A connection handed over by another shard: open it, feed the CONNECT and the bytes read after it.
pub fn adopt(shard: &Rc<Shard>, handoff: Handoff) {
    let Handoff { fd, leftover, connect, permit } = handoff;
    if shard.is_stopping() {
        return; // dropping the descriptor closes the socket
    }
    let now = Instant::now();
    let conn = shard.core.borrow_mut().open_connection(now);
    if let Err(err) = readiness::register(fd.as_raw_fd(), conn) {
        tracing::warn!(shard = shard.id, %err, "cannot watch a handed-over socket; closing it");
        shard.core.borrow_mut().connection_lost(conn, now);
        return;
    }
    let slot = Rc::new(ConnSlot::new(conn, fd, permit));
    slot.placed.set(true);
    shard.conns.borrow_mut().insert(conn, slot.clone());
    shard.core.borrow_mut().handle_packet(conn, connect, now);
    let mut buf = leftover;
    let step = feed_input(shard, &slot, &mut buf);
    slot.keep_partial(buf);
    shard.request_turn();
    if step == InputStep::Continue {
        readiness::mark_ready(conn);
    } else {
        slot.reading_stopped.set(true);
    }
}

/// The shard's read pump: for every connection whose socket became readable, read and feed the core.
pub async fn pump_reads(shard: Rc<Shard>) {
    let mut doorbell = match readiness::Doorbell::new() {
        Ok(doorbell) => doorbell,
        Err(err) => return tracing::error!(shard = shard.id, %err, "cannot watch connections (epoll); not reading"),
    };
    let mut batch = Vec::new();
    loop {
        std::future::poll_fn(|cx| readiness::poll_ready(cx, &mut batch, &mut doorbell)).await;
        for conn in batch.drain(..) {
            let slot = shard.conns.borrow().get(&conn).cloned();
            if let Some(slot) = slot {
                read_available(&shard, &slot);
            }
        }
        shard.request_turn();
        glommio::yield_if_needed().await;
    }
}

/// Reads what the socket has (a few reads at most, then the connection goes to the back of the ready
/// list so one busy client cannot starve the others) and feeds it to the core. epoll is edge-triggered:
/// a socket is read until a read finds nothing, or it is queued to be read again. A short read is not
/// enough: the end of the stream may have arrived with the last bytes, and epoll will not report it again.
fn read_available(shard: &Rc<Shard>, slot: &Rc<ConnSlot>) {
    for _ in 0..READS_PER_WAKE {
        if slot.reading_stopped.get() || slot.ended.get() {
            return;
        }
        match slot.fill(&shard.read_buffer) {
            Filled::Empty => return,
            Filled::Data(mut input) => {
                let step = feed_input(shard, slot, &mut input);
                slot.keep_partial(input);
                if step == InputStep::Stop {
                    slot.reading_stopped.set(true);
                    return;
                }
            }
            Filled::Eof => return shard.connection_ended(slot),
            Filled::Failed(err) => {
                tracing::debug!(shard = shard.id, conn = slot.conn.0, %err, "read failed");
                return shard.connection_ended(slot);
            }
        }
    }
    readiness::mark_ready(slot.conn);
}

/// Decodes every complete packet in `buf` and hands it to the core (or, for a CONNECT homed on another
/// shard, hands the connection over). What remains in `buf` is a partial packet.
fn feed_input(shard: &Rc<Shard>, slot: &Rc<ConnSlot>, buf: &mut BytesMut) -> InputStep {
    let now = Instant::now();
    let max_packet_size_bytes = shard.settings.max_packet_size_bytes;
    loop {
        let version = shard.core.borrow().protocol_version(slot.conn).unwrap_or(ProtocolVersion::V5);
        match decode_packet(buf, version, max_packet_size_bytes) {
            Ok(None) => return InputStep::Continue,
            Ok(Some(packet)) => {
                if !slot.placed.replace(true) {
                    if let Some(home) = move_target(&packet, shard.id, shard.shard_count) {
                        hand_off(shard, slot, packet, std::mem::take(buf), home);
                        return InputStep::Stop;
                    }
                }
                shard.core.borrow_mut().handle_packet(slot.conn, packet, now);
                if slot.ended.get() {
                    return InputStep::Stop;
                }
            }
            Err(err) => {
                shard.core.borrow_mut().handle_decode_error(slot.conn, &err, now);
                return InputStep::Stop;
            }
        }
    }
}

/// Moves the connection to `home`: this core forgets it (it had not seen a CONNECT yet), the socket is
/// duplicated into the handoff, and this shard's descriptor closes when the slot drops.
fn hand_off(shard: &Rc<Shard>, slot: &Rc<ConnSlot>, connect: crate::protocol::Packet, leftover: BytesMut, home: usize) {
    slot.ended.set(true);
    shard.core.borrow_mut().forget_connection(slot.conn);
    shard.conns.borrow_mut().remove(&slot.conn);
    readiness::deregister(slot.fd());
    match duplicate_fd(slot.fd()) {
        Ok(fd) => {
            tracing::trace!(shard = shard.id, home, "connection moves to its home shard");
            let permit = shard.permits.for_handoff();
            shard.push_mesh(home, ShardMeshItem::Handoff(Handoff { fd, leftover, connect, permit }));
        }
        Err(err) => tracing::warn!(shard = shard.id, home, %err, "cannot hand connection over; closing it"),
    }
}

/// The writer task: runs only while the socket is full. Waits for room, writes, takes more output from
/// the core until nothing is left, then (for a closing connection) shuts the socket down.
async fn drain_when_writable(shard: Rc<Shard>, slot: Rc<ConnSlot>) {
    loop {
        let room = if slot.closing.get() {
            let timeout = async {
                glommio::timer::sleep(CLOSE_FLUSH_TIMEOUT).await;
                Err(io::Error::from(io::ErrorKind::TimedOut))
            };
            futures_lite::future::or(readiness::writable(slot.fd(), slot.conn), timeout).await
        } else {
            readiness::writable(slot.fd(), slot.conn).await
        };
        if let Err(err) = room {
            slot.writer_active.set(false);
            slot.write_failed(&shard, &err);
            return;
        }
        if !slot.closing.get() && slot.unsent.borrow().is_empty() {
            shard.take_output(&slot);
        }
        let result = write_frames(slot.fd(), &mut slot.unsent.borrow_mut());
        match result {
            Ok(_) if slot.unsent.borrow().is_empty() => {
                if !slot.closing.get() {
                    shard.take_output(&slot);
                    if !slot.unsent.borrow().is_empty() {
                        continue;
                    }
                }
                slot.writer_active.set(false);
                slot.release_unsent();
                slot.finish_if_closing();
                return;
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => {
                slot.writer_active.set(false);
                slot.write_failed(&shard, &err);
                return;
            }
        }
    }
}
