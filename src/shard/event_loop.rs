//! What one shard runs on its thread: one loop over one io_uring.
//!
//! ```text
//! loop {
//!     reap completions: received bytes -> transport -> codec -> core; send done/partial; accepts;
//!         control (a stop, or jobs run on the core: see `control`)
//!     take mesh batches from the other shards -> core (or adopt a handed-over connection)
//!     fire the core's due timers
//!     carry out the core's actions: one send per connection with output, closes, one mesh batch per
//!         destination shard (and a doorbell for a sleeping one)
//!     submit everything and wait for a completion, bounded by the next deadline (one io_uring_enter)
//! }
//! ```
//!
//! Everything queued for a connection in one turn leaves in one `sendmsg`; while that send is in flight
//! new frames wait in the core (whose out-queue bound applies) and go with the next send, taken when the
//! completion arrives. There is no task, no waker and no timer per turn: the loop is the scheduler.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::control::{ControlReceiver, Job};
use super::idle_trim::{self, IdleTrim, TrimStep};
use super::mesh::{MeshLinks, MeshOutbox, Shedding};
use super::ring::{request, BufferRing, Completion, Ring, RingError, Token, TokenKind};
use crate::broker::{
    run_actions, ActionTarget, ConnId, ListenerId, MemoryBudget, MeshMessage, ShardCore, ShardId, WallClock,
};
use crate::config::Config;
use crate::connection::address_limit::AddressRefusal;
use crate::connection::send::SendBatch;
use crate::connection::{
    ConnSlot, ConnTable, ConnectionLimit, ConnectionPermit, Handoff, InputStep, SendStep, SlotKey,
};
use crate::persist::LogWriter;
use crate::protocol::QoS;
use crate::transport::tls::TlsAcceptor;
use crate::transport::websocket::{WebSocketSettings, WebSocketTransport};
use crate::transport::{BoxedTransport, Stacked};

/// How long shutdown waits for connections to flush their last frames.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may take to accept its last frames before it is shut down anyway.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a shard retries mesh batches that found their queue full.
const MESH_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// Pause after a failed accept (e.g. out of descriptors) before accepting again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Least time between two log lines about connections refused at `connections_max`.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// The provided-buffer group of a shard's ring.
const READ_BUFFER_GROUP: u16 = 0;

/// What travels between shards: the core's messages and connections moving to their home shard.
// A handoff is once per connection; boxing it would add an allocation to every move and save nothing on
// the data path, whose `Core` messages are the common case.
#[allow(clippy::large_enum_variant)]
pub enum ShardMeshItem {
    Core(MeshMessage),
    Handoff(Handoff),
}

impl ShardMeshItem {
    /// What the mesh outbox may drop when the queue towards a shard stays full (see [`Shedding`]).
    pub fn shedding(&self) -> Shedding {
        match self {
            ShardMeshItem::Core(MeshMessage::Publish(message) | MeshMessage::SharedPublish { message, .. }) => {
                if message.qos == QoS::AtMostOnce {
                    Shedding::AtBound
                } else {
                    Shedding::AtTwiceBound
                }
            }
            ShardMeshItem::Core(_) | ShardMeshItem::Handoff(_) => Shedding::Never,
        }
    }
}

/// How a listener's connections are carried: plain TCP, or through a transport made per connection.
pub enum ListenerTransport {
    Plain,
    Tls(Arc<TlsAcceptor>),
    WebSocket(WebSocketSettings),
    /// WebSocket over TLS.
    WebSocketTls(Arc<TlsAcceptor>, WebSocketSettings),
}

impl ListenerTransport {
    /// The transport state of a newly accepted connection (`None` for plain TCP).
    fn accept(&self) -> Option<BoxedTransport> {
        match self {
            ListenerTransport::Plain => None,
            ListenerTransport::Tls(acceptor) => Some(Box::new(acceptor.accept())),
            ListenerTransport::WebSocket(settings) => Some(Box::new(WebSocketTransport::new(settings))),
            ListenerTransport::WebSocketTls(acceptor, settings) => {
                Some(Box::new(Stacked::new(acceptor.accept(), WebSocketTransport::new(settings))))
            }
        }
    }
}

