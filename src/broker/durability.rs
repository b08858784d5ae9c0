//! The "after it is durable" gate (`durability = "sync"`): acknowledgements that promise a change is kept
//! (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK) wait until the records of that change are on disk; every
//! other frame (deliveries, PINGRESP, ...) leaves at once. As raft-rs's `Ready` separates messages to send
//! now from those to send once persisted, an ack can never overtake its write.
//!
//! A change can land on other shards' logs too: a QoS 1/2 message routed to a subscriber whose home is
//! shard B is queued (and journaled) by B, a retained message by the home shard of its topic. So in a
//! turn that sent such messages to other shards, the shard ends the turn with a `DurableBarrier { seq }`
//! to every other shard (after the messages: mesh queues are FIFO per pair); each answers
//! `DurableAck { seq }` once its own log is durable up to where the barrier arrived. A held ack goes when
//! the local log is durable up to its record and, if it needed one, every shard has answered its barrier.
//! Held acks are released in order, so PUBACKs keep the order of their PUBLISHes [MQTT-4.6.0-2]. The
//! HTTP publish answer waits in the same queue (`when_durable`).

use std::collections::VecDeque;
use std::time::Instant;

use super::core::ShardCore;
use super::held_suback::HeldSubAck;
use super::message::{Action, ConnId, MeshMessage, ShardId};
use crate::protocol::Packet;

enum HeldItem {
    Packet(ConnId, Packet),
    SubAck(HeldSubAck),
    /// An answer outside the protocol (the HTTP publish) waiting on the same promise as a PUBACK.
    Notify(DurableNotify),
}

/// Called on the shard's thread once what the shard did so far is durable.
pub type DurableNotify = Box<dyn FnOnce() + Send>;

struct Held {
    /// The local record the ack promises (journal sequence number).
    needs_seq: u64,
    /// The barrier every other shard must have answered; 0 = none.
    needs_barrier: u64,
    item: HeldItem,
}

#[derive(Default)]
pub struct DurabilityGate {
    active: bool,
    durable_seq: u64,
    held: VecDeque<Held>,
    /// This turn sent QoS 1/2 or retained messages to other shards: it ends with a barrier.
    remote_dirty: bool,
    barrier_sent: u64,
    barrier_acks: Vec<u64>,
    /// Barriers of other shards to answer once the local log is durable up to the first number.
    owed: VecDeque<(u64, ShardId, u64)>,
    /// The log writer reports the disk full: new QoS 1/2 publishes are refused (any durability mode).
    disk_full: bool,
    /// QoS 1/2 publishes refused for a full disk since start.
    refused_disk_full: u64,
}

impl DurabilityGate {
    pub fn held_len(&self) -> usize {
        self.held.len()
    }
}

impl ShardCore {
    /// Turns the gate on (`durability = "sync"`).
    pub fn enable_sync_durability(&mut self) {
        self.durability.active = true;
        self.durability.barrier_acks = vec![0; self.shard_count];
    }

    /// Ends the runtime's turn: queues the barrier if this turn needs one and returns the turn's journal
    /// frames with the number of their last record, for the shard's log writer.
    pub fn seal_turn(&mut self) -> Option<(Vec<u8>, u64)> {
        if std::mem::take(&mut self.durability.remote_dirty) {
            self.durability.barrier_sent += 1;
            let seq = self.durability.barrier_sent;
            self.broadcast(|| MeshMessage::DurableBarrier { seq });
        }
        self.sessions.journal_mut().take_frames()
    }

    /// The log writer has made every record up to `durable_seq` durable.
    pub fn persisted(&mut self, durable_seq: u64, now: Instant) {
        let gate = &mut self.durability;
        gate.durable_seq = gate.durable_seq.max(durable_seq);
        while gate.owed.front().is_some_and(|&(needs, _, _)| needs <= gate.durable_seq) {
            if let Some((_, to, seq)) = gate.owed.pop_front() {
                self.actions.push_back(Action::Mesh { to, msg: MeshMessage::DurableAck { seq } });
            }
        }
        self.release_durable(now);
    }

