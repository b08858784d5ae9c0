//! Encoding packets for a connection and queueing the frames, plus the `Write` action that tells the
//! runtime to come and take them (one per batch, not per frame).

use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::core::ShardCore;
use super::delivery::Delivery;
use super::message::{Action, ConnId};
use crate::protocol::{encode_packet, ByteStr, Packet, Properties, ProtocolVersion, Publish, ReasonCode};

/// Why a PUBLISH was not queued for a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishRefused {
    /// Larger than the client's v5 Maximum Packet Size (v5 section 3.1.2.11.4).
    TooLarge,
    /// QoS 0 while the out-queue is over `out_queue_bytes_max`.
    OutQueueFull,
    /// The connection is gone.
    NoConnection,
}

impl ShardCore {
    /// Encodes a control packet for the connection's protocol level and queues it. Never dropped.
    pub(super) fn send(&mut self, conn: ConnId, packet: &Packet) {
        let Some(version) = self.connections.get(&conn).map(|connection| connection.version) else { return };
        let version = version.unwrap_or(ProtocolVersion::V5);
        if let Some(frame) = self.encode(packet, version) {
            self.queue_frame(conn, frame);
        }
    }

    /// Encodes and queues a PUBLISH of `delivery` to the connection.
    pub(super) fn send_publish(
        &mut self,
        conn: ConnId,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
    ) -> Result<(), PublishRefused> {
        let Some(connection) = self.connections.get(&conn) else { return Err(PublishRefused::NoConnection) };
        let version = connection.version.unwrap_or(ProtocolVersion::V5);
        let max_packet_size = connection.client_max_packet_size as usize;
        let over_queue_bound = connection.out_queue_bytes > self.settings.out_queue_bytes_max;
        if delivery.qos == crate::protocol::QoS::AtMostOnce && over_queue_bound {
            return Err(PublishRefused::OutQueueFull);
        }
        let packet = Packet::Publish(publish_packet(delivery, packet_id, dup, version, now));
        let Some(frame) = self.encode(&packet, version) else { return Err(PublishRefused::TooLarge) };
        if frame.len() > max_packet_size {
            return Err(PublishRefused::TooLarge);
        }
        self.queue_frame(conn, frame);
        Ok(())
    }

    /// A v5 Reason String, unless turned off in the settings.
    pub(super) fn reason_string(&self, text: &str) -> Option<ByteStr> {
        (self.settings.reason_strings && !text.is_empty()).then(|| ByteStr::from(text))
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
        let Some(connection) = self.connections.get_mut(&conn) else { return };
        connection.out_queue_bytes += frame.len();
        connection.out_queue.push_back(frame);
        if !connection.write_requested {
            connection.write_requested = true;
            self.actions.push_back(Action::Write(conn));
        }
    }
}

/// The PUBLISH a receiver gets: its QoS, retain flag and packet id, the subscription identifiers that
/// matched, and the remaining Message Expiry Interval (v5 section 3.3.2.3.3). 3.x receivers get no
/// properties.
fn publish_packet(delivery: &Delivery, packet_id: u16, dup: bool, version: ProtocolVersion, now: Instant) -> Publish {
    let message = &delivery.message;
    let properties = if version.is_v5() {
        let mut properties = message.properties.clone();
        properties.subscription_identifiers = delivery.subscription_ids.clone();
        properties.message_expiry_interval_secs = message
            .expires_at
            .map(|deadline| deadline.saturating_duration_since(now).as_secs().max(1) as u32);
        properties
    } else {
        Properties::default()
    };
    Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: message.topic.clone(),
        packet_id,
        properties,
        payload: message.payload.clone(),
    }
}
