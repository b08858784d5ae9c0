//! MQTT 5 clients for the tests: rumqttc's `v5::AsyncClient` with its events collected by an
//! [`EventStream`], and waits for the packets a test cares about.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet, Publish, PublishProperties,
    SubAck, SubscribeProperties, UnsubAck,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::Outgoing;
use tokio::sync::mpsc;

use super::events::EventStream;
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
        V5Client::try_connect(options)
            .await
            .unwrap_or_else(|e| panic!("client {id:?} could not connect: {e:?}"))
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

    pub fn session_present(&self) -> bool {
        self.connack.session_present
    }

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
        let packet_id = self
            .wait_for("outgoing PUBLISH", |event| match event {
                Ok(Event::Outgoing(Outgoing::Publish(id))) => Some(*id),
                _ => None,
            })
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |event| match event {
                    Ok(Event::Incoming(Packet::PubAck(ack))) if ack.pkid == packet_id => Some(()),
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |event| match event {
                    Ok(Event::Incoming(Packet::PubComp(ack))) if ack.pkid == packet_id => Some(()),
                    _ => None,
                })
                .await
            }
        }
    }

    /// The next PUBLISH the broker sent us; panics after the timeout.
    pub async fn next_publish(&mut self) -> Publish {
        self.wait_for("PUBLISH", |event| match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    pub async fn next_publishes(&mut self, count: usize) -> Vec<Publish> {
        let mut received = Vec::with_capacity(count);
        for _ in 0..count {
            received.push(self.next_publish().await);
        }
        received
    }

    /// Asserts that no PUBLISH arrives for a short while.
    pub async fn expect_no_publish(&mut self) {
        let unexpected =
            self.events.wait_for(SILENCE, |event| matches!(event, Ok(Event::Incoming(Packet::Publish(_))))).await;
        assert!(unexpected.is_none(), "unexpected PUBLISH: {unexpected:?}");
    }

    /// Waits until the connection ended and returns how.
    pub async fn wait_closed(&mut self, timeout: Duration) -> ConnectionError {
        match self.events.wait_for(timeout, |event| event.is_err()).await {
            Some(Err(error)) => error,
            _ => panic!("connection still open after {timeout:?}; events: {:?}", self.events.backlog()),
        }
    }

    /// Waits for the broker's DISCONNECT and returns its reason code.
    pub async fn wait_server_disconnect(&mut self) -> DisconnectReasonCode {
        match self.wait_closed(EVENT_TIMEOUT).await {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => reason_code,
            other => panic!("connection ended without a DISCONNECT from the broker: {other:?}"),
        }
    }

    /// A DISCONNECT with reason 0x00, then waits for the broker to close the connection.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.expect("request channel open");
        self.wait_for("outgoing DISCONNECT", |event| match event {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Some(()),
            _ => None,
        })
        .await;
        self.wait_closed(EVENT_TIMEOUT).await;
    }

    /// Closes the socket without DISCONNECT (an abnormal close: the will is published).
    pub async fn drop_connection(mut self) {
        self.events.abort().await;
    }

    /// The first event `pick` maps to Some; panics after the timeout.
    pub async fn wait_for<R>(&mut self, what: &str, mut pick: impl FnMut(&V5Event) -> Option<R>) -> R {
        let found = self.events.wait_for(EVENT_TIMEOUT, |event| pick(event).is_some()).await;
        match found.as_ref().and_then(&mut pick) {
            Some(found) => found,
            None => panic!("no {what} within {EVENT_TIMEOUT:?}; events so far: {:?}", self.events.backlog()),
        }
    }
}

/// A user-property list from string pairs.
pub fn user_properties(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}
