//! One connection as its shard's runtime holds it: the socket, at most a partial packet, the frames of the
//! send in flight, its transport (TLS, WebSocket) when it is not plain TCP, and a few state bits.
//!
//! An idle connection holds its descriptor and these bits only: no read buffer (receives land in the
//! shard's provided buffers), no send batch (taken from the shard's pool per send and returned after),
//! no task, no timer (keep-alive lives in the core's timer wheel) and no queue capacity. The slot builds
//! the requests for its socket and digests their completions; the shard submits them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

use super::input::{feed_input, InputStep, Placement};
use super::placement::Handoff;
use super::send::SendBatch;
use super::PermitGuard;
use crate::broker::{ConnId, InputGate, ShardCore};
use crate::protocol::Packet;
use crate::transport::BoxedTransport;

const PLACED: u8 = 1;
const RECV_ARMED: u8 = 1 << 1;
const READING_STOPPED: u8 = 1 << 2;
const CLOSING: u8 = 1 << 3;
const ENDED: u8 = 1 << 4;
const SHUT_DOWN: u8 = 1 << 5;
const TRANSPORT_CLOSED: u8 = 1 << 6;
/// The client is owed too much (`InputStep::Pause`): no receive is armed and what still arrives is kept
/// undecoded until `resume_input`.
const INPUT_PAUSED: u8 = 1 << 7;

pub struct ConnSlot {
    conn: ConnId,
    fd: OwnedFd,
    listener: u16,
    state: u8,
    /// A partial packet and the transport, boxed together: a plain TCP connection between packets (the
    /// common idle case) has neither, and then the slot holds only a null pointer for both.
    extra: Option<Box<SlotExtra>>,
    /// The frames of the send in flight (`None`: no send in flight).
    send: Option<Box<SendBatch>>,
    _permit: PermitGuard,
}

#[derive(Default)]
struct SlotExtra {
    partial: Option<BytesMut>,
    transport: Option<BoxedTransport>,
}

/// What a send completion leaves to do.
pub enum SendStep {
    /// Part was sent, or none for want of room: submit the rest as a send that waits for room (the batch
    /// stays in flight).
    Again(*const libc::msghdr),
    /// All was sent; the batch went back to the pool.
    Done,
    Failed(io::Error),
}

