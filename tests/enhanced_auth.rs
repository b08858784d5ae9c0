//! MQTT 5 enhanced authentication (v5 section 4.12) against the real broker with SCRAM-SHA-256 users
//! configured: the CONNECT / AUTH / CONNACK exchange, refusals, and re-authentication.
//!
//! rumqttc 0.25 cannot answer an AUTH from the server, so the MQTT side is raw bytes (`support::raw`) and
//! the SCRAM side is the `scram` crate's client, which nobody here wrote.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use shardmq::protocol::Packet;
use support::raw::{self, Level, PacketFields, RawClient};
use support::{skip_on_mosquitto, unique, Broker, BrokerLimits};

const SCRAM: &str = "SCRAM-SHA-256";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

const AUTH_CONTINUE: u8 = 0x18;
const AUTH_REAUTHENTICATE: u8 = 0x19;

fn scram_broker() -> Broker {
    let users = format!("[[mqtt.scram_users]]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
    Broker::start_with(&BrokerLimits { shardmq_mqtt_toml: Some(users), ..BrokerLimits::default() })
}

/// Authentication Method (0x15) and Authentication Data (0x16) properties.
fn auth_properties(method: &str, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x15];
    out.extend(raw::string(method));
    out.push(0x16);
    out.extend(raw::binary(data));
    out
}

fn auth_packet(reason: u8, method: &str, data: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(raw::properties(&auth_properties(method, data)));
    raw::packet(0xF0, &body)
}

fn connect_with_auth(method: &str, data: &[u8]) -> Vec<u8> {
    raw::connect_with(5, &unique("scram"), true, 30, None, &auth_properties(method, data))
}

/// CONNECT with the User Name flag and `username`, naming an Authentication Method.
fn connect_with_auth_as(username: &str, method: &str, data: &[u8]) -> Vec<u8> {
    let mut body = raw::string("MQTT");
    body.extend([5, 0x80 | 0x02, 0, 30]); // level 5, user name flag + clean start, keep-alive 30
    body.extend(raw::properties(&auth_properties(method, data)));
    body.extend(raw::string(&unique("scram")));
    body.extend(raw::string(username));
    raw::packet(0x10, &body)
}

/// An AUTH from the broker: (reason, method, data as text).
fn auth_fields(packet: &Packet) -> (u8, Option<String>, String) {
    match packet {
        Packet::Auth(auth) => (
            auth.reason.0,
            auth.properties.authentication_method.as_ref().map(|method| method.to_string()),
            String::from_utf8(auth.properties.authentication_data.as_deref().unwrap_or_default().to_vec())
                .expect("UTF-8 data"),
        ),
        other => panic!("expected AUTH, got {other:?}"),
    }
}

/// Plays one SCRAM exchange over AUTH packets: `first` carries client-first (CONNECT or AUTH 0x19);
/// returns the broker's answer to client-final and the client state able to check the server signature.
async fn scram_exchange(
    client: &mut RawClient,
    password: &str,
    first: impl FnOnce(&[u8]) -> Vec<u8>,
) -> (Packet, scram::client::ServerFinal) {
    let (scram, client_first) = scram::ScramClient::new(USER, password, None).client_first();
    client.send(&first(client_first.as_bytes())).await;
    let (reason, method, server_first) = auth_fields(&client.expect_packet().await);
    assert_eq!(reason, AUTH_CONTINUE, "[MQTT-4.12.0-2] the server's AUTH carries 0x18");
    assert_eq!(method.as_deref(), Some(SCRAM), "[MQTT-4.12.0-5] every AUTH names the method");
    let scram = scram.handle_server_first(&server_first).expect("the scram client accepts server-first");
    let (scram, client_final) = scram.client_final();
    client.send(&auth_packet(AUTH_CONTINUE, SCRAM, client_final.as_bytes())).await;
    (client.expect_packet().await, scram)
}

/// A client connected through a successful SCRAM exchange.
async fn scram_client(broker: &Broker) -> RawClient {
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let (connack, scram) = scram_exchange(&mut client, PASSWORD, |data| connect_with_auth(SCRAM, data)).await;
    assert_eq!(connack.connack().1, 0x00, "CONNACK after a correct proof: {connack:?}");
    let Packet::ConnAck(connack) = connack else { unreachable!("checked above") };
    assert_eq!(connack.properties.authentication_method.as_deref(), Some(SCRAM), "[MQTT-4.12.0-5]");
    let server_final = connack.properties.authentication_data.expect("CONNACK carries server-final");
    scram
        .handle_server_final(std::str::from_utf8(&server_final).expect("UTF-8"))
        .expect("the server signature verifies");
    client
}

#[tokio::test]
async fn scram_exchange_connects_and_the_server_proves_itself__mqtt_4_12_0_2() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = scram_client(&broker).await;
    client.expect_alive().await;
}

#[tokio::test]
async fn wrong_password_refused_with_0x86__mqtt_4_12_0_4() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let (connack, _) = scram_exchange(&mut client, "wrong horse", |data| connect_with_auth(SCRAM, data)).await;
    assert_eq!(connack.connack().1, 0x86, "Bad User Name or Password");
    client.expect_closed().await;
}

