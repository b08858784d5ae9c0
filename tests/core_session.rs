//! Sessions, takeover, wills and retained messages through `ShardCore`, on one and two shards.

mod core_harness;

use std::time::Duration;

use core_harness::*;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn v5_persistent(client_id: &str, expiry_secs: u32) -> shardmq::protocol::Connect {
    let mut request = connect(V5, client_id, false);
    request.properties.session_expiry_interval_secs = Some(expiry_secs);
    request
}

#[test]
fn takeover_disconnects_old_connection_0x8e_and_resumes_session_mqtt_3_1_4_3() {
    let mut broker = Broker::new(2);
    let (old, _) = broker.connect(v5_persistent("dup", 60));
    broker.send(old, Packet::Subscribe(subscribe(1, "t", QoS::AtLeastOnce)));
    broker.recv(old);
    let (new, connack) = broker.connect(v5_persistent("dup", 60));
    assert!(connack.session_present, "[MQTT-3.2.2-3]");
    match broker.recv(old).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER)
        }
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(broker.is_closed(old));
    let (publisher, _) = broker.connect(connect(V5, "publisher", true));
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "to new")));
    assert_eq!(broker.recv_publishes(new).len(), 1, "the subscription carried over");
}

#[test]
fn takeover_with_clean_start_discards_the_old_session_mqtt_3_1_2_4() {
    let mut broker = Broker::new(1);
    let (old, _) = broker.connect(connect(V311, "fresh", false));
    broker.send(old, Packet::Subscribe(subscribe(1, "t", QoS::AtLeastOnce)));
    let (new, connack) = broker.connect(connect(V311, "fresh", true));
    assert!(!connack.session_present);
    assert!(broker.is_closed(old));
    assert!(broker.recv(old).iter().all(|packet| !matches!(packet, Packet::Disconnect(_))), "3.1.1: plain close");
    let (publisher, _) = broker.connect(connect(V311, "publisher", true));
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "x")));
    assert!(broker.recv_publishes(new).is_empty());
}

#[test]
fn v311_persistent_session_queues_qos1_offline_and_delivers_in_order_on_resume() {
    let mut broker = Broker::new(2);
    let (subscriber, _) = broker.connect(connect(V311, "keeper", false));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "q/#", QoS::AtLeastOnce)));
    broker.send(subscriber, Packet::Disconnect(Disconnect::default()));
    let (publisher, _) = broker.connect(connect(V311, "writer", true));
    for (i, qos) in [(1, QoS::AtLeastOnce), (2, QoS::AtMostOnce), (3, QoS::ExactlyOnce), (4, QoS::AtLeastOnce)] {
        broker.send(publisher, Packet::Publish(publish("q/x", qos, i, &i.to_string())));
    }
    assert_eq!(broker.shards[broker.home("keeper")].stats().dropped_offline_qos0, 1, "QoS 0 is not queued offline");
    let (subscriber, connack) = broker.connect(connect(V311, "keeper", false));
    assert!(connack.session_present);
    let received = broker.recv_publishes(subscriber);
    let payloads: Vec<String> = contents(&received).into_iter().map(|(_, payload)| payload).collect();
    assert_eq!(payloads, vec!["1", "3", "4"]);
}

#[test]
fn unacknowledged_delivery_resent_with_dup_on_reconnect_mqtt_4_4_0_1() {
    let mut broker = Broker::new(1);
    let (subscriber, _) = broker.connect(connect(V311, "flaky", false));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "d", QoS::ExactlyOnce)));
    broker.recv(subscriber);
    let (publisher, _) = broker.connect(connect(V311, "source", true));
    broker.send(publisher, Packet::Publish(publish("d", QoS::AtLeastOnce, 1, "q1")));
    broker.send(publisher, Packet::Publish(publish("d", QoS::ExactlyOnce, 2, "q2")));
    let first = broker.recv_publishes(subscriber);
    assert_eq!(first.len(), 2);
    broker.send(subscriber, Packet::PubRec(ack(first[1].packet_id)));
    broker.lose(subscriber);

    let (subscriber, connack) = broker.connect(connect(V311, "flaky", false));
    assert!(connack.session_present);
    match broker.recv(subscriber).as_slice() {
        [Packet::Publish(again), Packet::PubRel(rel)] => {
            assert!(again.dup);
            assert_eq!(again.packet_id, first[0].packet_id);
            assert_eq!(&again.payload[..], b"q1");
            assert_eq!(rel.packet_id, first[1].packet_id, "released QoS 2 continues with PUBREL");
        }
        other => panic!("expected PUBLISH(dup) then PUBREL, got {other:?}"),
    }
}

#[test]
fn v5_session_expiry_interval_ends_session_after_interval() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(v5_persistent("expiring", 10));
    broker.lose(client);
    broker.advance(Duration::from_secs(5));
    let (client, connack) = broker.connect(v5_persistent("expiring", 10));
    assert!(connack.session_present, "within the interval");
    broker.lose(client);
    broker.advance(Duration::from_secs(11));
    assert_eq!(broker.shards[0].gauges().sessions, 0);
    let (_, connack) = broker.connect(v5_persistent("expiring", 10));
    assert!(!connack.session_present);
}

