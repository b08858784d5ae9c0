//! Shared subscriptions `$share/{group}/{filter}` across shards (MQTT 5 section 4.8.2, also accepted for
//! 3.1.1 clients).

mod core_harness;

use core_harness::*;
use shardmq::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn member(broker: &mut Broker, shard: usize, client_id: &str, share: &str) -> Client {
    let (client, _) = broker.connect_on(shard, connect(V5, client_id, true));
    broker.send(client, Packet::Subscribe(subscribe(1, share, QoS::AtLeastOnce)));
    match broker.recv(client).as_slice() {
        [Packet::SubAck(suback)] => assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    client
}

#[test]
fn each_message_goes_to_exactly_one_member_across_shards() {
    let mut broker = Broker::new(3);
    let members = [member(&mut broker, 1, "m1", "$share/g/jobs/+"), member(&mut broker, 2, "m2", "$share/g/jobs/+")];
    let (plain, _) = broker.connect_on(2, connect(V5, "plain", true));
    broker.send(plain, Packet::Subscribe(subscribe(1, "jobs/#", QoS::AtMostOnce)));
    broker.recv(plain);
    let (publisher, _) = broker.connect_on(0, connect(V5, "boss", true));
    for i in 1..=6u16 {
        broker.send(publisher, Packet::Publish(publish("jobs/x", QoS::AtLeastOnce, i, &i.to_string())));
    }
    let counts: Vec<usize> = members.iter().map(|&client| broker.recv_publishes(client).len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 6, "every message to exactly one member: {counts:?}");
    assert!(counts.iter().all(|&count| count > 0), "spread over both shards: {counts:?}");
    assert_eq!(broker.recv_publishes(plain).len(), 6, "a plain subscription still gets every message");
}

#[test]
fn member_on_the_publishing_shard_is_preferred_and_members_rotate() {
    let mut broker = Broker::new(2);
    let local_a = member(&mut broker, 0, "a", "$share/g/t");
    let local_b = member(&mut broker, 0, "b", "$share/g/t");
    let remote = member(&mut broker, 1, "c", "$share/g/t");
    let (publisher, _) = broker.connect_on(0, connect(V5, "p", true));
    for i in 1..=4u16 {
        broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, i, "x")));
    }
    assert_eq!(broker.recv_publishes(local_a).len(), 2);
    assert_eq!(broker.recv_publishes(local_b).len(), 2);
    assert!(broker.recv_publishes(remote).is_empty());
}

#[test]
fn groups_are_independent_each_gets_a_copy() {
    let mut broker = Broker::new(2);
    let first = member(&mut broker, 0, "g1", "$share/one/t");
    let second = member(&mut broker, 1, "g2", "$share/two/t");
    let (publisher, _) = broker.connect_on(1, connect(V5, "p", true));
    broker.send(publisher, Packet::Publish(publish("t", QoS::AtLeastOnce, 1, "x")));
    assert_eq!(broker.recv_publishes(first).len(), 1);
    assert_eq!(broker.recv_publishes(second).len(), 1);
}

#[test]
fn no_retained_messages_on_shared_subscribe() {
    let mut broker = Broker::new(1);
    let (publisher, _) = broker.connect(connect(V5, "p", true));
    let mut retained = publish("r", QoS::AtMostOnce, 0, "old");
    retained.retain = true;
    broker.send(publisher, Packet::Publish(retained));
    let client = member(&mut broker, 0, "m", "$share/g/r");
    assert!(broker.recv_publishes(client).is_empty());
}

#[test]
fn unsubscribed_group_gets_nothing_and_v311_may_share() {
    let mut broker = Broker::new(2);
    let (v3, _) = broker.connect_on(1, connect(V311, "three", true));
    broker.send(v3, Packet::Subscribe(subscribe(1, "$share/g/v", QoS::AtMostOnce)));
    assert!(
        matches!(broker.recv(v3).as_slice(), [Packet::SubAck(suback)] if suback.reasons == vec![ReasonCode::GRANTED_QOS_0])
    );
    let (publisher, _) = broker.connect_on(0, connect(V5, "p", true));
    broker.send(publisher, Packet::Publish(publish("v", QoS::AtMostOnce, 0, "1")));
    assert_eq!(broker.recv_publishes(v3).len(), 1);
    broker.send(v3, Packet::Unsubscribe(unsubscribe(2, "$share/g/v")));
    broker.recv(v3);
    broker.send(publisher, Packet::Publish(publish("v", QoS::AtMostOnce, 0, "2")));
    assert!(broker.recv_publishes(v3).is_empty());
    assert_eq!(broker.shards[0].gauges().interest_trie_nodes, 1, "interest withdrawn on the other shard");
}

#[test]
fn offline_member_skipped_while_a_connected_member_exists() {
    let mut broker = Broker::new(1);
    let (sleeper, _) = broker.connect(connect(V311, "sleeper", false));
    broker.send(sleeper, Packet::Subscribe(subscribe(1, "$share/g/w", QoS::AtLeastOnce)));
    broker.lose(sleeper);
    let awake = member(&mut broker, 0, "awake", "$share/g/w");
    let (publisher, _) = broker.connect(connect(V5, "p", true));
    for i in 1..=3u16 {
        broker.send(publisher, Packet::Publish(publish("w", QoS::AtLeastOnce, i, "x")));
    }
    assert_eq!(broker.recv_publishes(awake).len(), 3);
}
