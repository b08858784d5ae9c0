//! Persistent sessions across reconnects without a broker restart: subscriptions kept, QoS 1/2 messages
//! queued while offline, in-flight messages redelivered, session present flag, clean start, and the v5
//! Session Expiry Interval.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use std::time::Duration;

use shardmq::protocol::Packet;
use support::any_version::{Client, ClientOptions, Version, BOTH_VERSIONS};
use support::raw::{self, Level, PacketFields, RawClient, Received};
use support::{client_id_on_shard, unique, Broker, BrokerLimits};

#[tokio::test]
async fn persistent_session_resumes_with_session_present_and_subscriptions__mqtt_3_2_2_2() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        for shard in 0..support::SHARDS {
            let id = client_id_on_shard("resume", shard);
            let topic = unique("resume/topic");
            let options = ClientOptions::persistent(version, &id);
            let mut first = Client::connect_with(broker.port(), &options).await;
            assert!(!first.session_present(), "{version:?}: a new session is not present");
            first.subscribe(&topic, 1).await;
            first.disconnect().await;

            let mut second = Client::connect_with(broker.port(), &options).await;
            assert!(second.session_present(), "{version:?}: the stored session must be reported present");
            let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
            publisher.publish(&topic, 1, false, "kept").await;
            let message = second.next_message().await;
            assert_eq!(message.payload, "kept", "{version:?}: subscription survived the reconnect");
        }
    }
}

#[tokio::test]
async fn qos1_and_qos2_messages_queued_while_offline_delivered_in_order__mqtt_3_1_2_5() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let id = unique("offline");
        let topic = unique("offline/topic");
        let options = ClientOptions::persistent(version, &id);
        let mut subscriber = Client::connect_with(broker.port(), &options).await;
        subscriber.subscribe(&topic, 2).await;
        subscriber.disconnect().await;

        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for i in 0..10 {
            publisher.publish(&topic, 1 + i % 2, false, format!("queued {i}")).await;
        }
        let mut subscriber = Client::connect_with(broker.port(), &options).await;
        assert!(subscriber.session_present());
        let received = subscriber.next_messages(10).await;
        for (i, message) in received.iter().enumerate() {
            assert_eq!(message.payload, format!("queued {i}").as_bytes(), "{version:?}");
            assert_eq!(message.qos, 1 + (i as u8) % 2, "{version:?}");
        }
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn unacknowledged_qos1_redelivered_with_dup_on_reconnect__mqtt_4_4_0_1() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let id = unique("redeliver");
        let topic = unique("redeliver/topic");
        let options = ClientOptions { manual_acks: true, ..ClientOptions::persistent(version, &id) };
        let mut subscriber = Client::connect_with(broker.port(), &options).await;
        subscriber.subscribe(&topic, 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, false, "not acked").await;
        let first = subscriber.next_message().await;
        assert!(!first.dup);
        subscriber.drop_connection().await; // never sent the PUBACK

        let mut subscriber = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &id)).await;
        let again = subscriber.next_message().await;
        assert_eq!(again.payload, "not acked", "{version:?}");
        assert!(again.dup, "{version:?}: a resent PUBLISH must have DUP set [MQTT-3.3.1-1]");
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn clean_session_discards_stored_session__mqtt_3_1_2_6() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let id = unique("discard");
        let topic = unique("discard/topic");
        let mut subscriber = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &id)).await;
        subscriber.subscribe(&topic, 1).await;
        subscriber.disconnect().await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, false, "queued for the old session").await;

        let mut clean = Client::connect_with(broker.port(), &ClientOptions::clean(version, &id)).await;
        assert!(!clean.session_present(), "{version:?}: clean start must report no session");
        clean.expect_no_message().await;
        publisher.publish(&topic, 1, false, "after clean start").await;
        clean.expect_no_message().await;
    }
}

