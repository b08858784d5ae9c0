//! `ShardCore`: the entry points the runtime calls, dispatching to the per-concern modules.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;

use super::message::{Action, ConnId, MeshMessage, ShardId};
use super::settings::BrokerSettings;
use crate::protocol::{Packet, ProtocolVersion, ReasonCode};

/// A packet that could not be decoded, as the core needs to know it: the reason code for the v5 DISCONNECT
/// (or CONNACK) and a description for the log line.
pub trait DecodeFailure: fmt::Display {
    fn reason_code(&self) -> ReasonCode;
}

/// All MQTT state and behaviour of one shard.
pub struct ShardCore {
    shard: ShardId,
    shard_count: usize,
    settings: Rc<BrokerSettings>,
    connections: AHashMap<ConnId, Connection>,
    next_conn_id: u64,
    actions: VecDeque<Action>,
}

struct Connection {
    version: Option<ProtocolVersion>,
    out_queue: VecDeque<Bytes>,
}

impl ShardCore {
    pub fn new(shard: ShardId, shard_count: usize, settings: Rc<BrokerSettings>) -> Self {
        ShardCore {
            shard,
            shard_count,
            settings,
            connections: AHashMap::new(),
            next_conn_id: 0,
            actions: VecDeque::new(),
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// A socket was accepted on (or handed to) this shard.
    pub fn open_connection(&mut self, _now: Instant) -> ConnId {
        let conn = ConnId(self.next_conn_id);
        self.next_conn_id += 1;
        self.connections.insert(conn, Connection { version: None, out_queue: VecDeque::new() });
        conn
    }

    /// The connection's protocol level; `None` until its CONNECT was accepted.
    pub fn protocol_version(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.connections.get(&conn).and_then(|connection| connection.version)
    }

    pub fn handle_packet(&mut self, _conn: ConnId, _packet: Packet, _now: Instant) {}

    /// The decoder rejected the connection's input: v5 DISCONNECT with the reason, then close.
    pub fn handle_decode_error<E: DecodeFailure + ?Sized>(&mut self, conn: ConnId, _err: &E, _now: Instant) {
        self.close(conn);
    }

    /// The socket ended without us asking (EOF or error). No `Close` action follows.
    pub fn connection_lost(&mut self, conn: ConnId, _now: Instant) {
        self.connections.remove(&conn);
    }

    pub fn handle_mesh(&mut self, _from: ShardId, _msg: MeshMessage, _now: Instant) {}

    /// Fires due deadlines: connect timeout, keep-alive, will delay, session expiry.
    pub fn tick(&mut self, _now: Instant) {}

    /// When `tick` next has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Server shutdown: DISCONNECT 0x8B to v5 clients, then close every connection.
    pub fn shutdown(&mut self, _now: Instant) {
        let conns: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in conns {
            self.close(conn);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Moves the connection's queued encoded frames into `frames`.
    pub fn take_output(&mut self, conn: ConnId, frames: &mut Vec<Bytes>) {
        if let Some(connection) = self.connections.get_mut(&conn) {
            frames.extend(connection.out_queue.drain(..));
        }
    }

    fn close(&mut self, conn: ConnId) {
        if self.connections.remove(&conn).is_some() {
            self.actions.push_back(Action::Close(conn));
        }
    }
}
