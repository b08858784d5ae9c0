//! MQTT 5 properties: one struct holding every property, each `None`/empty when absent.
//!
//! Which properties a packet may carry is checked by the decoder (a property not allowed for that packet is a
//! malformed packet); the struct itself is shared by all packets to keep encoding and decoding in one place.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;
use super::wire::{
    field_len, put_field, put_variable_byte_integer, variable_byte_integer_len, Reader, VARIABLE_BYTE_INTEGER_MAX,
};
use super::ByteStr;

/// Property identifiers, as in the MQTT 5 spec section 2.2.2.2.
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Every MQTT 5 property. `Default` is "no properties".
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval_secs: Option<u32>,
    pub content_type: Option<ByteStr>,
    pub response_topic: Option<ByteStr>,
    pub correlation_data: Option<Bytes>,
    /// One in SUBSCRIBE; one or more in a PUBLISH sent to a client.
    pub subscription_identifiers: SmallVec<[u32; 1]>,
    pub session_expiry_interval_secs: Option<u32>,
    pub assigned_client_identifier: Option<ByteStr>,
    pub server_keep_alive_secs: Option<u16>,
    pub authentication_method: Option<ByteStr>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval_secs: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteStr>,
    pub server_reference: Option<ByteStr>,
    pub reason_string: Option<ByteStr>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// In the order they were sent; the same name may repeat.
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Where a property section sits. It decides which identifiers are allowed there (section 2.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropertyScope {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// The PUBLISH properties every receiver shares: all but Topic Alias and Subscription Identifier.
    PublishMessage,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    PubResponse(PacketType),
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

mod scope_bit {
    pub const CONNECT: u16 = 1 << 0;
    pub const WILL: u16 = 1 << 1;
    pub const CONNACK: u16 = 1 << 2;
    pub const PUBLISH: u16 = 1 << 3;
    pub const PUBLISH_MESSAGE: u16 = 1 << 4;
    pub const PUB_RESPONSE: u16 = 1 << 5;
    pub const SUBSCRIBE: u16 = 1 << 6;
    pub const SUBACK: u16 = 1 << 7;
    pub const UNSUBSCRIBE: u16 = 1 << 8;
    pub const UNSUBACK: u16 = 1 << 9;
    pub const DISCONNECT: u16 = 1 << 10;
    pub const AUTH: u16 = 1 << 11;
    pub const ALL: u16 = (1 << 12) - 1;
}

impl PropertyScope {
    fn bit(self) -> u16 {
        match self {
            PropertyScope::Connect => scope_bit::CONNECT,
            PropertyScope::Will => scope_bit::WILL,
            PropertyScope::ConnAck => scope_bit::CONNACK,
            PropertyScope::Publish => scope_bit::PUBLISH,
            PropertyScope::PublishMessage => scope_bit::PUBLISH_MESSAGE,
            PropertyScope::PubResponse(_) => scope_bit::PUB_RESPONSE,
            PropertyScope::Subscribe => scope_bit::SUBSCRIBE,
            PropertyScope::SubAck => scope_bit::SUBACK,
            PropertyScope::Unsubscribe => scope_bit::UNSUBSCRIBE,
            PropertyScope::UnsubAck => scope_bit::UNSUBACK,
            PropertyScope::Disconnect => scope_bit::DISCONNECT,
            PropertyScope::Auth => scope_bit::AUTH,
        }
    }

    fn packet_type(self) -> PacketType {
        match self {
            PropertyScope::Connect | PropertyScope::Will => PacketType::Connect,
            PropertyScope::ConnAck => PacketType::ConnAck,
            PropertyScope::Publish | PropertyScope::PublishMessage => PacketType::Publish,
            PropertyScope::PubResponse(packet_type) => packet_type,
            PropertyScope::Subscribe => PacketType::Subscribe,
            PropertyScope::SubAck => PacketType::SubAck,
            PropertyScope::Unsubscribe => PacketType::Unsubscribe,
            PropertyScope::UnsubAck => PacketType::UnsubAck,
            PropertyScope::Disconnect => PacketType::Disconnect,
            PropertyScope::Auth => PacketType::Auth,
        }
    }
}

/// The scopes a property identifier may appear in; `None` for identifiers the spec does not define.
fn allowed_scopes(property_id: u8) -> Option<u16> {
    use scope_bit::*;
    let message = PUBLISH | PUBLISH_MESSAGE | WILL;
    Some(match property_id {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => message,
        id::SUBSCRIPTION_IDENTIFIER => PUBLISH | SUBSCRIBE,
        id::SESSION_EXPIRY_INTERVAL => CONNECT | CONNACK | DISCONNECT,
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => CONNACK,
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => CONNECT | CONNACK | AUTH,
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => CONNECT,
        id::WILL_DELAY_INTERVAL => WILL,
        id::SERVER_REFERENCE => CONNACK | DISCONNECT,
        id::REASON_STRING => CONNACK | PUB_RESPONSE | SUBACK | UNSUBACK | DISCONNECT | AUTH,
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => CONNECT | CONNACK,
        id::TOPIC_ALIAS => PUBLISH,
        id::USER_PROPERTY => ALL,
        _ => return None,
    })
}

fn set_once<T>(slot: &mut Option<T>, property_id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::PropertyDuplicate { id: property_id });
    }
    *slot = Some(value);
    Ok(())
}

