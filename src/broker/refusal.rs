//! `Refusal`: every reason the core refuses what a client sent, one variant per rule. A variant knows the
//! reason code the client is answered with (CONNACK, SUBACK, PUBACK/PUBREC or DISCONNECT) and the rule it
//! enforces, spec clause first where there is one; the log line and the v5 Reason String print the rule,
//! and tests and counters match on the variant, never on the text.

use std::fmt;

use crate::protocol::{DecodeError, ReasonCode};

/// Why the broker refused a CONNECT, a SUBSCRIBE filter, a PUBLISH or closed a connection that broke a
/// rule. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    // CONNECT
    ClientIdTooLong,
    ClientIdEmptyInMqtt31,
    ClientIdEmptyWithoutCleanSession,
    WillQosNotSupported,
    WillRetainNotSupported,
    WillTopicInvalid,
    Redirected,
    SessionsPerShardMax,
    /// The process is above `memory_max_bytes` and sheds load: no new connections until it recovers.
    MemoryBudgetExceeded,
    AsynchronousAuthenticationUnsupported,
    // Enhanced authentication, at CONNECT and after
    SecondConnectDuringAuthentication,
    AuthenticationMethodUnsupported,
    AuthReasonNotContinue,
    AuthMethodDiffersFromConnect,
    AuthUserNameDiffers,
    /// The exchange refused the client; `reason` is the method's (0x86, 0x87 or 0x8C).
    AuthenticationFailed {
        reason: ReasonCode,
    },
    AuthWithoutConnectMethod,
    ReauthenticationWithoutMethod,
    ReauthenticationMethodChanged,
    ReauthenticationReasonInvalid,
    ReauthenticatedAsAnotherUser,
    ReauthenticationFailed,
    // Packet order
    FirstPacketNotConnect,
    SecondConnect,
    ServerToClientPacket,
    SessionExpiryAfterZero,
    // PUBLISH
    EmptyTopicWithoutAlias,
    TopicAliasInvalid,
    TopicAliasUnknown,
    ConnectionGone,
    SubscriptionIdentifierInPublish,
    PublishQosNotSupported,
    PublishRetainNotSupported,
    TopicNameLimits,
    TopicNameInvalid,
    ReceiveMaximumExceeded,
    /// Persistence cannot write: a 3.x QoS 1/2 PUBLISH cannot be refused in its PUBACK, so its connection
    /// is closed (v5 gets PUBACK/PUBREC 0x97 instead, without a close).
    DiskFull,
    PayloadNotUtf8,
    /// A `[[validation]]` rule with `on_invalid = "disconnect"` failed; `detail` names it and why.
    ValidationFailed {
        detail: String,
    },
    // SUBSCRIBE
    TopicFilterInvalid,
    TopicFilterLimits,
    SubscribeNotAuthorized,
    SharedSubscriptionsUnavailable,
    WildcardSubscriptionsUnavailable,
    SubscriptionIdentifiersUnavailable,
    SubscriptionsPerSessionMax,
    SessionGone,
    /// The decoder rejected the input; the error names the rule.
    Malformed(DecodeError),
}