/// One listener's socket on one shard (every shard has its own, SO_REUSEPORT) and its transport.
pub struct ListenerSocket {
    pub socket: TcpListener,
    pub transport: Arc<ListenerTransport>,
}

/// What a shard is given to run.
pub struct ShardSetup {
    pub shard: ShardId,
    pub shards: usize,
    pub config: Arc<Config>,
    pub control: ControlReceiver,
    pub permits: ConnectionPermit,
    pub links: MeshLinks<ShardMeshItem>,
    /// This shard's socket of every listener (SO_REUSEPORT), in listener order.
    pub listeners: Vec<ListenerSocket>,
    /// The shard's opened log and what it replayed to (`[persistence] dir`).
    pub log: Option<(crate::persist::ShardLog, crate::persist::RecoveredState)>,
    /// The process's memory budget, the same for every shard (`memory_max_bytes`).
    pub memory: Arc<MemoryBudget>,
}

/// One listener as a shard serves it.
struct ShardListener {
    socket: TcpListener,
    transport: Arc<ListenerTransport>,
    accepting: bool,
    retry_at: Option<Instant>,
}

pub struct Shard {
    id: ShardId,
    shard_count: usize,
    core: ShardCore,
    conns: ConnTable,
    listeners: Vec<ShardListener>,
    links: MeshLinks<ShardMeshItem>,
    outbox: MeshOutbox<ShardMeshItem>,
    permits: ConnectionPermit,
    control: ControlReceiver,
    control_buf: Box<u64>,
    jobs: Vec<Job>,
    stopping: Option<Instant>,
    /// Closing connections in the order they began closing, with when they must be done.
    close_deadlines: VecDeque<(Instant, SlotKey)>,
    /// Connections whose multishot receive ended for want of buffers: re-armed at the end of the reap.
    rearm: Vec<SlotKey>,
    refusals: RefusalLog,
    frames: Vec<Bytes>,
    /// Boxed so a batch never moves: an in-flight sendmsg points into its msghdr and iovecs.
    #[allow(clippy::vec_box)]
    batches: Vec<Box<SendBatch>>,
    completions: Vec<Completion>,
    trim: IdleTrim,
    /// The side thread writing this shard's log, and the buffer its doorbell is read into.
    writer: Option<LogWriter>,
    durable_buf: Box<u64>,
    // Dropped last: the kernel may write into the buffers until the ring is gone.
    ring: Ring,
    reads: BufferRing,
}

impl Shard {
    /// Builds the shard's ring and state on the calling thread (which the ring is bound to).
    pub fn new(setup: ShardSetup) -> Result<Shard, RingError> {
        let ShardSetup { shard, shards, config, control, permits, links, listeners, log, memory } = setup;
        let ring = Ring::new(config.ring_entries)?;
        let reads = BufferRing::new(&ring, READ_BUFFER_GROUP, config.read_buffers, config.read_buffer_bytes)?;
        links.wake().set_ring_fd(ring.fd());
        let settings = std::rc::Rc::new(config.mqtt.clone());
        let mut core = ShardCore::new(shard, shards, settings);
        core.set_memory_budget(memory);
        let writer = match log {
            Some((log, state)) => Some(start_persistence(&mut core, shard, log, state, &config.persistence)?),
            None => None,
        };
        Ok(Shard {
            id: shard,
            shard_count: shards,
            core,
            conns: ConnTable::default(),
            listeners: listeners
                .into_iter()
                .map(|ListenerSocket { socket, transport }| ShardListener {
                    socket,
                    transport,
                    accepting: false,
                    retry_at: None,
                })
                .collect(),
            outbox: MeshOutbox::new(shards, config.mesh_overflow_max_messages, ShardMeshItem::shedding),
            links,
            permits,
            control,
            control_buf: Box::new(0),
            jobs: Vec::new(),
            stopping: None,
            close_deadlines: VecDeque::new(),
            rearm: Vec::new(),
            refusals: RefusalLog::default(),
            frames: Vec::new(),
            batches: Vec::new(),
            completions: Vec::new(),
            trim: IdleTrim::new(Instant::now()),
            writer,
            durable_buf: Box::new(0),
            ring,
            reads,
        })
    }

