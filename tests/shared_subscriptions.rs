//! Shared subscriptions `$share/{group}/{filter}`: each message goes to exactly one member of each group,
//! across shards and protocol versions, alongside ordinary subscribers; no retained messages on a shared
//! subscribe; members that leave stop receiving.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::any_version::{Client, ClientOptions, Version, BOTH_VERSIONS};
use support::raw::{self, Level, PacketFields, RawClient};
use support::{client_id_on_shard, spread_client_ids, unique, Broker, SILENCE};

/// Drains every member and returns the payloads (as numbers) each one got.
async fn drain(members: &mut [Client]) -> Vec<Vec<u32>> {
    let mut per_member = Vec::new();
    for member in members.iter_mut() {
        let mut got = Vec::new();
        while let Ok(message) = tokio::time::timeout(SILENCE, member.next_message()).await {
            got.push(String::from_utf8_lossy(&message.payload).parse().expect("numeric payload"));
        }
        per_member.push(got);
    }
    per_member
}

async fn members(broker: &Broker, filter: &str, count: usize) -> Vec<Client> {
    let mut members = Vec::new();
    for (i, id) in spread_client_ids("member", count).into_iter().enumerate() {
        // Alternate protocol versions: v3.1.1 clients may join shared groups too (as on Mosquitto, EMQX).
        let version = BOTH_VERSIONS[i % 2];
        let mut member = Client::connect(broker.port(), version, &id).await;
        assert_eq!(member.subscribe(filter, 1).await, 1, "{version:?} member joins {filter}");
        members.push(member);
    }
    members
}

async fn publish_numbers(broker: &Broker, topic: &str, count: u32) {
    let mut publisher = Client::connect(broker.port(), Version::V5, &unique("pub")).await;
    for i in 0..count {
        publisher.publish(topic, 1, false, format!("{i}")).await;
    }
}

#[tokio::test]
async fn each_message_to_exactly_one_member_of_the_group__mqtt_4_8_2_4() {
    let broker = Broker::start();
    let topic = unique("shared");
    let mut group = members(&broker, &format!("$share/g/{topic}"), 4).await;
    publish_numbers(&broker, &topic, 40).await;
    let per_member = drain(&mut group).await;
    let mut all: Vec<u32> = per_member.concat();
    all.sort();
    assert_eq!(all, (0..40).collect::<Vec<_>>(), "exactly once across the group: {per_member:?}");
}

#[tokio::test]
async fn every_group_and_every_plain_subscriber_gets_a_copy__mqtt_4_8_2() {
    let broker = Broker::start();
    let topic = unique("groups");
    let mut group_a = members(&broker, &format!("$share/a/{topic}"), 2).await;
    let mut group_b = members(&broker, &format!("$share/b/{topic}"), 2).await;
    let mut plain = vec![Client::connect(broker.port(), Version::V311, &unique("plain")).await];
    plain[0].subscribe(&topic, 1).await;
    publish_numbers(&broker, &topic, 10).await;
    for (name, members) in [("a", &mut group_a), ("b", &mut group_b), ("plain", &mut plain)] {
        let mut all = drain(members).await.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>(), "group {name}");
    }
}

#[tokio::test]
async fn shared_subscribe_gets_no_retained_messages__mqtt_4_8_2_5() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 sends retained messages on a shared subscribe") {
        return;
    }
    let topic = unique("shared-retained");
    let mut publisher = Client::connect(broker.port(), Version::V5, &unique("pub")).await;
    publisher.publish(&topic, 1, true, "retained").await;
    for version in BOTH_VERSIONS {
        let mut member = Client::connect(broker.port(), version, &unique("member")).await;
        member.subscribe(&format!("$share/g/{topic}"), 1).await;
        member.expect_no_message().await;
    }
}

#[tokio::test]
async fn member_that_left_gets_nothing_and_the_rest_get_everything__mqtt_4_8_2() {
    let broker = Broker::start();
    let topic = unique("leaving");
    let filter = format!("$share/g/{topic}");
    let mut group = members(&broker, &filter, 3).await;
    let leaver = group.remove(0);
    leaver.disconnect().await;
    publish_numbers(&broker, &topic, 12).await;
    let mut all = drain(&mut group).await.concat();
    all.sort();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn unsubscribed_member_leaves_the_group__mqtt_4_8_2() {
    let broker = Broker::start();
    let topic = unique("unsub-shared");
    let filter = format!("$share/g/{topic}");
    let mut group = members(&broker, &filter, 2).await;
    group[0].unsubscribe(&filter).await;
    publish_numbers(&broker, &topic, 6).await;
    let per_member = drain(&mut group).await;
    assert!(per_member[0].is_empty(), "unsubscribed member got {:?}", per_member[0]);
    assert_eq!(per_member[1], (0..6).collect::<Vec<_>>());
}

#[tokio::test]
async fn invalid_share_names_refused_per_filter_0x8f__mqtt_4_8_2_1_and_4_8_2_2() {
    let broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto disconnects instead of refusing the filter") {
        return;
    }
    let topic = unique("bad-share");
    let filters = [
        format!("$share//{topic}"),
        format!("$share/g+/{topic}"),
        format!("$share/g#/{topic}"),
        "$share/g".to_string(),
        format!("$share/g/{topic}"),
    ];
    let filters: Vec<(&str, u8)> = filters.iter().map(|filter| (filter.as_str(), 1)).collect();
    for (level, refused) in [(Level::V311, 0x80), (Level::V5, 0x8F)] {
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &unique("sharer"), true, 30, None)).await;
        client.send(&raw::subscribe(level, 1, &filters)).await;
        let reasons = client.expect_packet().await.ack_reasons();
        assert_eq!(reasons, vec![refused, refused, refused, refused, 1], "{level:?}: four bad share names, one good");
        client.expect_alive().await;
    }
}

/// A member that went offline keeping its session does not hold the group's new messages while another
/// member, on another shard, is connected: they go to the connected one, also when the offline member sits
/// on the publishing shard (v5 section 4.8.2).
#[tokio::test]
async fn offline_member_new_messages_go_to_a_connected_member_on_another_shard__mqtt_4_8_2() {
    let broker = Broker::start();
    let topic = unique("shared-offline");
    let filter = format!("$share/g/{topic}");
    for version in BOTH_VERSIONS {
        let away_id = client_id_on_shard("away", 0);
        let mut away = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &away_id)).await;
        away.subscribe(&filter, 1).await;
        away.disconnect().await;
        let mut present = Client::connect(broker.port(), version, &client_id_on_shard("present", 1)).await;
        present.subscribe(&filter, 1).await;
        let mut publisher = Client::connect(broker.port(), Version::V5, &client_id_on_shard("pub", 0)).await;
        for i in 0..6 {
            publisher.publish(&topic, 1, false, format!("{i}")).await;
        }
        let mut got = drain(std::slice::from_mut(&mut present)).await.concat();
        got.sort();
        assert_eq!(got, (0..6).collect::<Vec<_>>(), "{version:?}: the connected member gets them all");
        let mut back = Client::connect_with(broker.port(), &ClientOptions::persistent(version, &away_id)).await;
        assert!(back.session_present(), "{version:?}: the offline member kept its session");
        back.expect_no_message().await;
        back.unsubscribe(&filter).await;
        present.unsubscribe(&filter).await;
    }
}
