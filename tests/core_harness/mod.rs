//! Drives one or more `ShardCore`s by hand, as the runtime would: packets go in encoded and decoded by the
//! real codec, frames come out through `poll_action` / `take_output` and are decoded as a client would,
//! mesh messages are passed between shards, and time only moves when a test says so.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardmq::broker::{home_shard, BrokerSettings, ConnId, ShardCore};
use shardmq::protocol::{
    decode_packet, encode_packet, ByteStr, ConnAck, Connect, Packet, Properties, ProtocolVersion, PubResponse, Publish,
    QoS, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use shardmq::sim::{pump_cores, MeshQueue};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub shard: usize,
    pub conn: ConnId,
}

struct ClientState {
    version: ProtocolVersion,
    inbox: BytesMut,
    received: VecDeque<Packet>,
    closed: bool,
}

pub struct Broker {
    pub shards: Vec<ShardCore>,
    pub now: Instant,
    clients: HashMap<Client, ClientState>,
    /// While set, mesh messages wait here instead of reaching their shard (a slow mesh).
    mesh_paused: bool,
    mesh_waiting: MeshQueue,
}

impl Broker {
    pub fn new(shard_count: usize) -> Broker {
        Broker::with_settings(shard_count, BrokerSettings::default())
    }

    pub fn with_settings(shard_count: usize, settings: BrokerSettings) -> Broker {
        let settings = Rc::new(settings);
        let shards = (0..shard_count).map(|shard| ShardCore::new(shard, shard_count, Rc::clone(&settings))).collect();
        Broker {
            shards,
            now: Instant::now(),
            clients: HashMap::new(),
            mesh_paused: false,
            mesh_waiting: MeshQueue::new(),
        }
    }

    /// The shard a client id lives on (where the runtime would move its connection).
    pub fn home(&self, client_id: &str) -> usize {
        home_shard(client_id, self.shards.len())
    }

    /// Opens a connection on `shard` without sending anything.
    pub fn open(&mut self, shard: usize, version: ProtocolVersion) -> Client {
        let conn = self.shards[shard].open_connection(self.now, shardmq::broker::ListenerId(0));
        let client = Client { shard, conn };
        let state = ClientState { version, inbox: BytesMut::new(), received: VecDeque::new(), closed: false };
        self.clients.insert(client, state);
        client
    }

    /// Opens a connection on the client id's home shard, sends CONNECT and returns the CONNACK.
    pub fn connect(&mut self, connect: Connect) -> (Client, ConnAck) {
        let shard = if connect.client_id.is_empty() { 0 } else { self.home(&connect.client_id) };
        self.connect_on(shard, connect)
    }

    pub fn connect_on(&mut self, shard: usize, connect: Connect) -> (Client, ConnAck) {
        let client = self.open(shard, connect.version);
        self.send(client, Packet::Connect(Box::new(connect)));
        let first = self.clients.get_mut(&client).and_then(|state| state.received.pop_front());
        match first {
            Some(Packet::ConnAck(connack)) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Encodes `packet` as the client would, decodes it as the runtime would, and hands it to the core.
    pub fn send(&mut self, client: Client, packet: Packet) {
        let version = self.clients[&client].version;
        let mut wire = BytesMut::new();
        encode_packet(&packet, version, &mut wire).expect("test packet encodes");
        let decode_version = if matches!(packet, Packet::Connect(_)) { ProtocolVersion::V5 } else { version };
        let decoded =
            decode_packet(&mut wire, decode_version, u32::MAX).expect("test packet decodes").expect("complete");
        self.shards[client.shard].handle_packet(client.conn, decoded, self.now);
        self.pump();
    }

    /// The socket of `client` breaks.
    pub fn lose(&mut self, client: Client) {
        self.shards[client.shard].connection_lost(client.conn, self.now);
        if let Some(state) = self.clients.get_mut(&client) {
            state.closed = true;
        }
        self.pump();
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        for shard in &mut self.shards {
            shard.tick(self.now);
        }
        self.pump();
    }

    /// Holds (true) or delivers (false) the messages between shards.
    pub fn pause_mesh(&mut self, paused: bool) {
        self.mesh_paused = paused;
        self.pump();
    }

    /// Every packet the client received since the last call.
    pub fn recv(&mut self, client: Client) -> Vec<Packet> {
        self.clients.get_mut(&client).map(|state| state.received.drain(..).collect()).unwrap_or_default()
    }

    /// Only the PUBLISHes among what the client received (acks the test does not care about are dropped).
    pub fn recv_publishes(&mut self, client: Client) -> Vec<Publish> {
        self.recv(client)
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .collect()
    }

    pub fn is_closed(&self, client: Client) -> bool {
        self.clients[&client].closed
    }

    /// Runs every shard's actions, passing mesh messages (unless paused), until nothing moves.
    fn pump(&mut self) {
        let clients = &mut self.clients;
        pump_cores(&mut self.shards, &mut self.mesh_waiting, self.mesh_paused, self.now, |core, shard, conn, close| {
            collect(clients, core, Client { shard, conn }, close)
        });
    }
}

/// Takes what the core wrote to `client` and decodes it as the client would.
fn collect(clients: &mut HashMap<Client, ClientState>, core: &mut ShardCore, client: Client, close: bool) {
    let mut frames: Vec<Bytes> = Vec::new();
    core.take_output(client.conn, &mut frames);
    let state = clients.get_mut(&client).expect("known client");
    assert!(!state.closed || frames.is_empty(), "frames for a closed connection");
    for frame in frames {
        state.inbox.extend_from_slice(&frame);
    }
    while let Some(packet) = decode_packet(&mut state.inbox, state.version, u32::MAX).expect("server frame decodes") {
        state.received.push_back(packet);
    }
    state.closed |= close;
}

pub fn connect(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        clean_start,
        keep_alive_secs: 0,
        client_id: ByteStr::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &str) -> Will {
    Will {
        topic: ByteStr::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    }
}

pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Publish {
    Publish {
        qos,
        topic: ByteStr::from(topic),
        packet_id,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    }
}

pub fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Subscribe {
    Subscribe {
        packet_id,
        filters: vec![(ByteStr::from(filter), SubscriptionOptions { qos, ..SubscriptionOptions::default() })],
        properties: Properties::default(),
    }
}

pub fn unsubscribe(packet_id: u16, filter: &str) -> Unsubscribe {
    Unsubscribe { packet_id, filters: vec![ByteStr::from(filter)], properties: Properties::default() }
}

pub fn ack(packet_id: u16) -> PubResponse {
    PubResponse { packet_id, ..PubResponse::default() }
}

/// Topic and payload of each PUBLISH, for compact assertions.
pub fn contents(publishes: &[Publish]) -> Vec<(String, String)> {
    publishes
        .iter()
        .map(|publish| (publish.topic.to_string(), String::from_utf8_lossy(&publish.payload).into_owned()))
        .collect()
}