    /// Serves until a stop arrives and every connection has flushed (or the flush timed out).
    pub fn run(mut self) {
        self.arm_control();
        self.arm_durable();
        if self.control.stop_requested() {
            self.begin_shutdown(Instant::now());
        } else {
            for index in 0..self.listeners.len() {
                self.arm_accept(index);
            }
        }
        loop {
            self.reap();
            let now = Instant::now();
            self.receive_mesh(now);
            self.fire_timers(now);
            self.persist_turn();
            self.carry_out_actions();
            self.rearm_receives();
            if let Some(since) = self.stopping {
                if self.conns.is_empty() || now.duration_since(since) > SHUTDOWN_FLUSH_TIMEOUT {
                    break;
                }
            }
            self.park(now);
        }
        self.finish_shutdown();
    }

    // ---- completions ----

    fn reap(&mut self) {
        let mut completions = std::mem::take(&mut self.completions);
        self.ring.completions(&mut completions);
        if !completions.is_empty() {
            self.trim.note_busy();
        }
        let now = Instant::now();
        for completion in completions.drain(..) {
            match completion.token.kind() {
                Some(TokenKind::Recv) => self.on_recv(completion, now),
                Some(TokenKind::Send) => self.on_send(completion),
                Some(TokenKind::Accept) => self.on_accept(completion, now),
                Some(TokenKind::Control) => self.on_control(completion, now),
                Some(TokenKind::Durable) => {
                    if let Some(writer) = &self.writer {
                        self.core.set_disk_full(writer.is_failing());
                        self.core.persisted(writer.durable_seq(), now);
                    }
                    self.arm_durable();
                }
                Some(TokenKind::Doorbell) | Some(TokenKind::Ignore) => {
                    if completion.result < 0
                        && completion.result != -libc::ECANCELED
                        && completion.result != -libc::ENOENT
                    {
                        tracing::debug!(shard = self.id, result = completion.result, "request failed");
                    }
                }
                None => tracing::warn!(shard = self.id, token = completion.token.0, "completion with an unknown token"),
            }
        }
        self.completions = completions;
    }

    /// The slot a completion's token names, if that slot is still there.
    fn full_key(&self, token: Token) -> Option<SlotKey> {
        self.conns.resolve(token.index(), |generation| token.matches_generation(generation))
    }

