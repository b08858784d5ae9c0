//! Encode-once PUBLISH for fan-out: the parts of a message every receiver shares (topic, MQTT 5 message
//! properties, payload) are prepared once; each receiver then costs only a short header written into a
//! buffer the caller reuses, while the payload `Bytes` is shared, never copied.
//!
//! # How the broker uses it
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use shardmq::protocol::{decode_packet, Delivery, EncodedPublish, Packet, ProtocolVersion, Properties, QoS};
//!
//! // Once per message (e.g. when it arrives, or when it reaches this shard):
//! let message = EncodedPublish::new(&"sensors/1".into(), &Properties::default(), Bytes::from_static(b"21.5"))?;
//!
//! // Once per receiver: only the header is written; `frame.payload` is a clone of the shared `Bytes`.
//! let mut scratch = BytesMut::with_capacity(4096); // per connection or per shard, reused
//! let delivery = Delivery { qos: QoS::AtLeastOnce, packet_id: 17, ..Delivery::default() };
//! let frame = message.frame(ProtocolVersion::V3_1_1, &delivery, &mut scratch)?;
//! // Write `frame.header` then `frame.payload` with one vectored write (or queue both `Bytes`).
//!
//! # let mut wire = BytesMut::new();
//! # wire.extend_from_slice(&frame.header);
//! # wire.extend_from_slice(&frame.payload);
//! # let Some(Packet::Publish(publish)) = decode_packet(&mut wire, ProtocolVersion::V3_1_1, 1024)? else { panic!() };
//! # assert_eq!((publish.packet_id, &publish.payload[..]), (17, &b"21.5"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The header depends only on the protocol family (3.x or 5) and the [`Delivery`]; receivers with equal
//! deliveries (typically QoS 0 without subscription identifiers or alias) can share one header `Bytes` too.
//! The MQTT 5 message properties (payload format, message expiry, content type, response topic,
//! correlation data, user properties) are encoded once; build a new `EncodedPublish` if one of them changes
//! (e.g. the remaining message expiry of a message that waited in a queue).

use bytes::{BufMut, Bytes, BytesMut};

use super::encode::{property_section_len, publish_first_byte};
use super::error::EncodeError;
use super::packet::{PacketType, ProtocolVersion, Publish, QoS};
use super::properties::{id, Properties, PropertyScope};
use super::wire::{
    field_len, put_field, put_variable_byte_integer, variable_byte_integer_len, VARIABLE_BYTE_INTEGER_MAX,
};
use super::ByteStr;

/// What differs between the receivers of one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The QoS of this delivery (the minimum of the message's and the subscription's).
    pub qos: QoS,
    /// RETAIN as sent to this receiver (depends on Retain As Published and on retained-message replay).
    pub retain: bool,
    /// Set on a re-delivery of a QoS > 0 message.
    pub dup: bool,
    /// The receiver's packet identifier; non-zero for QoS > 0, ignored for QoS 0.
    pub packet_id: u16,
    /// MQTT 5: identifiers of the receiver's subscriptions that matched (each 1..=268,435,455). Ignored
    /// for 3.x.
    pub subscription_identifiers: &'a [u32],
    /// MQTT 5: the topic alias to send to this receiver. Ignored for 3.x.
    pub topic_alias: Option<u16>,
    /// MQTT 5: leave the topic name empty because the receiver already maps `topic_alias` to it.
    pub omit_topic: bool,
}

/// One receiver's PUBLISH: `header` followed by `payload` is the complete packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishFrame {
    pub header: Bytes,
    pub payload: Bytes,
}

impl PublishFrame {
    /// Size of the whole packet on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message prepared once for many receivers; see the module documentation.
#[derive(Clone, Debug)]
pub struct EncodedPublish {
    topic: ByteStr,
    /// MQTT 5 message properties, already encoded, without the Property Length.
    message_properties: Bytes,
    payload: Bytes,
}

impl EncodedPublish {
    /// Prepares `topic`, the message properties of `properties` (Topic Alias and Subscription Identifiers
    /// are per receiver and left out) and `payload` (shared, not copied).
    pub fn new(topic: &ByteStr, properties: &Properties, payload: Bytes) -> Result<EncodedPublish, EncodeError> {
        field_len(topic.len())?;
        let properties_len = properties.wire_len(PropertyScope::PublishMessage)?;
        let message_properties = if properties_len == 0 {
            Bytes::new()
        } else {
            let mut encoded = BytesMut::with_capacity(properties_len);
            properties.encode_content(PropertyScope::PublishMessage, &mut encoded);
            encoded.freeze()
        };
        Ok(EncodedPublish { topic: topic.clone(), message_properties, payload })
    }