impl Refusal {
    /// The reason code the client is answered with (for 3.x, the CONNACK return code it maps to).
    pub fn reason(&self) -> ReasonCode {
        use Refusal::*;
        match self {
            ClientIdTooLong | ClientIdEmptyInMqtt31 | ClientIdEmptyWithoutCleanSession => {
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
            }
            WillQosNotSupported | PublishQosNotSupported => ReasonCode::QOS_NOT_SUPPORTED,
            WillRetainNotSupported | PublishRetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
            WillTopicInvalid | TopicNameLimits | TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            Redirected => ReasonCode::USE_ANOTHER_SERVER,
            SessionsPerShardMax => ReasonCode::SERVER_BUSY,
            SubscriptionsPerSessionMax | MemoryBudgetExceeded => ReasonCode::QUOTA_EXCEEDED,
            AsynchronousAuthenticationUnsupported => ReasonCode::SERVER_UNAVAILABLE,
            AuthenticationMethodUnsupported => ReasonCode::BAD_AUTHENTICATION_METHOD,
            AuthUserNameDiffers => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            AuthenticationFailed { reason } => *reason,
            ReauthenticatedAsAnotherUser | ReauthenticationFailed | SubscribeNotAuthorized => {
                ReasonCode::NOT_AUTHORIZED
            }
            TopicAliasInvalid => ReasonCode::TOPIC_ALIAS_INVALID,
            ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            DiskFull => ReasonCode::QUOTA_EXCEEDED,
            PayloadNotUtf8 | ValidationFailed { .. } => ReasonCode::PAYLOAD_FORMAT_INVALID,
            TopicFilterInvalid | TopicFilterLimits => ReasonCode::TOPIC_FILTER_INVALID,
            SharedSubscriptionsUnavailable => ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            WildcardSubscriptionsUnavailable => ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            SubscriptionIdentifiersUnavailable => ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            SessionGone => ReasonCode::UNSPECIFIED_ERROR,
            Malformed(err) => err.reason_code(),
            SecondConnectDuringAuthentication
            | AuthReasonNotContinue
            | AuthMethodDiffersFromConnect
            | AuthWithoutConnectMethod
            | ReauthenticationWithoutMethod
            | ReauthenticationMethodChanged
            | ReauthenticationReasonInvalid
            | FirstPacketNotConnect
            | SecondConnect
            | ServerToClientPacket
            | SessionExpiryAfterZero
            | EmptyTopicWithoutAlias
            | TopicAliasUnknown
            | ConnectionGone
            | SubscriptionIdentifierInPublish => ReasonCode::PROTOCOL_ERROR,
        }
    }

    /// The rule, spec clause first where the spec has one (a limit names its setting instead).
    pub fn rule(&self) -> &'static str {
        use Refusal::*;
        match self {
            ClientIdTooLong => "client identifier longer than client_id_length_max_bytes",
            ClientIdEmptyInMqtt31 => "(MQTT 3.1 section 3.1.3.1) client identifier must be 1 to 23 characters",
            ClientIdEmptyWithoutCleanSession => "[MQTT-3.1.3-8] empty client identifier requires clean session",
            WillQosNotSupported => "[MQTT-3.2.2-12] will QoS above the Maximum QoS",
            WillRetainNotSupported => "[MQTT-3.2.2-13] will retain while Retain Available is 0",
            WillTopicInvalid => "[MQTT-3.1.3-11] will topic is not a valid topic name",
            Redirected => "clients are redirected (server_reference)",
            SessionsPerShardMax => "sessions_per_shard_max reached",
            MemoryBudgetExceeded => "memory_max_bytes exceeded: the server sheds load and accepts no new connections",
            AsynchronousAuthenticationUnsupported => {
                "asynchronous authentication is not supported by this broker core yet"
            }
            SecondConnectDuringAuthentication => "[MQTT-3.1.0-2] second CONNECT during enhanced authentication",
            AuthenticationMethodUnsupported => "[MQTT-4.12.0-1] unsupported authentication method",
            AuthReasonNotContinue => "[MQTT-4.12.0-3] AUTH during CONNECT must carry reason 0x18",
            AuthMethodDiffersFromConnect => "[MQTT-4.12.0-5] AUTH names another Authentication Method than CONNECT",
            AuthUserNameDiffers => {
                "(v5 section 4.12) CONNECT User Name differs from the user the exchange authenticated"
            }
            AuthenticationFailed { .. } => "[MQTT-4.12.0-4] enhanced authentication failed",
            AuthWithoutConnectMethod => {
                "[MQTT-4.12.0-7] AUTH before CONNECT or without an Authentication Method in CONNECT"
            }
            ReauthenticationWithoutMethod => {
                "[MQTT-4.12.0-7] AUTH from a client whose CONNECT had no Authentication Method"
            }
            ReauthenticationMethodChanged => {
                "[MQTT-4.12.1-1] re-authentication must use the CONNECT's Authentication Method"
            }
            ReauthenticationReasonInvalid => {
                "(section 3.15.2.1) AUTH 0x19 starts a re-authentication, 0x18 continues one in progress"
            }
            ReauthenticatedAsAnotherUser => "[MQTT-4.12.1-2] re-authenticated as another user",
            ReauthenticationFailed => "[MQTT-4.12.1-2] re-authentication failed",
            FirstPacketNotConnect => "[MQTT-3.1.0-1] first packet must be CONNECT",
            SecondConnect => "[MQTT-3.1.0-2] second CONNECT on a connection",
            ServerToClientPacket => "(section 2.1.2) server-to-client packet sent by a client",
            SessionExpiryAfterZero => "[MQTT-3.14.2-2] DISCONNECT sets a session expiry after CONNECT had 0",
            EmptyTopicWithoutAlias => "[MQTT-3.3.2-1] empty topic name without a topic alias",
            TopicAliasInvalid => "[MQTT-3.3.2-8] topic alias 0 or above our Topic Alias Maximum",
            TopicAliasUnknown => "(v5 section 3.3.2.3.4) topic alias used before it was set",
            ConnectionGone => "connection gone",
            SubscriptionIdentifierInPublish => "[MQTT-3.3.4-6] PUBLISH from a client carries a Subscription Identifier",
            PublishQosNotSupported => "[MQTT-3.2.2-11] PUBLISH QoS above the Maximum QoS",
            PublishRetainNotSupported => "[MQTT-3.2.2-14] PUBLISH with retain while Retain Available is 0",
            TopicNameLimits => "topic name longer than topic_length_max_bytes or deeper than topic_levels_max",
            TopicNameInvalid => "[MQTT-3.3.2-2] topic name contains a wildcard or is empty",
            ReceiveMaximumExceeded => "[MQTT-3.3.4-7] more unacknowledged QoS 2 PUBLISHes than our Receive Maximum",
            DiskFull => "persistence: the disk is full, QoS 1/2 publishes are refused until space returns",
            PayloadNotUtf8 => "(v5 section 3.3.2.3.2) payload is not UTF-8 but Payload Format Indicator is 1",
            ValidationFailed { .. } => "[[validation]] rule failed (on_invalid = \"disconnect\")",
            TopicFilterInvalid => "(v5 sections 4.7.1, 4.7.3, 4.8.2) topic filter is not valid",
            TopicFilterLimits => "topic filter longer than topic_length_max_bytes or deeper than topic_levels_max",
            SubscribeNotAuthorized => "not authorized to subscribe to this topic filter (no read access)",
            SharedSubscriptionsUnavailable => "(v5 section 4.8.2) shared subscriptions are turned off",
            WildcardSubscriptionsUnavailable => "(v5 section 3.2.2.3.14) wildcard subscriptions are turned off",
            SubscriptionIdentifiersUnavailable => "(v5 section 3.2.2.3.15) subscription identifiers are turned off",
            SubscriptionsPerSessionMax => "subscriptions_per_session_max reached",
            SessionGone => "session gone",
            Malformed(_) => "malformed packet",
        }
    }
}

