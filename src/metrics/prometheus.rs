//! The Prometheus text exposition format (version 0.0.4) of a [`BrokerSnapshot`]: every family once with
//! its HELP and TYPE lines, one series per shard (`shard="0"`, ...) and one for the whole broker
//! (`shard="all"`; leave it out when summing: `sum(x{shard!="all"})`).

use std::fmt::Write;

use super::BrokerSnapshot;
use crate::broker::ShardSnapshot;
use crate::protocol::ReasonCode;

/// CONNACK reasons that mean the client's credentials or rights were refused.
const AUTH_FAILURE_REASONS: [ReasonCode; 3] =
    [ReasonCode::BAD_USER_NAME_OR_PASSWORD, ReasonCode::NOT_AUTHORIZED, ReasonCode::BAD_AUTHENTICATION_METHOD];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family: its name, kind, help text and how to read its series from a snapshot (extra
/// labels and value per series).
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    series: fn(&ShardSnapshot) -> Vec<(String, u64)>,
}

fn one(value: impl TryInto<u64>) -> Vec<(String, u64)> {
    vec![(String::new(), value.try_into().unwrap_or(u64::MAX))]
}

fn by_qos(values: &[u64; 3]) -> Vec<(String, u64)> {
    values.iter().enumerate().map(|(qos, value)| (format!("qos=\"{qos}\""), *value)).collect()
}

fn dropped(s: &ShardSnapshot) -> Vec<(String, u64)> {
    let (stats, io) = (&s.stats, &s.io);
    [
        ("too_large", stats.dropped_too_large),
        ("queue_full", stats.dropped_queue_full),
        ("slow_consumer", stats.dropped_slow_consumer),
        ("memory_budget", stats.dropped_memory_budget),
        ("expired", stats.dropped_expired),
        ("offline_qos0", stats.dropped_offline_qos0),
        ("no_share_member", stats.dropped_no_share_member),
        ("mesh_shed_qos0", io.mesh_shed_qos0_messages),
        ("mesh_shed_reliable", io.mesh_shed_reliable_messages),
    ]
    .into_iter()
    .map(|(reason, value)| (format!("reason=\"{reason}\""), value))
    .collect()
}

fn refused(s: &ShardSnapshot) -> Vec<(String, u64)> {
    s.stats
        .connects_refused
        .iter()
        .map(|(code, count)| {
            let name = escape(ReasonCode(*code).name());
            (format!("reason_code=\"0x{code:02X}\",reason=\"{name}\""), *count)
        })
        .collect()
}

fn refused_at_accept(s: &ShardSnapshot) -> Vec<(String, u64)> {
    [
        ("connections_max", s.stats.refused_at_accept),
        ("connections_per_address_max", s.stats.refused_connections_per_address),
        ("connect_rate_per_address_max_per_second", s.stats.refused_connect_rate_per_address),
    ]
    .into_iter()
    .map(|(limit, value)| (format!("limit=\"{limit}\""), value))
    .collect()
}

fn publish_throttled(s: &ShardSnapshot) -> Vec<(String, u64)> {
    [
        ("publish_rate_max_per_second", s.stats.publish_throttled_rate),
        ("publish_bytes_max_per_second", s.stats.publish_throttled_bytes),
    ]
    .into_iter()
    .map(|(limit, value)| (format!("limit=\"{limit}\""), value))
    .collect()
}

fn auth_failures(s: &ShardSnapshot) -> Vec<(String, u64)> {
    let refused = &s.stats.connects_refused;
    one(AUTH_FAILURE_REASONS.iter().filter_map(|reason| refused.get(&reason.0)).sum::<u64>())
}

fn validation(s: &ShardSnapshot) -> Vec<(String, u64)> {
    s.stats
        .validation_failures
        .iter()
        .enumerate()
        .map(|(index, count)| {
            let label = s.validation_rules.get(index).map_or_else(|| index.to_string(), |label| escape(label));
            (format!("rule=\"{label}\""), *count)
        })
        .collect()
}

