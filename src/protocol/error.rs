//! Codec errors. `DecodeError` has one variant per protocol rule a peer can break, each naming its spec
//! clause, and maps to the MQTT 5 reason code the connection layer sends before closing (for 3.x peers the
//! connection is simply closed). `EncodeError` reports a packet that cannot be expressed on the wire.

use thiserror::Error;

use super::packet::{PacketType, ProtocolVersion};
use super::reason::ReasonCode;
use super::topic::TopicError;

/// A received packet broke a rule of the protocol. Clause numbers are MQTT 5.0's unless noted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Packet type 0 is reserved, and type 15 (AUTH) exists only in MQTT 5 (section 2.1.2).
    #[error("reserved packet type {packet_type} (section 2.1.2)")]
    ReservedPacketType { packet_type: u8 },
    /// The fixed-header flags of every packet but PUBLISH are fixed by the spec [MQTT-2.1.3-1].
    #[error("reserved fixed-header flags {flags:#06b} on {packet_type:?} [MQTT-2.1.3-1]")]
    ReservedFlags { packet_type: PacketType, flags: u8 },
    /// A Variable Byte Integer (such as the Remaining Length) has at most four bytes (section 1.5.5).
    #[error("variable byte integer longer than 4 bytes (section 1.5.5)")]
    VariableByteIntegerTooLong,
    /// A Variable Byte Integer uses the minimum number of bytes for its value [MQTT-1.5.5-1].
    #[error("variable byte integer not minimally encoded [MQTT-1.5.5-1]")]
    VariableByteIntegerNotMinimal,
    /// The whole packet (fixed header included) is larger than the maximum we accept (section 3.1.2.11.4).
    #[error("packet of {size_bytes} bytes exceeds the maximum of {max_bytes} bytes (section 3.1.2.11.4)")]
    PacketTooLarge { size_bytes: u64, max_bytes: u32 },
    /// A field runs past the end of the packet given by the Remaining Length (section 2.1.4).
    #[error("field runs past the end of the {packet_type:?} packet (section 2.1.4)")]
    UnexpectedEndOfPacket { packet_type: PacketType },
    /// Bytes remain after the last field of the packet (section 2.1.4).
    #[error("{count} unexpected bytes at the end of the {packet_type:?} packet (section 2.1.4)")]
    TrailingBytes { packet_type: PacketType, count: usize },
    /// Strings are well-formed UTF-8 [MQTT-1.5.4-1].
    #[error("string is not well-formed UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8,
    /// Strings do not contain the null character U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000 [MQTT-1.5.4-2]")]
    NullCharacter,
    /// SUBSCRIBE, UNSUBSCRIBE, PUBLISH with QoS > 0 and their acknowledgements carry a non-zero Packet
    /// Identifier [MQTT-2.2.1-3].
    #[error("packet identifier 0 in {packet_type:?} [MQTT-2.2.1-3]")]
    PacketIdZero { packet_type: PacketType },
    /// CONNECT's protocol name is "MQTT" (levels 4, 5) or "MQIsdp" (level 3) [MQTT-3.1.2-1].
    #[error("protocol name does not match the protocol level [MQTT-3.1.2-1]")]
    ProtocolNameInvalid,
    /// CONNECT's protocol level is 3, 4 or 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {level} [MQTT-3.1.2-2]")]
    UnsupportedProtocolLevel { level: u8 },
    /// The reserved bit 0 of the CONNECT flags is zero [MQTT-3.1.2-3].
    #[error("reserved CONNECT flag bit is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// With the Will Flag clear, Will QoS is 0 [MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13]).
    #[error("will QoS set without the will flag [MQTT-3.1.2-11]")]
    WillQosWithoutWill,
    /// With the Will Flag clear, Will Retain is 0 [MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-15]).
    #[error("will retain set without the will flag [MQTT-3.1.2-13]")]
    WillRetainWithoutWill,
    /// Will QoS is 0, 1 or 2 [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14]).
    #[error("will QoS 3 [MQTT-3.1.2-12]")]
    WillQosInvalid,
    /// In 3.1 and 3.1.1 the Password Flag requires the User Name Flag [MQTT-3.1.2-22] (3.1.1 numbering).
    #[error("password without user name [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// CONNACK's acknowledge flags other than Session Present are zero [MQTT-3.2.2-1].
    #[error("reserved CONNACK flag bits set [MQTT-3.2.2-1]")]
    ConnAckReservedFlags,
    /// A 3.x CONNACK return code is 0..=5 (3.1.1 section 3.2.2.3).
    #[error("unknown CONNACK return code {code} (3.1.1 section 3.2.2.3)")]
    ConnAckReturnCodeInvalid { code: u8 },
    /// A reason code is one of those the spec lists for that packet (section 2.4 and each packet's table).
    #[error("reason code {code:#04x} is not valid in {packet_type:?} (section 2.4)")]
    ReasonCodeInvalid { packet_type: PacketType, code: u8 },
    /// PUBLISH QoS is 0, 1 or 2: both QoS bits set is malformed [MQTT-3.3.1-4].
    #[error("PUBLISH with QoS 3 [MQTT-3.3.1-4]")]
    PublishQosInvalid,
    /// The DUP flag is 0 on every QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")]
    DupOnQos0,
    /// A PUBLISH or Will topic name is non-empty (unless a Topic Alias stands for it, section 3.3.2.3.4) and
    /// free of wildcards [MQTT-3.3.2-2].
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(TopicError),
    /// SUBSCRIBE carries at least one topic filter [MQTT-3.8.3-2] (3.1.1: [MQTT-3.8.3-3]).
    #[error("SUBSCRIBE without topic filters [MQTT-3.8.3-2]")]
    SubscribeEmpty,
    /// UNSUBSCRIBE carries at least one topic filter [MQTT-3.10.3-2].
    #[error("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")]
    UnsubscribeEmpty,
    /// The reserved bits of the subscription options are zero [MQTT-3.8.3-5] (3.1.1: [MQTT-3-8.3-4]).
    #[error("reserved subscription option bits set [MQTT-3.8.3-5]")]
    SubscriptionOptionsReserved,
    /// The maximum QoS of a subscription is 0, 1 or 2 (section 3.8.3.1).
    #[error("subscription with QoS 3 (section 3.8.3.1)")]
    SubscriptionQosInvalid,
    /// Retain Handling is 0, 1 or 2 (section 3.8.3.1).
    #[error("retain handling 3 (section 3.8.3.1)")]
    RetainHandlingInvalid,
    /// No Local is not set on a shared subscription [MQTT-3.8.3-4].
    #[error("no local set on a shared subscription [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription,
    /// A property identifier is one the spec defines (section 2.2.2.2).
    #[error("unknown property identifier {id:#04x} (section 2.2.2.2)")]
    PropertyIdInvalid { id: u8 },
    /// A property is one the spec allows in this packet (section 2.2.2.2).
    #[error("property {id:#04x} is not allowed in {packet_type:?} (section 2.2.2.2)")]
    PropertyNotAllowed { id: u8, packet_type: PacketType },
    /// A property other than User Property (and Subscription Identifier in PUBLISH) appears at most once.
    #[error("property {id:#04x} appears more than once (section 2.2.2.2)")]
    PropertyDuplicate { id: u8 },
    /// The Property Length fits in the packet, and each property fits in the Property Length
    /// (section 2.2.2.1).
    #[error("property length runs past the end of the packet (section 2.2.2.1)")]
    PropertyLengthOverrun,
    /// A property value lies in the range the spec gives it (e.g. Receive Maximum 0, Subscription Identifier
    /// 0, Request Problem Information 2 are protocol errors; section 3.1.2.11, 3.8.2.1.2).
    #[error("property {id:#04x} has the invalid value {value} (section 2.2.2.2)")]
    PropertyValueInvalid { id: u8, value: u32 },
    /// Authentication Data is only sent with an Authentication Method (section 3.1.2.11.10).
    #[error("authentication data without authentication method (section 3.1.2.11.10)")]
    AuthDataWithoutMethod,
}

