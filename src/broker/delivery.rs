//! Routing and delivery: a message published on this shard goes to the local subscribers and once to each
//! other interested shard; a message from another shard goes to the local subscribers only. Each matching
//! session gets one copy (highest granted QoS of its matching subscriptions, every matching subscription
//! identifier [MQTT-3.3.4-2] [MQTT-3.3.4-3]), sent at once if its window allows, queued otherwise.

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use super::core::ShardCore;
use super::interest::ShardSet;
use super::journal::stored_message;
use super::message::{Action, MeshMessage, Message};
use super::outbound::PublishRefused;
use super::retain::RetainOutcome;
use super::session::{InflightAck, QueueStep, SessionKey};
use super::shared::RemoteGroup;
use super::subscriptions::Subscriber;
use crate::persist::Record;
use crate::protocol::QoS;

/// One message on its way to one session: the shared message plus what is particular to this receiver.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: SmallVec<[u32; 1]>,
}

impl ShardCore {
    /// Routes a message published by a client (or a will) of this shard. Returns whether any subscriber
    /// anywhere matched (v5 PUBACK 0x10 otherwise).
    pub(super) fn route_published(&mut self, message: Arc<Message>, now: Instant) -> bool {
        // A retained message is stored by every shard: one owned copy for all, not a read-buffer slice.
        let message = match message.retain && self.settings.retain_available && !message.owned {
            true => message.owned_copy().unwrap_or(message),
            false => message,
        };
        let mut shards = ShardSet::default();
        let mut remote_groups: SmallVec<[RemoteGroup; 2]> = SmallVec::new();
        self.interest.matching(&message.topic, &mut shards, |group| remote_groups.push(RemoteGroup::of(group)));
        let retained_everywhere = message.retain && self.settings.retain_available && self.shard_count > 1;
        let remote = shards.iter().any(|shard| shard != self.shard) || !remote_groups.is_empty();
        if retained_everywhere || (message.qos != QoS::AtMostOnce && remote) {
            self.note_remote_durable_work();
        }
        if message.retain && self.settings.retain_available {
            self.apply_retained(&message);
            for shard in (0..self.shard_count).filter(|&shard| shard != self.shard) {
                // Delivered there to every local match, whether or not this shard knew of its interest yet.
                let msg = MeshMessage::Retain { message: Arc::clone(&message), deliver: true };
                self.actions.push_back(Action::Mesh { to: shard, msg });
            }
        } else {
            for shard in shards.iter().filter(|&shard| shard != self.shard) {
                let msg = MeshMessage::Publish(Arc::clone(&message));
                self.actions.push_back(Action::Mesh { to: shard, msg });
            }
        }
        let delivered_here = self.deliver_local(&message, now);
        let shared = self.route_to_shared_groups(&message, remote_groups, now);
        self.offline_copy = None;
        delivered_here || shared || shards.iter().any(|shard| shard != self.shard)
    }

    /// Applies a retained message to this shard's replica; the home shard of its topic also keeps the
    /// durable copy (journaled), the others recover it from that shard at start.
    pub(super) fn apply_retained(&mut self, message: &Arc<Message>) {
        let outcome = self.retained.apply(message);
        if outcome == RetainOutcome::Full {
            self.stats.retained_refused += 1;
            return;
        }
        if super::home_shard(&message.topic, self.shard_count) == self.shard {
            self.sessions.journal_mut().record(|clock| match outcome {
                RetainOutcome::Deleted => Record::RetainDelete { topic: message.topic.clone() },
                _ => Record::RetainSet { message: stored_message(message, clock) },
            });
        }
    }

