//! CONNECT / CONNACK, keep-alive, connect timeout and malformed input, driven through `ShardCore` by hand.

mod core_harness;

use std::time::Duration;

use core_harness::*;
use shardmq::broker::{home_shard, BrokerSettings};
use shardmq::protocol::{DecodeError, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn connack_accepts_each_protocol_level_without_session_present() {
    let mut broker = Broker::new(2);
    for (version, id) in [(ProtocolVersion::V3_1, "c31"), (V311, "c311"), (V5, "c5")] {
        let (client, connack) = broker.connect(connect(version, id, true));
        assert_eq!(connack.reason, ReasonCode::SUCCESS, "{version:?}");
        assert!(!connack.session_present);
        assert_eq!(broker.shards[client.shard].protocol_version(client.conn), Some(version));
        assert!(!broker.is_closed(client));
    }
}

#[test]
fn v5_connack_announces_limits() {
    let settings =
        BrokerSettings { qos_max: 1, retain_available: false, receive_maximum: 7, ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings.clone());
    let (_, connack) = broker.connect(connect(V5, "limits", true));
    let properties = connack.properties;
    assert_eq!(properties.receive_maximum, Some(7));
    assert_eq!(properties.maximum_packet_size, Some(settings.packet_size_max_bytes));
    assert_eq!(properties.topic_alias_maximum, Some(settings.topic_alias_max));
    assert_eq!(properties.maximum_qos, Some(1));
    assert_eq!(properties.retain_available, Some(0));
    assert_eq!(properties.wildcard_subscription_available, Some(1));
    assert_eq!(properties.subscription_identifier_available, Some(1));
    assert_eq!(properties.shared_subscription_available, Some(1));
    assert_eq!(properties.assigned_client_identifier, None);
}

#[test]
fn v311_connack_has_no_properties() {
    let mut broker = Broker::new(1);
    let (_, connack) = broker.connect(connect(V311, "plain", true));
    assert!(connack.properties.is_empty());
}

#[test]
fn v5_empty_client_id_gets_assigned_identifier_homed_on_this_shard_mqtt_3_2_2_16() {
    let mut broker = Broker::new(4);
    for shard in 0..4 {
        let (_, connack) = broker.connect_on(shard, connect(V5, "", true));
        assert_eq!(connack.reason, ReasonCode::SUCCESS);
        let assigned = connack.properties.assigned_client_identifier.expect("assigned id");
        assert!(!assigned.is_empty());
        assert_eq!(home_shard(&assigned, 4), shard, "a reconnect with this id lands on the same shard");
    }
}

#[test]
fn v311_empty_client_id_with_clean_session_is_accepted_mqtt_3_1_3_7() {
    let mut broker = Broker::new(1);
    let (client, connack) = broker.connect(connect(V311, "", true));
    assert_eq!(connack.reason, ReasonCode::SUCCESS);
    assert!(!broker.is_closed(client));
}

#[test]
fn v311_empty_client_id_without_clean_session_refused_mqtt_3_1_3_8() {
    let mut broker = Broker::new(1);
    let (client, connack) = broker.connect(connect(V311, "", false));
    assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "return code 2");
    assert!(broker.is_closed(client));
}

#[test]
fn v31_empty_client_id_refused_with_identifier_rejected() {
    let mut broker = Broker::new(1);
    let (client, connack) = broker.connect(connect(ProtocolVersion::V3_1, "", true));
    assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(broker.is_closed(client));
}

#[test]
fn too_long_client_id_refused_0x85() {
    let mut broker =
        Broker::with_settings(1, BrokerSettings { client_id_length_max_bytes: 4, ..BrokerSettings::default() });
    let (client, connack) = broker.connect(connect(V5, "toolong", true));
    assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(broker.is_closed(client));
}

#[test]
fn unknown_authentication_method_refused_0x8c() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "auth", true);
    request.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (client, connack) = broker.connect(request);
    assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(broker.is_closed(client));
}

