//! One client type over both protocol versions, so a behaviour the two versions share is written once and
//! run for MQTT 3.1.1 and MQTT 5 (rumqttc's v4 and v5 clients have separate types).

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as V5SubscribeCode;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{QoS as V4QoS, SubscribeReasonCode as V4SubscribeCode};

use super::v4::{self, V4Client};
use super::v5::{self, V5Client};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

pub const BOTH_VERSIONS: [Version; 2] = [Version::V311, Version::V5];

/// A received application message, whatever the version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
}

#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
}

/// How to connect: clean or persistent session, keep-alive, will, manual acknowledgements.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub version: Version,
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5).
    pub clean: bool,
    /// v5 Session Expiry Interval (None = absent = 0).
    pub session_expiry_secs: Option<u32>,
    pub keep_alive_secs: u64,
    pub will: Option<Will>,
    /// The test acknowledges QoS 1/2 PUBLISHes itself (or never, to leave them in flight).
    pub manual_acks: bool,
}

impl ClientOptions {
    /// Clean session, no will.
    pub fn clean(version: Version, client_id: &str) -> ClientOptions {
        ClientOptions {
            version,
            client_id: client_id.to_string(),
            clean: true,
            session_expiry_secs: None,
            keep_alive_secs: 30,
            will: None,
            manual_acks: false,
        }
    }

    /// A session that outlives the connection: Clean Session 0 (3.1.1), or Clean Start 0 with a
    /// 5-minute Session Expiry Interval (5).
    pub fn persistent(version: Version, client_id: &str) -> ClientOptions {
        ClientOptions { clean: false, session_expiry_secs: Some(300), ..ClientOptions::clean(version, client_id) }
    }

    pub fn with_will(mut self, will: Will) -> ClientOptions {
        self.will = Some(will);
        self
    }
}

#[allow(clippy::large_enum_variant)] // a handful per test, on the stack
pub enum Client {
    V4(V4Client),
    V5(V5Client),
}

impl Client {
    pub async fn connect(port: u16, version: Version, client_id: &str) -> Client {
        Client::connect_with(port, &ClientOptions::clean(version, client_id)).await
    }

    pub async fn connect_with(port: u16, options: &ClientOptions) -> Client {
        let keep_alive = Duration::from_secs(options.keep_alive_secs);
        match options.version {
            Version::V311 => {
                let mut mqtt = v4::options(port, &options.client_id);
                mqtt.set_clean_session(options.clean).set_keep_alive(keep_alive).set_manual_acks(options.manual_acks);
                if let Some(will) = &options.will {
                    mqtt.set_last_will(v4::will(&will.topic, &will.payload, v4_qos(will.qos), will.retain));
                }
                Client::V4(V4Client::connect(mqtt).await)
            }
            Version::V5 => {
                let mut mqtt = v5::options(port, &options.client_id);
                mqtt.set_clean_start(options.clean)
                    .set_keep_alive(keep_alive)
                    .set_manual_acks(options.manual_acks)
                    .set_session_expiry_interval(options.session_expiry_secs);
                if let Some(will) = &options.will {
                    mqtt.set_last_will(v5::will(&will.topic, &will.payload, v5_qos(will.qos), will.retain, None));
                }
                Client::V5(V5Client::connect(mqtt).await)
            }
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Client::V4(_) => Version::V311,
            Client::V5(_) => Version::V5,
        }
    }

    pub fn session_present(&self) -> bool {
        match self {
            Client::V4(client) => client.session_present(),
            Client::V5(client) => client.session_present(),
        }
    }

