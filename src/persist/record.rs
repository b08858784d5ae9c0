//! One change of durable state, as the core journals it, and its binary form (little endian, strings and
//! byte runs prefixed by a u32 length). Sessions are named by client id: a log replays the same on any run,
//! whatever slab slot a session gets.
//!
//! The queue of a session is FIFO and its inflight window is keyed by packet id, so the records name
//! positions, not message ids: `Enqueue` appends, `QueueToInflight` moves the head into the window under a
//! packet id, `QueueDropFront` drops the head, `InflightReleased` / `InflightDone` move or end an entry.

use bytes::Bytes;

use crate::protocol::{ByteStr, Properties, QoS, SubscriptionOptions};

/// Why a record's bytes cannot be read (its frame's checksum matched, so this is a bug or a newer format).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("bad value in a record field: {0}")]
    BadField(&'static str),
}

/// An application message as kept on disk. Its expiry is wall-clock time, so it keeps counting while
/// the broker is down.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The forwarded properties (payload format, content type, response topic, correlation data, user
    /// properties); other fields are not kept.
    pub properties: Properties,
    pub expires_at_unix_ms: Option<u64>,
}

/// One message for one session.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDelivery {
    pub message: StoredMessage,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredInflightState {
    Sent,
    Released,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredSubscription {
    pub filter: ByteStr,
    pub options: SubscriptionOptions,
    pub subscription_id: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredWill {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwarded properties plus the Message Expiry Interval (counted from when the will is published).
    pub properties: Properties,
    pub delay_secs: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A client attached (creating or resuming its session): everything about the session but its
    /// subscriptions and messages.
    SessionPut {
        client_id: ByteStr,
        expiry_interval_secs: u32,
        username: Option<ByteStr>,
        listener: u16,
        will: Option<StoredWill>,
    },
    /// The connection left at `at_unix_ms`; the expiry interval counts from then. `will_kept`: the will
    /// waits (delay) rather than being gone.
    SessionDetached {
        client_id: ByteStr,
        at_unix_ms: u64,
        will_kept: bool,
    },
    SessionExpiry {
        client_id: ByteStr,
        expiry_interval_secs: u32,
    },
    /// The will was published or dropped.
    WillGone {
        client_id: ByteStr,
    },
    SessionEnd {
        client_id: ByteStr,
    },
    Subscribe {
        client_id: ByteStr,
        subscription: StoredSubscription,
    },
    Unsubscribe {
        client_id: ByteStr,
        filter: ByteStr,
    },
    Enqueue {
        client_id: ByteStr,
        delivery: StoredDelivery,
    },
    QueueToInflight {
        client_id: ByteStr,
        packet_id: u16,
    },
    QueueDropFront {
        client_id: ByteStr,
    },
    /// Snapshot form of an inflight entry.
    Inflight {
        client_id: ByteStr,
        packet_id: u16,
        state: StoredInflightState,
        delivery: StoredDelivery,
    },
    InflightReleased {
        client_id: ByteStr,
        packet_id: u16,
    },
    InflightDone {
        client_id: ByteStr,
        packet_id: u16,
    },
    /// An incoming QoS 2 PUBLISH was routed; its id waits for PUBREL.
    AwaitPubrel {
        client_id: ByteStr,
        packet_id: u16,
    },
    PubrelDone {
        client_id: ByteStr,
        packet_id: u16,
    },
    RetainSet {
        message: StoredMessage,
    },
    RetainDelete {
        topic: ByteStr,
    },
}

mod kind {
    pub const SESSION_PUT: u8 = 1;
    pub const SESSION_DETACHED: u8 = 2;
    pub const SESSION_EXPIRY: u8 = 3;
    pub const WILL_GONE: u8 = 4;
    pub const SESSION_END: u8 = 5;
    pub const SUBSCRIBE: u8 = 6;
    pub const UNSUBSCRIBE: u8 = 7;
    pub const ENQUEUE: u8 = 8;
    pub const QUEUE_TO_INFLIGHT: u8 = 9;
    pub const QUEUE_DROP_FRONT: u8 = 10;
    pub const INFLIGHT: u8 = 11;
    pub const INFLIGHT_RELEASED: u8 = 12;
    pub const INFLIGHT_DONE: u8 = 13;
    pub const AWAIT_PUBREL: u8 = 14;
    pub const PUBREL_DONE: u8 = 15;
    pub const RETAIN_SET: u8 = 16;
    pub const RETAIN_DELETE: u8 = 17;
}

impl Record {
    /// Appends the record's bytes (one frame's payload).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Record::SessionPut { client_id, expiry_interval_secs, username, listener, will } => {
                w.u8(kind::SESSION_PUT);
                w.str(client_id);
                w.u32(*expiry_interval_secs);
                w.opt_str(username.as_ref());
                w.u16(*listener);
                match will {
                    None => w.u8(0),
                    Some(will) => {
                        w.u8(1);
                        w.str(&will.topic);
                        w.bytes(&will.payload);
                        w.u8(will.qos as u8);
                        w.u8(u8::from(will.retain));
                        w.properties(&will.properties);
                        w.opt_u32(will.properties.message_expiry_interval_secs);
                        w.u32(will.delay_secs);
                    }
                }
            }
            Record::SessionDetached { client_id, at_unix_ms, will_kept } => {
                w.u8(kind::SESSION_DETACHED);
                w.str(client_id);
                w.u64(*at_unix_ms);
                w.u8(u8::from(*will_kept));
            }
            Record::SessionExpiry { client_id, expiry_interval_secs } => {
                w.u8(kind::SESSION_EXPIRY);
                w.str(client_id);
                w.u32(*expiry_interval_secs);
            }
            Record::WillGone { client_id } => w.tag_str(kind::WILL_GONE, client_id),
            Record::SessionEnd { client_id } => w.tag_str(kind::SESSION_END, client_id),
            Record::Subscribe { client_id, subscription } => {
                w.u8(kind::SUBSCRIBE);
                w.str(client_id);
                w.str(&subscription.filter);
                let options = subscription.options;
                w.u8(options.qos as u8);
                w.u8(u8::from(options.no_local) | u8::from(options.retain_as_published) << 1);
                w.u8(options.retain_handling);
                w.u32(subscription.subscription_id);
            }
            Record::Unsubscribe { client_id, filter } => {
                w.u8(kind::UNSUBSCRIBE);
                w.str(client_id);
                w.str(filter);
            }
            Record::Enqueue { client_id, delivery } => {
                w.tag_str(kind::ENQUEUE, client_id);
                w.delivery(delivery);
            }
            Record::QueueToInflight { client_id, packet_id } => {
                w.tag_str_id(kind::QUEUE_TO_INFLIGHT, client_id, *packet_id)
            }
            Record::QueueDropFront { client_id } => w.tag_str(kind::QUEUE_DROP_FRONT, client_id),
            Record::Inflight { client_id, packet_id, state, delivery } => {
                w.tag_str_id(kind::INFLIGHT, client_id, *packet_id);
                w.u8(match state {
                    StoredInflightState::Sent => 0,
                    StoredInflightState::Released => 1,
                });
                w.delivery(delivery);
            }
            Record::InflightReleased { client_id, packet_id } => {
                w.tag_str_id(kind::INFLIGHT_RELEASED, client_id, *packet_id)
            }
            Record::InflightDone { client_id, packet_id } => w.tag_str_id(kind::INFLIGHT_DONE, client_id, *packet_id),
            Record::AwaitPubrel { client_id, packet_id } => w.tag_str_id(kind::AWAIT_PUBREL, client_id, *packet_id),
            Record::PubrelDone { client_id, packet_id } => w.tag_str_id(kind::PUBREL_DONE, client_id, *packet_id),
            Record::RetainSet { message } => {
                w.u8(kind::RETAIN_SET);
                w.message(message);
            }
            Record::RetainDelete { topic } => w.tag_str(kind::RETAIN_DELETE, topic),
        }
    }

    /// Reads one record from a frame's payload. Fields are copied out, so nothing pins the log's buffer.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader(bytes);
        let record = match r.u8()? {
            kind::SESSION_PUT => {
                let client_id = r.str()?;
                let expiry_interval_secs = r.u32()?;
                let username = r.opt_str()?;
                let listener = r.u16()?;
                let will = match r.u8()? {
                    0 => None,
                    _ => {
                        let topic = r.str()?;
                        let payload = r.bytes()?;
                        let qos = r.qos()?;
                        let retain = r.u8()? != 0;
                        let mut properties = r.properties()?;
                        properties.message_expiry_interval_secs = r.opt_u32()?;
                        let delay_secs = r.u32()?;
                        Some(StoredWill { topic, payload, qos, retain, properties, delay_secs })
                    }
                };
                Record::SessionPut { client_id, expiry_interval_secs, username, listener, will }
            }
            kind::SESSION_DETACHED => {
                Record::SessionDetached { client_id: r.str()?, at_unix_ms: r.u64()?, will_kept: r.u8()? != 0 }
            }
            kind::SESSION_EXPIRY => Record::SessionExpiry { client_id: r.str()?, expiry_interval_secs: r.u32()? },
            kind::WILL_GONE => Record::WillGone { client_id: r.str()? },
            kind::SESSION_END => Record::SessionEnd { client_id: r.str()? },
            kind::SUBSCRIBE => {
                let client_id = r.str()?;
                let filter = r.str()?;
                let qos = r.qos()?;
                let flags = r.u8()?;
                let retain_handling = r.u8()?;
                let options = SubscriptionOptions {
                    qos,
                    no_local: flags & 1 != 0,
                    retain_as_published: flags & 2 != 0,
                    retain_handling,
                };
                Record::Subscribe {
                    client_id,
                    subscription: StoredSubscription { filter, options, subscription_id: r.u32()? },
                }
            }
            kind::UNSUBSCRIBE => Record::Unsubscribe { client_id: r.str()?, filter: r.str()? },
            kind::ENQUEUE => Record::Enqueue { client_id: r.str()?, delivery: r.delivery()? },
            kind::QUEUE_TO_INFLIGHT => Record::QueueToInflight { client_id: r.str()?, packet_id: r.u16()? },
            kind::QUEUE_DROP_FRONT => Record::QueueDropFront { client_id: r.str()? },
            kind::INFLIGHT => {
                let client_id = r.str()?;
                let packet_id = r.u16()?;
                let state = match r.u8()? {
                    0 => StoredInflightState::Sent,
                    1 => StoredInflightState::Released,
                    _ => return Err(RecordError::BadField("inflight state")),
                };
                Record::Inflight { client_id, packet_id, state, delivery: r.delivery()? }
            }
            kind::INFLIGHT_RELEASED => Record::InflightReleased { client_id: r.str()?, packet_id: r.u16()? },
            kind::INFLIGHT_DONE => Record::InflightDone { client_id: r.str()?, packet_id: r.u16()? },
            kind::AWAIT_PUBREL => Record::AwaitPubrel { client_id: r.str()?, packet_id: r.u16()? },
            kind::PUBREL_DONE => Record::PubrelDone { client_id: r.str()?, packet_id: r.u16()? },
            kind::RETAIN_SET => Record::RetainSet { message: r.message()? },
            kind::RETAIN_DELETE => Record::RetainDelete { topic: r.str()? },
            other => return Err(RecordError::UnknownKind(other)),
        };
        Ok(record)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u32(value.len() as u32);
        self.0.extend_from_slice(value);
    }
    fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    fn opt_str(&mut self, value: Option<&ByteStr>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.str(value);
            }
        }
    }
    fn opt_bytes(&mut self, value: Option<&Bytes>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.bytes(value);
            }
        }
    }
    fn opt_u32(&mut self, value: Option<u32>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u32(value);
            }
        }
    }
    fn opt_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                self.u64(value);
            }
        }
    }
    fn tag_str(&mut self, tag: u8, value: &str) {
        self.u8(tag);
        self.str(value);
    }
    fn tag_str_id(&mut self, tag: u8, value: &str, packet_id: u16) {
        self.tag_str(tag, value);
        self.u16(packet_id);
    }
    /// The forwarded properties only.
    fn properties(&mut self, properties: &Properties) {
        self.opt_u32(properties.payload_format_indicator.map(u32::from));
        self.opt_str(properties.content_type.as_ref());
        self.opt_str(properties.response_topic.as_ref());
        self.opt_bytes(properties.correlation_data.as_ref());
        self.u32(properties.user_properties.len() as u32);
        for (name, value) in &properties.user_properties {
            self.str(name);
            self.str(value);
        }
    }
    fn message(&mut self, message: &StoredMessage) {
        self.str(&message.topic);
        self.bytes(&message.payload);
        self.u8(message.qos as u8);
        self.u8(u8::from(message.retain));
        self.properties(&message.properties);
        self.opt_u64(message.expires_at_unix_ms);
    }
    fn delivery(&mut self, delivery: &StoredDelivery) {
        self.message(&delivery.message);
        self.u8(delivery.qos as u8);
        self.u8(u8::from(delivery.retain));
        self.u32(delivery.subscription_ids.len() as u32);
        for id in &delivery.subscription_ids {
            self.u32(*id);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < len {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let bytes = self.take(8)?;
        let mut word = [0; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.u32()? as usize;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
    fn str(&mut self) -> Result<ByteStr, RecordError> {
        ByteStr::from_utf8(self.bytes()?).map_err(|_| RecordError::BadField("string is not UTF-8"))
    }
    fn present(&mut self) -> Result<bool, RecordError> {
        Ok(self.u8()? != 0)
    }
    fn opt_str(&mut self) -> Result<Option<ByteStr>, RecordError> {
        self.present()?.then(|| self.str()).transpose()
    }
    fn opt_bytes(&mut self) -> Result<Option<Bytes>, RecordError> {
        self.present()?.then(|| self.bytes()).transpose()
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, RecordError> {
        self.present()?.then(|| self.u32()).transpose()
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, RecordError> {
        self.present()?.then(|| self.u64()).transpose()
    }
    fn qos(&mut self) -> Result<QoS, RecordError> {
        QoS::from_u8(self.u8()?).ok_or(RecordError::BadField("QoS"))
    }
    fn properties(&mut self) -> Result<Properties, RecordError> {
        let payload_format_indicator =
            self.opt_u32()?.map(|value| u8::try_from(value).map_err(|_| RecordError::BadField("payload format")));
        let mut properties = Properties {
            payload_format_indicator: payload_format_indicator.transpose()?,
            content_type: self.opt_str()?,
            response_topic: self.opt_str()?,
            correlation_data: self.opt_bytes()?,
            ..Properties::default()
        };
        let count = self.u32()? as usize;
        for _ in 0..count {
            properties.user_properties.push((self.str()?, self.str()?));
        }
        Ok(properties)
    }
    fn message(&mut self) -> Result<StoredMessage, RecordError> {
        Ok(StoredMessage {
            topic: self.str()?,
            payload: self.bytes()?,
            qos: self.qos()?,
            retain: self.u8()? != 0,
            properties: self.properties()?,
            expires_at_unix_ms: self.opt_u64()?,
        })
    }
    fn delivery(&mut self) -> Result<StoredDelivery, RecordError> {
        let message = self.message()?;
        let qos = self.qos()?;
        let retain = self.u8()? != 0;
        let count = self.u32()? as usize;
        let subscription_ids = (0..count).map(|_| self.u32()).collect::<Result<_, _>>()?;
        Ok(StoredDelivery { message, qos, retain, subscription_ids })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn stored_message(topic: &str, payload: &str) -> StoredMessage {
        StoredMessage {
            topic: ByteStr::from(topic),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                content_type: Some(ByteStr::from("text/plain")),
                user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
                ..Properties::default()
            },
            expires_at_unix_ms: Some(1_700_000_000_000),
        }
    }

    pub(crate) fn stored_delivery(payload: &str) -> StoredDelivery {
        StoredDelivery {
            message: stored_message("t", payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7],
        }
    }

    #[test]
    fn every_record_kind_reads_back_as_written() {
        let client_id = ByteStr::from("c");
        let records = vec![
            Record::SessionPut {
                client_id: client_id.clone(),
                expiry_interval_secs: 60,
                username: Some(ByteStr::from("u")),
                listener: 2,
                will: Some(StoredWill {
                    topic: ByteStr::from("w"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties: Properties { message_expiry_interval_secs: Some(9), ..Properties::default() },
                    delay_secs: 5,
                }),
            },
            Record::SessionDetached { client_id: client_id.clone(), at_unix_ms: 42, will_kept: true },
            Record::SessionExpiry { client_id: client_id.clone(), expiry_interval_secs: 3 },
            Record::WillGone { client_id: client_id.clone() },
            Record::SessionEnd { client_id: client_id.clone() },
            Record::Subscribe {
                client_id: client_id.clone(),
                subscription: StoredSubscription {
                    filter: ByteStr::from("a/+"),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                    subscription_id: 11,
                },
            },
            Record::Unsubscribe { client_id: client_id.clone(), filter: ByteStr::from("a/+") },
            Record::Enqueue { client_id: client_id.clone(), delivery: stored_delivery("x") },
            Record::QueueToInflight { client_id: client_id.clone(), packet_id: 9 },
            Record::QueueDropFront { client_id: client_id.clone() },
            Record::Inflight {
                client_id: client_id.clone(),
                packet_id: 10,
                state: StoredInflightState::Released,
                delivery: stored_delivery("y"),
            },
            Record::InflightReleased { client_id: client_id.clone(), packet_id: 10 },
            Record::InflightDone { client_id: client_id.clone(), packet_id: 10 },
            Record::AwaitPubrel { client_id: client_id.clone(), packet_id: 1 },
            Record::PubrelDone { client_id: client_id.clone(), packet_id: 1 },
            Record::RetainSet { message: stored_message("r", "kept") },
            Record::RetainDelete { topic: ByteStr::from("r") },
        ];
        for record in records {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(Record::decode(&bytes), Ok(record.clone()));
            assert_eq!(Record::decode(&bytes[..bytes.len() - 1]), Err(RecordError::Truncated), "{record:?}");
        }
        assert_eq!(Record::decode(&[200]), Err(RecordError::UnknownKind(200)));
    }
}
