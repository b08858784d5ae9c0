//! `BrokerSettings`: every MQTT limit and feature switch of the broker core, deserialized from the `[mqtt]`
//! table of the config file. Every field has a default that works with no file at all.

use std::sync::Arc;

use serde::Deserialize;

use crate::auth::{AccessControl, ScramUsers};
use crate::validation::RuleSet;

/// MQTT behaviour limits and switches. Units are last in the names.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// Largest packet we accept (announced as Maximum Packet Size in a v5 CONNACK).
    #[serde(alias = "max_packet_size_bytes")]
    pub packet_size_max_bytes: u32,
    /// How many incoming QoS 1/2 PUBLISHes a client may have unacknowledged (our Receive Maximum).
    pub receive_maximum: u16,
    /// Cap on outgoing unacknowledged QoS 1/2 PUBLISHes per session, even if the client allows more.
    #[serde(alias = "max_inflight")]
    pub inflight_max_messages: u16,
    /// Offline/overflow queue of a session: most messages kept.
    #[serde(alias = "session_queue_messages_max")]
    pub session_queue_max_messages: usize,
    /// Offline/overflow queue of a session: most payload + topic bytes kept.
    #[serde(alias = "session_queue_bytes_max")]
    pub session_queue_max_bytes: usize,
    /// Encoded frames waiting for the socket of one connection; QoS 0 deliveries beyond it are dropped.
    #[serde(alias = "out_queue_bytes_max")]
    pub out_queue_max_bytes: usize,
    /// Unsent bytes owed to one connection (its answers and deliveries, each frame counted with its
    /// bookkeeping) past which no more of its input is read, so TCP pushes back on a client that sends
    /// requests and does not read the answers; reading resumes once the socket took them.
    pub out_queue_pause_bytes: usize,
    /// Unsent bytes owed to one connection past which it is closed.
    pub out_queue_close_bytes: usize,
    /// A connection whose reading stayed paused (over `out_queue_pause_bytes`) this long without its
    /// socket taking a send is closed.
    pub out_queue_stall_max_secs: u16,
    /// PUBLISH packets per second one connection may send, as EMQX's per-client limiter: a token bucket
    /// holding one second's worth. A client past it is throttled, not dropped: its input is not read
    /// (TCP pushes back on it) until the bucket has refilled a tenth. `None`: no limit.
    pub publish_rate_max_per_second: Option<u32>,
    /// PUBLISH topic + payload bytes per second one connection may send, throttled likewise. `None`: no
    /// limit.
    pub publish_bytes_max_per_second: Option<u32>,
    /// Cap on a v5 client's keep-alive (sent back as Server Keep Alive when lower than asked).
    pub keepalive_max_secs: u16,
    /// A connection that sends no CONNECT within this time is closed.
    pub connect_timeout_secs: u16,
    /// Cap on a session's expiry interval; `u32::MAX` allows sessions that never expire.
    pub session_expiry_max_secs: u32,
    /// Most retained messages kept (per shard replica); new topics beyond it are not retained.
    #[serde(alias = "retained_messages_max")]
    pub retained_max_messages: usize,
    /// Most topic + payload bytes of retained messages kept (per shard replica; the messages themselves are
    /// shared); a message that would go past it is not retained, and one already retained on its topic stays.
    pub retained_max_bytes: usize,
    /// Most client-to-server topic aliases per connection (v5 Topic Alias Maximum); 0 disables them.
    pub topic_alias_max: u16,
    /// Highest QoS the broker accepts and grants (0, 1 or 2).
    #[serde(alias = "max_qos")]
    pub qos_max: u8,
    pub retain_available: bool,
    pub wildcard_subscriptions_available: bool,
    pub subscription_identifiers_available: bool,
    pub shared_subscriptions_available: bool,
    /// How a shared-subscription group's messages are spread over its members when they live on several
    /// shards: `"round_robin"` (default) over all connected members on all shards, or `"local"`, a connected
    /// member on the publishing shard first (no mesh hop), the other shards only when it has none.
    pub shared_subscription_strategy: SharedSubscriptionStrategy,
    /// Most sessions (connected or not) one shard keeps; a CONNECT needing a new one beyond it is refused
    /// with Server Busy (3.x: return code 3).
    pub sessions_per_shard_max: usize,
    /// When set, every v5 client is refused with 0x9C Use Another Server and this Server Reference, and
    /// 3.x clients with return code 3 (a configured redirect, v5 section 4.11).
    pub server_reference: Option<String>,
    /// Longest client identifier accepted.
    #[serde(alias = "client_id_max_bytes")]
    pub client_id_length_max_bytes: usize,
    /// Longest topic name of a PUBLISH or topic filter of a SUBSCRIBE accepted (the spec allows 65535).
    pub topic_length_max_bytes: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter accepted (EMQX's default is 128).
    pub topic_levels_max: usize,
    /// Most topic filters one session may hold.
    pub subscriptions_per_session_max: usize,
    /// Send v5 Reason Strings with error reason codes.
    pub reason_strings: bool,
    /// Prefix of the v5 Response Information sent when a client asks for it; none = not sent.
    pub response_information_prefix: Option<String>,
    /// Users of the v5 enhanced authentication method SCRAM-SHA-256 (`[[mqtt.scram_users]]` with
    /// `username` and `password`); empty = the method is not offered (CONNECT naming it gets 0x8C). Their
    /// keys are derived as the config is read; the passwords are not kept.
    pub scram_users: ScramUsers,
    /// Who may connect and what they may do, as the shard starts: built once from the `[auth]` table by
    /// `Config::load` (not part of `[mqtt]`); a reload swaps the core's copy (`ShardCore::replace_access`).
    #[serde(skip)]
    pub access: Arc<AccessControl>,
    /// The compiled `[[validation]]` rules of the config (not a `[mqtt]` key: `Config::load` compiles the
    /// top-level tables and puts them here). `None` or an empty set: no publish is checked.
    #[serde(skip)]
    pub validation_rules: Option<Arc<RuleSet>>,
}