#[test]
fn will_qos_above_maximum_refused_mqtt_3_2_2_12() {
    let mut broker = Broker::with_settings(1, BrokerSettings { qos_max: 0, ..BrokerSettings::default() });
    let mut request = connect(V5, "willqos", true);
    request.will = Some(will("w", "gone"));
    let (client, connack) = broker.connect(request);
    assert_eq!(connack.reason, ReasonCode::QOS_NOT_SUPPORTED);
    assert!(broker.is_closed(client));
}

#[test]
fn second_connect_is_protocol_error_mqtt_3_1_0_2() {
    let mut broker = Broker::new(1);
    let (v5, _) = broker.connect(connect(V5, "twice5", true));
    broker.send(v5, Packet::Connect(Box::new(connect(V5, "twice5", true))));
    match broker.recv(v5).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR)
        }
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert!(broker.is_closed(v5));

    let (v3, _) = broker.connect(connect(V311, "twice3", true));
    broker.send(v3, Packet::Connect(Box::new(connect(V311, "twice3", true))));
    assert!(broker.recv(v3).is_empty(), "3.1.1 has no server DISCONNECT: plain close");
    assert!(broker.is_closed(v3));
}

#[test]
fn packet_before_connect_closes_mqtt_3_1_0_1() {
    let mut broker = Broker::new(1);
    let client = broker.open(0, V5);
    broker.send(client, Packet::PingReq);
    assert!(broker.recv(client).is_empty(), "no DISCONNECT before CONNACK");
    assert!(broker.is_closed(client));
}

#[test]
fn no_connect_within_timeout_closes() {
    let mut broker = Broker::with_settings(1, BrokerSettings { connect_timeout_secs: 5, ..BrokerSettings::default() });
    let client = broker.open(0, V311);
    broker.advance(Duration::from_secs(4));
    assert!(!broker.is_closed(client));
    broker.advance(Duration::from_secs(2));
    assert!(broker.is_closed(client));
    assert_eq!(broker.shards[0].gauges().connections, 0);
}

#[test]
fn keepalive_timeout_after_one_and_a_half_intervals_mqtt_3_1_2_24() {
    let mut broker = Broker::new(1);
    let mut request = connect(V5, "sleepy", true);
    request.keep_alive_secs = 10;
    let (client, _) = broker.connect(request);
    broker.advance(Duration::from_secs(14));
    assert!(!broker.is_closed(client));
    broker.send(client, Packet::PingReq);
    assert!(matches!(broker.recv(client).as_slice(), [Packet::PingResp]), "PINGRESP [MQTT-3.12.4-1]");
    broker.advance(Duration::from_secs(14));
    assert!(!broker.is_closed(client), "the PINGREQ renewed the keep-alive");
    broker.advance(Duration::from_secs(2));
    match broker.recv(client).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::KEEP_ALIVE_TIMEOUT)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    assert!(broker.is_closed(client));
}

#[test]
fn v5_keepalive_above_cap_gets_server_keep_alive() {
    let mut broker = Broker::with_settings(1, BrokerSettings { keepalive_max_secs: 30, ..BrokerSettings::default() });
    let mut request = connect(V5, "long", true);
    request.keep_alive_secs = 600;
    let (client, connack) = broker.connect(request);
    assert_eq!(connack.properties.server_keep_alive_secs, Some(30));
    broker.advance(Duration::from_secs(46));
    assert!(broker.is_closed(client), "the capped keep-alive applies");
}

