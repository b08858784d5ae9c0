//! Will messages: published when the connection ends without a clean DISCONNECT, not after one, v5
//! DISCONNECT 0x04 (with will), the will's retain flag, and the v5 Will Delay Interval.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use std::time::{Duration, Instant};

use support::any_version::{Client, ClientOptions, Version, Will, BOTH_VERSIONS};
use support::raw::{self, Level, RawClient, RawWill};
use support::{client_id_on_shard, unique, Broker};

fn will_on(topic: &str, payload: &str, retain: bool) -> Will {
    Will { topic: topic.to_string(), payload: payload.to_string(), qos: 1, retain }
}

#[tokio::test]
async fn abnormal_close_publishes_will__mqtt_3_1_2_8() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        // Will owner and watcher on each pair of shards.
        for (owner_shard, watcher_shard) in [(0, 0), (0, 1), (1, 0)] {
            let will_topic = unique("will/abnormal");
            let mut watcher =
                Client::connect(broker.port(), version, &client_id_on_shard("watch", watcher_shard)).await;
            watcher.subscribe(&will_topic, 1).await;
            let options = ClientOptions::clean(version, &client_id_on_shard("owner", owner_shard)).with_will(will_on(
                &will_topic,
                "died",
                false,
            ));
            let owner = Client::connect_with(broker.port(), &options).await;
            owner.drop_connection().await;
            let will = watcher.next_message().await;
            assert_eq!((will.topic.as_str(), &will.payload[..]), (will_topic.as_str(), &b"died"[..]), "{version:?}");
            assert_eq!(will.qos, 1);
        }
    }
}

/// A last packet and the end of the stream arriving together: the broker reads past the packet to the end
/// of stream and publishes the will at once, not when the keep-alive (30 s) runs out.
#[tokio::test]
async fn last_packet_then_close_publishes_will_at_once__mqtt_3_1_2_8() {
    let broker = Broker::start();
    for owner_shard in 0..support::SHARDS {
        let will_topic = unique("will/last-packet");
        let mut watcher = Client::connect(broker.port(), Version::V311, &unique("watch")).await;
        watcher.subscribe(&will_topic, 1).await;
        let mut owner = RawClient::connect(broker.port(), Level::V311).await;
        let will = RawWill { topic: &will_topic, payload: b"gone", qos: 1, retain: false };
        let id = client_id_on_shard("last-packet", owner_shard);
        owner.handshake(&raw::connect(Level::V311, &id, true, 30, Some(&will))).await;
        // A QoS 0 PUBLISH (no reply that could make the socket report again), then the socket closes.
        owner.send(&raw::publish(Level::V311, &unique("last/words"), 0, false, 0, b"bye")).await;
        drop(owner);
        let will = watcher.next_message().await;
        assert_eq!((will.topic.as_str(), &will.payload[..]), (will_topic.as_str(), &b"gone"[..]));
    }
}

#[tokio::test]
async fn clean_disconnect_discards_will__mqtt_3_1_2_10() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let will_topic = unique("will/clean");
        let mut watcher = Client::connect(broker.port(), version, &unique("watch")).await;
        watcher.subscribe(&will_topic, 1).await;
        let options = ClientOptions::clean(version, &unique("owner")).with_will(will_on(&will_topic, "no", false));
        let owner = Client::connect_with(broker.port(), &options).await;
        owner.disconnect().await;
        watcher.expect_no_message().await;
    }
}

#[tokio::test]
async fn v5_disconnect_with_will_message_0x04_publishes_will__mqtt_3_14_4_3() {
    let broker = Broker::start();
    let will_topic = unique("will/0x04");
    let mut watcher = Client::connect(broker.port(), Version::V5, &unique("watch")).await;
    watcher.subscribe(&will_topic, 1).await;
    let mut owner = RawClient::connect(broker.port(), Level::V5).await;
    let will = RawWill { topic: &will_topic, payload: b"asked for", qos: 1, retain: false };
    owner.handshake(&raw::connect(Level::V5, &unique("owner"), true, 30, Some(&will))).await;
    owner.send(&raw::disconnect(Level::V5, 0x04)).await;
    owner.expect_closed().await;
    assert_eq!(watcher.next_message().await.payload, "asked for");
}

#[tokio::test]
async fn will_with_retain_is_retained__mqtt_3_1_2_17() {
    let broker = Broker::start();
    for version in BOTH_VERSIONS {
        let will_topic = unique("will/retained");
        let options =
            ClientOptions::clean(version, &unique("owner")).with_will(will_on(&will_topic, "last words", true));
        let owner = Client::connect_with(broker.port(), &options).await;
        owner.drop_connection().await;
        // The will is published asynchronously after the close: poll with fresh subscribers.
        let deadline = Instant::now() + support::EVENT_TIMEOUT;
        loop {
            let mut late = Client::connect(broker.port(), version, &unique("late")).await;
            late.subscribe(&will_topic, 1).await;
            if let Ok(message) = tokio::time::timeout(Duration::from_millis(200), late.next_message()).await {
                assert_eq!(message.payload, "last words", "{version:?}");
                assert!(message.retain);
                break;
            }
            assert!(Instant::now() < deadline, "{version:?}: retained will never showed up");
        }
    }
}