#[tokio::test]
async fn unknown_method_refused_with_0x8c__mqtt_4_12_0_1() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&connect_with_auth("SCRAM-SHA-1", b"n,,n=alice,r=abc")).await;
    let packets = client.expect_closed().await;
    assert_eq!(packets.first().map(|packet| packet.connack().1), Some(0x8C), "{packets:?}");
}

#[tokio::test]
async fn scram_not_offered_without_configured_users__mqtt_4_12_0_1() {
    let broker = Broker::start();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&connect_with_auth(SCRAM, b"n,,n=alice,r=abc")).await;
    let packets = client.expect_closed().await;
    assert_eq!(packets.first().map(|packet| packet.connack().1), Some(0x8C), "{packets:?}");
}

#[tokio::test]
async fn auth_naming_another_method_during_connect_is_a_protocol_error__mqtt_4_12_0_5() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&connect_with_auth(SCRAM, b"n,,n=alice,r=abc")).await;
    assert_eq!(auth_fields(&client.expect_packet().await).0, AUTH_CONTINUE);
    client.send(&auth_packet(AUTH_CONTINUE, "PLAIN", b"whatever")).await;
    let packets = client.expect_closed().await;
    assert_eq!(packets.first().map(|packet| packet.connack().1), Some(0x82), "{packets:?}");
}

#[tokio::test]
async fn reauthentication_succeeds_with_auth_0x00__mqtt_4_12_1_1() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = scram_client(&broker).await;
    let (answer, scram) =
        scram_exchange(&mut client, PASSWORD, |data| auth_packet(AUTH_REAUTHENTICATE, SCRAM, data)).await;
    let (reason, method, server_final) = auth_fields(&answer);
    assert_eq!((reason, method.as_deref()), (0x00, Some(SCRAM)), "re-authentication ends with AUTH 0x00");
    scram.handle_server_final(&server_final).expect("the server signature verifies");
    client.expect_alive().await;
}

#[tokio::test]
async fn failed_reauthentication_disconnects_with_0x87__mqtt_4_12_1_2() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = scram_client(&broker).await;
    let (answer, _) =
        scram_exchange(&mut client, "wrong horse", |data| auth_packet(AUTH_REAUTHENTICATE, SCRAM, data)).await;
    assert_eq!(answer.disconnect_reason(), 0x87, "Not authorized");
    client.expect_closed().await;
}

#[tokio::test]
async fn reauthentication_with_another_method_is_a_protocol_error__mqtt_4_12_1_1() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = scram_client(&broker).await;
    client.send(&auth_packet(AUTH_REAUTHENTICATE, "PLAIN", b"whatever")).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn auth_without_a_method_in_connect_is_a_protocol_error__mqtt_4_12_0_7() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto closes without DISCONNECT here") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.handshake(&raw::connect(Level::V5, &unique("plain"), true, 30, None)).await;
    client.send(&auth_packet(AUTH_REAUTHENTICATE, SCRAM, b"n,,n=alice,r=abc")).await;
    client.expect_disconnect_and_close(0x82).await;
}

#[tokio::test]
async fn connect_user_name_of_the_authenticated_user_accepted__mqtt_3_1_3_5() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let (connack, _) = scram_exchange(&mut client, PASSWORD, |data| connect_with_auth_as(USER, SCRAM, data)).await;
    assert_eq!(connack.connack().1, 0x00, "{connack:?}");
    client.expect_alive().await;
}

/// A correct SCRAM proof for alice does not let the client claim to be someone else in the User Name.
#[tokio::test]
async fn connect_user_name_other_than_the_authenticated_user_refused_0x86__mqtt_4_12_0_4() {
    let broker = scram_broker();
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    let (connack, _) = scram_exchange(&mut client, PASSWORD, |data| connect_with_auth_as("mallory", SCRAM, data)).await;
    assert_eq!(connack.connack().1, 0x86, "Bad User Name or Password: {connack:?}");
    client.expect_closed().await;
}

/// A client that starts an exchange and never finishes it is closed by the CONNECT timeout, unconnected.
#[tokio::test]
async fn stalled_authentication_exchange_closed_by_connect_timeout__mqtt_4_12_0_2() {
    let users = format!("[[mqtt.scram_users]]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
    let limits =
        BrokerLimits { shardmq_mqtt_toml: Some(users), connect_timeout_secs: Some(1), ..BrokerLimits::default() };
    let broker = Broker::start_with(&limits);
    if skip_on_mosquitto(&broker, "Mosquitto has no built-in SCRAM method") {
        return;
    }
    let mut client = RawClient::connect(broker.port(), Level::V5).await;
    client.send(&connect_with_auth(SCRAM, b"n,,n=alice,r=abc")).await;
    assert_eq!(auth_fields(&client.expect_packet().await).0, AUTH_CONTINUE);
    let packets = client.expect_closed_within(std::time::Duration::from_secs(4)).await;
    assert!(
        packets.iter().all(|packet| !matches!(packet, Packet::ConnAck(connack) if connack.reason.0 == 0)),
        "{packets:?}"
    );
}
