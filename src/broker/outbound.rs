//! Encoding packets for a connection and queueing the frames, plus the `Write` action that tells the
//! runtime to come and take them (one per batch, not per frame).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::backlog::FRAME_OVERHEAD_BYTES;
use super::connection::Connection;
use super::core::ShardCore;
use super::delivery::Delivery;
use super::message::{Action, ConnId, Message};
use super::topic_alias::{AliasPlan, OutgoingAliases, TopicAliases};
use crate::protocol::{
    encode_packet, ByteStr, Delivery as FrameDelivery, EncodedPublish, Packet, Properties, ProtocolVersion, QoS,
    ReasonCode,
};

/// Why a PUBLISH was not queued for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishRefused {
    /// Larger than the client's v5 Maximum Packet Size (v5 section 3.1.2.11.4).
    TooLarge,
    /// QoS 0 while the out-queue is over `out_queue_max_bytes`.
    OutQueueFull,
    /// QoS 0 to a connection with unsent bytes queued while the process sheds load (`memory_max_bytes`).
    MemoryBudget,
    /// The connection is gone.
    NoConnection,
}

impl ShardCore {
    /// Encodes a control packet for the connection's protocol level and queues it. Within the client's
    /// Maximum Packet Size: the Reason String and User Properties are left out when they would make it too
    /// large [MQTT-3.1.2-25] (e.g. [MQTT-3.4.2-2], [MQTT-3.9.2-1], [MQTT-3.14.2-3]); dropped, logged, only if
    /// even the bare packet would not fit.
    pub(super) fn send(&mut self, conn: ConnId, packet: &Packet) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let version = connection.version.unwrap_or(ProtocolVersion::V5);
        let max_packet_size = connection.client_max_packet_size as usize;
        let Some(mut frame) = self.encode(packet, version) else {
            return;
        };
        if frame.len() > max_packet_size {
            match without_problem_details(packet).and_then(|bare| self.encode(&bare, version)) {
                Some(bare) if bare.len() <= max_packet_size => frame = bare,
                _ => {
                    warn!(shard = self.shard, packet = ?packet.packet_type(), bytes = frame.len(), max_packet_size, "packet over the client's Maximum Packet Size, not sent [MQTT-3.1.2-25]");
                    return;
                }
            }
        }
        self.stats.packets_sent += 1;
        self.queue_frame(conn, frame);
    }

    /// Queues a PUBLISH of `delivery` to the connection: a short per-receiver header plus the shared
    /// payload (two frames, one vectored write).
    pub(super) fn send_publish(
        &mut self,
        conn: ConnId,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
    ) -> Result<(), PublishRefused> {
        let Some(connection) = self.connections.get(&conn) else {
            return Err(PublishRefused::NoConnection);
        };
        let version = connection.version.unwrap_or(ProtocolVersion::V5);
        let max_packet_size = connection.client_max_packet_size as usize;
        if delivery.qos == QoS::AtMostOnce && connection.out_queue_bytes > 0 {
            if connection.out_queue_bytes > self.settings.out_queue_max_bytes {
                return Err(PublishRefused::OutQueueFull);
            }
            if self.memory.is_shedding() {
                return Err(PublishRefused::MemoryBudget);
            }
        }
        let message = &delivery.message;
        let with_remaining_expiry;
        let encoded = match (version.is_v5(), message.expires_at) {
            (true, Some(deadline)) => {
                with_remaining_expiry =
                    remaining_expiry_encoding(message, deadline, now).ok_or(PublishRefused::TooLarge)?;
                &with_remaining_expiry
            }
            _ => &message.encoded,
        };
        let alias_plan = plan_alias(connection, &message.topic);
        let shareable = delivery.qos == QoS::AtMostOnce
            && delivery.subscription_ids.is_empty()
            && message.expires_at.is_none()
            && alias_plan.is_none();
        if shareable {
            if let Some(header) = self.fanout_headers.get(message, version.is_v5(), delivery.retain) {
                if header.len() + message.payload.len() > max_packet_size {
                    return Err(PublishRefused::TooLarge);
                }
                self.stats.count_publish_sent(delivery.qos, message.payload.len());
                self.queue_publish_frames(conn, header, message.payload.clone());
                return Ok(());
            }
        }
        let receiver = FrameDelivery {
            qos: delivery.qos,
            retain: delivery.retain,
            dup,
            packet_id,
            subscription_identifiers: &delivery.subscription_ids,
            topic_alias: alias_plan.map(|plan| plan.alias),
            omit_topic: alias_plan.is_some_and(|plan| plan.known),
        };
        let frame = encoded.frame(version, &receiver, &mut self.encode_buf).map_err(|_| PublishRefused::TooLarge)?;
        if frame.len() > max_packet_size {
            return Err(PublishRefused::TooLarge);
        }
        if let Some(plan) = alias_plan {
            self.commit_alias(conn, &message.topic, plan);
        }
        if shareable {
            self.fanout_headers.insert(message, version.is_v5(), delivery.retain, frame.header.clone());
        }
        self.stats.count_publish_sent(delivery.qos, message.payload.len());
        self.queue_publish_frames(conn, frame.header, frame.payload);
        Ok(())
    }

    fn queue_publish_frames(&mut self, conn: ConnId, header: Bytes, payload: Bytes) {
        self.queue_frame(conn, header);
        if !payload.is_empty() {
            self.queue_frame(conn, payload);
        }
    }

    fn commit_alias(&mut self, conn: ConnId, topic: &ByteStr, plan: AliasPlan) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let alias_max = connection.outgoing_alias_max;
        let aliases = connection.aliases.get_or_insert_with(|| Box::new(TopicAliases::new(alias_max)));
        aliases.outgoing.commit(topic, plan);
    }

    /// A v5 Reason String, unless turned off in the settings.
    pub(super) fn reason_string(&self, text: &str) -> Option<ByteStr> {
        (self.settings.reason_strings && !text.is_empty()).then(|| ByteStr::from(text))
    }

    /// A v5 Reason String for an acknowledgement (PUBACK, PUBREC, SUBACK, ...): also not when the client set
    /// Request Problem Information to 0 [MQTT-3.1.2-29].
    pub(super) fn ack_reason_string(&self, conn: ConnId, text: &str) -> Option<ByteStr> {
        let wanted = self.connections.get(&conn).is_some_and(|connection| connection.problem_information);
        if wanted {
            self.reason_string(text)
        } else {
            None
        }
    }

    /// Queues a v5 DISCONNECT with `reason` (nothing for 3.x, which has no server DISCONNECT).
    pub(super) fn send_disconnect(&mut self, conn: ConnId, reason: ReasonCode, text: &str) {
        if !self.connections.get(&conn).is_some_and(|connection| connection.is_v5()) {
            return;
        }
        let properties = Properties { reason_string: self.reason_string(text), ..Properties::default() };
        self.send(conn, &Packet::Disconnect(crate::protocol::Disconnect { reason, properties }));
    }

    fn encode(&mut self, packet: &Packet, version: ProtocolVersion) -> Option<Bytes> {
        self.encode_buf.clear();
        match encode_packet(packet, version, &mut self.encode_buf) {
            Ok(()) => Some(self.encode_buf.split().freeze()),
            Err(err) => {
                warn!(error = %err, packet = ?packet.packet_type(), "packet cannot be encoded, not sent");
                None
            }
        }
    }

    fn queue_frame(&mut self, conn: ConnId, frame: Bytes) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        connection.out_queue_bytes += frame.len() + FRAME_OVERHEAD_BYTES;
        connection.out_queue.push_back(frame);
        if !connection.write_requested {
            connection.write_requested = true;
            self.actions.push_back(Action::Write(conn));
        }
    }
}

