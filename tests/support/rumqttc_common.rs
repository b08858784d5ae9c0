//! The client methods that read the same for rumqttc's 3.1.1 and v5 clients. rumqttc has a separate set of
//! types per version (`rumqttc::Event` vs `rumqttc::v5::Event`, ...), so the methods are written once here
//! and expanded inside each version's `impl`, where those names resolve to that version's types. The
//! expanding module must have in scope: `Event`, `Packet`, `Outgoing`, `Publish`, `QoS`, `ConnectionError`,
//! `Duration`, `EVENT_TIMEOUT`, `SILENCE`, and a struct with fields `client`, `connack`, `events`.

macro_rules! rumqttc_common_methods {
    ($event:ty) => {
        pub fn session_present(&self) -> bool {
            self.connack.session_present
        }

        /// After a PUBLISH was requested: waits until it was written (QoS 0) or acknowledged (PUBACK for
        /// QoS 1, PUBCOMP for QoS 2).
        async fn wait_publish_done(&mut self, qos: QoS) {
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

        /// `count` PUBLISHes in arrival order.
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

        /// A DISCONNECT (reason 0x00 in v5), then waits for the broker to close the connection.
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
        pub async fn wait_for<R>(&mut self, what: &str, mut pick: impl FnMut(&$event) -> Option<R>) -> R {
            let found = self.events.wait_for(EVENT_TIMEOUT, |event| pick(event).is_some()).await;
            match found.as_ref().and_then(&mut pick) {
                Some(found) => found,
                None => panic!("no {what} within {EVENT_TIMEOUT:?}; events so far: {:?}", self.events.backlog()),
            }
        }
    };
}

pub(crate) use rumqttc_common_methods;