impl ConnSlot {
    /// `placed`: its home shard is decided (a single shard, or a connection handed over to its home).
    pub fn new(
        conn: ConnId,
        fd: OwnedFd,
        listener: u16,
        transport: Option<BoxedTransport>,
        permit: PermitGuard,
        placed: bool,
    ) -> Self {
        ConnSlot {
            conn,
            fd,
            listener,
            state: if placed { PLACED } else { 0 },
            extra: transport.map(|transport| Box::new(SlotExtra { partial: None, transport: Some(transport) })),
            send: None,
            _permit: permit,
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn listener(&self) -> u16 {
        self.listener
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn has(&self, bit: u8) -> bool {
        self.state & bit != 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.state |= bit;
        } else {
            self.state &= !bit;
        }
    }

    pub fn is_placed(&self) -> bool {
        self.has(PLACED)
    }

    /// Whether a receive should be armed now (none armed, still reading).
    pub fn wants_recv(&self) -> bool {
        !self.has(RECV_ARMED) && !self.has(READING_STOPPED) && !self.has(SHUT_DOWN) && !self.has(INPUT_PAUSED)
    }

    /// Whether a receive is armed (a multishot one to cancel when input pauses).
    pub fn recv_is_armed(&self) -> bool {
        self.has(RECV_ARMED)
    }

    pub fn input_paused(&self) -> bool {
        self.has(INPUT_PAUSED)
    }

    /// A receive was armed; `multishot` unless the home shard is still undecided (then one packet's worth
    /// is read at a time, so no receive is in flight when the connection moves).
    pub fn recv_armed(&mut self) -> bool {
        self.set(RECV_ARMED, true);
        self.is_placed()
    }

    /// The armed receive ended (its last completion came).
    pub fn recv_ended(&mut self) {
        self.set(RECV_ARMED, false);
    }

    pub fn is_reading(&self) -> bool {
        !self.has(READING_STOPPED) && !self.has(ENDED)
    }

    pub fn stop_reading(&mut self) {
        self.set(READING_STOPPED, true);
    }

    /// Bytes `wire` arrived: through the transport (if any) into the partial packet, then decoded and fed
    /// to the core. A transport failure is returned as `Err` (its goodbye, if any, is left to send).
    pub fn input(
        &mut self,
        wire: &[u8],
        core: &mut ShardCore,
        shard: usize,
        shard_count: usize,
        now: Instant,
    ) -> Result<InputStep, String> {
        let mut transport_failed = None;
        let partial = self.extra.as_mut().and_then(|extra| extra.partial.take());
        let transport = self.extra.as_mut().and_then(|extra| extra.transport.as_mut());
        let mut buf = match (transport, partial) {
            (Some(transport), partial) => {
                let mut plain = partial.unwrap_or_default();
                // What came before a failure or a close (a DISCONNECT, say) is still decoded below.
                if let Err(err) = transport.received(wire, &mut plain) {
                    transport_failed = Some(format!("{} transport: {err}", transport.name()));
                }
                // The CONNECT comes after the handshake: the core learns who the certificate names first.
                if !plain.is_empty() && core.protocol_version(self.conn).is_none() {
                    pass_peer_identity(transport.as_ref(), core, self.conn);
                }
                plain
            }
            (None, Some(mut partial)) => {
                partial.extend_from_slice(wire);
                partial
            }
            // An exact copy: decoded packets pin only the bytes of this read, never a pooled buffer.
            (None, None) => BytesMut::from(wire),
        };
        let placement = if self.is_placed() { Placement::Decided } else { Placement::Undecided { shard, shard_count } };
        // Paused: what a receive still in flight brought is kept undecoded (bounded by the shard's
        // provided buffers, since no receive is armed again until `resume_input`).
        let step =
            if self.input_paused() { InputStep::Pause } else { feed_input(core, self.conn, &mut buf, placement, now) };
        self.set(INPUT_PAUSED, matches!(step, InputStep::Pause));
        if !matches!(step, InputStep::MoveTo { .. }) {
            self.set(PLACED, true);
        }
        if matches!(step, InputStep::MoveTo { .. }) || !buf.is_empty() {
            self.keep_partial(buf);
        } else {
            self.drop_empty_extra();
        }
        match transport_failed {
            Some(reason) => Err(reason),
            None => Ok(step),
        }
    }

    /// Tells the core who the transport says the peer is, before it handles the handed-over CONNECT.
    pub fn pass_peer_identity(&self, core: &mut ShardCore) {
        if let Some(transport) = self.extra.as_ref().and_then(|extra| extra.transport.as_ref()) {
            pass_peer_identity(transport.as_ref(), core, self.conn);
        }
    }

    /// Input that came with a handoff, fed once the connection is opened here.
    pub fn input_leftover(&mut self, leftover: BytesMut, core: &mut ShardCore, now: Instant) -> InputStep {
        let mut buf = leftover;
        // The handed-over CONNECT may be waiting for an auth backend: then what came after it waits too.
        let step = match core.input_gate(self.conn, now) {
            InputGate::Open => feed_input(core, self.conn, &mut buf, Placement::Decided, now),
            InputGate::Paused => InputStep::Pause,
            InputGate::Closed => InputStep::Stop,
        };
        self.set(INPUT_PAUSED, matches!(step, InputStep::Pause));
        if !buf.is_empty() {
            self.keep_partial(buf);
        }
        step
    }

    /// A paused connection whose client is no longer owed too much: decodes what was kept and reads on.
    /// `None` while it stays paused (or was not paused); the step of the kept input otherwise.
    pub fn resume_input(&mut self, core: &mut ShardCore, now: Instant) -> Option<InputStep> {
        if !self.input_paused() || !self.is_reading() {
            return None;
        }
        match core.input_gate(self.conn, now) {
            InputGate::Paused => return None,
            InputGate::Closed => return Some(InputStep::Stop),
            InputGate::Open => {}
        }
        self.set(INPUT_PAUSED, false);
        let mut buf = self.extra.as_mut().and_then(|extra| extra.partial.take()).unwrap_or_default();
        let step = feed_input(core, self.conn, &mut buf, Placement::Decided, now);
        self.set(INPUT_PAUSED, matches!(step, InputStep::Pause));
        if buf.is_empty() {
            self.drop_empty_extra();
        } else {
            self.keep_partial(buf);
        }
        Some(step)
    }

    fn keep_partial(&mut self, partial: BytesMut) {
        self.extra.get_or_insert_with(Box::default).partial = Some(partial);
    }

    /// Frees the box of a plain connection that no longer holds a partial packet.
    fn drop_empty_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|extra| extra.partial.is_none() && extra.transport.is_none()) {
            self.extra = None;
        }
    }

    fn transport_mut(&mut self) -> Option<&mut BoxedTransport> {
        self.extra.as_mut().and_then(|extra| extra.transport.as_mut())
    }