    /// Prepares the message of a received PUBLISH (its flags and packet id are per delivery).
    pub fn from_publish(publish: &Publish) -> Result<EncodedPublish, EncodeError> {
        EncodedPublish::new(&publish.topic, &publish.properties, publish.payload.clone())
    }

    pub fn topic(&self) -> &ByteStr {
        &self.topic
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Content length of the per-receiver property section (MQTT 5), checking the delivery's values.
    fn delivery_properties_len(&self, delivery: &Delivery<'_>) -> Result<usize, EncodeError> {
        let mut len = self.message_properties.len();
        if delivery.topic_alias.is_some() {
            len += 3;
        }
        for &value in delivery.subscription_identifiers {
            if value == 0 || value > VARIABLE_BYTE_INTEGER_MAX {
                return Err(EncodeError::PropertyValueInvalid { id: id::SUBSCRIPTION_IDENTIFIER, value });
            }
            len += 1 + variable_byte_integer_len(value as usize);
        }
        Ok(len)
    }

    /// The topic bytes this delivery sends, the Remaining Length and, for MQTT 5, the property content
    /// length.
    fn layout(&self, version: ProtocolVersion, delivery: &Delivery<'_>) -> Result<Layout<'_>, EncodeError> {
        if delivery.qos != QoS::AtMostOnce && delivery.packet_id == 0 {
            return Err(EncodeError::PacketIdZero { packet_type: PacketType::Publish });
        }
        let omit_topic = version.is_v5() && delivery.omit_topic;
        if omit_topic && delivery.topic_alias.is_none() {
            return Err(EncodeError::TopicAliasMissing);
        }
        let topic: &[u8] = if omit_topic { b"" } else { self.topic.as_str().as_bytes() };
        let properties_len = if version.is_v5() { Some(self.delivery_properties_len(delivery)?) } else { None };
        let remaining_len = 2
            + topic.len()
            + if delivery.qos == QoS::AtMostOnce { 0 } else { 2 }
            + properties_len.map_or(0, property_section_len)
            + self.payload.len();
        if remaining_len > VARIABLE_BYTE_INTEGER_MAX as usize {
            return Err(EncodeError::PacketTooLarge { remaining_bytes: remaining_len });
        }
        Ok(Layout { topic, remaining_len, properties_len })
    }

    /// Size of the whole packet this delivery produces, for checking the receiver's Maximum Packet Size.
    pub fn frame_len(&self, version: ProtocolVersion, delivery: &Delivery<'_>) -> Result<usize, EncodeError> {
        let layout = self.layout(version, delivery)?;
        Ok(1 + variable_byte_integer_len(layout.remaining_len) + layout.remaining_len)
    }

    /// Appends this delivery's header (everything before the payload) to `out`. Nothing is written on error.
    pub fn write_header(
        &self,
        version: ProtocolVersion,
        delivery: &Delivery<'_>,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let layout = self.layout(version, delivery)?;
        let header_len =
            1 + variable_byte_integer_len(layout.remaining_len) + layout.remaining_len - self.payload.len();
        out.reserve(header_len);
        let first_byte = publish_first_byte(delivery.dup, delivery.qos, delivery.retain);
        out.put_u8(first_byte);
        put_variable_byte_integer(out, layout.remaining_len);
        put_field(out, layout.topic);
        if delivery.qos != QoS::AtMostOnce {
            out.put_u16(delivery.packet_id);
        }
        if let Some(properties_len) = layout.properties_len {
            put_variable_byte_integer(out, properties_len);
            if let Some(alias) = delivery.topic_alias {
                out.put_u8(id::TOPIC_ALIAS);
                out.put_u16(alias);
            }
            for &value in delivery.subscription_identifiers {
                out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
                put_variable_byte_integer(out, value as usize);
            }
            out.put_slice(&self.message_properties);
        }
        Ok(())
    }

    /// This delivery's frame: the header is split off `scratch` (which keeps its spare capacity for the
    /// next receiver, so most calls allocate nothing) and the payload is the shared `Bytes`.
    pub fn frame(
        &self,
        version: ProtocolVersion,
        delivery: &Delivery<'_>,
        scratch: &mut BytesMut,
    ) -> Result<PublishFrame, EncodeError> {
        scratch.clear();
        self.write_header(version, delivery, scratch)?;
        Ok(PublishFrame { header: scratch.split().freeze(), payload: self.payload.clone() })
    }
}

struct Layout<'a> {
    topic: &'a [u8],
    remaining_len: usize,
    properties_len: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_packet, Packet};

