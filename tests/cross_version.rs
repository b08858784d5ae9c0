//! MQTT 3.1.1 and MQTT 5 clients on the same topics: messages flow both ways, and v5-only properties
//! never reach a 3.1.1 client (its PUBLISH decodes as plain 3.1.1 with the exact payload).
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use shardmq::protocol::Packet;
use support::raw::{self, Level, RawClient};
use support::v4::{self, V4Client};
use support::v5::{self, user_properties, V5Client};
use support::{client_id_on_shard, unique, Broker};

fn every_forwarded_property() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(600),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: user_properties(&[("k", "v"), ("k", "w")]),
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    }
}

#[tokio::test]
async fn v5_properties_dropped_for_v311_subscriber__mqtt_3_3_2() {
    let broker = Broker::start();
    for (subscriber_shard, publisher_shard) in [(0, 0), (0, 1), (1, 0)] {
        let topic = unique("cross");
        let mut raw_subscriber = RawClient::connect(broker.port(), Level::V311).await;
        let raw_id = client_id_on_shard("raw311", subscriber_shard);
        raw_subscriber.handshake(&raw::connect(Level::V311, &raw_id, true, 30, None)).await;
        raw_subscriber.send(&raw::subscribe(Level::V311, 1, &[(&topic, 1)])).await;
        raw_subscriber.expect_packet().await;
        let mut library_subscriber = V4Client::connect(v4::options(broker.port(), &unique("v4"))).await;
        library_subscriber.subscribe(&topic, rumqttc::QoS::AtLeastOnce).await;

        let mut publisher =
            V5Client::connect(v5::options(broker.port(), &client_id_on_shard("v5pub", publisher_shard))).await;
        publisher
            .publish_with(&topic, QoS::AtLeastOnce, false, "plain payload", Some(every_forwarded_property()))
            .await;

        match raw_subscriber.expect_packet().await {
            Packet::Publish(publish) => {
                assert_eq!(publish.topic.to_string(), topic);
                assert_eq!(&publish.payload[..], b"plain payload", "no property bytes in a 3.1.1 PUBLISH");
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        let publish = library_subscriber.next_publish().await;
        assert_eq!(&publish.payload[..], b"plain payload");
    }
}

#[tokio::test]
async fn v311_message_reaches_v5_subscriber_without_properties__mqtt_3_3_2() {
    let broker = Broker::start();
    let topic = unique("cross");
    let mut subscriber = V5Client::connect(v5::options(broker.port(), &unique("v5"))).await;
    subscriber.subscribe(&topic, QoS::ExactlyOnce).await;
    let mut publisher = V4Client::connect(v4::options(broker.port(), &unique("v4"))).await;
    publisher.publish(&topic, rumqttc::QoS::ExactlyOnce, false, "from 3.1.1").await;
    let publish = subscriber.next_publish().await;
    assert_eq!(publish.payload, "from 3.1.1");
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    let properties = publish.properties.unwrap_or_default();
    assert!(properties.user_properties.is_empty() && properties.response_topic.is_none());
}

#[tokio::test]
async fn v5_retained_with_properties_served_to_v311_subscriber__mqtt_3_3_1_6() {
    let broker = Broker::start();
    let topic = unique("cross-retained");
    let mut publisher = V5Client::connect(v5::options(broker.port(), &unique("v5"))).await;
    publisher.publish_with(&topic, QoS::AtLeastOnce, true, "kept", Some(every_forwarded_property())).await;
    let mut subscriber = RawClient::connect(broker.port(), Level::V311).await;
    subscriber.handshake(&raw::connect(Level::V311, &unique("raw311"), true, 30, None)).await;
    subscriber.send(&raw::subscribe(Level::V311, 1, &[(&topic, 1)])).await;
    let mut packets = vec![subscriber.expect_packet().await, subscriber.expect_packet().await];
    packets.retain(|packet| matches!(packet, Packet::Publish(_)));
    match &packets[..] {
        [Packet::Publish(publish)] => {
            assert!(publish.retain);
            assert_eq!(&publish.payload[..], b"kept");
        }
        other => panic!("expected one retained PUBLISH, got {other:?}"),
    }
}
