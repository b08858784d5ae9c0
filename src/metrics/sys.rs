//! The `$SYS/broker/...` topics Mosquitto publishes, with the same names and payload forms, built from a
//! [`BrokerSnapshot`] summed over shards. [`SysTopics`] keeps the load averages between intervals and
//! the last payload of each topic, so only topics whose value changed are published again (as Mosquitto
//! does; the uptime changes every time).

use std::collections::HashMap;

use super::load::{LoadAverage, WINDOWS};
use super::BrokerSnapshot;

/// Counters whose per-minute load is published as `$SYS/broker/load/{name}/{1min,5min,15min}`.
const LOADS: [&str; 8] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// What the `$SYS` publisher remembers from one interval to the next.
#[derive(Debug, Default)]
pub struct SysTopics {
    loads: [LoadAverage; LOADS.len()],
    last_uptime_secs: Option<u64>,
    published: HashMap<String, String>,
}

impl SysTopics {
    /// Every `$SYS` topic and payload for `snapshot`, each once, in a stable order.
    pub fn all(&mut self, snapshot: &BrokerSnapshot) -> Vec<(String, String)> {
        let total = snapshot.totals();
        let (stats, sessions, io) = (&total.stats, &total.sessions, &total.io);
        let publishes_received: u64 = stats.publishes_received.iter().sum();
        let publishes_sent: u64 = stats.publishes_sent.iter().sum();
        let dropped = stats.dropped_total() + io.mesh_shed_qos0_messages + io.mesh_shed_reliable_messages;
        let disconnected = total.gauges.sessions.saturating_sub(sessions.clients_connected);
        let counts: [(&str, u64); 20] = [
            ("clients/connected", sessions.clients_connected as u64),
            ("clients/active", sessions.clients_connected as u64),
            ("clients/disconnected", disconnected as u64),
            ("clients/inactive", disconnected as u64),
            ("clients/total", total.gauges.sessions as u64),
            ("clients/maximum", snapshot.clients_connected_max),
            ("clients/expired", stats.clients_expired),
            ("messages/received", stats.packets_received),
            ("messages/sent", stats.packets_sent),
            ("messages/stored", sessions.queued_messages as u64 + total.gauges.retained_messages as u64),
            ("store/messages/count", sessions.queued_messages as u64 + total.gauges.retained_messages as u64),
            ("store/messages/bytes", sessions.queued_bytes as u64),
            ("publish/messages/received", publishes_received),
            ("publish/messages/sent", publishes_sent),
            ("publish/messages/dropped", dropped),
            ("publish/bytes/received", stats.publish_payload_bytes_received),
            ("publish/bytes/sent", stats.publish_payload_bytes_sent),
            ("bytes/received", io.socket_bytes_received),
            ("bytes/sent", io.socket_bytes_sent),
            ("subscriptions/count", sessions.subscriptions as u64),
        ];
        let mut topics = vec![
            ("$SYS/broker/version".to_string(), format!("shardmq version {}", env!("CARGO_PKG_VERSION"))),
            ("$SYS/broker/uptime".to_string(), format!("{} seconds", snapshot.uptime_secs)),
            ("$SYS/broker/retained messages/count".to_string(), total.gauges.retained_messages.to_string()),
        ];
        topics.extend(counts.iter().map(|(name, value)| (format!("$SYS/broker/{name}"), value.to_string())));
        // Per [[validation]] rule, by its index (labels may hold '/', '+' or '#'): its label and how many
        // client PUBLISHes failed it (shardmq's own; Mosquitto has no validation).
        for (index, failed) in stats.validation_failures.iter().enumerate() {
            let label = total.validation_rules.get(index).cloned().unwrap_or_else(|| index.to_string());
            topics.push((format!("$SYS/broker/validation/{index}/rule"), label));
            topics.push((format!("$SYS/broker/validation/{index}/failed"), failed.to_string()));
        }
        let elapsed_secs = self.last_uptime_secs.map_or(0.0, |last| snapshot.uptime_secs.saturating_sub(last) as f64);
        self.last_uptime_secs = Some(snapshot.uptime_secs);
        let load_counts = [
            stats.packets_received,
            stats.packets_sent,
            publishes_received,
            publishes_sent,
            io.socket_bytes_received,
            io.socket_bytes_sent,
            stats.connects_accepted,
            stats.connections_opened,
        ];
        for ((load, name), count) in self.loads.iter_mut().zip(LOADS).zip(load_counts) {
            load.update(count, elapsed_secs);
            for (average, (_, window)) in load.per_minute().iter().zip(WINDOWS) {
                topics.push((format!("$SYS/broker/load/{name}/{window}"), format!("{average:.2}")));
            }
        }
        topics
    }