/// `[mqtt]` names of earlier versions, still read (serde aliases) with a warning at start: old name, new name.
pub const DEPRECATED_NAMES: &[(&str, &str)] = &[
    ("max_packet_size_bytes", "packet_size_max_bytes"),
    ("max_inflight", "inflight_max_messages"),
    ("session_queue_messages_max", "session_queue_max_messages"),
    ("session_queue_bytes_max", "session_queue_max_bytes"),
    ("out_queue_bytes_max", "out_queue_max_bytes"),
    ("retained_messages_max", "retained_max_messages"),
    ("max_qos", "qos_max"),
    ("client_id_max_bytes", "client_id_length_max_bytes"),
];

/// How a shared-subscription group picks the member of a message (`[mqtt] shared_subscription_strategy`).
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SharedSubscriptionStrategy {
    /// Every connected member on every shard in turn: the publishing shard picks a shard in proportion to
    /// its connected members (the replicated counts), that shard picks the member (one mesh hop at most).
    #[default]
    RoundRobin,
    /// A connected member on the publishing shard if there is one (EMQX's `local`); else as `RoundRobin`
    /// over the other shards.
    Local,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            packet_size_max_bytes: 1024 * 1024,
            receive_maximum: 100,
            inflight_max_messages: 100,
            session_queue_max_messages: 1000,
            session_queue_max_bytes: 8 * 1024 * 1024,
            out_queue_max_bytes: 4 * 1024 * 1024,
            out_queue_pause_bytes: 1024 * 1024,
            out_queue_close_bytes: 64 * 1024 * 1024,
            out_queue_stall_max_secs: 60,
            publish_rate_max_per_second: None,
            publish_bytes_max_per_second: None,
            keepalive_max_secs: u16::MAX,
            connect_timeout_secs: 10,
            session_expiry_max_secs: u32::MAX,
            retained_max_messages: 100_000,
            retained_max_bytes: 1024 * 1024 * 1024,
            topic_alias_max: 10,
            qos_max: 2,
            retain_available: true,
            wildcard_subscriptions_available: true,
            subscription_identifiers_available: true,
            shared_subscriptions_available: true,
            shared_subscription_strategy: SharedSubscriptionStrategy::RoundRobin,
            sessions_per_shard_max: 1_000_000,
            server_reference: None,
            client_id_length_max_bytes: 256,
            topic_length_max_bytes: 65535,
            topic_levels_max: 128,
            subscriptions_per_session_max: 1000,
            reason_strings: true,
            response_information_prefix: None,
            scram_users: ScramUsers::default(),
            access: Arc::new(AccessControl::allow_all()),
            validation_rules: None,
        }
    }
}

