//! PUBLISH from a client: topic alias resolution, the checks a PUBLISH must pass (QoS and retain within
//! what we announced, valid topic, UTF-8 payload when it says so, the `[[validation]]` rules, see
//! `broker::validation`), QoS 2 duplicate suppression, routing, and the acknowledgement (PUBACK / PUBREC).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};

use super::super::core::ShardCore;
use super::super::message::{ConnId, Message, Origin};
use super::super::owned::{owned_forwarded_properties, owned_str};
use super::super::refusal::Refusal;
use super::super::session::SessionKey;
use super::super::topic_alias::TopicAliases;
use crate::protocol::topic::validate_topic_name;
use crate::protocol::{ByteStr, Packet, Properties, PubResponse, Publish, QoS, ReasonCode};

impl ShardCore {
    pub(in crate::broker) fn handle_publish(&mut self, conn: ConnId, key: SessionKey, publish: Publish, now: Instant) {
        self.stats.count_publish_received(publish.qos, publish.payload.len());
        self.charge_publish(conn, publish.topic.len() + publish.payload.len(), now);
        let topic = match self.resolve_topic(conn, &publish).and_then(|topic| self.check_publish(&publish, topic)) {
            Ok(topic) => topic,
            Err(refusal) => {
                if refusal == Refusal::TopicNameLimits {
                    self.stats.refused_topic_limits += 1;
                }
                return self.close_for(conn, refusal, now);
            }
        };
        let payload_is_text = publish.properties.payload_format_indicator == Some(1);
        if payload_is_text && std::str::from_utf8(&publish.payload).is_err() {
            return self.refuse_payload(conn, &publish, now);
        }
        let allowed = self.may_publish(key, &topic);
        if !allowed {
            self.stats.denied_publishes += 1;
            debug!(shard = self.shard, client_id = ?self.client_id_of(conn), %topic, "PUBLISH not authorized (no write access), dropped");
            let v5 = self.connections.get(&conn).is_some_and(|connection| connection.is_v5());
            if v5 && publish.qos != QoS::AtMostOnce {
                return self.refuse_unauthorized(conn, &publish);
            }
        }
        if allowed && self.is_dynsec_command(&topic) {
            return self.handle_dynsec_command(conn, key, publish, now);
        }
        // A 3.x client cannot be told: its PUBLISH is acknowledged as usual and dropped, as Mosquitto does.
        let (topic, publish) = if allowed {
            let Some(checked) = self.validate_publish(conn, topic, publish, now) else { return };
            checked
        } else {
            (topic, publish)
        };
        // A QoS 2 resend of an id awaiting PUBREL is already kept: it is answered as usual.
        let resent = publish.qos == QoS::ExactlyOnce
            && self.sessions.get(key).is_some_and(|session| session.awaiting_pubrel().contains(&publish.packet_id));
        if publish.qos != QoS::AtMostOnce && !resent && self.refuses_durable_publish() {
            return self.refuse_disk_full(conn, &publish, now);
        }
        match publish.qos {
            QoS::AtMostOnce => {
                if allowed {
                    self.route(self.message_from(conn, topic, publish, now), now);
                }
            }
            QoS::AtLeastOnce => {
                let packet_id = publish.packet_id;
                let matched = allowed && self.route(self.message_from(conn, topic, publish, now), now);
                self.acknowledge(conn, Packet::PubAck, packet_id, matched);
            }
            QoS::ExactlyOnce => self.publish_exactly_once(conn, key, topic, publish, allowed, now),
        }
    }

