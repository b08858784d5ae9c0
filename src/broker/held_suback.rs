//! SUBACKs held until every other shard has applied this shard's interest updates, so that once a client
//! has its SUBACK, a message published on any shard reaches the new subscription (the interest update is
//! not still on its way). Each `InterestAdded` carries a sequence number that the receiving shard echoes
//! in `InterestAck`; mesh queues are FIFO per pair of shards, so one number per shard says what it has
//! applied. Held SUBACKs are released in order, each with its retained messages right after it.

use std::sync::Arc;
use std::time::Instant;

use smallvec::smallvec;

use super::core::ShardCore;
use super::delivery::Delivery;
use super::message::{ConnId, Message, ShardId};
use super::session::SessionKey;
use crate::protocol::{Packet, QoS, SubAck};

/// A SUBACK (and the retained messages due after it) waiting for `needs_seq` to be acknowledged.
pub struct HeldSubAck {
    pub conn: ConnId,
    pub session: SessionKey,
    pub suback: SubAck,
    pub retained: Vec<(Arc<Message>, QoS)>,
    pub subscription_id: u32,
    pub needs_seq: u64,
}

impl ShardCore {
    /// The next interest sequence number, for an `InterestAdded` about to be broadcast.
    pub(super) fn next_interest_seq(&mut self) -> u64 {
        self.interest_seq_sent += 1;
        self.interest_seq_sent
    }

    /// The lowest interest sequence number every other shard has acknowledged.
    fn interest_seq_acked(&self) -> u64 {
        (0..self.shard_count)
            .filter(|&shard| shard != self.shard)
            .map(|shard| self.interest_acks.get(shard).copied().unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Sends the SUBACK now if every shard knows this shard's interest, else holds it (behind any SUBACK
    /// already held, so they stay in order).
    pub(super) fn complete_subscribe(&mut self, held: HeldSubAck, now: Instant) {
        if self.held_subacks.is_empty() && self.interest_seq_acked() >= held.needs_seq {
            return self.release_suback(held, now);
        }
        self.held_subacks.push_back(held);
    }

    /// Another shard applied our interest updates up to `seq`.
    pub(super) fn interest_acknowledged(&mut self, from: ShardId, seq: u64, now: Instant) {
        if self.interest_acks.len() < self.shard_count {
            self.interest_acks.resize(self.shard_count, 0);
        }
        if let Some(acked) = self.interest_acks.get_mut(from) {
            *acked = (*acked).max(seq);
        }
        let acked = self.interest_seq_acked();
        while self.held_subacks.front().is_some_and(|held| held.needs_seq <= acked) {
            if let Some(held) = self.held_subacks.pop_front() {
                self.release_suback(held, now);
            }
        }
    }

    /// Through the durability gate (`durability = "sync"`): the SUBACK and its retained messages wait there
    /// until the subscription is on disk.
    fn release_suback(&mut self, held: HeldSubAck, now: Instant) {
        if let Some(held) = self.gate_suback(held) {
            self.release_suback_now(held, now);
        }
    }

    pub(super) fn release_suback_now(&mut self, held: HeldSubAck, now: Instant) {
        let HeldSubAck { conn, session, suback, retained, subscription_id, .. } = held;
        let still_attached =
            self.connections.get(&conn).and_then(|connection| connection.phase.session_key()) == Some(session);
        if !still_attached {
            return;
        }
        self.send(conn, &Packet::SubAck(suback));
        for (message, granted) in retained {
            // Retained messages are sent with RETAIN set [MQTT-3.3.1-8].
            let subscription_ids = if subscription_id == 0 { smallvec![] } else { smallvec![subscription_id] };
            let delivery = Delivery { qos: granted.min(message.qos), retain: true, subscription_ids, message };
            self.deliver_to_session(session, delivery, now);
        }
    }
}