#[tokio::test]
async fn server_closing_for_protocol_error_publishes_will__mqtt_3_1_2_8() {
    let broker = Broker::start();
    for level in [Level::V311, Level::V5] {
        let will_topic = unique("will/protocol-error");
        let mut watcher = Client::connect(broker.port(), Version::V311, &unique("watch")).await;
        watcher.subscribe(&will_topic, 1).await;
        let mut owner = RawClient::connect(broker.port(), level).await;
        let will = RawWill { topic: &will_topic, payload: b"broke the rules", qos: 0, retain: false };
        owner.handshake(&raw::connect(level, &unique("owner"), true, 30, Some(&will))).await;
        let mut subscribe_with_reserved_flags_0 = raw::subscribe(level, 1, &[("a", 0)]);
        subscribe_with_reserved_flags_0[0] = 0x80; // must be 0x82 [MQTT-3.8.1-1]
        owner.send(&subscribe_with_reserved_flags_0).await;
        owner.expect_closed().await;
        assert_eq!(watcher.next_message().await.payload, "broke the rules", "{level:?}");
    }
}

/// v5 Will Delay Interval 2 s (session expiry 60 s): nothing before the delay, the will after it; for
/// the will's owner and the watcher on the same shard and on different shards.
#[tokio::test]
async fn v5_will_delay_interval_delays_will__mqtt_3_1_3_9() {
    let broker = Broker::start();
    for (owner_shard, watcher_shard) in [(0, 0), (1, 1), (0, 1), (1, 0)] {
        let will_topic = unique("will/delayed");
        let mut watcher =
            Client::connect(broker.port(), Version::V5, &client_id_on_shard("watch", watcher_shard)).await;
        watcher.subscribe(&will_topic, 1).await;
        let mut owner = RawClient::connect(broker.port(), Level::V5).await;
        owner.handshake(&delayed_will_connect(&client_id_on_shard("owner", owner_shard), &will_topic, 2, 60)).await;
        drop(owner);
        let closed_at = Instant::now();
        let message = tokio::time::timeout(Duration::from_secs(4), watcher.next_message())
            .await
            .unwrap_or_else(|_| panic!("no will: owner on shard {owner_shard}, watcher on {watcher_shard}"));
        let waited = closed_at.elapsed();
        assert_eq!(message.payload, "delayed");
        assert!(waited >= Duration::from_millis(1800), "will sent after {waited:?}, before its 2 s delay");
    }
}

#[tokio::test]
async fn v5_reconnect_within_will_delay_cancels_will__mqtt_3_1_3_9() {
    let broker = Broker::start();
    let will_topic = unique("will/cancelled");
    let id = unique("owner");
    let mut watcher = Client::connect(broker.port(), Version::V5, &unique("watch")).await;
    watcher.subscribe(&will_topic, 1).await;
    let mut owner = RawClient::connect(broker.port(), Level::V5).await;
    owner.handshake(&delayed_will_connect(&id, &will_topic, 2, 60)).await;
    drop(owner);
    let back = Client::connect_with(broker.port(), &ClientOptions::persistent(Version::V5, &id)).await;
    assert!(back.session_present());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    watcher.expect_no_message().await;
}

/// The session ends before the Will Delay Interval does: the will goes out at the end of the session.
#[tokio::test]
async fn v5_will_published_when_session_ends_before_will_delay__mqtt_3_1_3_9() {
    let broker = Broker::start();
    let will_topic = unique("will/session-end");
    let mut watcher = Client::connect(broker.port(), Version::V5, &unique("watch")).await;
    watcher.subscribe(&will_topic, 1).await;
    let mut owner = RawClient::connect(broker.port(), Level::V5).await;
    owner.handshake(&delayed_will_connect(&unique("owner"), &will_topic, 30, 1)).await;
    drop(owner);
    let closed_at = Instant::now();
    let message = tokio::time::timeout(Duration::from_secs(4), watcher.next_message())
        .await
        .expect("the will at the end of the 1 s session, not after the 30 s delay");
    assert_eq!(message.payload, "delayed");
    let waited = closed_at.elapsed();
    assert!(waited >= Duration::from_millis(800), "will sent after {waited:?}, before the session ended");
}

/// CONNECT (v5, Clean Start 0) with a will on `topic` delayed by `delay_secs` and a session expiring
/// `session_expiry_secs` after the connection ends.
fn delayed_will_connect(client_id: &str, topic: &str, delay_secs: u32, session_expiry_secs: u32) -> Vec<u8> {
    let mut body = raw::string("MQTT");
    body.extend([5, 0x04 | (1 << 3), 0, 30]); // level 5, will flag + will QoS 1, clean start 0, keep-alive 30
    let mut connect_properties = vec![0x11];
    connect_properties.extend(session_expiry_secs.to_be_bytes());
    body.extend(raw::properties(&connect_properties));
    body.extend(raw::string(client_id));
    let mut will_properties = vec![0x18];
    will_properties.extend(delay_secs.to_be_bytes());
    body.extend(raw::properties(&will_properties));
    body.extend(raw::string(topic));
    body.extend(raw::binary(b"delayed"));
    raw::packet(0x10, &body)
}
