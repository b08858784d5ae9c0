//! Authorization through `ShardCore` (sans-I/O): the QoS 2 flows of a PUBLISH without write access (v5
//! PUBREC 0x87 ends the flow; 3.1.1 completes it and drops the message), shared subscriptions checked on
//! their filter, cross-shard delivery, and a reload swapping the rules for sessions that already exist.

mod core_harness;

use std::path::Path;
use std::sync::Arc;

use core_harness::*;
use shardmq::auth::{AccessControl, AclFile, AuthSettings, ListenerAccess, PasswordAuthenticator};
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{ByteStr, Packet, ProtocolVersion, PubResponse, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

const ACL: &str = "user alice\ntopic read chat/#\nuser bob\ntopic read chat/#\npattern write chat/%u/#\n";

fn access(acl: &str) -> Arc<AccessControl> {
    let acl = AclFile::parse(acl, Path::new("acl")).expect("valid ACL");
    let listener = ListenerAccess {
        authenticator: Arc::new(PasswordAuthenticator::new(true, None)),
        authorizer: Some(Arc::new(acl)),
    };
    Arc::new(AccessControl::from_listeners(vec![listener]))
}

fn broker(shards: usize) -> Broker {
    Broker::with_settings(shards, BrokerSettings { access: access(ACL), ..BrokerSettings::default() })
}

fn login(broker: &mut Broker, shard: usize, version: ProtocolVersion, user: &str) -> Client {
    let mut connect = connect(version, &format!("{user}-{shard}"), true);
    connect.username = Some(ByteStr::from(user));
    let (client, connack) = broker.connect_on(shard, connect);
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    client
}

fn subscribed(broker: &mut Broker, client: Client, filter: &str) -> Vec<ReasonCode> {
    broker.send(client, Packet::Subscribe(subscribe(1, filter, QoS::ExactlyOnce)));
    match broker.recv(client).as_slice() {
        [Packet::SubAck(suback)] => suback.reasons.clone(),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(PubResponse { packet_id, ..PubResponse::default() })
}

#[test]
fn v5_qos2_publish_without_write_access_gets_pubrec_0x87_and_the_flow_ends() {
    let mut broker = broker(1);
    let bob = login(&mut broker, 0, V5, "bob");
    assert_eq!(subscribed(&mut broker, bob, "chat/#"), [ReasonCode(2)]);
    let alice = login(&mut broker, 0, V5, "alice");
    broker.send(alice, Packet::Publish(publish("chat/bob/x", QoS::ExactlyOnce, 7, "forged")));
    match broker.recv(alice).as_slice() {
        [Packet::PubRec(rec)] => {
            assert_eq!((rec.packet_id, rec.reason), (7, ReasonCode::NOT_AUTHORIZED))
        }
        other => panic!("expected PUBREC 0x87, got {other:?}"),
    }
    broker.send(alice, pubrel(7));
    match broker.recv(alice).as_slice() {
        [Packet::PubComp(comp)] => {
            assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, "no packet id was kept")
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
    assert!(broker.recv_publishes(bob).is_empty());
    assert_eq!(broker.shards[0].stats().denied_publishes, 1);
}

#[test]
fn v311_qos2_publish_without_write_access_completes_and_is_dropped() {
    let mut broker = broker(1);
    let bob = login(&mut broker, 0, V311, "bob");
    subscribed(&mut broker, bob, "chat/#");
    let alice = login(&mut broker, 0, V311, "alice");
    broker.send(alice, Packet::Publish(publish("chat/bob/x", QoS::ExactlyOnce, 7, "forged")));
    assert!(matches!(broker.recv(alice).as_slice(), [Packet::PubRec(rec)] if rec.packet_id == 7));
    broker.send(alice, pubrel(7));
    assert!(matches!(broker.recv(alice).as_slice(), [Packet::PubComp(comp)] if comp.packet_id == 7));
    assert!(broker.recv_publishes(bob).is_empty());
}

#[test]
fn shared_subscriptions_are_checked_on_the_filter_after_the_group() {
    let mut broker = broker(1);
    let alice = login(&mut broker, 0, V5, "alice");
    assert_eq!(subscribed(&mut broker, alice, "$share/g/secret/#"), [ReasonCode::NOT_AUTHORIZED]);
    assert_eq!(subscribed(&mut broker, alice, "$share/g/chat/#"), [ReasonCode(2)]);
}

#[test]
fn a_hash_subscriber_on_another_shard_gets_permitted_topics_and_anonymous_hash_is_refused() {
    let mut broker = broker(2);
    let alice = login(&mut broker, 0, V5, "alice");
    let anonymous = broker.connect_on(1, connect(V5, "anon-1", true)).0;
    assert_eq!(subscribed(&mut broker, anonymous, "#"), [ReasonCode::NOT_AUTHORIZED], "the anonymous section is empty");
    let bob = login(&mut broker, 1, V5, "bob");
    assert_eq!(subscribed(&mut broker, bob, "#"), [ReasonCode(2)]);
    broker.send(alice, Packet::Publish(publish("chat/alice/x", QoS::AtMostOnce, 0, "hi")));
    assert_eq!(contents(&broker.recv_publishes(bob)), [("chat/alice/x".to_string(), "hi".to_string())]);
}

#[test]
fn a_reload_swaps_the_rules_for_existing_sessions() {
    let mut broker = broker(1);
    let bob = login(&mut broker, 0, V5, "bob");
    subscribed(&mut broker, bob, "chat/#");
    let alice = login(&mut broker, 0, V5, "alice");
    broker.send(alice, Packet::Publish(publish("chat/alice/x", QoS::AtMostOnce, 0, "before")));
    assert_eq!(broker.recv_publishes(bob).len(), 1);
    broker.shards[0].replace_access(access("user bob\ntopic read other/#\npattern write chat/%u/#\n"));
    broker.send(alice, Packet::Publish(publish("chat/alice/x", QoS::AtMostOnce, 0, "after")));
    assert!(broker.recv_publishes(bob).is_empty(), "bob lost read access to chat/#");
    assert_eq!(broker.shards[0].stats().denied_deliveries, 1);
    broker.shards[0].replace_access(Arc::new(AccessControl::load(&[AuthSettings::default()]).expect("no files")));
    broker.send(alice, Packet::Publish(publish("chat/alice/x", QoS::AtMostOnce, 0, "open")));
    assert_eq!(broker.recv_publishes(bob).len(), 1, "no ACL: everything allowed again");
}