    fn on_recv(&mut self, completion: Completion, now: Instant) {
        let buffer = completion.buffer();
        let Some(key) = self.full_key(completion.token) else {
            if let Some(id) = buffer {
                self.reads.give_back(id);
            }
            return;
        };
        let (shard, shard_count) = (self.id, self.shard_count);
        let slot = self.conns.get_by_key(key).expect("key just found");
        if !completion.more() {
            slot.recv_ended();
        }
        let result = completion.result;
        if result > 0 {
            self.core.io_counters_mut().socket_bytes_received += result as u64;
            let id = buffer.expect("a receive with data names its buffer");
            let step = if slot.is_reading() {
                let bytes = self.reads.bytes(id, result as usize);
                Some(slot.input(bytes, &mut self.core, shard, shard_count, now))
            } else {
                None
            };
            self.reads.give_back(id);
            match step {
                None | Some(Ok(InputStep::Continue)) => {}
                Some(Ok(InputStep::Stop)) => self.conns.get_by_key(key).expect("slot").stop_reading(),
                Some(Ok(InputStep::Pause)) => self.pause_input(key, completion.more()),
                Some(Ok(InputStep::MoveTo { home, connect })) => return self.hand_off(key, home, connect),
                Some(Err(reason)) => {
                    tracing::info!(shard, conn = self.conns.get_by_key(key).map_or(0, |slot| slot.conn().0), %reason,
                        "connection closed: transport failed");
                    self.connection_ended(key, now);
                    self.flush(key);
                }
            }
            let slot = self.conns.get_by_key(key).expect("slot");
            if slot.transport_wants_write() {
                self.flush(key);
            }
            let Some(slot) = self.conns.get_by_key(key) else { return };
            if !completion.more() && slot.wants_recv() {
                self.arm_recv(key);
            }
        } else if result == -libc::ENOBUFS {
            // Every provided buffer is taken: re-armed once this reap has given buffers back. The bytes
            // wait in the socket; nothing is lost. More buffers are offered from now on.
            self.reads.ran_dry();
            self.core.io_counters_mut().receive_buffers_dry += 1;
            if !completion.more() {
                self.rearm.push(key);
            }
        } else if result == -libc::ECANCELED {
            // Cancelled by `pause_input`: reading again if the pause already ended.
            if !completion.more() && slot.wants_recv() {
                self.arm_recv(key);
            }
        } else {
            // End of stream (0) or a receive error.
            if result < 0 {
                tracing::debug!(shard, conn = slot.conn().0, err = %std::io::Error::from_raw_os_error(-result), "receive failed");
            }
            self.connection_ended(key, now);
        }
        self.finish_if_done(key);
    }

    fn on_send(&mut self, completion: Completion) {
        if completion.result > 0 {
            self.core.io_counters_mut().socket_bytes_sent += completion.result as u64;
        }
        let Some(key) = self.full_key(completion.token) else { return };
        let slot = self.conns.get_by_key(key).expect("key just found");
        match slot.send_completed(completion.result, &mut self.batches) {
            // The rest of a partial send, or all of one the socket had no room for: this one waits for room.
            SendStep::Again(message) => {
                let token = Token::new(TokenKind::Send, key.index, key.generation);
                let fd = slot.fd();
                // SAFETY: the message and its iovecs live in the slot's send batch until this completes.
                unsafe { self.ring.push(&request::sendmsg(fd, message, token)) };
            }
            SendStep::Done => self.flush(key),
            SendStep::Failed(err) => {
                tracing::debug!(shard = self.id, conn = slot.conn().0, %err, "send failed");
                self.connection_ended(key, Instant::now());
            }
        }
        self.finish_if_done(key);
    }

    /// The control eventfd was written: a stop, or jobs for the core (their actions are carried out
    /// this turn). The read is armed again first, so a write that comes while the jobs run wakes the
    /// next turn.
    fn on_control(&mut self, completion: Completion, now: Instant) {
        if completion.result < 0 && completion.result != -libc::EINTR {
            tracing::error!(shard = self.id, err = %std::io::Error::from_raw_os_error(-completion.result),
                "control eventfd read failed");
        }
        self.arm_control();
        if self.control.stop_requested() {
            self.begin_shutdown(now);
        }
        self.control.take_jobs(&mut self.jobs);
        for job in std::mem::take(&mut self.jobs) {
            job(&mut self.core, now);
        }
        if self.core.peer_addresses_wanted() {
            let conns = &mut self.conns;
            self.core.fill_peer_addresses(|conn| conns.get_by_key(conns.key_of(conn)?)?.peer_address());
        }
    }