#[tokio::test]
async fn v311_clean_session_connection_leaves_no_session_behind__mqtt_3_1_2_6() {
    let broker = Broker::start();
    let id = unique("transient");
    let topic = unique("transient/topic");
    let mut first = Client::connect_with(broker.port(), &ClientOptions::clean(Version::V311, &id)).await;
    first.subscribe(&topic, 1).await;
    first.disconnect().await;
    let mut publisher = Client::connect(broker.port(), Version::V311, &unique("pub")).await;
    publisher.publish(&topic, 1, false, "nobody home").await;
    let mut second = Client::connect_with(broker.port(), &ClientOptions::persistent(Version::V311, &id)).await;
    assert!(!second.session_present());
    second.expect_no_message().await;
}

#[tokio::test]
async fn v5_session_expiry_zero_ends_session_at_disconnect__mqtt_3_1_2_23() {
    let broker = Broker::start();
    let id = unique("expiry0");
    let topic = unique("expiry0/topic");
    let no_expiry = ClientOptions { session_expiry_secs: None, ..ClientOptions::persistent(Version::V5, &id) };
    let mut first = Client::connect_with(broker.port(), &no_expiry).await;
    first.subscribe(&topic, 1).await;
    first.disconnect().await;
    let mut publisher = Client::connect(broker.port(), Version::V5, &unique("pub")).await;
    publisher.publish(&topic, 1, false, "session gone").await;
    let mut second = Client::connect_with(broker.port(), &no_expiry).await;
    assert!(!second.session_present(), "expiry 0: the session ended with the connection");
    second.expect_no_message().await;
}

#[tokio::test]
async fn v5_session_expires_after_its_interval__mqtt_3_1_2_23() {
    let broker = Broker::start();
    let id = unique("expiry1");
    let one_second = ClientOptions { session_expiry_secs: Some(1), ..ClientOptions::persistent(Version::V5, &id) };
    let mut first = Client::connect_with(broker.port(), &one_second).await;
    first.subscribe(&unique("expiry1/topic"), 1).await;
    first.disconnect().await;
    // Within the interval the session is still there...
    let resumed = Client::connect_with(broker.port(), &one_second).await;
    assert!(resumed.session_present(), "reconnected within the expiry interval");
    resumed.disconnect().await;
    // ...and after it, gone. Mosquitto checks expiries about once a second, hence the margin.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let late = Client::connect_with(broker.port(), &one_second).await;
    assert!(!late.session_present(), "session must have expired after 1 s offline");
}

#[tokio::test]
async fn v5_disconnect_can_set_session_expiry_to_zero__mqtt_3_14_2_2() {
    let broker = Broker::start();
    let id = unique("disconnect-expiry");
    // Raw bytes: rumqttc cannot put a Session Expiry Interval in DISCONNECT.
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let session_expiry_300_secs = [0x11, 0, 0, 0x01, 0x2C];
    client.handshake(&raw::connect_with(5, &id, false, 30, None, &session_expiry_300_secs)).await;
    client.send(&raw::subscribe(Level::V5, 1, &[("some/topic", 1)])).await;
    client.expect_packet().await;
    let session_expiry_zero = [0x11, 0, 0, 0, 0];
    let mut disconnect_body = vec![0x00];
    disconnect_body.extend(raw::properties(&session_expiry_zero));
    client.send(&raw::packet(0xE0, &disconnect_body)).await;
    client.expect_closed().await;
    let again = Client::connect_with(broker.port(), &ClientOptions::persistent(Version::V5, &id)).await;
    assert!(!again.session_present(), "DISCONNECT with Session Expiry Interval 0 ends the session");
}

#[tokio::test]
async fn v5_disconnect_cannot_set_session_expiry_after_connect_had_0__mqtt_3_14_2_2() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 closes without DISCONNECT 0x82") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect(Level::V5, &unique("expiry-0"), true, 30, None)).await;
    let mut disconnect_body = vec![0x00];
    disconnect_body.extend(raw::properties(&[0x11, 0, 0, 0x01, 0x2C]));
    client.send(&raw::packet(0xE0, &disconnect_body)).await;
    client.expect_disconnect_and_close(0x82).await;
}

