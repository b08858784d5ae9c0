//! Publishing the broker's own `$SYS/broker/...` topics from a core: retained QoS 0 messages that take the
//! ordinary retained path (stored here, replicated to every shard, delivered to matching subscribers, read
//! access checked per subscriber like any topic). Clients may never publish under `$SYS`
//! (`ShardCore::may_publish`). What the topics say is built by `crate::metrics::sys`.

use std::time::Instant;

use bytes::Bytes;
use tracing::warn;

use super::core::ShardCore;
use super::message::{Message, Origin};
use crate::protocol::{ByteStr, Properties, QoS};

/// Whether `topic` is under `$SYS` (the broker's own topics).
pub fn is_sys_topic(topic: &str) -> bool {
    topic.strip_prefix("$SYS").is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl ShardCore {
    /// Publishes each `(topic, payload)` as a retained QoS 0 message from the broker itself.
    pub fn publish_sys_topics(&mut self, topics: &[(String, String)], now: Instant) {
        let origin = Origin { shard: self.shard, conn: None };
        for (topic, payload) in topics {
            let topic = ByteStr::from(topic.as_str());
            let payload = Bytes::copy_from_slice(payload.as_bytes());
            match Message::new(topic, payload, QoS::AtMostOnce, true, Properties::default(), None, origin) {
                Ok(message) => {
                    self.route_published(message, now);
                }
                Err(err) => warn!(shard = self.shard, error = %err, "$SYS topic cannot be encoded, not published"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_sys_topic;

    #[test]
    fn only_the_sys_tree_is_sys() {
        for sys in ["$SYS", "$SYS/broker/uptime", "$SYS/"] {
            assert!(is_sys_topic(sys), "{sys}");
        }
        for other in ["$SYSTEM/x", "sys/x", "a/$SYS", "$CONTROL/x", "$sys/x"] {
            assert!(!is_sys_topic(other), "{other}");
        }
    }
}