    fn on_accept(&mut self, completion: Completion, now: Instant) {
        let index = completion.token.index() as usize;
        if !completion.more() {
            self.listeners[index].accepting = false;
        }
        if completion.result < 0 {
            if completion.result != -libc::ECANCELED {
                let err = std::io::Error::from_raw_os_error(-completion.result);
                tracing::warn!(shard = self.id, %err, "accept failed");
                self.listeners[index].retry_at = Some(now + ACCEPT_RETRY_PAUSE);
            }
            return;
        }
        // SAFETY: the accept completion hands us a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(completion.result) };
        if self.stopping.is_some() {
            return;
        }
        // One getpeername per accept, only when a per-address limit or the debug log needs it.
        let peer = match self.permits.limits_addresses() || tracing::enabled!(tracing::Level::DEBUG) {
            true => socket2::SockRef::from(&fd).peer_addr().ok().and_then(|addr| addr.as_socket()),
            false => None,
        };
        let permit = match self.permits.try_acquire_from(index, peer.map(|addr| addr.ip()), now) {
            Ok(permit) => permit,
            // Closed at accept, as Mosquitto and EMQX do: no CONNECT is read, no state is built.
            Err(limit) => {
                match limit {
                    ConnectionLimit::Address(refused) => {
                        self.core.count_refused_per_address(matches!(refused, AddressRefusal::Connections { .. }))
                    }
                    _ => self.core.count_refused_at_accept(),
                }
                return self.refusals.refused(self.id, &fd, limit);
            }
        };
        tracing::debug!(shard = self.id, peer = peer.map(tracing::field::display), "connection accepted");
        let conn = self.core.open_connection(now, ListenerId(index as u16));
        give_peer_address(&mut self.core, conn, &fd);
        let placed = self.shard_count < 2;
        let transport = self.listeners[index].transport.accept();
        let key = self.conns.insert(ConnSlot::new(conn, fd, index as u16, transport, permit, placed));
        self.arm_recv(key);
    }

    // ---- requests ----

    fn arm_control(&mut self) {
        let token = Token::new(TokenKind::Control, 0, 0);
        let buf: *mut u64 = &mut *self.control_buf;
        // SAFETY: the 8-byte buffer is boxed in the shard, which outlives the ring's requests.
        unsafe { self.ring.push(&request::read(self.control.fd(), buf.cast(), 8, token)) };
    }

    /// Keeps one read armed on the log writer's doorbell (`durability = "sync"` rings it after each sync).
    fn arm_durable(&mut self) {
        let Some(writer) = &self.writer else { return };
        let token = Token::new(TokenKind::Durable, 0, 0);
        let buf: *mut u64 = &mut *self.durable_buf;
        // SAFETY: the 8-byte buffer is boxed in the shard, which outlives the ring's requests.
        unsafe { self.ring.push(&request::read(writer.doorbell_fd(), buf.cast(), 8, token)) };
    }