/// The packet without its Reason String and User Properties, if it has any to leave out.
fn without_problem_details(packet: &Packet) -> Option<Packet> {
    let mut bare = packet.clone();
    let properties = match &mut bare {
        Packet::ConnAck(connack) => &mut connack.properties,
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => &mut ack.properties,
        Packet::SubAck(ack) => &mut ack.properties,
        Packet::UnsubAck(ack) => &mut ack.properties,
        Packet::Disconnect(disconnect) => &mut disconnect.properties,
        Packet::Auth(auth) => &mut auth.properties,
        _ => return None,
    };
    if properties.reason_string.is_none() && properties.user_properties.is_empty() {
        return None;
    }
    properties.reason_string = None;
    properties.user_properties.clear();
    Some(bare)
}

/// The server-to-client alias this PUBLISH would use, if the client accepts aliases.
fn plan_alias(connection: &Connection, topic: &ByteStr) -> Option<AliasPlan> {
    match (connection.outgoing_alias_max, &connection.aliases) {
        (0, _) => None,
        (_, Some(aliases)) => aliases.outgoing.plan(topic),
        (alias_max, None) => OutgoingAliases::new(alias_max).plan(topic),
    }
}

/// The message prepared again with the Message Expiry Interval that remains (v5 section 3.3.2.3.3).
fn remaining_expiry_encoding(message: &Message, deadline: Instant, now: Instant) -> Option<EncodedPublish> {
    let remaining_secs = deadline.saturating_duration_since(now).as_secs().max(1);
    let properties = Properties {
        message_expiry_interval_secs: Some(u32::try_from(remaining_secs).unwrap_or(u32::MAX)),
        ..message.properties().clone()
    };
    EncodedPublish::new(&message.topic, &properties, message.payload.clone()).ok()
}

/// The QoS 0 PUBLISH headers built during one fan-out, so receivers with the same protocol family and
/// retain flag share one header `Bytes` as well as the payload (encode once per (version, QoS, retain)).
/// Holding the `Arc` makes a stale match impossible; `ShardCore::deliver_local` clears it after each
/// fan-out so the message is not kept alive.
#[derive(Default)]
pub struct FanoutHeaders {
    message: Option<Arc<Message>>,
    headers: smallvec::SmallVec<[(bool, bool, Bytes); 4]>,
}

impl FanoutHeaders {
    pub fn clear(&mut self) {
        self.message = None;
        self.headers.clear();
    }

    fn get(&self, message: &Arc<Message>, v5: bool, retain: bool) -> Option<Bytes> {
        if !self.message.as_ref().is_some_and(|current| Arc::ptr_eq(current, message)) {
            return None;
        }
        self.headers
            .iter()
            .find(|(is_v5, is_retain, _)| *is_v5 == v5 && *is_retain == retain)
            .map(|(_, _, header)| header.clone())
    }

    fn insert(&mut self, message: &Arc<Message>, v5: bool, retain: bool, header: Bytes) {
        if !self.message.as_ref().is_some_and(|current| Arc::ptr_eq(current, message)) {
            self.clear();
            self.message = Some(Arc::clone(message));
        }
        self.headers.push((v5, retain, header));
    }
}