#[test]
fn unsupported_protocol_level_answered_with_return_code_1_mqtt_3_1_2_2() {
    let mut broker = Broker::new(1);
    let client = broker.open(0, V311);
    let now = broker.now;
    broker.shards[0].handle_decode_error(client.conn, &DecodeError::UnsupportedProtocolLevel { level: 6 }, now);
    broker.advance(Duration::ZERO);
    match broker.recv(client).as_slice() {
        [Packet::ConnAck(connack)] => {
            assert_eq!(connack.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
        }
        other => panic!("expected CONNACK return code 1, got {other:?}"),
    }
    assert!(broker.is_closed(client));
}

#[test]
fn malformed_packet_after_connack_v5_disconnect_v3_close() {
    let mut broker = Broker::new(1);
    let (v5, _) = broker.connect(connect(V5, "bad5", true));
    let (v3, _) = broker.connect(connect(V311, "bad3", true));
    let now = broker.now;
    broker.shards[0].handle_decode_error(v5.conn, &DecodeError::DupOnQos0, now);
    broker.shards[0].handle_decode_error(v3.conn, &DecodeError::DupOnQos0, now);
    broker.advance(Duration::ZERO);
    match broker.recv(v5).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::MALFORMED_PACKET);
            assert!(disconnect.properties.reason_string.as_deref().is_some_and(|text| text.contains("MQTT-3.3.1-2")));
        }
        other => panic!("expected DISCONNECT 0x81, got {other:?}"),
    }
    assert!(broker.recv(v3).is_empty());
    assert!(broker.is_closed(v5) && broker.is_closed(v3));
}

#[test]
fn normal_disconnect_closes_without_reply() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(V5, "bye", true));
    broker.send(client, Packet::Disconnect(Disconnect::default()));
    assert!(broker.recv(client).is_empty());
    assert!(broker.is_closed(client));
    assert_eq!(broker.shards[0].gauges().sessions, 0, "session expiry 0 ends the session");
}

#[test]
fn publish_qos_above_maximum_disconnects_0x9b_mqtt_3_2_2_11() {
    let mut broker = Broker::with_settings(1, BrokerSettings { qos_max: 1, ..BrokerSettings::default() });
    let (client, _) = broker.connect(connect(V5, "qos2", true));
    broker.send(client, Packet::Publish(publish("t", QoS::ExactlyOnce, 1, "x")));
    match broker.recv(client).as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::QOS_NOT_SUPPORTED)
        }
        other => panic!("expected DISCONNECT 0x9B, got {other:?}"),
    }
}

#[test]
fn configured_server_reference_redirects_v5_0x9c_and_refuses_v3() {
    let settings = BrokerSettings { server_reference: Some("other.example:1883".into()), ..BrokerSettings::default() };
    let mut broker = Broker::with_settings(1, settings);
    let (v5, connack) = broker.connect(connect(V5, "moved5", true));
    assert_eq!(connack.reason, ReasonCode::USE_ANOTHER_SERVER);
    assert_eq!(connack.properties.server_reference.as_deref(), Some("other.example:1883"));
    assert!(broker.is_closed(v5));
    let (v3, connack) = broker.connect(connect(V311, "moved3", true));
    assert_eq!(connack.reason, ReasonCode::SERVER_UNAVAILABLE, "return code 3");
    assert!(broker.is_closed(v3));
}

#[test]
fn session_limit_refuses_new_sessions_with_server_busy_but_not_resumes() {
    let mut broker =
        Broker::with_settings(1, BrokerSettings { sessions_per_shard_max: 1, ..BrokerSettings::default() });
    let (first, _) = broker.connect(connect(V311, "only", false));
    let (busy, connack) = broker.connect(connect(V5, "another", true));
    assert_eq!(connack.reason, ReasonCode::SERVER_BUSY);
    assert!(broker.is_closed(busy));
    broker.lose(first);
    let (_, connack) = broker.connect(connect(V311, "only", false));
    assert_eq!(connack.reason, ReasonCode::SUCCESS, "resuming needs no new session");
    assert!(connack.session_present);
}

#[test]
fn v5_keepalive_zero_gets_server_keep_alive_when_capped() {
    let mut broker = Broker::with_settings(1, BrokerSettings { keepalive_max_secs: 60, ..BrokerSettings::default() });
    let (_, connack) = broker.connect(connect(V5, "forever", true));
    assert_eq!(connack.properties.server_keep_alive_secs, Some(60));
    let (v3, connack) = broker.connect(connect(V311, "forever3", true));
    assert!(connack.properties.is_empty());
    broker.advance(Duration::from_secs(600));
    assert!(!broker.is_closed(v3), "a 3.1.1 client cannot be told: its keep-alive 0 stands");
}