const FAMILIES: &[Family] = &[
    Family {
        name: "shardmq_connections",
        kind: Kind::Gauge,
        help: "Open client sockets (connected or awaiting CONNECT).",
        series: |s| one(s.gauges.connections),
    },
    Family {
        name: "shardmq_clients_connected",
        kind: Kind::Gauge,
        help: "Clients connected (CONNACK sent, not yet disconnected).",
        series: |s| one(s.sessions.clients_connected),
    },
    Family {
        name: "shardmq_clients_connected_max",
        kind: Kind::Gauge,
        help: "Most clients connected at once since start.",
        series: |s| one(s.stats.clients_connected_max),
    },
    Family {
        name: "shardmq_sessions",
        kind: Kind::Gauge,
        help: "Sessions held, connected or not.",
        series: |s| one(s.gauges.sessions),
    },
    Family {
        name: "shardmq_connections_opened_total",
        kind: Kind::Counter,
        help: "Client sockets opened (accepted, or handed to the client's home shard).",
        series: |s| one(s.stats.connections_opened),
    },
    Family {
        name: "shardmq_connects_accepted_total",
        kind: Kind::Counter,
        help: "CONNECTs answered with a successful CONNACK.",
        series: |s| one(s.stats.connects_accepted),
    },
    Family {
        name: "shardmq_connects_refused_total",
        kind: Kind::Counter,
        help: "CONNECTs refused, by CONNACK reason code (3.x return codes counted as their MQTT 5 reason).",
        series: refused,
    },
    Family {
        name: "shardmq_connections_refused_at_accept_total",
        kind: Kind::Counter,
        help: "Sockets closed right after accept, before any CONNECT was read, by the limit that refused them.",
        series: refused_at_accept,
    },
    Family {
        name: "shardmq_auth_failures_total",
        kind: Kind::Counter,
        help: "CONNECTs refused for bad credentials, no authorization or a bad authentication method.",
        series: auth_failures,
    },
    Family {
        name: "shardmq_disconnects_total",
        kind: Kind::Counter,
        help: "Connected clients whose connection ended, for any reason.",
        series: |s| one(s.stats.disconnects),
    },
    Family {
        name: "shardmq_clients_expired_total",
        kind: Kind::Counter,
        help: "Sessions ended by their expiry interval.",
        series: |s| one(s.stats.clients_expired),
    },
    Family {
        name: "shardmq_packets_received_total",
        kind: Kind::Counter,
        help: "MQTT packets received from clients, any kind.",
        series: |s| one(s.stats.packets_received),
    },
    Family {
        name: "shardmq_packets_sent_total",
        kind: Kind::Counter,
        help: "MQTT packets sent to clients, any kind.",
        series: |s| one(s.stats.packets_sent),
    },
    Family {
        name: "shardmq_messages_received_total",
        kind: Kind::Counter,
        help: "PUBLISH packets received from clients, by QoS.",
        series: |s| by_qos(&s.stats.publishes_received),
    },
    Family {
        name: "shardmq_messages_sent_total",
        kind: Kind::Counter,
        help: "PUBLISH packets sent to clients, by QoS.",
        series: |s| by_qos(&s.stats.publishes_sent),
    },
    Family {
        name: "shardmq_publish_payload_bytes_received_total",
        kind: Kind::Counter,
        help: "Payload bytes of PUBLISH packets received.",
        series: |s| one(s.stats.publish_payload_bytes_received),
    },
    Family {
        name: "shardmq_publish_payload_bytes_sent_total",
        kind: Kind::Counter,
        help: "Payload bytes of PUBLISH packets sent.",
        series: |s| one(s.stats.publish_payload_bytes_sent),
    },
    Family {
        name: "shardmq_bytes_received_total",
        kind: Kind::Counter,
        help: "Bytes read from client sockets (TLS and WebSocket framing included).",
        series: |s| one(s.io.socket_bytes_received),
    },
    Family {
        name: "shardmq_bytes_sent_total",
        kind: Kind::Counter,
        help: "Bytes written to client sockets (TLS and WebSocket framing included).",
        series: |s| one(s.io.socket_bytes_sent),
    },
    Family {
        name: "shardmq_messages_dropped_total",
        kind: Kind::Counter,
        help: "Messages dropped, by cause.",
        series: dropped,
    },
    Family {
        name: "shardmq_publish_throttled_total",
        kind: Kind::Counter,
        help: "Times a client publishing faster than its limit was paused (its input not read until its bucket refilled), by limit.",
        series: publish_throttled,
    },
    Family {
        name: "shardmq_publishes_denied_total",
        kind: Kind::Counter,
        help: "PUBLISHes and wills dropped for want of write access (or to $SYS).",
        series: |s| one(s.stats.denied_publishes),
    },
    Family {
        name: "shardmq_deliveries_denied_total",
        kind: Kind::Counter,
        help: "Deliveries skipped for want of read access.",
        series: |s| one(s.stats.denied_deliveries),
    },
    Family {
        name: "shardmq_retained_refused_total",
        kind: Kind::Counter,
        help: "Retained messages not stored because the retained store was full (retained_max_messages or retained_max_bytes).",
        series: |s| one(s.stats.retained_refused),
    },
    Family {
        name: "shardmq_validation_failures_total",
        kind: Kind::Counter,
        help: "Client PUBLISHes that failed a [[validation]] rule, by rule.",
        series: validation,
    },
    Family {
        name: "shardmq_subscriptions",
        kind: Kind::Gauge,
        help: "Subscriptions of all sessions.",
        series: |s| one(s.sessions.subscriptions),
    },
    Family {
        name: "shardmq_retained_messages",
        kind: Kind::Gauge,
        help: "Retained messages stored (every shard holds a full replica).",
        series: |s| one(s.gauges.retained_messages),
    },
    Family {
        name: "shardmq_session_queued_messages",
        kind: Kind::Gauge,
        help: "Messages waiting in session queues.",
        series: |s| one(s.sessions.queued_messages),
    },
    Family {
        name: "shardmq_session_queued_bytes",
        kind: Kind::Gauge,
        help: "Topic and payload bytes waiting in session queues.",
        series: |s| one(s.sessions.queued_bytes),
    },
    Family {
        name: "shardmq_inflight_messages",
        kind: Kind::Gauge,
        help: "Outgoing QoS 1/2 messages sent and not yet acknowledged.",
        series: |s| one(s.sessions.inflight_messages),
    },
    Family {
        name: "shardmq_mesh_overflow_messages",
        kind: Kind::Gauge,
        help: "Messages parked for other shards whose mesh queue is full.",
        series: |s| one(s.io.mesh_overflow_messages),
    },
    Family {
        name: "shardmq_mesh_closed_batches_total",
        kind: Kind::Counter,
        help: "Mesh batches not delivered because their shard had stopped.",
        series: |s| one(s.io.mesh_closed_batches),
    },
    Family {
        name: "shardmq_receive_buffers_dry_total",
        kind: Kind::Counter,
        help: "Socket receives that found every provided read buffer taken and waited for one (read_buffers).",
        series: |s| one(s.io.receive_buffers_dry),
    },
    Family {
        name: "shardmq_timers",
        kind: Kind::Gauge,
        help: "Deadlines armed in the shards' timer wheels.",
        series: |s| one(s.gauges.timers),
    },
];

