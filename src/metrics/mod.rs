//! What the broker shows about itself: a [`BrokerSnapshot`] summed from every shard's
//! [`ShardSnapshot`](crate::broker::ShardSnapshot), rendered as Prometheus text (`prometheus`), as
//! Mosquitto's `$SYS/broker/...` topics (`sys`, with the load averages of `load`), and the dashboard page
//! (`dashboard`). `collector` takes the snapshots through the control seam and runs the `$SYS` timer;
//! `server` is a small HTTP listener for `/metrics` and `/` until the HTTP API serves them.

pub mod collector;
pub mod dashboard;
pub mod load;
pub mod prometheus;
pub mod server;
pub mod sys;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::ShardSnapshot;
use crate::shard::Control;

pub use collector::Collector;
pub use prometheus::render_prometheus;

/// What `start` began: the collector (for an HTTP router to serve [`server::page`] from) and the
/// address of the `[metrics]` listener, if one was configured and bound.
pub struct Started {
    pub collector: Arc<Collector>,
    pub metrics_addr: Option<SocketAddr>,
}

/// Starts the `$SYS` thread (unless `sys_interval` is zero) and, with `metrics_bind`, the listener for
/// `/metrics` and `/`. A listener that cannot bind is logged and left out; the broker runs on.
pub fn start(control: &Control, sys_interval: Duration, metrics_bind: Option<&str>) -> Started {
    let collector = Collector::new(control.clone());
    collector::start_sys_publisher(Arc::clone(&collector), sys_interval);
    let metrics_addr = metrics_bind.and_then(|bind| match server::start(bind, Arc::clone(&collector)) {
        Ok((addr, _thread)) => Some(addr),
        Err(err) => {
            tracing::error!(bind, %err, "cannot bind the [metrics] listener; /metrics and the dashboard are not served");
            None
        }
    });
    Started { collector, metrics_addr }
}

/// The broker's counters at one moment: one snapshot per shard, in shard order, and what only the whole
/// process knows.
#[derive(Clone, Debug, Default)]
pub struct BrokerSnapshot {
    pub shards: Vec<ShardSnapshot>,
    pub uptime_secs: u64,
    /// Most clients connected at once over the whole broker, as far as snapshots and the shards' own
    /// peaks show (the larger of the highest summed count seen and the highest single shard's peak).
    pub clients_connected_max: u64,
}

impl BrokerSnapshot {
    /// The sum over shards of every counter and size (`shard` is the shard count).
    pub fn totals(&self) -> ShardSnapshot {
        let mut total = ShardSnapshot { shard: self.shards.len(), ..ShardSnapshot::default() };
        for shard in &self.shards {
            add_into(&mut total, shard);
        }
        total.stats.clients_connected_max = self.clients_connected_max;
        total
    }
}

fn add_into(total: &mut ShardSnapshot, shard: &ShardSnapshot) {
    let (t, s) = (&mut total.stats, &shard.stats);
    t.dropped_too_large += s.dropped_too_large;
    t.dropped_queue_full += s.dropped_queue_full;
    t.dropped_slow_consumer += s.dropped_slow_consumer;
    t.dropped_memory_budget += s.dropped_memory_budget;
    t.dropped_expired += s.dropped_expired;
    t.dropped_offline_qos0 += s.dropped_offline_qos0;
    t.dropped_no_share_member += s.dropped_no_share_member;
    t.retained_refused += s.retained_refused;
    t.denied_publishes += s.denied_publishes;
    t.denied_deliveries += s.denied_deliveries;
    if t.validation_failures.len() < s.validation_failures.len() {
        t.validation_failures.resize(s.validation_failures.len(), 0);
        total.validation_rules = shard.validation_rules.clone();
    }
    for (sum, count) in t.validation_failures.iter_mut().zip(&s.validation_failures) {
        *sum += count;
    }
    t.connections_opened += s.connections_opened;
    t.refused_at_accept += s.refused_at_accept;
    t.refused_connections_per_address += s.refused_connections_per_address;
    t.refused_connect_rate_per_address += s.refused_connect_rate_per_address;
    t.connects_accepted += s.connects_accepted;
    t.publish_throttled_rate += s.publish_throttled_rate;
    t.publish_throttled_bytes += s.publish_throttled_bytes;
    for (reason, count) in &s.connects_refused {
        *t.connects_refused.entry(*reason).or_default() += count;
    }
    t.disconnects += s.disconnects;
    t.clients_expired += s.clients_expired;
    t.packets_received += s.packets_received;
    t.packets_sent += s.packets_sent;
    for qos in 0..3 {
        t.publishes_received[qos] += s.publishes_received[qos];
        t.publishes_sent[qos] += s.publishes_sent[qos];
    }
    t.publish_payload_bytes_received += s.publish_payload_bytes_received;
    t.publish_payload_bytes_sent += s.publish_payload_bytes_sent;

    // One budget for the whole process: every shard reports the same one.
    total.memory = shard.memory;

    let (t, s) = (&mut total.gauges, &shard.gauges);
    t.connections += s.connections;
    t.sessions += s.sessions;
    // Retained messages are a full replica on every shard: the broker holds what one shard holds.
    t.retained_messages = t.retained_messages.max(s.retained_messages);
    t.subscription_trie_nodes += s.subscription_trie_nodes;
    t.interest_trie_nodes += s.interest_trie_nodes;
    t.timers += s.timers;

    let (t, s) = (&mut total.sessions, &shard.sessions);
    t.clients_connected += s.clients_connected;
    t.subscriptions += s.subscriptions;
    t.queued_messages += s.queued_messages;
    t.queued_bytes += s.queued_bytes;
    t.inflight_messages += s.inflight_messages;

    let (t, s) = (&mut total.io, &shard.io);
    t.socket_bytes_received += s.socket_bytes_received;
    t.socket_bytes_sent += s.socket_bytes_sent;
    t.mesh_overflow_messages += s.mesh_overflow_messages;
    t.mesh_shed_qos0_messages += s.mesh_shed_qos0_messages;
    t.mesh_shed_reliable_messages += s.mesh_shed_reliable_messages;
    t.mesh_closed_batches += s.mesh_closed_batches;
    t.receive_buffers_dry += s.receive_buffers_dry;
}