/// A one-byte property whose only values are 0 and 1.
fn read_flag(reader: &mut Reader, property_id: u8) -> Result<u8, DecodeError> {
    match reader.u8()? {
        value @ (0 | 1) => Ok(value),
        value => Err(DecodeError::PropertyValueInvalid { id: property_id, value: u32::from(value) }),
    }
}

fn read_non_zero_u16(reader: &mut Reader, property_id: u8) -> Result<u16, DecodeError> {
    match reader.u16()? {
        0 => Err(DecodeError::PropertyValueInvalid { id: property_id, value: 0 }),
        value => Ok(value),
    }
}

fn read_non_zero_u32(reader: &mut Reader, property_id: u8) -> Result<u32, DecodeError> {
    match reader.u32()? {
        0 => Err(DecodeError::PropertyValueInvalid { id: property_id, value: 0 }),
        value => Ok(value),
    }
}

impl Properties {
    /// Decodes a property section (Property Length, then properties) allowed in `scope`.
    pub(crate) fn decode(reader: &mut Reader, scope: PropertyScope) -> Result<Properties, DecodeError> {
        let mut properties = Properties::default();
        properties.decode_into(reader, scope)?;
        Ok(properties)
    }

    /// Like [`Properties::decode`], filling `self` (which starts empty) in place: `Properties` is large, and
    /// the hot PUBLISH path avoids moving it through return values.
    pub(crate) fn decode_into(&mut self, reader: &mut Reader, scope: PropertyScope) -> Result<(), DecodeError> {
        let len = reader.variable_byte_integer()? as usize;
        if len > reader.remaining() {
            return Err(DecodeError::PropertyLengthOverrun);
        }
        if len == 0 {
            return Ok(());
        }
        let outer_end = reader.limit_to(len);
        while reader.remaining() > 0 {
            self.decode_one(reader, scope).map_err(|err| match err {
                DecodeError::UnexpectedEndOfPacket { .. } => DecodeError::PropertyLengthOverrun,
                other => other,
            })?;
        }
        reader.restore_end(outer_end);
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
        Ok(())
    }