/// QoS 2 to a persistent raw 3.1.1 subscriber that stops after PUBREC: on reconnect the broker resends
/// PUBREL, not the PUBLISH; with no PUBREC at all it resends the PUBLISH with DUP.
#[tokio::test]
async fn qos2_flow_resumed_at_the_right_step_on_reconnect__mqtt_4_4_0_1() {
    let broker = Broker::start();
    let id = unique("qos2-resume");
    let topic = unique("qos2-resume/topic");
    let connect = raw::connect(Level::V311, &id, false, 30, None);
    let mut subscriber = RawClient::connect(broker.port(), Level::V311).await;
    subscriber.handshake(&connect).await;
    subscriber.send(&raw::subscribe(Level::V311, 1, &[(&topic, 2)])).await;
    subscriber.expect_packet().await;
    let mut publisher = Client::connect(broker.port(), Version::V311, &unique("pub")).await;
    publisher.publish(&topic, 2, false, "exactly once").await;

    let Packet::Publish(first) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
    subscriber.send(&raw::publish_ack(raw::PUBREC, first.packet_id)).await;
    assert_eq!(subscriber.expect_packet().await, Packet::PubRel(pub_response(first.packet_id)));
    drop(subscriber); // no PUBCOMP

    let mut subscriber = RawClient::connect(broker.port(), Level::V311).await;
    assert_eq!(subscriber.handshake(&connect).await.connack(), (true, 0));
    assert_eq!(subscriber.expect_packet().await, Packet::PubRel(pub_response(first.packet_id)), "PUBREL resent");
    subscriber.send(&raw::publish_ack(raw::PUBCOMP, first.packet_id)).await;

    publisher.publish(&topic, 2, false, "second").await;
    let Packet::Publish(second) = subscriber.expect_packet().await else { panic!("expected PUBLISH") };
    drop(subscriber); // not even PUBREC
    let mut subscriber = RawClient::connect(broker.port(), Level::V311).await;
    subscriber.handshake(&connect).await;
    let Packet::Publish(again) = subscriber.expect_packet().await else { panic!("expected the PUBLISH again") };
    assert_eq!((again.packet_id, again.dup, &again.payload[..]), (second.packet_id, true, &b"second"[..]));
    assert!(matches!(subscriber.receive(support::SILENCE).await, Received::Timeout), "nothing else is resent");
}

fn pub_response(packet_id: u16) -> shardmq::protocol::PubResponse {
    shardmq::protocol::PubResponse { packet_id, ..Default::default() }
}

#[tokio::test]
async fn offline_queue_bounded_by_configured_message_count__mqtt_3_1_2_5() {
    let broker = Broker::start_with(&BrokerLimits { session_queue_max_messages: Some(5), ..Default::default() });
    // Subscriber and publisher on the same shard: the message is in the session's queue before its PUBACK
    // goes out. Across shards the PUBACK only says the broker took the message, which may still be on its
    // way to the session's shard when the subscriber resumes, and then arrives live on top of the queue.
    let id = client_id_on_shard("bounded", 0);
    let topic = unique("bounded/topic");
    let options = ClientOptions::persistent(Version::V311, &id);
    let mut subscriber = Client::connect_with(broker.port(), &options).await;
    subscriber.subscribe(&topic, 1).await;
    subscriber.disconnect().await;
    // The DISCONNECT and the publishes travel on different sockets (often to different shards): a message
    // routed before the DISCONNECT is read goes in flight to the still-connected client and is, rightly,
    // redelivered on top of the queue. Give the broker time to read the DISCONNECT so only the queue counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut publisher = Client::connect(broker.port(), Version::V311, &client_id_on_shard("pub", 0)).await;
    for i in 0..12 {
        publisher.publish(&topic, 1, false, format!("{i}")).await;
    }
    let mut subscriber = Client::connect_with(broker.port(), &options).await;
    let kept: Vec<u32> = subscriber
        .next_messages(5)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).parse().expect("numeric"))
        .collect();
    subscriber.expect_no_message().await;
    // Which end is dropped is the broker's choice; the kept ones stay in order.
    assert!(kept == [0, 1, 2, 3, 4] || kept == [7, 8, 9, 10, 11], "kept {kept:?}");
}
