//! The Will Message of a session: kept from CONNECT, published when the connection ends abnormally
//! (socket lost, keep-alive timeout, protocol error, takeover) but not after a normal DISCONNECT
//! [MQTT-3.1.2-8] [MQTT-3.1.2-10]; a v5 DISCONNECT with reason 0x04 publishes it. A v5 Will Delay Interval
//! postpones it; a reconnect of the same client before then cancels it, and the end of the session
//! publishes it early (v5 section 3.1.3.2.2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::{Message, Origin};
use crate::protocol::{EncodeError, Properties, Will};

#[derive(Debug)]
pub struct PendingWill {
    pub will: Will,
    /// v5 Will Delay Interval.
    pub delay_secs: u32,
    /// Set once the connection is gone: when the delay ends.
    pub publish_at: Option<Instant>,
}

impl PendingWill {
    pub fn new(will: Will) -> Self {
        let delay_secs = will.properties.will_delay_interval_secs.unwrap_or(0);
        PendingWill { will, delay_secs, publish_at: None }
    }

    /// The application message to route, built when it is published (its expiry counts from then).
    pub fn into_message(self, origin: Origin, now: Instant) -> Result<Arc<Message>, EncodeError> {
        let Will { topic, payload, qos, retain, properties } = self.will;
        let expires_at = properties
            .message_expiry_interval_secs
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        Message::new(topic, payload, qos, retain, forwarded_properties(properties), expires_at, origin)
    }
}

/// The properties of a published message that travel with it to subscribers (v5 section 3.3.2.3): the
/// per-hop ones (topic alias, subscription identifiers, expiry, will delay) are dropped.
pub fn forwarded_properties(properties: Properties) -> Properties {
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        content_type: properties.content_type,
        response_topic: properties.response_topic,
        correlation_data: properties.correlation_data,
        user_properties: properties.user_properties,
        ..Properties::default()
    }
}