    fn decode_frame(frame: &PublishFrame, version: ProtocolVersion) -> Publish {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame.header);
        wire.extend_from_slice(&frame.payload);
        match decode_packet(&mut wire, version, u32::MAX) {
            Ok(Some(Packet::Publish(publish))) if wire.is_empty() => publish,
            other => panic!("not one PUBLISH: {other:?}"),
        }
    }

    fn message_properties() -> Properties {
        Properties {
            message_expiry_interval_secs: Some(60),
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            // Per receiver: must not leak into the shared part.
            topic_alias: Some(9),
            subscription_identifiers: [77].into_iter().collect(),
            ..Properties::default()
        }
    }

    #[test]
    fn each_receiver_gets_its_own_packet_id_sharing_the_payload() {
        let payload = Bytes::from_static(b"shared payload");
        let message = EncodedPublish::new(&"a/b".into(), &Properties::default(), payload.clone()).expect("prepares");
        let mut scratch = BytesMut::with_capacity(256);
        for (packet_id, version) in [(1, ProtocolVersion::V3_1), (2, ProtocolVersion::V3_1_1), (3, ProtocolVersion::V5)]
        {
            let delivery = Delivery { qos: QoS::AtLeastOnce, packet_id, ..Delivery::default() };
            let frame = message.frame(version, &delivery, &mut scratch).expect("encodes");
            assert_eq!(frame.payload.as_ptr(), payload.as_ptr(), "payload shared, not copied");
            assert_eq!(message.frame_len(version, &delivery), Ok(frame.len()));
            let publish = decode_frame(&frame, version);
            assert_eq!((publish.packet_id, publish.qos, &publish.topic[..]), (packet_id, QoS::AtLeastOnce, "a/b"));
            assert_eq!(publish.payload, payload);
        }
    }

    #[test]
    fn v5_delivery_properties_are_per_receiver_and_message_properties_shared() {
        let message =
            EncodedPublish::new(&"a/b".into(), &message_properties(), Bytes::from_static(b"x")).expect("prepares");
        let mut scratch = BytesMut::new();
        let ids = [5, 300_000];
        let delivery = Delivery {
            qos: QoS::ExactlyOnce,
            retain: true,
            dup: true,
            packet_id: 40_000,
            subscription_identifiers: &ids,
            topic_alias: Some(3),
            omit_topic: true,
        };
        let publish = decode_frame(
            &message.frame(ProtocolVersion::V5, &delivery, &mut scratch).expect("encodes"),
            ProtocolVersion::V5,
        );
        let expected_properties = Properties {
            topic_alias: Some(3),
            subscription_identifiers: ids.into_iter().collect(),
            ..message_properties()
        };
        assert_eq!(publish.properties, expected_properties);
        assert_eq!((publish.topic.as_str(), publish.retain, publish.dup), ("", true, true));

        let plain = decode_frame(
            &message.frame(ProtocolVersion::V5, &Delivery::default(), &mut scratch).expect("encodes"),
            ProtocolVersion::V5,
        );
        assert_eq!(plain.topic.as_str(), "a/b");
        assert_eq!(
            plain.properties,
            Properties { topic_alias: None, subscription_identifiers: Default::default(), ..message_properties() }
        );
    }

    #[test]
    fn v3_frames_carry_no_properties() {
        let message = EncodedPublish::new(&"t".into(), &message_properties(), Bytes::new()).expect("prepares");
        let ids = [1];
        let delivery =
            Delivery { subscription_identifiers: &ids, topic_alias: Some(1), omit_topic: true, ..Delivery::default() };
        let frame = message.frame(ProtocolVersion::V3_1_1, &delivery, &mut BytesMut::new()).expect("encodes");
        assert_eq!(&frame.header[..], &[0x30, 3, 0, 1, b't']);
    }

    #[test]
    fn invalid_deliveries_are_refused_without_writing() {
        let message = EncodedPublish::new(&"t".into(), &Properties::default(), Bytes::new()).expect("prepares");
        let mut out = BytesMut::new();
        let cases = [
            (
                Delivery { qos: QoS::AtLeastOnce, ..Delivery::default() },
                EncodeError::PacketIdZero { packet_type: PacketType::Publish },
            ),
            (Delivery { omit_topic: true, ..Delivery::default() }, EncodeError::TopicAliasMissing),
            (
                Delivery { subscription_identifiers: &[0], ..Delivery::default() },
                EncodeError::PropertyValueInvalid { id: id::SUBSCRIPTION_IDENTIFIER, value: 0 },
            ),
        ];
        for (delivery, expected) in cases {
            assert_eq!(message.write_header(ProtocolVersion::V5, &delivery, &mut out), Err(expected));
            assert!(out.is_empty());
        }
    }
}
