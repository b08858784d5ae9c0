//! What a connection owes its client and the socket has not taken yet (answers and deliveries together):
//! the gate the runtime asks after every packet it feeds in. Past `out_queue_pause_bytes` it stops
//! reading from that client (TCP then pushes back on it) until a send has drained the queue; past
//! `out_queue_close_bytes`, or paused for `out_queue_stall_max_secs` without the socket taking a send,
//! the connection is closed. Asked after each packet whatever its kind, so every request that produces
//! an answer (PINGREQ, PUBREL, QoS 1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE, AUTH) is bounded, on every
//! transport. Deliveries alone are bounded elsewhere (QoS 0 by `out_queue_max_bytes`, QoS 1/2 by the
//! inflight window); answers only by this gate. The same gate holds a connection waiting for the external
//! auth backend and one throttled for publishing too fast (`publish_limit`).

use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use super::core::ShardCore;
use super::lifecycle::CloseReason;
use super::message::{Action, ConnId};
use super::timers::TimerKey;

/// What one queued frame costs beyond its bytes: its `Bytes` handle in the out-queue and its iovec in
/// the send batch. Charged so a flood of 2-byte PINGRESPs is counted at what it really holds.
pub(super) const FRAME_OVERHEAD_BYTES: usize = 64;

/// Whether the runtime should read more of a connection's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGate {
    /// Read on.
    Open,
    /// Read nothing more until the socket has taken what is owed; ask again after each send.
    Paused,
    /// The connection is gone (closed for owing too much, or earlier); its `Close` action is queued.
    Closed,
}

/// Which bound a connection that owed too much was closed at (named in its log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BacklogBound {
    /// `out_queue_close_bytes`.
    Bytes,
    /// `out_queue_stall_max_secs`.
    Stall,
}

impl BacklogBound {
    pub fn setting(self) -> &'static str {
        match self {
            BacklogBound::Bytes => "out_queue_close_bytes",
            BacklogBound::Stall => "out_queue_stall_max_secs",
        }
    }
}

impl ShardCore {
    /// Whether more of the connection's input may be read now (see the module doc). Cheap when the
    /// connection owes little: one slab lookup and a comparison.
    pub fn input_gate(&mut self, conn: ConnId, now: Instant) -> InputGate {
        let Some(connection) = self.connections.get(&conn) else { return InputGate::Closed };
        // Waiting for the external auth backend: nothing more of this client is read until it answers
        // (not a stall: the backend's timeout bounds it).
        if self.external.holds(conn) {
            return InputGate::Paused;
        }
        // Publishing faster than its limits (`publish_limit`): not read until its resume timer fires (not
        // a stall either).
        if self.publish_limits.is_throttled(conn) {
            return InputGate::Paused;
        }
        let owed_bytes = connection.out_queue_bytes;
        if owed_bytes <= self.settings.out_queue_pause_bytes {
            if !self.backlogged.is_empty() {
                self.backlogged.remove(&conn);
            }
            return InputGate::Open;
        }
        if owed_bytes > self.settings.out_queue_close_bytes {
            self.close_backlogged(conn, BacklogBound::Bytes, now);
            return InputGate::Closed;
        }
        if let Entry::Vacant(entry) = self.backlogged.entry(conn) {
            entry.insert(now);
            self.stats.input_paused += 1;
            let stall = Duration::from_secs(u64::from(self.settings.out_queue_stall_max_secs));
            self.timers.insert(now, now + stall, TimerKey::OutputStall(conn));
        }
        InputGate::Paused
    }

    /// The stall timer of a connection paused at `armed_at`: closed if it is still paused since then (each
    /// new pause arms its own timer, so a stale one does nothing).
    pub(super) fn output_stall_check(&mut self, conn: ConnId, now: Instant) {
        let Some(&since) = self.backlogged.get(&conn) else { return };
        let stall = Duration::from_secs(u64::from(self.settings.out_queue_stall_max_secs));
        if since + stall <= now {
            self.close_backlogged(conn, BacklogBound::Stall, now);
        }
    }

    /// Tells the runtime to read the connection again: the flush of its `Write` (even with nothing to
    /// send) asks this gate again and resumes paused input.
    pub(super) fn open_input(&mut self, conn: ConnId) {
        if self.connections.get(&conn).is_some() {
            self.actions.push_back(Action::Write(conn));
        }
    }

    /// A send drained the connection's queue: it is no longer stalled.
    pub(super) fn backlog_drained(&mut self, conn: ConnId) {
        if !self.backlogged.is_empty() {
            self.backlogged.remove(&conn);
        }
    }

    fn close_backlogged(&mut self, conn: ConnId, bound: BacklogBound, now: Instant) {
        let owed_bytes = self.connections.get(&conn).map_or(0, |connection| connection.out_queue_bytes);
        self.backlogged.remove(&conn);
        self.stats.closed_output_backlog += 1;
        self.end_connection(conn, CloseReason::OutputBacklog { bound, owed_bytes }, now);
    }
}
