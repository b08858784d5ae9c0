//! The messages that leave a shard's core: `Action`s for the runtime and `MeshMessage`s for other shards, and
//! the immutable application message (`Message`) that is shared, not copied, by every delivery.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::owned::{owned_bytes, owned_str};
use crate::protocol::{ByteStr, EncodeError, EncodedPublish, Properties, QoS};

/// Index of a shard (0..shard_count).
pub type ShardId = usize;

/// A connection of one shard. Unique within the shard for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the runtime must do next, read with `ShardCore::poll_action`.
#[derive(Debug)]
pub enum Action {
    /// Frames are queued for this connection: call `take_output` and write them (one vectored write).
    Write(ConnId),
    /// Call `take_output` one last time, write what it returns, then close the socket. The core has already
    /// forgotten the connection.
    Close(ConnId),
    /// Send `msg` to shard `to` (the runtime batches these per destination).
    Mesh { to: ShardId, msg: MeshMessage },
}

/// What one shard's core tells another's. `Send + 'static`: the only shared data is the immutable `Message`.
#[derive(Debug, Clone)]
pub enum MeshMessage {
    /// The sending shard gained its first local subscriber of `filter`; the receiver answers
    /// `InterestAck { seq }` once applied.
    InterestAdded {
        filter: ByteStr,
        seq: u64,
    },
    /// The receiving shard's interest updates up to `seq` are applied here (its held SUBACKs may go).
    InterestAck {
        seq: u64,
    },
    /// The sending shard lost its last local subscriber of `filter`.
    InterestRemoved {
        filter: ByteStr,
    },
    /// An application message for the receiving shard's subscribers (sent once per interested shard).
    Publish(Arc<Message>),
    /// The sending shard now has `connected` connected members of the shared group `share` (sent after
    /// `InterestAdded` for it, whenever the count changes), so publishing shards weigh it by that.
    ShareMembers {
        share: ByteStr,
        connected: u32,
    },
    /// An application message for one member of the shared-subscription group `share`
    /// (`$share/{group}/{filter}`) on the receiving shard.
    SharedPublish {
        message: Arc<Message>,
        share: ByteStr,
    },
    /// A retained message (or, with an empty payload, a retained delete) for the receiving shard's replica
    /// of the retained store; `deliver` says whether its matching subscribers also get it (false only for an
    /// HTTP API delete).
    Retain {
        message: Arc<Message>,
        deliver: bool,
    },
    /// Close the connections of these user names (dynamic security deleted or disabled them, or changed
    /// their credentials, on the sending shard). A control message: never shed.
    KickUsernames(Arc<[Box<str>]>),
    /// `durability = "sync"`: the sender's acks wait until the receiver's log holds everything the sender
    /// sent it before this; answered with `DurableAck { seq }` once it does.
    DurableBarrier {
        seq: u64,
    },
    DurableAck {
        seq: u64,
    },
}

/// An application message as published, shared by every shard and delivery. Never mutated after creation:
/// per-receiver fields (packet id, QoS, DUP, subscription ids, alias) are set when encoding for a receiver.
#[derive(Debug)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Forwarded v5 properties (payload format, content type, response topic, correlation data, user
    /// properties). Never holds a topic alias, subscription identifiers or the expiry interval. Boxed and
    /// only when there are any (read them with `properties()`): most messages have none, and inline they
    /// were ~380 of a message's ~590 bytes, paid by every retained or queued message.
    properties: Option<Box<Properties>>,
    /// When the v5 Message Expiry Interval ends; the remaining interval is forwarded.
    pub expires_at: Option<Instant>,
    /// Where it was published, for No Local.
    pub origin: Origin,
    /// Topic, message properties and payload prepared once for every receiver's PUBLISH frame.
    pub encoded: EncodedPublish,
    /// Topic and payload are this message's own memory, not slices of a read buffer (`owned_copy`).
    pub owned: bool,
}

/// The publisher of a message: its shard and connection (the session's current connection on that shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub shard: ShardId,
    pub conn: Option<ConnId>,
}

impl Message {
    /// Builds the shared message; fails only for a topic or properties that cannot be encoded.
    pub fn new(
        topic: ByteStr,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
        expires_at: Option<Instant>,
        origin: Origin,
    ) -> Result<Arc<Message>, EncodeError> {
        let encoded = EncodedPublish::new(&topic, &properties, payload.clone())?;
        let properties = (!properties.is_empty()).then(|| Box::new(properties));
        Ok(Arc::new(Message { topic, payload, qos, retain, properties, expires_at, origin, encoded, owned: false }))
    }

    /// A copy holding its own topic and payload (not slices of a read buffer), for long-term storage.
    /// Its properties are already owned (see `owned_forwarded_properties`).
    pub fn owned_copy(&self) -> Result<Arc<Message>, EncodeError> {
        let (topic, payload) = (owned_str(&self.topic), owned_bytes(&self.payload));
        let encoded = EncodedPublish::new(&topic, self.properties(), payload.clone())?;
        Ok(Arc::new(Message {
            topic,
            payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
            origin: self.origin,
            encoded,
            owned: true,
        }))
    }

    /// Bytes a queued copy of this message accounts for in the session queue bound.
    pub fn queued_size_bytes(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// The forwarded v5 properties (empty for most messages).
    pub fn properties(&self) -> &Properties {
        static NONE: std::sync::LazyLock<Properties> = std::sync::LazyLock::new(Properties::default);
        self.properties.as_deref().unwrap_or(&NONE)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|deadline| deadline <= now)
    }
}
