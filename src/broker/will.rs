//! The Will Message of a session: kept from CONNECT, published when the connection ends abnormally
//! (socket lost, keep-alive timeout, protocol error, takeover) but not after a normal DISCONNECT
//! [MQTT-3.1.2-8] [MQTT-3.1.2-10]; a v5 DISCONNECT with reason 0x04 publishes it. A v5 Will Delay Interval
//! postpones it; a reconnect of the same client before then cancels it, and the end of the session
//! publishes it early (v5 section 3.1.3.2.2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::{Message, Origin};
use super::owned::{owned_bytes, owned_forwarded_properties, owned_str};
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
    /// Keeps a copy of the CONNECT's will (not slices of the read buffer).
    pub fn new(will: &Will) -> Self {
        let delay_secs = will.properties.will_delay_interval_secs.unwrap_or(0);
        let mut properties = owned_forwarded_properties(&will.properties);
        properties.message_expiry_interval_secs = will.properties.message_expiry_interval_secs;
        let will = Will {
            topic: owned_str(&will.topic),
            payload: owned_bytes(&will.payload),
            qos: will.qos,
            retain: will.retain,
            properties,
        };
        PendingWill { will, delay_secs, publish_at: None }
    }

    /// The application message to route, built when it is published (its expiry counts from then).
    pub fn into_message(self, origin: Origin, now: Instant) -> Result<Arc<Message>, EncodeError> {
        let Will { topic, payload, qos, retain, properties } = self.will;
        let expires_at = properties.message_expiry_interval_secs.map(|secs| now + Duration::from_secs(u64::from(secs)));
        let properties = Properties { message_expiry_interval_secs: None, ..properties };
        Message::new(topic, payload, qos, retain, properties, expires_at, origin)
    }
}