    /// The topics whose payload differs from what was last published (all of them the first time).
    pub fn changed(&mut self, snapshot: &BrokerSnapshot) -> Vec<(String, String)> {
        let mut changed = self.all(snapshot);
        changed.retain(|(topic, payload)| self.published.get(topic) != Some(payload));
        for (topic, payload) in &changed {
            self.published.insert(topic.clone(), payload.clone());
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ShardSnapshot;

    fn snapshot(uptime_secs: u64, received: u64) -> BrokerSnapshot {
        let mut shard = ShardSnapshot::default();
        shard.stats.publishes_received[1] = received;
        shard.sessions.clients_connected = 2;
        shard.gauges.sessions = 3;
        BrokerSnapshot {
            shards: vec![shard.clone(), ShardSnapshot { shard: 1, ..shard }],
            uptime_secs,
            clients_connected_max: 4,
        }
    }

    fn value<'a>(topics: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        topics.iter().find(|(name, _)| name == topic).map(|(_, payload)| payload.as_str())
    }

    #[test]
    fn topics_carry_mosquitto_names_and_sums_over_shards() {
        let topics = SysTopics::default().all(&snapshot(7, 5));
        assert_eq!(value(&topics, "$SYS/broker/uptime"), Some("7 seconds"));
        assert_eq!(value(&topics, "$SYS/broker/clients/connected"), Some("4"));
        assert_eq!(value(&topics, "$SYS/broker/clients/disconnected"), Some("2"));
        assert_eq!(value(&topics, "$SYS/broker/clients/maximum"), Some("4"));
        assert_eq!(value(&topics, "$SYS/broker/publish/messages/received"), Some("10"));
        assert_eq!(value(&topics, "$SYS/broker/load/publish/received/1min"), Some("0.00"));
        assert!(value(&topics, "$SYS/broker/version").is_some_and(|v| v.starts_with("shardmq version ")));
    }

    #[test]
    fn each_validation_rule_has_its_label_and_failures_summed_over_shards() {
        let mut shard = ShardSnapshot::default();
        shard.stats.validation_failures = vec![2, 0];
        shard.validation_rules = vec!["0:chat/#".into(), "bids".into()];
        let snapshot = BrokerSnapshot {
            shards: vec![shard.clone(), ShardSnapshot { shard: 1, ..shard }],
            uptime_secs: 1,
            clients_connected_max: 0,
        };
        let topics = SysTopics::default().all(&snapshot);
        assert_eq!(value(&topics, "$SYS/broker/validation/0/rule"), Some("0:chat/#"));
        assert_eq!(value(&topics, "$SYS/broker/validation/0/failed"), Some("4"));
        assert_eq!(value(&topics, "$SYS/broker/validation/1/rule"), Some("bids"));
        assert_eq!(value(&topics, "$SYS/broker/validation/1/failed"), Some("0"));
        assert!(value(&SysTopics::default().all(&super::tests::snapshot(1, 0)), "$SYS/broker/validation/0/failed")
            .is_none());
    }

    #[test]
    fn only_changed_topics_are_published_again_and_load_follows_the_rate() {
        let mut sys = SysTopics::default();
        let first = sys.changed(&snapshot(10, 0));
        assert!(first.len() > 40, "everything the first time: {}", first.len());
        let second = sys.changed(&snapshot(20, 600));
        assert!(value(&second, "$SYS/broker/clients/connected").is_none(), "unchanged, not sent again");
        assert_eq!(value(&second, "$SYS/broker/uptime"), Some("20 seconds"));
        let load: f64 = value(&second, "$SYS/broker/load/publish/received/1min").unwrap_or("0").parse().unwrap_or(0.0);
        // 1200 in 10 s = 7200/min; the 1 min average moves 1 - e^(-1/6) = 15% of the way.
        assert!((load - 7200.0 * (1.0 - (-1.0f64 / 6.0).exp())).abs() < 1.0, "{load}");
    }
}