    /// Ends the turn for the log: barriers to other shards are queued and the turn's records go to the
    /// writer thread (the shard never waits for the disk).
    fn persist_turn(&mut self) {
        let Some(writer) = &self.writer else { return };
        if let Some((frames, seq)) = self.core.seal_turn() {
            writer.submit(frames, seq);
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let listener = &mut self.listeners[index];
        if listener.accepting || self.stopping.is_some() {
            return;
        }
        listener.accepting = true;
        listener.retry_at = None;
        let token = Token::new(TokenKind::Accept, index as u32, 0);
        let fd = listener.socket.as_raw_fd();
        // SAFETY: an accept names no buffer.
        unsafe { self.ring.push(&request::accept(fd, token)) };
    }

    fn arm_recv(&mut self, key: SlotKey) {
        let Some(slot) = self.conns.get_by_key(key) else { return };
        if !slot.wants_recv() {
            return;
        }
        let multishot = slot.recv_armed();
        let fd = slot.fd();
        let token = Token::new(TokenKind::Recv, key.index, key.generation);
        let entry = if multishot {
            request::recv_multishot(fd, self.reads.group(), token)
        } else {
            request::recv_once(fd, self.reads.group(), token)
        };
        // SAFETY: receives take their buffer from the shard's buffer ring, which outlives the ring.
        unsafe { self.ring.push(&entry) };
    }

    fn rearm_receives(&mut self) {
        for key in std::mem::take(&mut self.rearm) {
            self.arm_recv(key);
            self.finish_if_done(key);
        }
    }

    /// Sends what the core has queued for the connection, unless a send is in flight (its completion
    /// sends the rest). A closing connection with nothing left is shut down.
    fn flush(&mut self, key: SlotKey) {
        let Some(slot) = self.conns.get_by_key(key) else { return };
        if let Some(message) = slot.start_send(&mut self.core, &mut self.frames, &mut self.batches) {
            let token = Token::new(TokenKind::Send, key.index, key.generation);
            let fd = slot.fd();
            // SAFETY: the message and its iovecs live in the slot's send batch until this completes.
            unsafe { self.ring.push_inline(&request::sendmsg_now(fd, message, token)) };
        }
        if self.conns.get_by_key(key).is_some_and(|slot| slot.input_paused()) {
            self.resume_input(key);
        }
        self.finish_if_done(key);
    }

    /// The client is owed too much (see `ShardCore::input_gate`): its multishot receive, if still armed,
    /// is cancelled, so its bytes wait in the socket and TCP pushes back on it.
    fn pause_input(&mut self, key: SlotKey, recv_armed: bool) {
        if recv_armed {
            // SAFETY: a cancel names no buffer.
            unsafe { self.ring.push(&request::cancel(Token::new(TokenKind::Recv, key.index, key.generation))) };
        }
    }

    /// After a send: a paused connection whose backlog drained decodes what it kept and reads again.
    fn resume_input(&mut self, key: SlotKey) {
        let Some(slot) = self.conns.get_by_key(key) else { return };
        match slot.resume_input(&mut self.core, Instant::now()) {
            None => return,
            Some(InputStep::Stop) => slot.stop_reading(),
            Some(_) => {}
        }
        self.arm_recv(key);
    }

    /// A closing connection whose last frames are out is shut down; a slot with nothing in flight that
    /// the core has forgotten is freed (closing its socket).
    fn finish_if_done(&mut self, key: SlotKey) {
        let Some(slot) = self.conns.get_by_key(key) else { return };
        if slot.is_closing() && !slot.send_in_flight() {
            slot.shut_down();
        }
        if slot.is_ended() && slot.is_closing() && !slot.in_flight() {
            self.conns.remove(key);
        }
    }

    // ---- connection lifecycle ----

    /// The socket ended without the core asking (end of stream, error, transport failure).
    fn connection_ended(&mut self, key: SlotKey, now: Instant) {
        let Some(slot) = self.conns.get_by_key(key) else { return };
        slot.stop_reading();
        slot.mark_closing();
        let conn = slot.conn();
        if slot.mark_ended() {
            self.conns.unmap(conn);
            self.core.connection_lost(conn, now);
        }
    }

    /// The core closed the connection: flush its last frames, then shut it down (bounded in time).
    fn start_close(&mut self, conn: ConnId, now: Instant) {
        let Some(key) = self.conns.key_of(conn) else { return };
        self.conns.unmap(conn);
        let Some(slot) = self.conns.get_by_key(key) else { return };
        slot.mark_ended();
        slot.mark_closing();
        slot.stop_reading();
        self.close_deadlines.push_back((now + CLOSE_FLUSH_TIMEOUT, key));
        self.flush(key);
    }

    fn hand_off(&mut self, key: SlotKey, home: ShardId, connect: crate::protocol::Packet) {
        let Some(slot) = self.conns.remove(key) else { return };
        self.core.forget_connection(slot.conn());
        tracing::trace!(shard = self.id, home, "connection moves to its home shard");
        self.outbox.push(home, ShardMeshItem::Handoff(slot.into_handoff(connect)));
    }

    /// A connection handed over by another shard: open it, feed the CONNECT and the bytes read after it.
    fn adopt(&mut self, handoff: Handoff, now: Instant) {
        if self.stopping.is_some() {
            return; // dropping the descriptor closes the socket
        }
        let Handoff { fd, listener, transport, leftover, connect, permit } = handoff;
        let conn = self.core.open_connection(now, ListenerId(listener));
        give_peer_address(&mut self.core, conn, &fd);
        let key = self.conns.insert(ConnSlot::new(conn, fd, listener, transport, permit, true));
        self.conns.get_by_key(key).expect("just inserted").pass_peer_identity(&mut self.core);
        self.core.handle_packet(conn, connect, now);
        let slot = self.conns.get_by_key(key).expect("just inserted");
        if !self.core.has_connection(conn)
            || matches!(slot.input_leftover(leftover, &mut self.core, now), InputStep::Stop)
        {
            slot.stop_reading();
        }
        self.arm_recv(key);
    }

    // ---- mesh, timers, actions ----

    fn receive_mesh(&mut self, now: Instant) {
        while let Some((from, batch)) = self.links.receive() {
            for item in batch {
                match item {
                    ShardMeshItem::Core(msg) => self.core.handle_mesh(from, msg, now),
                    ShardMeshItem::Handoff(handoff) => {
                        tracing::debug!(shard = self.id, from_shard = from, client_id = %handoff.client_id(),
                            "connection handed over to its home shard");
                        self.adopt(handoff, now);
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.core.next_deadline().is_some_and(|deadline| deadline <= now) {
            self.core.tick(now);
        }
        while let Some(&(deadline, key)) = self.close_deadlines.front() {
            if deadline > now {
                break;
            }
            self.close_deadlines.pop_front();
            if let Some(slot) = self.conns.get_by_key(key) {
                slot.shut_down();
            }
        }
        for index in 0..self.listeners.len() {
            if self.listeners[index].retry_at.is_some_and(|at| at <= now) {
                self.arm_accept(index);
            }
        }
    }

    /// Carries out every action the core has queued (`broker::run_actions`, through this loop's
    /// `ActionTarget`): sends and closes per connection, mesh batches.
    fn carry_out_actions(&mut self) {
        run_actions(self);
        self.outbox.flush(&mut self.links);
        self.outbox.record_counters(self.core.io_counters_mut());
        let ring = &mut self.ring;
        self.links.doorbells(|target| {
            // SAFETY: a MSG_RING names no buffer.
            unsafe { ring.push(&request::doorbell(target, Token::new(TokenKind::Doorbell, 0, 0))) };
        });
    }

    /// Submits everything and sleeps until a completion, a doorbell or the next deadline.
    fn park(&mut self, now: Instant) {
        let mut deadline = self.core.next_deadline();
        let mut earliest = |at: Instant| deadline = Some(deadline.map_or(at, |current: Instant| current.min(at)));
        if self.outbox.has_overflow() {
            earliest(now + MESH_RETRY_INTERVAL);
        }
        if let Some(&(at, _)) = self.close_deadlines.front() {
            earliest(at);
        }
        for listener in &self.listeners {
            if let Some(at) = listener.retry_at {
                earliest(at);
            }
        }
        if let Some(since) = self.stopping {
            earliest(since + SHUTDOWN_FLUSH_TIMEOUT);
        }
        let wake = self.links.wake();
        wake.going_to_sleep();
        let timeout = if self.links.has_incoming() || !self.core_idle() {
            Some(Duration::ZERO)
        } else {
            match self.trim.check(now) {
                TrimStep::Now => self.trim_scratch(),
                TrimStep::At(at) => earliest(at),
                TrimStep::Nothing => {}
            }
            deadline.map(|at| at.saturating_duration_since(now))
        };
        self.ring.submit_and_wait(timeout);
        self.links.wake().awake();
    }

    /// A quiet shard gives back what a burst grew (`idle_trim`): scratch vectors, spare send batches, the
    /// core's queues, then the allocator's free pages.
    fn trim_scratch(&mut self) {
        idle_trim::shrink_scratch(&mut self.completions);
        idle_trim::shrink_scratch(&mut self.frames);
        idle_trim::shrink_scratch(&mut self.jobs);
        idle_trim::shrink_scratch(&mut self.rearm);
        self.batches.truncate(idle_trim::KEPT_CAPACITY / 4);
        self.batches.shrink_to(idle_trim::KEPT_CAPACITY / 4);
        self.core.trim_scratch();
        idle_trim::return_free_pages();
    }

    /// Whether the core has nothing queued for the runtime.
    fn core_idle(&self) -> bool {
        !self.core.has_actions()
    }

    // ---- stop ----

    fn begin_shutdown(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(now);
        for (index, listener) in self.listeners.iter_mut().enumerate() {
            if listener.accepting {
                // SAFETY: a cancel names no buffer.
                unsafe { self.ring.push(&request::cancel(Token::new(TokenKind::Accept, index as u32, 0))) };
            }
            listener.retry_at = None;
        }
        let connections = self.core.gauges().connections;
        tracing::info!(shard = self.id, connections, "server shutting down: closing every connection");
        self.core.shutdown(now);
        self.persist_turn();
        self.carry_out_actions();
        for key in self.conns.keys() {
            let Some(slot) = self.conns.get_by_key(key) else { continue };
            let conn = slot.conn();
            if !slot.is_ended() {
                self.start_close(conn, now);
            }
        }
    }

    fn finish_shutdown(&mut self) {
        self.control.close();
        self.persist_turn();
        self.carry_out_actions();
        self.links.wake().mark_stopped();
        self.outbox.flush(&mut self.links);
        let ring = &mut self.ring;
        self.links.doorbells(|target| unsafe {
            ring.push(&request::doorbell(target, Token::new(TokenKind::Doorbell, 0, 0)))
        });
        self.ring.submit_and_wait(Some(Duration::ZERO));
        let drops = self.outbox.drops();
        tracing::debug!(
            shard = self.id,
            backlog = self.outbox.has_overflow(),
            ?drops,
            left = self.conns.len(),
            "shard stopped"
        );
    }
}

/// Restores the core from its log and starts the log's writer thread.
/// The peer address, for a listener whose checks go to the external auth backend (which is told it).
fn give_peer_address(core: &mut ShardCore, conn: ConnId, fd: &OwnedFd) {
    let Some(listener) = core.listener_of(conn) else { return };
    if core.wants_peer_address(listener) {
        if let Some(peer) = socket2::SockRef::from(fd).peer_addr().ok().and_then(|addr| addr.as_socket()) {
            core.set_peer_address(conn, peer);
        }
    }
}

fn start_persistence(
    core: &mut ShardCore,
    shard: ShardId,
    log: crate::persist::ShardLog,
    state: crate::persist::RecoveredState,
    settings: &crate::persist::PersistenceSettings,
) -> Result<LogWriter, RingError> {
    let now = Instant::now();
    let unix_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    let mirror = state.clone();
    core.restore(state, WallClock { base: now, base_unix_ms: unix_ms }, now);
    if settings.durability == crate::persist::Durability::Sync {
        core.enable_sync_durability();
    }
    LogWriter::start(shard, log, mirror, settings).map_err(RingError::LogWriter)
}

/// Logs connections refused at `connections_max` (the process's or a listener's): the first at once, then at most one line per
/// `REFUSAL_LOG_INTERVAL` with the count since the last line, so a connection storm at the limit cannot
/// flood the log.
#[derive(Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// The runtime's meaning of the core's actions (`broker::run_actions`).
impl ActionTarget for Shard {
    fn core(&mut self) -> &mut ShardCore {
        &mut self.core
    }

    fn write(&mut self, conn: ConnId) {
        if let Some(key) = self.conns.key_of(conn) {
            self.flush(key);
        }
    }

    fn close(&mut self, conn: ConnId) {
        self.start_close(conn, Instant::now());
    }

    fn mesh(&mut self, to: ShardId, msg: MeshMessage) {
        self.outbox.push(to, ShardMeshItem::Core(msg));
    }
}

impl RefusalLog {
    fn refused(&mut self, shard: ShardId, socket: &OwnedFd, limit: ConnectionLimit) {
        self.unlogged += 1;
        let now = Instant::now();
        if self.last_logged.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            return;
        }
        let peer = socket2::SockRef::from(socket).peer_addr().ok().and_then(|addr| addr.as_socket());
        tracing::warn!(
            shard,
            peer = peer.map(tracing::field::display),
            refused = self.unlogged,
            "connection refused: {limit}, closed at accept"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}