    /// v5 PUBACK / PUBREC 0x87 for a PUBLISH the client may not send. A QoS 2 flow ends at a PUBREC with a
    /// failure code (v5 section 4.3.3), so no packet id is kept awaiting PUBREL.
    fn refuse_unauthorized(&mut self, conn: ConnId, publish: &Publish) {
        let rule = "not authorized to publish to this topic";
        let properties = Properties { reason_string: self.ack_reason_string(conn, rule), ..Properties::default() };
        let response = PubResponse { packet_id: publish.packet_id, reason: ReasonCode::NOT_AUTHORIZED, properties };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_when_durable(conn, Packet::PubAck(response)),
            QoS::ExactlyOnce => self.send_when_durable(conn, Packet::PubRec(response)),
        }
    }

    /// The disk is full: a QoS 1/2 PUBLISH is not routed. v5 gets PUBACK / PUBREC 0x97 (a PUBREC with a
    /// failure code ends the QoS 2 flow, so no id is kept). A 3.x PUBACK cannot say no, and acknowledging
    /// a message that is not kept would break what `sync` promises, so a 3.x connection is closed without
    /// one: the client keeps the message and sends it again after reconnecting. (Mosquitto acknowledges
    /// and drops a 3.x PUBLISH it refuses for a quota; we do not, since here the ack means "on disk".)
    /// The refusal goes through the durability gate only to keep PUBACKs in order [MQTT-4.6.0-2].
    fn refuse_disk_full(&mut self, conn: ConnId, publish: &Publish, now: Instant) {
        self.count_refused_disk_full();
        let v5 = self.connections.get(&conn).is_some_and(|connection| connection.is_v5());
        if !v5 {
            return self.close_for(conn, Refusal::DiskFull, now);
        }
        let rule = Refusal::DiskFull.rule();
        trace!(shard = self.shard, client_id = ?self.client_id_of(conn), "{rule}");
        let properties = Properties { reason_string: self.ack_reason_string(conn, rule), ..Properties::default() };
        let response = PubResponse { packet_id: publish.packet_id, reason: ReasonCode::QUOTA_EXCEEDED, properties };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_when_durable(conn, Packet::PubAck(response)),
            QoS::ExactlyOnce => self.send_when_durable(conn, Packet::PubRec(response)),
        }
    }

    /// QoS 2: a packet id still awaiting PUBREL is a resend and is not routed again [MQTT-4.3.3-9]; a new
    /// one beyond our Receive Maximum is refused with 0x93 [MQTT-3.3.4-7]. `allowed` false (a 3.x client
    /// without write access): the flow completes but nothing is routed.
    fn publish_exactly_once(
        &mut self,
        conn: ConnId,
        key: SessionKey,
        topic: ByteStr,
        publish: Publish,
        allowed: bool,
        now: Instant,
    ) {
        let packet_id = publish.packet_id;
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if session.awaiting_pubrel().contains(&packet_id) {
            return self.acknowledge(conn, Packet::PubRec, packet_id, true);
        }
        if session.awaiting_pubrel().len() >= usize::from(self.settings.receive_maximum) {
            return self.close_for(conn, Refusal::ReceiveMaximumExceeded, now);
        }
        let matched = allowed && self.route(self.message_from(conn, topic, publish, now), now);
        self.sessions.await_pubrel(key, packet_id);
        self.acknowledge(conn, Packet::PubRec, packet_id, matched);
    }

    fn acknowledge(&mut self, conn: ConnId, kind: fn(PubResponse) -> Packet, packet_id: u16, matched: bool) {
        let reason = if matched { ReasonCode::SUCCESS } else { ReasonCode::NO_MATCHING_SUBSCRIBERS };
        self.send_when_durable(conn, kind(PubResponse { packet_id, reason, ..PubResponse::default() }));
    }

    /// Payload Format Indicator 1 with a payload that is not UTF-8: 0x99 in the PUBACK / PUBREC, or a
    /// DISCONNECT for QoS 0 (v5 section 3.3.2.3.2). Not routed.
    fn refuse_payload(&mut self, conn: ConnId, publish: &Publish, now: Instant) {
        let refusal = Refusal::PayloadNotUtf8;
        let properties =
            Properties { reason_string: self.ack_reason_string(conn, refusal.rule()), ..Properties::default() };
        let response = PubResponse { packet_id: publish.packet_id, reason: refusal.reason(), properties };
        match publish.qos {
            QoS::AtMostOnce => self.close_for(conn, refusal, now),
            QoS::AtLeastOnce => self.send_when_durable(conn, Packet::PubAck(response)),
            QoS::ExactlyOnce => self.send_when_durable(conn, Packet::PubRec(response)),
        }
    }

    /// The topic name, through the client's topic aliases (v5 section 3.3.2.3.4).
    fn resolve_topic(&mut self, conn: ConnId, publish: &Publish) -> Result<ByteStr, Refusal> {
        let Some(alias) = publish.properties.topic_alias else {
            if publish.topic.is_empty() {
                return Err(Refusal::EmptyTopicWithoutAlias);
            }
            return Ok(publish.topic.clone());
        };
        let alias_max = self.settings.topic_alias_max;
        if alias == 0 || alias > alias_max {
            return Err(Refusal::TopicAliasInvalid);
        }
        let Some(connection) = self.connections.get_mut(&conn) else {
            return Err(Refusal::ConnectionGone);
        };
        let outgoing_alias_max = connection.outgoing_alias_max;
        let aliases = connection.aliases.get_or_insert_with(|| Box::new(TopicAliases::new(outgoing_alias_max)));
        if aliases.incoming.len() < usize::from(alias) {
            aliases.incoming.resize(usize::from(alias), None);
        }
        let slot = &mut aliases.incoming[usize::from(alias - 1)];
        if publish.topic.is_empty() {
            return slot.clone().ok_or(Refusal::TopicAliasUnknown);
        }
        *slot = Some(owned_str(&publish.topic));
        Ok(publish.topic.clone())
    }

    fn check_publish(&self, publish: &Publish, topic: ByteStr) -> Result<ByteStr, Refusal> {
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err(Refusal::SubscriptionIdentifierInPublish);
        }
        if publish.qos as u8 > self.settings.qos_max {
            return Err(Refusal::PublishQosNotSupported);
        }
        if publish.retain && !self.settings.retain_available {
            return Err(Refusal::PublishRetainNotSupported);
        }
        if topic_over_limits(&topic, &self.settings) {
            return Err(Refusal::TopicNameLimits);
        }
        if validate_topic_name(&topic).is_err() {
            return Err(Refusal::TopicNameInvalid);
        }
        Ok(topic)
    }

    /// The shared message of a client's PUBLISH; `None` (logged, dropped) if it cannot be re-encoded.
    fn message_from(&self, conn: ConnId, topic: ByteStr, publish: Publish, now: Instant) -> Option<Arc<Message>> {
        let Publish { qos, retain, payload, properties, .. } = publish;
        let expires_at = properties.message_expiry_interval_secs.map(|secs| now + Duration::from_secs(u64::from(secs)));
        trace!(shard = self.shard, %topic, ?qos, retain, bytes = payload.len(), "publish");
        let origin = Origin { shard: self.shard, conn: Some(conn) };
        Message::new(topic, payload, qos, retain, owned_forwarded_properties(&properties), expires_at, origin)
            .map_err(|err| warn!(shard = self.shard, error = %err, "PUBLISH cannot be re-encoded, dropped"))
            .ok()
    }

    /// Routes the message if there is one; whether anyone subscribed.
    fn route(&mut self, message: Option<Arc<Message>>, now: Instant) -> bool {
        message.is_some_and(|message| self.route_published(message, now))
    }
}

/// Whether a topic name or filter is longer or deeper than the `[mqtt]` limits allow.
pub(in crate::broker) fn topic_over_limits(topic: &str, settings: &super::super::BrokerSettings) -> bool {
    topic.len() > settings.topic_length_max_bytes
        || topic.bytes().filter(|&byte| byte == b'/').count() >= settings.topic_levels_max
}
