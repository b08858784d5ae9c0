//! Retained messages: stored per topic, sent on subscribe with the RETAIN flag, replaced, deleted by an
//! empty payload, matched by wildcard subscriptions across the shards that store them.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::any_version::{Client, BOTH_VERSIONS};
use support::{client_id_on_shard, unique, Broker};

#[tokio::test]
async fn retained_message_sent_to_new_subscriber_with_retain_flag__mqtt_3_3_1_6() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("retained");
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, true, "last known").await;
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        let message = subscriber.next_message().await;
        assert_eq!(message.payload, "last known", "{version:?}");
        assert!(message.retain, "{version:?}: sent because of a new subscription -> RETAIN 1 [MQTT-3.3.1-8]");
        assert_eq!(message.qos, 1);
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn live_message_to_existing_subscriber_has_retain_0__mqtt_3_3_1_9() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("live");
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, true, "live").await;
        let message = subscriber.next_message().await;
        assert_eq!(message.payload, "live");
        assert!(!message.retain, "{version:?}: forwarded to an established subscription -> RETAIN 0");
    }
}

#[tokio::test]
async fn retained_message_replaced_by_next_retained__mqtt_3_3_1_5() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("replace");
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, true, "first").await;
        publisher.publish(&topic, 1, true, "second").await;
        publisher.publish(&topic, 1, false, "not retained").await;
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        assert_eq!(subscriber.next_message().await.payload, "second", "{version:?}");
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn retained_empty_payload_deletes__mqtt_3_3_1_10() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("delete");
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, true, "to be deleted").await;
        publisher.publish(&topic, 1, true, "").await;
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        // Neither the deleted message nor the empty one is kept [MQTT-3.3.1-11].
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn wildcard_subscription_gets_every_matching_retained_message__mqtt_3_3_1_6() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let root = unique("many");
        // Topics are stored on the shard their hash picks; 12 topics land on both shards.
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        for i in 0..12 {
            publisher.publish(&format!("{root}/room{i}/temp"), 1, true, format!("{i}")).await;
        }
        publisher.publish(&format!("{root}/room0/humidity"), 1, true, "other").await;
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&format!("{root}/+/temp"), 1).await;
        let mut payloads: Vec<_> = subscriber
            .next_messages(12)
            .await
            .into_iter()
            .inspect(|m| assert!(m.retain))
            .map(|m| String::from_utf8_lossy(&m.payload).parse::<u32>().expect("numeric payload"))
            .collect();
        payloads.sort();
        assert_eq!(payloads, (0..12).collect::<Vec<_>>(), "{version:?}");
        subscriber.expect_no_message().await;
    }
}

#[tokio::test]
async fn retained_delivered_with_minimum_of_stored_and_subscription_qos__mqtt_3_8_4_8() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("retained-qos");
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 2, true, "stored at 2").await;
        for sub_qos in 0..=2u8 {
            let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
            subscriber.subscribe(&topic, sub_qos).await;
            assert_eq!(subscriber.next_message().await.qos, sub_qos, "{version:?}");
        }
    }
}

#[tokio::test]
async fn resubscribe_sends_retained_again__mqtt_3_8_4_3() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let topic = unique("again");
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, true, "retained").await;
        let mut subscriber = Client::connect(broker.port(), version, &unique("sub")).await;
        subscriber.subscribe(&topic, 1).await;
        assert_eq!(subscriber.next_message().await.payload, "retained");
        subscriber.subscribe(&topic, 1).await;
        assert_eq!(subscriber.next_message().await.payload, "retained", "{version:?}: replaced subscription");
    }
}

#[tokio::test]
async fn retained_published_on_one_shard_seen_by_subscriber_on_other__mqtt_3_3_1_6() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        for (publisher_shard, subscriber_shard) in [(0, 1), (1, 0)] {
            let topic = unique("cross-retained");
            let mut publisher =
                Client::connect(broker.port(), version, &client_id_on_shard("pub", publisher_shard)).await;
            publisher.publish(&topic, 1, true, "crossed").await;
            publisher.disconnect().await;
            let mut subscriber =
                Client::connect(broker.port(), version, &client_id_on_shard("sub", subscriber_shard)).await;
            subscriber.subscribe(&topic, 1).await;
            assert_eq!(subscriber.next_message().await.payload, "crossed", "{version:?}");
        }
    }
}