#[test]
fn v5_session_expiry_zero_ends_with_connection_and_disconnect_can_extend() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(v5_persistent("zero", 0));
    broker.lose(client);
    let (client, connack) = broker.connect(v5_persistent("zero", 0));
    assert!(!connack.session_present);
    // DISCONNECT may not raise an expiry that was 0 [MQTT-3.14.2-2].
    let mut disconnect = Disconnect::default();
    disconnect.properties.session_expiry_interval_secs = Some(30);
    broker.send(client, Packet::Disconnect(disconnect.clone()));
    assert!(
        matches!(broker.recv(client).as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR)
    );

    let (client, _) = broker.connect(v5_persistent("some", 5));
    broker.send(client, Packet::Disconnect(disconnect));
    broker.advance(Duration::from_secs(20));
    let (_, connack) = broker.connect(v5_persistent("some", 5));
    assert!(connack.session_present, "DISCONNECT raised the expiry to 30 s");
}

#[test]
fn session_queue_bounded_by_messages() {
    let settings = BrokerSettings { session_queue_max_messages: 2, ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings);
    let (subscriber, _) = broker.connect(connect(V311, "full", false));
    broker.send(subscriber, Packet::Subscribe(subscribe(1, "b", QoS::AtLeastOnce)));
    broker.lose(subscriber);
    let (publisher, _) = broker.connect(connect(V311, "p", true));
    for i in 1..=4 {
        broker.send(publisher, Packet::Publish(publish("b", QoS::AtLeastOnce, i, &i.to_string())));
    }
    assert_eq!(broker.shards[0].stats().dropped_queue_full, 2);
    let (subscriber, _) = broker.connect(connect(V311, "full", false));
    assert_eq!(contents(&broker.recv_publishes(subscriber)).len(), 2);
}

/// A watcher of `will/#` on shard `watcher_shard` and a client with a will on its home shard.
fn will_setup(broker: &mut Broker, request: shardmq::protocol::Connect) -> (Client, Client) {
    let (watcher, _) = broker.connect_on(0, connect(V5, "watcher", true));
    broker.send(watcher, Packet::Subscribe(subscribe(1, "will/#", QoS::AtLeastOnce)));
    broker.recv(watcher);
    let (client, _) = broker.connect(request);
    (watcher, client)
}

fn with_will(version: ProtocolVersion, client_id: &str, delay_secs: Option<u32>) -> shardmq::protocol::Connect {
    let mut request = connect(version, client_id, true);
    let mut will = will(&format!("will/{client_id}"), "gone");
    will.properties.will_delay_interval_secs = delay_secs;
    request.will = Some(will);
    request
}

#[test]
fn will_published_on_abnormal_close_mqtt_3_1_2_8() {
    for version in [V311, V5] {
        let mut broker = Broker::new(2);
        let (watcher, client) = will_setup(&mut broker, with_will(version, "lost", None));
        broker.lose(client);
        assert_eq!(contents(&broker.recv_publishes(watcher)), vec![("will/lost".into(), "gone".into())], "{version:?}");
    }
}

#[test]
fn will_not_published_after_normal_disconnect_mqtt_3_1_2_10() {
    let mut broker = Broker::new(2);
    let (watcher, client) = will_setup(&mut broker, with_will(V311, "polite", None));
    broker.send(client, Packet::Disconnect(Disconnect::default()));
    assert!(broker.recv_publishes(watcher).is_empty());
}

#[test]
fn v5_disconnect_with_will_message_0x04_publishes_it() {
    let mut broker = Broker::new(2);
    let (watcher, client) = will_setup(&mut broker, with_will(V5, "asks", None));
    let disconnect = Disconnect { reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, ..Disconnect::default() };
    broker.send(client, Packet::Disconnect(disconnect));
    assert_eq!(broker.recv_publishes(watcher).len(), 1);
}

#[test]
fn will_published_on_keepalive_timeout_and_protocol_error() {
    let mut broker = Broker::new(2);
    let mut request = with_will(V5, "silent", None);
    request.keep_alive_secs = 2;
    let (watcher, _) = will_setup(&mut broker, request);
    broker.advance(Duration::from_secs(4));
    assert_eq!(contents(&broker.recv_publishes(watcher)), vec![("will/silent".into(), "gone".into())]);

    let (watcher, client) = will_setup(&mut broker, with_will(V5, "rude", None));
    broker.send(client, Packet::PingResp);
    assert_eq!(contents(&broker.recv_publishes(watcher)), vec![("will/rude".into(), "gone".into())]);
}

#[test]
fn will_published_when_taken_over() {
    let mut broker = Broker::new(1);
    let (watcher, _) = will_setup(&mut broker, with_will(V311, "twin", None));
    broker.connect(connect(V311, "twin", true));
    assert_eq!(broker.recv_publishes(watcher).len(), 1);
}