    /// Subscribes to one filter and returns the SUBACK code (granted QoS, or >= 0x80 for a failure).
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> u8 {
        match self {
            Client::V4(client) => match client.subscribe(filter, v4_qos(qos)).await[..] {
                [V4SubscribeCode::Success(granted)] => granted as u8,
                [V4SubscribeCode::Failure] => 0x80,
                ref other => panic!("SUBACK for one filter had {other:?}"),
            },
            Client::V5(client) => match client.subscribe(filter, v5_qos(qos)).await.return_codes[..] {
                [code] => v5_subscribe_code(code),
                ref other => panic!("SUBACK for one filter had {other:?}"),
            },
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        match self {
            Client::V4(client) => client.unsubscribe(filter).await,
            Client::V5(client) => {
                client.unsubscribe(filter).await;
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: impl Into<Bytes>) {
        match self {
            Client::V4(client) => client.publish(topic, v4_qos(qos), retain, payload).await,
            Client::V5(client) => client.publish(topic, v5_qos(qos), retain, payload).await,
        }
    }

    /// Queues a PUBLISH without waiting for its acknowledgement (for bursts).
    pub async fn publish_no_wait(&mut self, topic: &str, qos: u8, retain: bool, payload: impl Into<Bytes>) {
        let payload = payload.into();
        let queued = match self {
            Client::V4(client) => client.client.publish_bytes(topic, v4_qos(qos), retain, payload).await.is_ok(),
            Client::V5(client) => client.client.publish_bytes(topic, v5_qos(qos), retain, payload).await.is_ok(),
        };
        assert!(queued, "request channel closed");
    }

    pub async fn next_message(&mut self) -> Message {
        match self {
            Client::V4(client) => {
                let publish = client.next_publish().await;
                Message {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    dup: publish.dup,
                }
            }
            Client::V5(client) => {
                let publish = client.next_publish().await;
                Message {
                    topic: String::from_utf8(publish.topic.to_vec()).expect("UTF-8 topic"),
                    payload: publish.payload.clone(),
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    dup: publish.dup,
                }
            }
        }
    }

    pub async fn next_messages(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            messages.push(self.next_message().await);
        }
        messages
    }

    pub async fn expect_no_message(&mut self) {
        match self {
            Client::V4(client) => client.expect_no_publish().await,
            Client::V5(client) => client.expect_no_publish().await,
        }
    }

    /// A clean DISCONNECT (will discarded).
    pub async fn disconnect(self) {
        match self {
            Client::V4(client) => client.disconnect().await,
            Client::V5(client) => client.disconnect().await,
        }
    }

    /// Closes the socket without DISCONNECT (will published).
    pub async fn drop_connection(self) {
        match self {
            Client::V4(client) => client.drop_connection().await,
            Client::V5(client) => client.drop_connection().await,
        }
    }

    /// Waits until the broker closes the connection; panics after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) {
        match self {
            Client::V4(client) => {
                client.wait_closed(timeout).await;
            }
            Client::V5(client) => {
                client.wait_closed(timeout).await;
            }
        }
    }
}

pub fn v4_qos(qos: u8) -> V4QoS {
    rumqttc::qos(qos).unwrap_or_else(|_| panic!("QoS {qos}"))
}

pub fn v5_qos(qos: u8) -> V5QoS {
    rumqttc::v5::mqttbytes::qos(qos).unwrap_or_else(|| panic!("QoS {qos}"))
}

/// The wire value of a v5 SUBACK reason code.
pub fn v5_subscribe_code(code: V5SubscribeCode) -> u8 {
    match code {
        V5SubscribeCode::Success(granted) => granted as u8,
        V5SubscribeCode::Failure | V5SubscribeCode::Unspecified => 0x80,
        V5SubscribeCode::ImplementationSpecific => 0x83,
        V5SubscribeCode::NotAuthorized => 0x87,
        V5SubscribeCode::TopicFilterInvalid => 0x8F,
        V5SubscribeCode::PkidInUse => 0x91,
        V5SubscribeCode::QuotaExceeded => 0x97,
        V5SubscribeCode::SharedSubscriptionsNotSupported => 0x9E,
        V5SubscribeCode::SubscriptionIdNotSupported => 0xA1,
        V5SubscribeCode::WildcardSubscriptionsNotSupported => 0xA2,
    }
}
