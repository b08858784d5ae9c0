//! MQTT 5 clients for the tests: rumqttc's `v5::AsyncClient` with its events collected by an
//! [`EventStream`], and waits for the packets a test cares about.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet, Publish, PublishProperties, SubAck,
    SubscribeProperties, UnsubAck,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::Outgoing;
use tokio::sync::mpsc;

use super::events::EventStream;
use super::rumqttc_common::rumqttc_common_methods;
use super::{EVENT_TIMEOUT, SILENCE};

pub type V5Event = Result<Event, ConnectionError>;

/// Options for a v5 client of the broker on `port`: clean start, 30 s keep-alive, 1 MiB packets.
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(1 << 20));
    options.set_network_options(super::v4::no_delay());
    options
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool, properties: Option<LastWillProperties>) -> LastWill {
    LastWill::new(topic, payload.as_bytes().to_vec(), qos, retain, properties)
}

pub struct V5Client {
    pub client: AsyncClient,
    pub connack: ConnAck,
    events: EventStream<V5Event>,
}

impl V5Client {
    /// Connects and waits for a successful CONNACK; panics otherwise.
    pub async fn connect(options: MqttOptions) -> V5Client {
        let id = options.client_id();
        V5Client::try_connect(options).await.unwrap_or_else(|e| panic!("client {id:?} could not connect: {e:?}"))
    }

    /// Connects; a refusal comes back as `ConnectionError::ConnectionRefused(code)`.
    pub async fn try_connect(options: MqttOptions) -> Result<V5Client, ConnectionError> {
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (sender, receiver) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let last = event.is_err();
                if sender.send(event).is_err() || last {
                    break;
                }
            }
        });
        let mut events = EventStream::new(receiver, poller);
        match events.wait_for(EVENT_TIMEOUT, |_| true).await {
            Some(Ok(Event::Incoming(Packet::ConnAck(connack)))) => Ok(V5Client { client, connack, events }),
            Some(Ok(other)) => panic!("first event was not CONNACK: {other:?}"),
            Some(Err(error)) => Err(error),
            None => panic!("no CONNACK within {EVENT_TIMEOUT:?}"),
        }
    }

    rumqttc_common_methods!(V5Event);

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_with(vec![Filter::new(filter, qos)], None).await
    }

    pub async fn subscribe_with(&mut self, filters: Vec<Filter>, properties: Option<SubscribeProperties>) -> SubAck {
        let request = match properties {
            Some(properties) => self.client.subscribe_many_with_properties(filters, properties).await,
            None => self.client.subscribe_many(filters).await,
        };
        request.expect("request channel open");
        self.wait_for("SUBACK", |event| match event {
            Ok(Event::Incoming(Packet::SubAck(ack))) => Some(ack.clone()),
            _ => None,
        })
        .await
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> UnsubAck {
        self.client.unsubscribe(filter).await.expect("request channel open");
        self.wait_for("UNSUBACK", |event| match event {
            Ok(Event::Incoming(Packet::UnsubAck(ack))) => Some(ack.clone()),
            _ => None,
        })
        .await
    }

    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Bytes>) {
        self.publish_with(topic, qos, retain, payload, None).await
    }

    /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was written (QoS 0).
    pub async fn publish_with(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        properties: Option<PublishProperties>,
    ) {
        let payload = payload.into();
        let request = match properties {
            Some(properties) => self.client.publish_with_properties(topic, qos, retain, payload, properties).await,
            None => self.client.publish(topic, qos, retain, payload).await,
        };
        request.expect("request channel open");
        self.wait_publish_done(qos).await;
    }

    /// Waits for the broker's DISCONNECT and returns its reason code.
    pub async fn wait_server_disconnect(&mut self) -> DisconnectReasonCode {
        match self.wait_closed(EVENT_TIMEOUT).await {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => reason_code,
            other => panic!("connection ended without a DISCONNECT from the broker: {other:?}"),
        }
    }
}

/// A user-property list from string pairs.
pub fn user_properties(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}