#[test]
fn will_delay_cancelled_by_reconnect_and_published_after_delay() {
    let mut broker = Broker::new(2);
    let mut request = with_will(V5, "delayed", Some(10));
    request.clean_start = false;
    request.properties.session_expiry_interval_secs = Some(100);
    let (watcher, client) = will_setup(&mut broker, request.clone());
    broker.lose(client);
    broker.advance(Duration::from_secs(5));
    assert!(broker.recv_publishes(watcher).is_empty(), "still within the delay");
    let (client, _) = broker.connect(request);
    broker.advance(Duration::from_secs(20));
    assert!(broker.recv_publishes(watcher).is_empty(), "the reconnect cancelled it");
    broker.lose(client);
    broker.advance(Duration::from_secs(9));
    assert!(broker.recv_publishes(watcher).is_empty());
    broker.advance(Duration::from_secs(2));
    assert_eq!(broker.recv_publishes(watcher).len(), 1);
}

#[test]
fn will_sent_at_session_end_when_earlier_than_delay() {
    let mut broker = Broker::new(1);
    let mut request = with_will(V5, "short", Some(100));
    request.clean_start = false;
    request.properties.session_expiry_interval_secs = Some(5);
    let (watcher, client) = will_setup(&mut broker, request);
    broker.lose(client);
    broker.advance(Duration::from_secs(6));
    assert_eq!(broker.recv_publishes(watcher).len(), 1);
}

#[test]
fn retained_message_set_replaced_and_deleted_across_shards_mqtt_3_3_1_5() {
    let mut broker = Broker::new(2);
    let (publisher, _) = broker.connect_on(0, connect(V5, "station", true));
    for payload in ["old", "new"] {
        let mut message = publish("weather/today", QoS::AtLeastOnce, 1, payload);
        message.retain = true;
        broker.send(publisher, Packet::Publish(message));
    }
    let (late, _) = broker.connect_on(1, connect(V5, "late", true));
    broker.send(late, Packet::Subscribe(subscribe(1, "weather/+", QoS::AtLeastOnce)));
    match broker.recv(late).as_slice() {
        [Packet::SubAck(_), Packet::Publish(retained)] => {
            assert!(retained.retain, "retained messages keep RETAIN on subscribe [MQTT-3.3.1-8]");
            assert_eq!(&retained.payload[..], b"new");
        }
        other => panic!("expected SUBACK then the retained PUBLISH, got {other:?}"),
    }
    let mut delete = publish("weather/today", QoS::AtMostOnce, 0, "");
    delete.retain = true;
    broker.send(publisher, Packet::Publish(delete));
    broker.recv(late);
    let (later, _) = broker.connect_on(1, connect(V5, "later", true));
    broker.send(later, Packet::Subscribe(subscribe(1, "weather/#", QoS::AtLeastOnce)));
    assert!(broker.recv_publishes(later).is_empty(), "empty payload deleted it [MQTT-3.3.1-6]");
}

#[test]
fn retain_handling_1_only_new_subscriptions_2_never_mqtt_3_3_1_10() {
    let mut broker = Broker::new(1);
    let (publisher, _) = broker.connect(connect(V5, "p", true));
    let mut message = publish("r/h", QoS::AtMostOnce, 0, "kept");
    message.retain = true;
    broker.send(publisher, Packet::Publish(message));
    let (client, _) = broker.connect(connect(V5, "handling", true));
    let subscribe_with = |handling: u8, filter: &str| {
        let mut request = subscribe(1, filter, QoS::AtMostOnce);
        request.filters[0].1.retain_handling = handling;
        Packet::Subscribe(request)
    };
    broker.send(client, subscribe_with(2, "r/#"));
    assert!(broker.recv_publishes(client).is_empty());
    broker.send(client, subscribe_with(1, "r/+"));
    assert_eq!(broker.recv_publishes(client).len(), 1);
    broker.send(client, subscribe_with(1, "r/+"));
    assert!(broker.recv_publishes(client).is_empty(), "existing subscription");
    broker.send(client, subscribe_with(0, "r/+"));
    assert_eq!(broker.recv_publishes(client).len(), 1);
}

#[test]
fn shutdown_sends_0x8b_to_v5_and_closes_all() {
    let mut broker = Broker::new(1);
    let (v5, _) = broker.connect(connect(V5, "five", true));
    let (v3, _) = broker.connect(connect(V311, "three", true));
    let now = broker.now;
    broker.shards[0].shutdown(now);
    broker.advance(Duration::ZERO);
    assert!(
        matches!(broker.recv(v5).as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(broker.recv(v3).is_empty());
    assert!(broker.is_closed(v5) && broker.is_closed(v3));
}

#[test]
fn v5_disconnect_with_error_reason_publishes_will() {
    let mut broker = Broker::new(2);
    let (watcher, client) = will_setup(&mut broker, with_will(V5, "failing", None));
    let disconnect = Disconnect { reason: ReasonCode::UNSPECIFIED_ERROR, ..Disconnect::default() };
    broker.send(client, Packet::Disconnect(disconnect));
    assert_eq!(broker.recv_publishes(watcher).len(), 1, "only 0x00 discards the will");
}