    fn decode_one(&mut self, r: &mut Reader, scope: PropertyScope) -> Result<(), DecodeError> {
        // Identifiers are Variable Byte Integers, but every defined one fits in a single byte.
        let pid = r.u8()?;
        let allowed = allowed_scopes(pid).ok_or(DecodeError::PropertyIdInvalid { id: pid })?;
        if allowed & scope.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed { id: pid, packet_type: scope.packet_type() });
        }
        match pid {
            id::PAYLOAD_FORMAT_INDICATOR => set_once(&mut self.payload_format_indicator, pid, read_flag(r, pid)?),
            id::MESSAGE_EXPIRY_INTERVAL => set_once(&mut self.message_expiry_interval_secs, pid, r.u32()?),
            id::CONTENT_TYPE => set_once(&mut self.content_type, pid, r.string()?),
            id::RESPONSE_TOPIC => {
                let topic = r.string()?;
                // The Response Topic is a Topic Name [MQTT-3.3.2-14].
                super::topic::validate_topic_name(&topic).map_err(DecodeError::TopicNameInvalid)?;
                set_once(&mut self.response_topic, pid, topic)
            }
            id::CORRELATION_DATA => set_once(&mut self.correlation_data, pid, r.binary()?),
            id::SUBSCRIPTION_IDENTIFIER => self.decode_subscription_identifier(r, scope),
            id::SESSION_EXPIRY_INTERVAL => set_once(&mut self.session_expiry_interval_secs, pid, r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => set_once(&mut self.assigned_client_identifier, pid, r.string()?),
            id::SERVER_KEEP_ALIVE => set_once(&mut self.server_keep_alive_secs, pid, r.u16()?),
            id::AUTHENTICATION_METHOD => set_once(&mut self.authentication_method, pid, r.string()?),
            id::AUTHENTICATION_DATA => set_once(&mut self.authentication_data, pid, r.binary()?),
            id::REQUEST_PROBLEM_INFORMATION => set_once(&mut self.request_problem_information, pid, read_flag(r, pid)?),
            id::WILL_DELAY_INTERVAL => set_once(&mut self.will_delay_interval_secs, pid, r.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => {
                set_once(&mut self.request_response_information, pid, read_flag(r, pid)?)
            }
            id::RESPONSE_INFORMATION => set_once(&mut self.response_information, pid, r.string()?),
            id::SERVER_REFERENCE => set_once(&mut self.server_reference, pid, r.string()?),
            id::REASON_STRING => set_once(&mut self.reason_string, pid, r.string()?),
            id::RECEIVE_MAXIMUM => set_once(&mut self.receive_maximum, pid, read_non_zero_u16(r, pid)?),
            id::TOPIC_ALIAS_MAXIMUM => set_once(&mut self.topic_alias_maximum, pid, r.u16()?),
            id::TOPIC_ALIAS => set_once(&mut self.topic_alias, pid, r.u16()?),
            id::MAXIMUM_QOS => set_once(&mut self.maximum_qos, pid, read_flag(r, pid)?),
            id::RETAIN_AVAILABLE => set_once(&mut self.retain_available, pid, read_flag(r, pid)?),
            id::USER_PROPERTY => {
                let name = r.string()?;
                let value = r.string()?;
                self.user_properties.push((name, value));
                Ok(())
            }
            id::MAXIMUM_PACKET_SIZE => set_once(&mut self.maximum_packet_size, pid, read_non_zero_u32(r, pid)?),
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                set_once(&mut self.wildcard_subscription_available, pid, read_flag(r, pid)?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                set_once(&mut self.subscription_identifier_available, pid, read_flag(r, pid)?)
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => {
                set_once(&mut self.shared_subscription_available, pid, read_flag(r, pid)?)
            }
            _ => Err(DecodeError::PropertyIdInvalid { id: pid }),
        }
    }

    /// Several in a PUBLISH sent to a client, one in SUBSCRIBE; never 0 (section 3.8.2.1.2).
    fn decode_subscription_identifier(&mut self, r: &mut Reader, scope: PropertyScope) -> Result<(), DecodeError> {
        let pid = id::SUBSCRIPTION_IDENTIFIER;
        let value = r.variable_byte_integer()?;
        if value == 0 {
            return Err(DecodeError::PropertyValueInvalid { id: pid, value });
        }
        if scope == PropertyScope::Subscribe && !self.subscription_identifiers.is_empty() {
            return Err(DecodeError::PropertyDuplicate { id: pid });
        }
        self.subscription_identifiers.push(value);
        Ok(())
    }

    /// Length of the property section's content (without its Property Length prefix) for `scope`,
    /// checking every field's limit. Properties not allowed in `scope` are left out.
    pub(crate) fn wire_len(&self, scope: PropertyScope) -> Result<usize, EncodeError> {
        let mut sink = LengthSink { len_bytes: 0, error: None };
        self.visit(scope, &mut sink);
        match sink.error {
            Some(err) => Err(err),
            None if sink.len_bytes > VARIABLE_BYTE_INTEGER_MAX as usize => {
                Err(EncodeError::PacketTooLarge { remaining_bytes: sink.len_bytes })
            }
            None => Ok(sink.len_bytes),
        }
    }

    /// Writes Property Length (`content_len_bytes`, from [`Properties::wire_len`]) and the properties.
    pub(crate) fn encode(&self, scope: PropertyScope, content_len_bytes: usize, out: &mut BytesMut) {
        put_variable_byte_integer(out, content_len_bytes);
        if content_len_bytes > 0 {
            self.encode_content(scope, out);
        }
    }

    /// Writes the properties allowed in `scope` without the Property Length.
    pub(crate) fn encode_content(&self, scope: PropertyScope, out: &mut BytesMut) {
        self.visit(scope, &mut WriteSink { out });
    }

    /// Hands every present property allowed in `scope` to `sink`, in identifier order.
    fn visit(&self, scope: PropertyScope, sink: &mut impl PropertySink) {
        let mut s = ScopedSink { sink, scope_bit: scope.bit() };
        s.byte(id::PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.four(id::MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval_secs);
        s.field(id::CONTENT_TYPE, text(&self.content_type));
        s.field(id::RESPONSE_TOPIC, text(&self.response_topic));
        s.field(id::CORRELATION_DATA, self.correlation_data.as_deref());
        if s.allows(id::SUBSCRIPTION_IDENTIFIER) {
            for &value in &self.subscription_identifiers {
                s.sink.variable(id::SUBSCRIPTION_IDENTIFIER, value);
            }
        }
        s.four(id::SESSION_EXPIRY_INTERVAL, self.session_expiry_interval_secs);
        s.field(id::ASSIGNED_CLIENT_IDENTIFIER, text(&self.assigned_client_identifier));
        s.two(id::SERVER_KEEP_ALIVE, self.server_keep_alive_secs);
        s.field(id::AUTHENTICATION_METHOD, text(&self.authentication_method));
        s.field(id::AUTHENTICATION_DATA, self.authentication_data.as_deref());
        s.byte(id::REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        s.four(id::WILL_DELAY_INTERVAL, self.will_delay_interval_secs);
        s.byte(id::REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        s.field(id::RESPONSE_INFORMATION, text(&self.response_information));
        s.field(id::SERVER_REFERENCE, text(&self.server_reference));
        s.field(id::REASON_STRING, text(&self.reason_string));
        s.two(id::RECEIVE_MAXIMUM, self.receive_maximum);
        s.two(id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.two(id::TOPIC_ALIAS, self.topic_alias);
        s.byte(id::MAXIMUM_QOS, self.maximum_qos);
        s.byte(id::RETAIN_AVAILABLE, self.retain_available);
        if s.allows(id::USER_PROPERTY) {
            for (name, value) in &self.user_properties {
                s.sink.pair(id::USER_PROPERTY, name.as_bytes(), value.as_bytes());
            }
        }
        s.four(id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        s.byte(id::WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        s.byte(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available);
        s.byte(id::SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
    }
}

fn text(value: &Option<ByteStr>) -> Option<&[u8]> {
    value.as_ref().map(|value| value.as_str().as_bytes())
}

/// Receives properties during encoding: once to measure, once to write.
trait PropertySink {
    fn byte(&mut self, property_id: u8, value: u8);
    fn two(&mut self, property_id: u8, value: u16);
    fn four(&mut self, property_id: u8, value: u32);
    fn variable(&mut self, property_id: u8, value: u32);
    fn field(&mut self, property_id: u8, value: &[u8]);
    fn pair(&mut self, property_id: u8, name: &[u8], value: &[u8]);
}

/// Skips absent properties and those not allowed in the scope.
struct ScopedSink<'a, S> {
    sink: &'a mut S,
    scope_bit: u16,
}

impl<S: PropertySink> ScopedSink<'_, S> {
    fn allows(&self, property_id: u8) -> bool {
        allowed_scopes(property_id).is_some_and(|scopes| scopes & self.scope_bit != 0)
    }

    fn byte(&mut self, property_id: u8, value: Option<u8>) {
        if let Some(value) = value.filter(|_| self.allows(property_id)) {
            self.sink.byte(property_id, value);
        }
    }

    fn two(&mut self, property_id: u8, value: Option<u16>) {
        if let Some(value) = value.filter(|_| self.allows(property_id)) {
            self.sink.two(property_id, value);
        }
    }

    fn four(&mut self, property_id: u8, value: Option<u32>) {
        if let Some(value) = value.filter(|_| self.allows(property_id)) {
            self.sink.four(property_id, value);
        }
    }

    fn field(&mut self, property_id: u8, value: Option<&[u8]>) {
        if let Some(value) = value.filter(|_| self.allows(property_id)) {
            self.sink.field(property_id, value);
        }
    }
}

struct LengthSink {
    len_bytes: usize,
    error: Option<EncodeError>,
}

impl LengthSink {
    fn add_field(&mut self, value: &[u8]) {
        match field_len(value.len()) {
            Ok(len) => self.len_bytes += len,
            Err(err) => self.error = Some(err),
        }
    }
}

impl PropertySink for LengthSink {
    fn byte(&mut self, _: u8, _: u8) {
        self.len_bytes += 2;
    }
    fn two(&mut self, _: u8, _: u16) {
        self.len_bytes += 3;
    }
    fn four(&mut self, _: u8, _: u32) {
        self.len_bytes += 5;
    }
    fn variable(&mut self, property_id: u8, value: u32) {
        if value == 0 || value > VARIABLE_BYTE_INTEGER_MAX {
            self.error = Some(EncodeError::PropertyValueInvalid { id: property_id, value });
        }
        self.len_bytes += 1 + variable_byte_integer_len(value as usize);
    }
    fn field(&mut self, _: u8, value: &[u8]) {
        self.len_bytes += 1;
        self.add_field(value);
    }
    fn pair(&mut self, _: u8, name: &[u8], value: &[u8]) {
        self.len_bytes += 1;
        self.add_field(name);
        self.add_field(value);
    }
}

struct WriteSink<'a> {
    out: &'a mut BytesMut,
}

impl PropertySink for WriteSink<'_> {
    fn byte(&mut self, property_id: u8, value: u8) {
        self.out.put_u8(property_id);
        self.out.put_u8(value);
    }
    fn two(&mut self, property_id: u8, value: u16) {
        self.out.put_u8(property_id);
        self.out.put_u16(value);
    }
    fn four(&mut self, property_id: u8, value: u32) {
        self.out.put_u8(property_id);
        self.out.put_u32(value);
    }
    fn variable(&mut self, property_id: u8, value: u32) {
        self.out.put_u8(property_id);
        put_variable_byte_integer(self.out, value as usize);
    }
    fn field(&mut self, property_id: u8, value: &[u8]) {
        self.out.put_u8(property_id);
        put_field(self.out, value);
    }
    fn pair(&mut self, property_id: u8, name: &[u8], value: &[u8]) {
        self.out.put_u8(property_id);
        put_field(self.out, name);
        put_field(self.out, value);
    }
}