impl BrokerSettings {
    /// The values no broker can run with: the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let above_zero = "must be at least 1 (leave it out for no limit)".to_string();
        if self.publish_rate_max_per_second == Some(0) {
            return Err(("mqtt.publish_rate_max_per_second", above_zero));
        }
        if self.publish_bytes_max_per_second == Some(0) {
            return Err(("mqtt.publish_bytes_max_per_second", above_zero));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_table_keeps_defaults_for_missing_fields() {
        let settings: BrokerSettings = toml::from_str("qos_max = 1\nreceive_maximum = 5").expect("valid toml");
        assert_eq!(settings.qos_max, 1);
        assert_eq!(settings.receive_maximum, 5);
        assert_eq!(settings.inflight_max_messages, BrokerSettings::default().inflight_max_messages);
    }

    #[test]
    fn shared_subscription_strategy_reads_round_robin_and_local() {
        assert_eq!(BrokerSettings::default().shared_subscription_strategy, SharedSubscriptionStrategy::RoundRobin);
        let local: BrokerSettings = toml::from_str("shared_subscription_strategy = \"local\"").expect("valid toml");
        assert_eq!(local.shared_subscription_strategy, SharedSubscriptionStrategy::Local);
        let round: BrokerSettings =
            toml::from_str("shared_subscription_strategy = \"round_robin\"").expect("valid toml");
        assert_eq!(round.shared_subscription_strategy, SharedSubscriptionStrategy::RoundRobin);
        assert!(toml::from_str::<BrokerSettings>("shared_subscription_strategy = \"random\"").is_err());
    }

    #[test]
    fn the_old_names_are_still_read() {
        let settings: BrokerSettings =
            toml::from_str("max_qos = 1\nmax_packet_size_bytes = 999\nsession_queue_bytes_max = 7")
                .expect("valid toml");
        assert_eq!((settings.qos_max, settings.packet_size_max_bytes, settings.session_queue_max_bytes), (1, 999, 7));
        for (old, new) in DEPRECATED_NAMES {
            let by_old: BrokerSettings = toml::from_str(&format!("{old} = 1")).expect("old name accepted");
            let by_new: BrokerSettings = toml::from_str(&format!("{new} = 1")).expect("new name accepted");
            assert_eq!(by_old, by_new, "{old} is an alias of {new}");
        }
    }

    #[test]
    fn a_publish_limit_of_zero_is_refused_and_unset_means_none() {
        assert_eq!(BrokerSettings::default().publish_rate_max_per_second, None);
        assert_eq!(BrokerSettings::default().check(), Ok(()));
        let zero: BrokerSettings = toml::from_str("publish_bytes_max_per_second = 0").expect("valid toml");
        assert_eq!(zero.check().map_err(|(field, _)| field), Err("mqtt.publish_bytes_max_per_second"));
        let set: BrokerSettings = toml::from_str("publish_rate_max_per_second = 200").expect("valid toml");
        assert_eq!((set.publish_rate_max_per_second, set.check()), (Some(200), Ok(())));
    }

    #[test]
    fn unknown_field_is_an_error() {
        assert!(toml::from_str::<BrokerSettings>("max_qoss = 1").is_err());
    }
}