    /// Delivers to this shard's matching subscribers; returns whether there were any.
    pub(super) fn deliver_local(&mut self, message: &Arc<Message>, now: Instant) -> bool {
        if message.is_expired(now) {
            self.stats.dropped_expired += 1;
            return false;
        }
        let mut matches: SmallVec<[Subscriber; 8]> = SmallVec::new();
        self.subscriptions.for_each_match(&message.topic, |subscriber| matches.push(*subscriber));
        if matches.is_empty() {
            return false;
        }
        matches.sort_unstable_by_key(|subscriber| subscriber.session);
        self.fanout_headers.clear();
        for group in matches.chunk_by(|a, b| a.session == b.session) {
            if let Some(delivery) = self.delivery_for(group, message) {
                self.deliver_to_session(group[0].session, delivery, now);
            }
        }
        self.fanout_headers.clear();
        self.offline_copy = None;
        true
    }

    /// Merges one session's matching subscriptions into its single copy, or `None` when No Local
    /// excludes every one of them [MQTT-3.8.3-3].
    pub(super) fn delivery_for(&self, subscriptions: &[Subscriber], message: &Arc<Message>) -> Option<Delivery> {
        let session = self.sessions.get(subscriptions[0].session)?;
        let own_message =
            message.origin.shard == self.shard && message.origin.conn.is_some() && message.origin.conn == session.conn;
        let mut delivery: Option<Delivery> = None;
        for subscription in subscriptions.iter().filter(|sub| !(sub.options.no_local && own_message)) {
            let qos = subscription.options.qos.min(message.qos);
            // Retain is cleared on forwarding unless Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
            let retain = message.retain && subscription.options.retain_as_published;
            let entry = delivery.get_or_insert_with(|| Delivery {
                message: Arc::clone(message),
                qos,
                retain,
                subscription_ids: SmallVec::new(),
            });
            entry.qos = entry.qos.max(qos);
            entry.retain |= retain;
            if subscription.subscription_id != 0 {
                entry.subscription_ids.push(subscription.subscription_id);
            }
        }
        delivery
    }

    /// Sends now if the session is connected and its window allows, else queues QoS 1/2 (bounded) and
    /// drops QoS 0 (counted).
    /// A client without read access to the topic gets nothing (also retained messages on subscribe).
    pub(super) fn deliver_to_session(&mut self, key: SessionKey, delivery: Delivery, now: Instant) {
        if !self.may_receive(key, &delivery.message.topic) {
            self.stats.denied_deliveries += 1;
            return;
        }
        let Some(session) = self.sessions.get(key) else { return };
        let conn = session.conn;
        if delivery.qos == QoS::AtMostOnce {
            match conn {
                Some(conn) => {
                    let outcome = self.send_publish(conn, &delivery, 0, false, now);
                    self.count_refusal(outcome);
                }
                None => self.stats.dropped_offline_qos0 += 1,
            }
            return;
        }
        let delivery = match conn {
            Some(_) => delivery,
            None => Delivery { message: self.offline_message(&delivery.message), ..delivery },
        };
        let (messages_max, bytes_max) =
            (self.settings.session_queue_max_messages, self.settings.session_queue_max_bytes);
        if !self.sessions.enqueue(key, delivery, messages_max, bytes_max) {
            self.stats.dropped_queue_full += 1;
        }
        if conn.is_some() {
            self.drain_queue(key, now);
        }
    }

    /// The message as kept in an offline session's queue: an owned copy (made once per fan-out and shared
    /// by every offline session) so a long wait does not pin the read buffer it arrived in.
    fn offline_message(&mut self, message: &Arc<Message>) -> Arc<Message> {
        if message.owned {
            return Arc::clone(message);
        }
        if let Some((original, copy)) = &self.offline_copy {
            if Arc::ptr_eq(original, message) {
                return Arc::clone(copy);
            }
        }
        let Ok(copy) = message.owned_copy() else { return Arc::clone(message) };
        self.offline_copy = Some((Arc::clone(message), Arc::clone(&copy)));
        copy
    }