    /// The log writer says whether the disk is full (its write or the free-space probe failed); while it
    /// is, new QoS 1/2 publishes are refused (`refuses_durable_publish`).
    pub fn set_disk_full(&mut self, full: bool) {
        self.durability.disk_full = full;
    }

    /// New QoS 1/2 publishes are refused for a full disk.
    pub fn refuses_durable_publish(&self) -> bool {
        self.durability.disk_full
    }

    /// QoS 1/2 publishes refused for a full disk since start.
    pub fn refused_disk_full(&self) -> u64 {
        self.durability.refused_disk_full
    }

    pub(super) fn count_refused_disk_full(&mut self) {
        self.durability.refused_disk_full += 1;
    }

    /// Whether anything waits on the disk (for tests and gauges).
    pub fn held_until_durable(&self) -> usize {
        self.durability.held_len()
    }

    /// A QoS 1/2 or retained message went to another shard this turn.
    pub(super) fn note_remote_durable_work(&mut self) {
        if self.durability.active {
            self.durability.remote_dirty = true;
        }
    }

    /// Sends `packet` now, or once what it acknowledges is durable.
    pub(super) fn send_when_durable(&mut self, conn: ConnId, packet: Packet) {
        if !self.must_hold() {
            return self.send(conn, &packet);
        }
        self.hold(HeldItem::Packet(conn, packet));
    }

    /// Calls `done` once every change made so far (on this shard, and what it sent to other shards) is
    /// durable, in order with the acks held before it; at once without the gate (`periodic`, `none`) or
    /// when nothing waits. If the shard stops first, `done` is dropped uncalled.
    pub fn when_durable(&mut self, done: DurableNotify) {
        if !self.must_hold() {
            return done();
        }
        self.hold(HeldItem::Notify(done));
    }

    /// `held` if it may be released now, else `None` (the gate releases it later).
    pub(super) fn gate_suback(&mut self, held: HeldSubAck) -> Option<HeldSubAck> {
        if !self.must_hold() {
            return Some(held);
        }
        self.hold(HeldItem::SubAck(held));
        None
    }

    pub(super) fn durable_barrier(&mut self, from: ShardId, seq: u64, now: Instant) {
        let needs = self.sessions.journal().appended_seq();
        self.durability.owed.push_back((needs, from, seq));
        // Answered once durable; if it already is, `persisted` answers it at once.
        let durable = self.durability.durable_seq;
        self.persisted(durable, now);
    }

    pub(super) fn durable_ack(&mut self, from: ShardId, seq: u64, now: Instant) {
        if let Some(acked) = self.durability.barrier_acks.get_mut(from) {
            *acked = (*acked).max(seq);
        }
        self.release_durable(now);
    }

    fn must_hold(&self) -> bool {
        let gate = &self.durability;
        gate.active
            && (!gate.held.is_empty() || gate.remote_dirty || self.sessions.journal().appended_seq() > gate.durable_seq)
    }

    fn hold(&mut self, item: HeldItem) {
        let gate = &mut self.durability;
        let needs_barrier = if gate.remote_dirty { gate.barrier_sent + 1 } else { 0 };
        let needs_barrier = needs_barrier.max(gate.held.back().map_or(0, |held| held.needs_barrier));
        let needs_seq = self.sessions.journal().appended_seq();
        gate.held.push_back(Held { needs_seq, needs_barrier, item });
    }

    fn release_durable(&mut self, now: Instant) {
        loop {
            let gate = &self.durability;
            let acked = (0..self.shard_count)
                .filter(|&shard| shard != self.shard)
                .map(|shard| gate.barrier_acks.get(shard).copied().unwrap_or(0))
                .min()
                .unwrap_or(u64::MAX);
            let ready =
                gate.held.front().is_some_and(|held| held.needs_seq <= gate.durable_seq && held.needs_barrier <= acked);
            if !ready {
                return;
            }
            let Some(held) = self.durability.held.pop_front() else { return };
            match held.item {
                HeldItem::Packet(conn, packet) => self.send(conn, &packet),
                HeldItem::SubAck(suback) => self.release_suback_now(suback, now),
                HeldItem::Notify(done) => done(),
            }
        }
    }
}