impl fmt::Display for Refusal {
    /// What the log line and the v5 Reason String say: the rule, or for the variants that carry one, the
    /// decoder's error or the validation rule's detail (each naming its rule).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(err) => write!(f, "{err}"),
            Refusal::ValidationFailed { detail } => f.write_str(detail),
            other => f.write_str(other.rule()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_with_a_spec_clause_names_it_first() {
        let samples = [
            Refusal::SecondConnect,
            Refusal::TopicAliasInvalid,
            Refusal::ReceiveMaximumExceeded,
            Refusal::ClientIdEmptyWithoutCleanSession,
        ];
        for refusal in samples {
            assert!(refusal.rule().starts_with("[MQTT-"), "{refusal:?}: {}", refusal.rule());
            assert_eq!(refusal.to_string(), refusal.rule());
        }
    }

    #[test]
    fn over_the_memory_budget_a_connect_gets_quota_exceeded_which_3x_clients_see_as_server_unavailable() {
        let refusal = Refusal::MemoryBudgetExceeded;
        assert_eq!(refusal.reason(), ReasonCode::QUOTA_EXCEEDED);
        assert_eq!(refusal.reason().to_v3_connack_return_code(), 3);
        assert!(refusal.rule().starts_with("memory_max_bytes"), "names its setting: {}", refusal.rule());
    }

    #[test]
    fn a_malformed_packet_answers_with_the_decoders_reason_and_text() {
        let err = DecodeError::VariableByteIntegerNotMinimal;
        let refusal = Refusal::Malformed(err.clone());
        assert_eq!(refusal.reason(), err.reason_code());
        assert_eq!(refusal.to_string(), err.to_string());
    }
}
