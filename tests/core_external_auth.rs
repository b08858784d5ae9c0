//! The external auth backend through `ShardCore` by hand, with a real HTTP backend (a thread here) and
//! the answers carried back by the test as the runtime's control job would: a CONNECT parks (no CONNACK,
//! input shut) until its answer, a PUBLISH whose answer is not cached is held and its PUBACK follows the
//! answer, a cached answer decides at once, and denials get the password-file path's codes.

mod core_harness;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use core_harness::*;
use shardmq::auth::external::{Answer, HttpAuthSettings};
use shardmq::auth::{AccessControl, AuthSettings};
use shardmq::broker::{BrokerSettings, InputGate};
use shardmq::protocol::{ByteStr, Packet, ProtocolVersion, QoS, ReasonCode};

/// An HTTP backend allowing everything except user `mallory` and topics under `denied/`.
fn backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 2048];
            while !request.ends_with(b"}") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&chunk[..read]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let deny = text.contains("\"mallory\"") || text.contains("\"denied/");
            let body = if deny { r#"{"result":"deny"}"# } else { r#"{"result":"allow"}"# };
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    format!("http://{addr}")
}

fn broker_with_backend() -> (Broker, mpsc::Receiver<Answer>) {
    let url = backend();
    let http = HttpAuthSettings {
        authenticate_url: Some(format!("{url}/auth")),
        authorize_url: Some(format!("{url}/acl")),
        timeout_ms: 2000,
        ..HttpAuthSettings::default()
    };
    let access = AccessControl::load(&[AuthSettings { http: Some(http), ..AuthSettings::default() }]).unwrap();
    let (sender, answers) = mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    access.external().expect("backend configured").start(Box::new(move |answer| {
        let _ = sender.lock().unwrap().send(answer);
    }));
    (Broker::with_settings(1, BrokerSettings { access: Arc::new(access), ..BrokerSettings::default() }), answers)
}

/// Carries the next answer to its shard, as `Control::run_on` does.
fn deliver_answer(broker: &mut Broker, answers: &mpsc::Receiver<Answer>) {
    let answer = answers.recv_timeout(Duration::from_secs(5)).expect("the backend answers");
    let now = broker.now;
    broker.shards[answer.shard].external_answer(answer, now);
    broker.advance(Duration::ZERO);
}

fn connect_as(broker: &mut Broker, user: &str, client_id: &str) -> Client {
    let client = broker.open(0, ProtocolVersion::V5);
    let mut connect = connect(ProtocolVersion::V5, client_id, true);
    connect.username = Some(ByteStr::from(user));
    connect.password = Some(bytes::Bytes::from_static(b"pw"));
    broker.send(client, Packet::Connect(Box::new(connect)));
    client
}

fn connack_reason(broker: &mut Broker, client: Client) -> ReasonCode {
    match broker.recv(client).as_slice() {
        [Packet::ConnAck(connack)] => connack.reason,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn a_connect_parks_with_its_input_shut_until_the_backend_answers() {
    let (mut broker, answers) = broker_with_backend();
    let alice = connect_as(&mut broker, "alice", "alice-1");
    assert!(broker.recv(alice).is_empty(), "no CONNACK before the answer");
    let now = broker.now;
    assert_eq!(broker.shards[0].input_gate(alice.conn, now), InputGate::Paused);
    deliver_answer(&mut broker, &answers);
    assert_eq!(connack_reason(&mut broker, alice), ReasonCode::SUCCESS);
    assert_eq!(broker.shards[0].input_gate(alice.conn, now), InputGate::Open);

    let again = connect_as(&mut broker, "alice", "alice-1");
    assert_eq!(connack_reason(&mut broker, again), ReasonCode::SUCCESS, "cached: decided at once");

    let mallory = connect_as(&mut broker, "mallory", "m-1");
    deliver_answer(&mut broker, &answers);
    assert_eq!(connack_reason(&mut broker, mallory), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(broker.is_closed(mallory) || broker.shards[0].input_gate(mallory.conn, now) == InputGate::Closed);
}

#[test]
fn a_publish_is_held_until_its_answer_and_then_acknowledged_in_order() {
    let (mut broker, answers) = broker_with_backend();
    let alice = connect_as(&mut broker, "alice", "alice-2");
    deliver_answer(&mut broker, &answers);
    assert_eq!(connack_reason(&mut broker, alice), ReasonCode::SUCCESS);

    broker.send(alice, Packet::Publish(publish("denied/x", QoS::AtLeastOnce, 1, "no")));
    assert!(broker.recv(alice).is_empty(), "held: no PUBACK yet");
    let now = broker.now;
    assert_eq!(broker.shards[0].input_gate(alice.conn, now), InputGate::Paused, "its next packets wait");
    deliver_answer(&mut broker, &answers);
    match broker.recv(alice).as_slice() {
        [Packet::PubAck(ack)] => assert_eq!((ack.packet_id, ack.reason), (1, ReasonCode::NOT_AUTHORIZED)),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }

    broker.send(alice, Packet::Publish(publish("ok/x", QoS::AtLeastOnce, 2, "yes")));
    deliver_answer(&mut broker, &answers);
    assert!(matches!(broker.recv(alice).as_slice(), [Packet::PubAck(ack)] if ack.packet_id == 2));
    broker.send(alice, Packet::Publish(publish("ok/x", QoS::AtLeastOnce, 3, "cached")));
    assert!(
        matches!(broker.recv(alice).as_slice(), [Packet::PubAck(ack)] if ack.packet_id == 3),
        "a cached answer decides at once"
    );
    assert!(answers.try_recv().is_err(), "nothing more was asked");
}