impl DecodeError {
    /// The MQTT 5 reason code to send (DISCONNECT, or CONNACK while connecting) before closing.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            ProtocolNameInvalid | UnsupportedProtocolLevel { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            TopicNameInvalid(TopicError::Empty) => ReasonCode::PROTOCOL_ERROR,
            TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            PacketIdZero { .. }
            | SubscribeEmpty
            | UnsubscribeEmpty
            | RetainHandlingInvalid
            | NoLocalOnSharedSubscription
            | PropertyDuplicate { .. }
            | PropertyValueInvalid { .. }
            | AuthDataWithoutMethod => ReasonCode::PROTOCOL_ERROR,
            ReservedPacketType { .. }
            | ReservedFlags { .. }
            | VariableByteIntegerTooLong
            | VariableByteIntegerNotMinimal
            | UnexpectedEndOfPacket { .. }
            | TrailingBytes { .. }
            | InvalidUtf8
            | NullCharacter
            | ConnectReservedFlag
            | WillQosWithoutWill
            | WillRetainWithoutWill
            | WillQosInvalid
            | PasswordWithoutUsername
            | ConnAckReservedFlags
            | ConnAckReturnCodeInvalid { .. }
            | ReasonCodeInvalid { .. }
            | PublishQosInvalid
            | DupOnQos0
            | SubscriptionOptionsReserved
            | SubscriptionQosInvalid
            | PropertyIdInvalid { .. }
            | PropertyNotAllowed { .. }
            | PropertyLengthOverrun => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// A packet that cannot be put on the wire as given.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// AUTH exists only in MQTT 5.
    #[error("{packet_type:?} does not exist in protocol {version:?}")]
    PacketNotInVersion { packet_type: PacketType, version: ProtocolVersion },
    /// The reason code is not one the spec allows in this packet (for this version).
    #[error("reason code {code:#04x} cannot be sent in {packet_type:?}")]
    ReasonCodeInvalid { packet_type: PacketType, code: u8 },
    /// A string or binary field is longer than 65,535 bytes (section 1.5.4, 1.5.6).
    #[error("field of {len_bytes} bytes exceeds 65535")]
    FieldTooLong { len_bytes: usize },
    /// The Remaining Length would exceed 268,435,455 (section 2.1.4).
    #[error("remaining length {remaining_bytes} exceeds 268435455")]
    PacketTooLarge { remaining_bytes: usize },
    /// QoS > 0 PUBLISH, SUBSCRIBE, UNSUBSCRIBE and acknowledgements need a non-zero packet id [MQTT-2.2.1-3].
    #[error("packet identifier 0 in {packet_type:?} [MQTT-2.2.1-3]")]
    PacketIdZero { packet_type: PacketType },
    /// SUBSCRIBE and UNSUBSCRIBE carry at least one topic filter.
    #[error("{packet_type:?} without topic filters")]
    NoTopicFilters { packet_type: PacketType },
    /// A PUBLISH sent with an empty topic name needs a Topic Alias to stand for it (section 3.3.2.3.4).
    #[error("empty topic name without a topic alias")]
    TopicAliasMissing,
    /// A property value that MQTT 5 cannot encode (e.g. a Subscription Identifier over 268,435,455).
    #[error("property {id:#04x} value {value} cannot be encoded")]
    PropertyValueInvalid { id: u8, value: u32 },
}