    /// Takes the core's frames for this connection (and the transport's own bytes) into a send batch and
    /// returns the message to submit; `None` when a send is in flight (its completion takes more) or there
    /// is nothing to send.
    pub fn start_send(
        &mut self,
        core: &mut ShardCore,
        frames: &mut Vec<Bytes>,
        pool: &mut Vec<Box<SendBatch>>,
    ) -> Option<*const libc::msghdr> {
        if self.send.is_some() || self.has(SHUT_DOWN) {
            return None;
        }
        frames.clear();
        core.take_output(self.conn, frames);
        let mut batch = pool.pop().unwrap_or_else(SendBatch::new);
        let closing = self.state & CLOSING != 0 && self.state & TRANSPORT_CLOSED == 0;
        if closing && self.transport_mut().is_some() {
            self.state |= TRANSPORT_CLOSED;
        }
        let conn = self.conn;
        match self.transport_mut() {
            None => batch.extend(frames.drain(..)),
            Some(transport) => {
                if closing {
                    transport.close();
                }
                let mut plain: VecDeque<Bytes> = frames.drain(..).collect();
                let mut wire = VecDeque::new();
                if !plain.is_empty() || transport.wants_write() {
                    if let Err(err) = transport.send(&mut plain, &mut wire) {
                        tracing::debug!(conn = conn.0, %err, "transport refused output");
                    }
                }
                batch.extend(wire);
            }
        }
        if batch.is_empty() {
            pool.push(batch);
            return None;
        }
        let message = batch.prepare();
        self.send = Some(batch);
        Some(message)
    }

    /// Whether the transport has bytes of its own to send (handshake records, pongs, HTTP answers).
    pub fn transport_wants_write(&self) -> bool {
        self.extra.as_ref().and_then(|extra| extra.transport.as_ref()).is_some_and(|transport| transport.wants_write())
    }

    pub fn send_in_flight(&self) -> bool {
        self.send.is_some()
    }

    /// Digests a send completion (`result`: bytes written or a negative errno).
    pub fn send_completed(&mut self, result: i32, pool: &mut Vec<Box<SendBatch>>) -> SendStep {
        let Some(mut batch) = self.send.take() else { return SendStep::Done };
        if result == -libc::EAGAIN {
            // A send that was not to wait found the socket full: all of it goes again, waiting for room.
            let message = batch.prepare();
            self.send = Some(batch);
            return SendStep::Again(message);
        }
        if result < 0 {
            batch.reset();
            pool.push(batch);
            return SendStep::Failed(io::Error::from_raw_os_error(-result));
        }
        batch.sent(result as usize);
        if batch.is_empty() {
            batch.reset();
            pool.push(batch);
            return SendStep::Done;
        }
        let message = batch.prepare();
        self.send = Some(batch);
        SendStep::Again(message)
    }

    /// The core closed the connection (or it failed): write what is left, then shut the socket down.
    pub fn mark_closing(&mut self) {
        self.set(CLOSING, true);
    }

    pub fn is_closing(&self) -> bool {
        self.has(CLOSING)
    }

    /// The core no longer knows the connection. True the first time.
    pub fn mark_ended(&mut self) -> bool {
        let first = !self.has(ENDED);
        self.set(ENDED, true);
        first
    }

    pub fn is_ended(&self) -> bool {
        self.has(ENDED)
    }

    /// Shuts the socket down (once): an armed receive then completes with end of stream and a send that
    /// waits for room fails, so every request on it ends.
    pub fn shut_down(&mut self) {
        if !self.has(SHUT_DOWN) {
            self.set(SHUT_DOWN, true);
            // SAFETY: shutdown(2) on the descriptor this slot owns.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// The peer's address (getpeername(2)); asked for by the admin client listing only.
    pub fn peer_address(&self) -> Option<std::net::SocketAddr> {
        socket2::SockRef::from(&self.fd).peer_addr().ok().and_then(|addr| addr.as_socket())
    }

    /// Whether the kernel still holds requests on this socket.
    pub fn in_flight(&self) -> bool {
        self.has(RECV_ARMED) || self.send.is_some()
    }

    /// The connection moves to its home shard with everything it has: socket, transport, unread bytes.
    pub fn into_handoff(self, connect: Packet) -> Handoff {
        debug_assert!(!self.in_flight(), "a moving connection has no request in flight");
        let SlotExtra { partial, transport } = self.extra.map(|extra| *extra).unwrap_or_default();
        Handoff {
            leftover: partial.unwrap_or_default(),
            fd: self.fd,
            listener: self.listener,
            transport,
            connect,
            permit: self._permit,
        }
    }
}

fn pass_peer_identity(transport: &(dyn crate::transport::Transport + Send), core: &mut ShardCore, conn: ConnId) {
    if let Some(common_name) = transport.peer_identity().certificate_common_name {
        core.set_peer_identity(conn, &common_name);
    }
}