    /// Moves queued messages into the inflight window while the client's Receive Maximum (capped by
    /// `inflight_max_messages`) allows [MQTT-3.3.4-9].
    pub(super) fn drain_queue(&mut self, key: SessionKey, now: Instant) {
        let Some(conn) = self.sessions.get(key).and_then(|session| session.conn) else { return };
        let Some(connection) = self.connections.get(&conn) else { return };
        let window = usize::from(connection.client_receive_maximum.min(self.settings.inflight_max_messages).max(1));
        loop {
            if self.sessions.get(key).is_none_or(|session| session.inflight_len() >= window) {
                return;
            }
            let (packet_id, delivery) = match self.sessions.send_next(key, now) {
                QueueStep::Empty => return,
                QueueStep::Expired => {
                    self.stats.dropped_expired += 1;
                    continue;
                }
                QueueStep::Sent { packet_id, delivery } => (packet_id, delivery),
            };
            if let Err(refused) = self.send_publish(conn, &delivery, packet_id, false, now) {
                self.sessions.inflight_ack(key, InflightAck::Failed, packet_id);
                self.count_refusal(Err(refused));
            }
        }
    }

    fn count_refusal(&mut self, outcome: Result<(), PublishRefused>) {
        match outcome {
            Ok(()) | Err(PublishRefused::NoConnection) => {}
            Err(PublishRefused::TooLarge) => self.stats.dropped_too_large += 1,
            Err(PublishRefused::OutQueueFull) => self.stats.dropped_slow_consumer += 1,
            Err(PublishRefused::MemoryBudget) => self.stats.dropped_memory_budget += 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::broker::message::Origin;
    use crate::protocol::{ByteStr, Properties};
    use bytes::Bytes;

    pub(crate) fn message_on(topic: &str, payload: &str) -> Arc<Message> {
        let payload = Bytes::copy_from_slice(payload.as_bytes());
        let origin = Origin { shard: 0, conn: None };
        Message::new(ByteStr::from(topic), payload, QoS::AtLeastOnce, true, Properties::default(), None, origin)
            .expect("encodable")
    }

    pub(crate) fn delivery(qos: QoS) -> Delivery {
        Delivery { message: message_on("t", "payload"), qos, retain: false, subscription_ids: SmallVec::new() }
    }

    #[test]
    fn offline_queue_keeps_an_owned_copy_not_the_read_buffer() {
        use crate::broker::{BrokerSettings, ShardCore};
        use crate::protocol::{Connect, Packet, ProtocolVersion, Publish, Subscribe, SubscriptionOptions};
        use std::time::Instant;

        let now = Instant::now();
        let mut core = ShardCore::new(0, 1, std::rc::Rc::new(BrokerSettings::default()));
        let connect = |client_id: &str| {
            Packet::Connect(Box::new(Connect {
                version: ProtocolVersion::V3_1_1,
                clean_start: false,
                keep_alive_secs: 0,
                client_id: ByteStr::from(client_id),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }))
        };
        let subscriber = core.open_connection(now, crate::broker::ListenerId(0));
        core.handle_packet(subscriber, connect("sleeper"), now);
        let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
        let subscribe =
            Subscribe { packet_id: 1, filters: vec![(ByteStr::from("t"), options)], ..Subscribe::default() };
        core.handle_packet(subscriber, Packet::Subscribe(subscribe), now);
        core.connection_lost(subscriber, now);

        let read_buffer = Bytes::from(vec![b'x'; 16 * 1024]);
        let publisher = core.open_connection(now, crate::broker::ListenerId(0));
        core.handle_packet(publisher, connect("writer"), now);
        let publish = Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from("t"),
            packet_id: 1,
            payload: read_buffer.slice(100..200),
            ..Publish::default()
        };
        core.handle_packet(publisher, Packet::Publish(publish), now);

        let key = core.sessions.find("sleeper").expect("session kept");
        let queued = &core.sessions.get(key).and_then(|session| session.traffic()).expect("queued").queue[0].message;
        assert!(queued.owned);
        let buffer_range = read_buffer.as_ptr() as usize..read_buffer.as_ptr() as usize + read_buffer.len();
        assert!(!buffer_range.contains(&(queued.payload.as_ptr() as usize)));
        assert_eq!(&queued.payload[..], &read_buffer[100..200]);
    }
}
