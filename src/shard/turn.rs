//! `Shard`: the state one executor owns (its broker core, its connections, read buffer and mesh
//! outbox) and the end-of-turn step that carries out what the core asked for: one vectored write per
//! connection with output, closes, and one mesh batch per destination shard.
//!
//! Events (reads, mesh batches) only feed the core and request a turn; the turn task runs after the other
//! runnable tasks of this executor iteration, so everything queued for a connection in that iteration
//! leaves in one write. The same task fires the core's timer wheel (`tick`) when `next_deadline` is due:
//! there is no timer per connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use glommio::sync::Gate;

use super::mesh::{MeshDrops, MeshOutbox, MeshSenders, Shedding};
use super::placement::Handoff;
use crate::broker::{Action, BrokerSettings, ConnId, MeshMessage, ShardCore, ShardId};
use crate::config::Config;
use crate::connection::{ConnSlot, ConnectionPermit, ShardReadBuffer};
use crate::protocol::QoS;

/// What travels between shards: the core's messages and connections moving to their home shard.
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

/// How soon a shard retries mesh batches that found their queue full.
pub const MESH_RETRY_INTERVAL: Duration = Duration::from_millis(1);
/// Shortest sleep of the turn task when a timer deadline is already due (guards against a busy loop).
const MIN_TIMER_SLEEP: Duration = Duration::from_micros(200);
/// Longest sleep of the turn task: the core may arm an earlier deadline (a new connection's CONNECT
/// timeout, a keep-alive) without asking for a turn, so the wheel is looked at least this often.
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub settings: Rc<BrokerSettings>,
    pub core: RefCell<ShardCore>,
    pub conns: RefCell<AHashMap<ConnId, Rc<ConnSlot>>>,
    pub read_buffer: RefCell<ShardReadBuffer>,
    /// Connection tasks (readers, writers); shutdown waits for them.
    pub gate: Gate,
    pub permits: ConnectionPermit,
    outbox: RefCell<MeshOutbox<ShardMeshItem>>,
    senders: MeshSenders<ShardMeshItem>,
    turn_requested: Cell<bool>,
    turn_waker: RefCell<Option<Waker>>,
    stopping: Cell<bool>,
    frames: RefCell<Vec<Bytes>>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shard_count: usize,
        config: Arc<Config>,
        senders: MeshSenders<ShardMeshItem>,
        permits: ConnectionPermit,
    ) -> Self {
        let settings = Rc::new(config.mqtt.clone());
        let outbox = MeshOutbox::new(shard_count, config.mesh_overflow_messages_max, ShardMeshItem::shedding);
        Shard {
            id,
            shard_count,
            core: RefCell::new(ShardCore::new(id, shard_count, settings.clone())),
            settings,
            read_buffer: RefCell::new(ShardReadBuffer::new(config.read_buffer_bytes)),
            config,
            conns: RefCell::new(AHashMap::new()),
            gate: Gate::new(),
            permits,
            outbox: RefCell::new(outbox),
            senders,
            turn_requested: Cell::new(false),
            turn_waker: RefCell::new(None),
            stopping: Cell::new(false),
            frames: RefCell::new(Vec::new()),
        }
    }

    /// Asks the turn task to run once the currently runnable tasks are done.
    pub fn request_turn(&self) {
        if !self.turn_requested.replace(true) {
            if let Some(waker) = self.turn_waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub fn push_mesh(&self, to: ShardId, item: ShardMeshItem) {
        self.outbox.borrow_mut().push(to, item);
    }

    /// The turn task: waits for a request or the next timer deadline, fires due timers, runs actions.
    pub async fn run_turns(self: Rc<Self>) {
        loop {
            self.wait_for_turn().await;
            let now = Instant::now();
            let due = self.core.borrow().next_deadline().is_some_and(|deadline| deadline <= now);
            if due {
                self.core.borrow_mut().tick(now);
            }
            self.run_actions();
        }
    }

    async fn wait_for_turn(&self) {
        let requested = std::future::poll_fn(|cx| {
            if self.turn_requested.replace(false) {
                return Poll::Ready(());
            }
            *self.turn_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let now = Instant::now();
        let longest = if self.outbox.borrow().has_overflow() { MESH_RETRY_INTERVAL } else { MAX_TIMER_SLEEP };
        let deadline = self.core.borrow().next_deadline().map_or(now + longest, |at| at.min(now + longest));
        let sleep = deadline.saturating_duration_since(now).max(MIN_TIMER_SLEEP);
        futures_lite::future::or(requested, glommio::timer::sleep(sleep)).await
    }

    /// Carries out every action the core has queued: writes and closes per connection, mesh batches.
    pub fn run_actions(self: &Rc<Self>) {
        let mut writes = Vec::new();
        let mut closes = Vec::new();
        loop {
            let action = self.core.borrow_mut().poll_action();
            match action {
                None => break,
                Some(Action::Write(conn)) => writes.push(conn),
                Some(Action::Close(conn)) => closes.push(conn),
                Some(Action::Mesh { to, msg }) => self.push_mesh(to, ShardMeshItem::Core(msg)),
            }
        }
        for conn in writes {
            let slot = self.conns.borrow().get(&conn).cloned();
            if let Some(slot) = slot {
                self.flush(&slot);
            }
        }
        for conn in closes {
            let slot = self.conns.borrow_mut().remove(&conn);
            if let Some(slot) = slot {
                slot.mark_closing();
                self.flush(&slot);
            }
        }
        self.outbox.borrow_mut().flush(&self.senders);
    }

    /// Moves the core's queued frames for `slot` to its unsent queue and writes them, unless a writer task
    /// is already waiting for room (it takes more output itself once the socket drains).
    pub fn flush(self: &Rc<Self>, slot: &Rc<ConnSlot>) {
        if slot.writer_active() {
            return;
        }
        self.take_output(slot);
        slot.write_or_wait(self);
    }

    /// Appends the core's frames for this connection to its unsent queue.
    pub fn take_output(&self, slot: &ConnSlot) {
        let mut frames = self.frames.borrow_mut();
        self.core.borrow_mut().take_output(slot.conn, &mut frames);
        slot.queue_frames(frames.drain(..));
    }

    /// The socket ended without us closing it (EOF, reset, write error).
    pub fn connection_ended(&self, slot: &ConnSlot) {
        if slot.mark_ended() {
            self.core.borrow_mut().connection_lost(slot.conn, Instant::now());
            self.conns.borrow_mut().remove(&slot.conn);
            self.request_turn();
        }
    }

    /// Server shutdown: stop taking new work, DISCONNECT 0x8B to v5 clients, flush and close everything.
    pub fn begin_shutdown(self: &Rc<Self>) {
        self.stopping.set(true);
        let connections = self.core.borrow().gauges().connections;
        tracing::info!(shard = self.id, connections, "server shutting down: closing every connection");
        self.core.borrow_mut().shutdown(Instant::now());
        self.run_actions();
        let remaining: Vec<Rc<ConnSlot>> = self.conns.borrow_mut().drain().map(|(_, slot)| slot).collect();
        for slot in remaining {
            slot.mark_closing();
            self.flush(&slot);
        }
    }

    /// Whether mesh batches still wait for room, and what the mesh outbox dropped, for the shutdown log.
    pub fn mesh_backlog(&self) -> (bool, MeshDrops) {
        let outbox = self.outbox.borrow();
        (outbox.has_overflow(), outbox.drops())
    }

    pub fn close_mesh(&self) {
        self.outbox.borrow_mut().flush(&self.senders);
        self.senders.close();
    }
}