/// The snapshot in Prometheus text format.
pub fn render_prometheus(snapshot: &BrokerSnapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(out, "# HELP shardmq_info The broker's version.\n# TYPE shardmq_info gauge");
    let _ = writeln!(out, "shardmq_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "# HELP shardmq_uptime_seconds Seconds since the broker started.");
    let _ = writeln!(out, "# TYPE shardmq_uptime_seconds gauge\nshardmq_uptime_seconds {}", snapshot.uptime_secs);
    let _ = writeln!(out, "# HELP shardmq_shards Shards (threads) serving clients.");
    let _ = writeln!(out, "# TYPE shardmq_shards gauge\nshardmq_shards {}", snapshot.shards.len());
    let totals = snapshot.totals();
    write_memory(&mut out, &totals);
    for family in FAMILIES {
        let kind = if family.kind == Kind::Counter { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", family.name, family.help, family.name);
        let shards = snapshot.shards.iter().map(|shard| (shard.shard.to_string(), shard));
        for (label, shard) in shards.chain(std::iter::once(("all".to_string(), &totals))) {
            for (labels, value) in (family.series)(shard) {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{}{{shard=\"{label}\"{sep}{labels}}} {value}", family.name);
            }
        }
    }
    out
}

/// The process's memory budget (one for the whole process, so no shard label): resident bytes as last
/// sampled, the budget, whether load is being shed, and how often shedding started.
fn write_memory(out: &mut String, totals: &ShardSnapshot) {
    let memory = totals.memory;
    let Some(max_bytes) = memory.max_bytes else { return };
    let lines = [
        ("shardmq_memory_resident_bytes", "gauge", "Resident memory of the process at the last sample (memory_max_bytes is set).", memory.resident_bytes),
        ("shardmq_memory_max_bytes", "gauge", "The process's memory budget (memory_max_bytes).", max_bytes),
        ("shardmq_memory_shedding", "gauge", "1 while the process is over memory_max_bytes and sheds load (CONNECTs refused with 0x97, QoS 0 to clients with unsent bytes dropped), until below 90% of it.", u64::from(memory.shedding)),
        ("shardmq_memory_shedding_started_total", "counter", "Times the process went over memory_max_bytes and started shedding load.", memory.shedding_started),
    ];
    for (name, kind, help, value) in lines {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::MemoryReading;

    fn snapshot() -> BrokerSnapshot {
        let mut shards = vec![ShardSnapshot::default(), ShardSnapshot { shard: 1, ..ShardSnapshot::default() }];
        shards[0].stats.publishes_received = [3, 2, 1];
        shards[1].stats.publishes_received = [10, 0, 0];
        shards[0].stats.connects_refused.insert(0x86, 2);
        shards[1].stats.connects_refused.insert(0x87, 1);
        shards[1].stats.validation_failures = vec![4];
        shards[1].validation_rules = vec!["rule \"a\"\\b".into()];
        BrokerSnapshot { shards, uptime_secs: 5, clients_connected_max: 0 }
    }

    #[test]
    fn series_per_shard_and_the_sum_over_shards() {
        let text = render_prometheus(&snapshot());
        assert!(text.contains("shardmq_messages_received_total{shard=\"0\",qos=\"0\"} 3\n"), "{text}");
        assert!(text.contains("shardmq_messages_received_total{shard=\"1\",qos=\"0\"} 10\n"));
        assert!(text.contains("shardmq_messages_received_total{shard=\"all\",qos=\"0\"} 13\n"));
        assert!(text.contains("shardmq_auth_failures_total{shard=\"all\"} 3\n"));
        assert!(text.contains("reason_code=\"0x86\",reason=\"Bad User Name or Password\"} 2\n"), "{text}");
    }

    #[test]
    fn the_memory_budget_is_one_process_wide_set_of_lines_and_absent_without_a_budget() {
        assert!(!render_prometheus(&snapshot()).contains("shardmq_memory_"), "no budget, no memory lines");
        let mut with_budget = snapshot();
        for shard in &mut with_budget.shards {
            shard.memory =
                MemoryReading { resident_bytes: 300, max_bytes: Some(256), shedding: true, shedding_started: 2 };
        }
        let text = render_prometheus(&with_budget);
        for line in [
            "shardmq_memory_resident_bytes 300\n",
            "shardmq_memory_max_bytes 256\n",
            "shardmq_memory_shedding 1\n",
            "shardmq_memory_shedding_started_total 2\n",
        ] {
            assert_eq!(text.matches(line).count(), 1, "{line}: {text}");
        }
    }

    #[test]
    fn each_family_has_help_and_type_once_and_label_values_are_escaped() {
        let text = render_prometheus(&snapshot());
        for family in FAMILIES {
            assert_eq!(text.matches(&format!("# TYPE {} ", family.name)).count(), 1, "{}", family.name);
            assert_eq!(text.matches(&format!("# HELP {} ", family.name)).count(), 1, "{}", family.name);
        }
        assert!(text.contains("rule=\"rule \\\"a\\\"\\\\b\"} 4"), "{text}");
    }
}
