//! Session takeover: a second connection with the same client id closes the first (v5: DISCONNECT 0x8E
//! first) and inherits the session unless it starts clean; also when the two connections were accepted
//! on different shards.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::any_version::{Client, ClientOptions, Version, Will, BOTH_VERSIONS};
use support::raw::{self, Level, RawClient};
use support::v5::{self, V5Client};
use support::{client_id_on_shard, unique, Broker, EVENT_TIMEOUT};

#[tokio::test]
async fn v311_takeover_closes_existing_connection__mqtt_3_1_4_3() {
    let broker = Broker::start();
    let id = unique("taken");
    let mut old = Client::connect(broker.port(), Version::V311, &id).await;
    let mut new = Client::connect(broker.port(), Version::V311, &id).await;
    old.wait_closed(EVENT_TIMEOUT).await;
    let topic = unique("after/takeover");
    new.subscribe(&topic, 1).await;
    new.publish(&topic, 1, false, "new works").await;
    assert_eq!(new.next_message().await.payload, "new works");
}

#[tokio::test]
async fn v5_takeover_sends_disconnect_0x8e_to_existing_connection__mqtt_3_1_4_3() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 closes the old connection without DISCONNECT 0x8E") {
        return;
    }
    let id = unique("taken");
    let mut old = RawClient::connect(broker.port(), Level::V5).await;
    old.handshake(&raw::connect(Level::V5, &id, true, 30, None)).await;
    let _new = V5Client::connect(v5::options(broker.port(), &id)).await;
    old.expect_disconnect_and_close(0x8E).await;
}

#[tokio::test]
async fn takeover_without_clean_start_inherits_session_and_queued_messages__mqtt_3_1_4_4() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let id = unique("inherit");
        let topic = unique("inherit/topic");
        let options = ClientOptions { manual_acks: true, ..ClientOptions::persistent(version, &id) };
        let mut old = Client::connect_with(broker.port(), &options).await;
        old.subscribe(&topic, 1).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, false, "in flight to old").await;
        assert_eq!(old.next_message().await.payload, "in flight to old");

        let mut new = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &id)).await;
        assert!(new.session_present(), "{version:?}: session present after takeover");
        old.wait_closed(EVENT_TIMEOUT).await;
        let redelivered = new.next_message().await;
        assert_eq!(redelivered.payload, "in flight to old", "{version:?}: unacked message resent");
        assert!(redelivered.dup);
        publisher.publish(&topic, 1, false, "to new").await;
        assert_eq!(new.next_message().await.payload, "to new", "{version:?}: subscription inherited");
    }
}

#[tokio::test]
async fn takeover_with_clean_start_drops_old_session__mqtt_3_1_2_4() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let id = unique("fresh");
        let topic = unique("fresh/topic");
        let mut old = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &id)).await;
        old.subscribe(&topic, 1).await;
        let mut new = Client::connect_with(broker.port(), &ClientOptions::clean(version, &id)).await;
        assert!(!new.session_present(), "{version:?}");
        old.wait_closed(EVENT_TIMEOUT).await;
        let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
        publisher.publish(&topic, 1, false, "nobody").await;
        new.expect_no_message().await;
    }
}

/// The same client id connects again and again: the kernel spreads the connections over both shards'
/// listeners, so takeovers run both with the old connection on the accepting shard and on the other one.
#[tokio::test]
async fn repeated_takeovers_across_shards_keep_one_session__mqtt_3_1_4_3() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        for home in 0..support::SHARDS {
            let id = client_id_on_shard("hop", home);
            let topic = unique("hop/topic");
            let options = ClientOptions::persistent(version, &id);
            let mut current = Client::connect_with(broker.port(), &options).await;
            current.subscribe(&topic, 1).await;
            let mut publisher = Client::connect(broker.port(), version, &unique("pub")).await;
            for round in 0..8 {
                let mut next = Client::connect_with(broker.port(), &options).await;
                assert!(next.session_present(), "{version:?} round {round}");
                current.wait_closed(EVENT_TIMEOUT).await;
                publisher.publish(&topic, 1, false, format!("round {round}")).await;
                // The previous round's message may come again first: taken over before the old client's
                // PUBACK reached the broker, it is still in flight and is redelivered with DUP [MQTT-4.4.0-1].
                let mut message = next.next_message().await;
                if round > 0 && message.payload == format!("round {}", round - 1).as_bytes() {
                    assert!(message.dup, "{version:?} round {round}: a redelivery carries DUP");
                    message = next.next_message().await;
                }
                assert_eq!(message.payload, format!("round {round}").as_bytes(), "{version:?} round {round}");
                current = next;
            }
        }
    }
}

#[tokio::test]
async fn v311_takeover_publishes_will_of_closed_connection__mqtt_3_1_2_8() {
    let broker = Broker::start();
    let id = unique("will-takeover");
    let will_topic = unique("will/takeover");
    let mut watcher = Client::connect(broker.port(), Version::V311, &unique("watcher")).await;
    watcher.subscribe(&will_topic, 1).await;
    let will = Will { topic: will_topic.clone(), payload: "old gone".into(), qos: 1, retain: false };
    let mut old = Client::connect_with(broker.port(), &ClientOptions::clean(Version::V311, &id).with_will(will)).await;
    let _new = Client::connect(broker.port(), Version::V311, &id).await;
    old.wait_closed(EVENT_TIMEOUT).await;
    let message = watcher.next_message().await;
    assert_eq!(message.topic, will_topic);
    assert_eq!(message.payload, "old gone");
}
