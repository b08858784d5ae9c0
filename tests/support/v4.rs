//! MQTT 3.1.1 clients for the tests: rumqttc's `AsyncClient` with its events collected by an
//! [`EventStream`], and waits for the packets a test cares about.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet, Publish,
    QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;

use super::events::EventStream;
use super::rumqttc_common::rumqttc_common_methods;
use super::{EVENT_TIMEOUT, SILENCE};

pub type V4Event = Result<Event, ConnectionError>;

/// Options for a 3.1.1 client of the broker on `port`: clean session, 30 s keep-alive, 1 MiB packets.
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// TCP_NODELAY, so small packets are not held back by Nagle's algorithm (tens of ms per exchange).
pub fn no_delay() -> NetworkOptions {
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill::new(topic, payload.as_bytes().to_vec(), qos, retain)
}

pub struct V4Client {
    pub client: AsyncClient,
    pub connack: ConnAck,
    events: EventStream<V4Event>,
}

impl V4Client {
    /// Connects and waits for a successful CONNACK; panics otherwise.
    pub async fn connect(options: MqttOptions) -> V4Client {
        let id = options.client_id();
        V4Client::try_connect(options).await.unwrap_or_else(|e| panic!("client {id:?} could not connect: {e:?}"))
    }

    /// Connects; a refusal comes back as `ConnectionError::ConnectionRefused(code)`.
    pub async fn try_connect(options: MqttOptions) -> Result<V4Client, ConnectionError> {
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        event_loop.set_network_options(no_delay());
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
            Some(Ok(Event::Incoming(Packet::ConnAck(connack)))) => Ok(V4Client { client, connack, events }),
            Some(Ok(other)) => panic!("first event was not CONNACK: {other:?}"),
            Some(Err(error)) => Err(error),
            None => panic!("no CONNACK within {EVENT_TIMEOUT:?}"),
        }
    }

    rumqttc_common_methods!(V4Event);

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.expect("request channel open");
        self.wait_for("SUBACK", |event| match event {
            Ok(Event::Incoming(Packet::SubAck(ack))) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.expect("request channel open");
        self.wait_for("UNSUBACK", |event| match event {
            Ok(Event::Incoming(Packet::UnsubAck(_))) => Some(()),
            _ => None,
        })
        .await
    }

    /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was written (QoS 0).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Bytes>) {
        self.client.publish_bytes(topic, qos, retain, payload.into()).await.expect("request channel open");
        self.wait_publish_done(qos).await;
    }
}
