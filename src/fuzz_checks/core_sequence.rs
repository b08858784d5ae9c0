//! Target `core_sequence`: a script of operations from several fake connections through two
//! `ShardCore`s (the mesh between them carried by `sim::pump_cores`, as the runtime does). Each
//! input byte picks an operation: raw packet bytes decoded by the real codec at the connection's level
//! (so any packet, well formed or not, reaches the core), or a well-formed CONNECT, SUBSCRIBE,
//! UNSUBSCRIBE, PUBLISH, acknowledgement, PINGREQ or DISCONNECT over a small alphabet of client ids and
//! topics (so sessions, takeovers, retained messages and QoS flows meet), a lost socket, or time passing.
//!
//! Invariants: nothing panics; every frame the broker writes decodes at the connection's level; no frame
//! goes to a connection after its close; what one operation makes the broker write is bounded; and once
//! the mesh is quiet, the sessions marked connected are exactly the connections that were accepted
//! (CONNACK 0) and are still open.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::broker::{home_shard, BrokerSettings, ConnId, ListenerId, ShardCore};
use crate::protocol::{
    decode_packet, ByteStr, Connect, Disconnect, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use crate::sim::{pump_cores, MeshQueue};
use bytes::{Bytes, BytesMut};

const SHARDS: usize = 2;
const CONNECTIONS_MAX: usize = 12;
const CLIENT_IDS: [&str; 4] = ["a", "b", "c", ""];
const TOPICS: [&str; 6] = ["t", "t/x", "t/y/z", "$SYS/x", "s", "u/v"];
const FILTERS: [&str; 8] = ["t", "t/#", "+/x", "#", "$share/g/t/#", "t/+/z", "s", "$SYS/#"];
/// What one operation may make the broker write, all connections together: one publish fanned out to
/// every connection, or a subscription's retained messages, stays far below this.
const OUTPUT_PER_OPERATION_BYTES_MAX: usize = 1 << 20;

/// One fake client connection: where the core holds it, what it was sent, what it is owed.
struct Client {
    /// Set by the first packet: the runtime hands a connection to its client id's home shard at CONNECT.
    at: Option<(usize, ConnId)>,
    /// The level of this client's well-formed CONNECTs.
    version: ProtocolVersion,
    /// The level the broker encodes this connection's frames at: that of its first CONNECT (raw or
    /// well-formed; a second one is refused, not adopted), 3.1.1 after a first packet of an unsupported
    /// level, 5 before either. Kept here because the core forgets a connection as it closes it, before its
    /// last frames (a DISCONNECT, a refusing CONNACK) are read.
    wire_version: Option<ProtocolVersion>,
    inbox: BytesMut,
    accepted: bool,
    closed: bool,
}

struct Harness {
    cores: Vec<ShardCore>,
    mesh: MeshQueue,
    clients: Vec<Client>,
    now: Instant,
}

/// Reads the script; past its end every read is 0.
struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        first
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }
}

fn version_of(byte: u8) -> ProtocolVersion {
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5][usize::from(byte % 3)]
}

fn qos_of(byte: u8) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(byte % 3)]
}

impl Harness {
    fn new() -> Harness {
        let settings = BrokerSettings { retained_max_messages: 16, ..BrokerSettings::default() };
        let settings = Rc::new(settings);
        let cores = (0..SHARDS).map(|shard| ShardCore::new(shard, SHARDS, Rc::clone(&settings))).collect();
        Harness { cores, mesh: MeshQueue::new(), clients: Vec::new(), now: Instant::now() }
    }

    fn client_index(&self, byte: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| usize::from(byte) % self.clients.len())
    }

    /// Hands `packet` to the client's connection, opening it on the right shard first if needed.
    fn deliver(&mut self, index: usize, packet: Packet) {
        let client = &mut self.clients[index];
        if client.closed {
            return;
        }
        let (shard, conn) = match client.at {
            Some(at) => at,
            None => {
                let shard = match &packet {
                    Packet::Connect(connect) if !connect.client_id.is_empty() => home_shard(&connect.client_id, SHARDS),
                    _ => 0,
                };
                let conn = self.cores[shard].open_connection(self.now, ListenerId(0));
                client.at = Some((shard, conn));
                (shard, conn)
            }
        };
        if let (Packet::Connect(connect), None) = (&packet, client.wire_version) {
            client.wire_version = Some(connect.version);
        }
        self.cores[shard].handle_packet(conn, packet, self.now);
    }

    /// Raw bytes decoded as the runtime decodes a connection's input.
    fn deliver_raw(&mut self, index: usize, mut wire: BytesMut) {
        let decode_version = self.clients[index].wire_version.unwrap_or(ProtocolVersion::V5);
        loop {
            match decode_packet(&mut wire, decode_version, 4096) {
                Ok(Some(packet)) => self.deliver(index, packet),
                Ok(None) => return,
                Err(err) => {
                    let client = &mut self.clients[index];
                    if let (Some((shard, conn)), false) = (client.at, client.closed) {
                        if client.wire_version.is_none()
                            && err.reason_code() == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                        {
                            client.wire_version = Some(ProtocolVersion::V3_1_1);
                        }
                        self.cores[shard].handle_decode_error(conn, &err, self.now);
                    }
                    return;
                }
            }
        }
    }

    fn step(&mut self, script: &mut Script<'_>) {
        let op = script.byte();
        let target = self.client_index(script.byte());
        match (op % 12, target) {
            (0, _) if self.clients.len() < CONNECTIONS_MAX => {
                let version = version_of(script.byte());
                self.clients.push(Client {
                    at: None,
                    version,
                    wire_version: None,
                    inbox: BytesMut::new(),
                    accepted: false,
                    closed: false,
                });
            }
            (1, Some(index)) => {
                let len = usize::from(script.byte());
                let wire = BytesMut::from(script.bytes(len));
                self.deliver_raw(index, wire);
            }
            (2, Some(index)) => {
                let flags = script.byte();
                let will = (flags & 4 != 0).then(|| Will {
                    topic: ByteStr::from(TOPICS[usize::from(flags >> 5) % TOPICS.len()]),
                    payload: Bytes::from_static(b"will"),
                    qos: qos_of(flags >> 3),
                    retain: flags & 8 != 0,
                    properties: Default::default(),
                });
                let connect = Connect {
                    version: self.clients[index].version,
                    clean_start: flags & 1 != 0,
                    keep_alive_secs: u16::from(flags & 2) * 5,
                    client_id: ByteStr::from(CLIENT_IDS[usize::from(script.byte()) % CLIENT_IDS.len()]),
                    will,
                    username: None,
                    password: None,
                    properties: Default::default(),
                };
                self.deliver(index, Packet::Connect(Box::new(connect)));
            }
            (3, Some(index)) => {
                let (filter, options) = (script.byte(), script.byte());
                let options = SubscriptionOptions {
                    qos: qos_of(options),
                    no_local: options & 4 != 0,
                    retain_as_published: options & 8 != 0,
                    retain_handling: (options >> 4) % 3,
                };
                let filter = ByteStr::from(FILTERS[usize::from(filter) % FILTERS.len()]);
                let packet_id = u16::from(script.byte()) + 1;
                let subscribe =
                    Subscribe { packet_id, filters: vec![(filter, options)], properties: Default::default() };
                self.deliver(index, Packet::Subscribe(subscribe));
            }
            (4, Some(index)) => {
                let filter = ByteStr::from(FILTERS[usize::from(script.byte()) % FILTERS.len()]);
                let packet_id = u16::from(script.byte()) + 1;
                let unsubscribe = Unsubscribe { packet_id, filters: vec![filter], properties: Default::default() };
                self.deliver(index, Packet::Unsubscribe(unsubscribe));
            }
            (5 | 6, Some(index)) => {
                let (topic, flags) = (script.byte(), script.byte());
                let qos = qos_of(flags);
                let payload_bytes = usize::from(script.byte() % 64);
                let publish = Publish {
                    dup: false,
                    qos,
                    retain: flags & 4 != 0,
                    topic: ByteStr::from(TOPICS[usize::from(topic) % TOPICS.len()]),
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { u16::from(flags >> 3) + 1 },
                    properties: Default::default(),
                    payload: Bytes::from(vec![b'p'; payload_bytes]),
                };
                self.deliver(index, Packet::Publish(publish));
            }
            (7, Some(index)) => {
                let (kind, packet_id) = (script.byte(), u16::from(script.byte()) + 1);
                let response = PubResponse { packet_id, ..PubResponse::default() };
                let packet = match kind % 4 {
                    0 => Packet::PubAck(response),
                    1 => Packet::PubRec(response),
                    2 => Packet::PubRel(response),
                    _ => Packet::PubComp(response),
                };
                self.deliver(index, packet);
            }
            (8, Some(index)) => self.deliver(index, Packet::PingReq),
            (9, Some(index)) => self.deliver(index, Packet::Disconnect(Disconnect::default())),
            (10, Some(index)) => {
                let client = &mut self.clients[index];
                if let (Some((shard, conn)), false) = (client.at, client.closed) {
                    client.closed = true;
                    self.cores[shard].connection_lost(conn, self.now);
                }
            }
            (11, _) => {
                self.now += Duration::from_secs(u64::from(script.byte() % 40));
                for core in &mut self.cores {
                    core.tick(self.now);
                }
            }
            _ => {}
        }
    }

    /// Carries out every action; checks what was written.
    fn pump(&mut self) {
        let clients = &mut self.clients;
        let mut written_bytes = 0;
        pump_cores(&mut self.cores, &mut self.mesh, false, self.now, |core, shard, conn, close| {
            let client = clients
                .iter_mut()
                .find(|client| client.at == Some((shard, conn)) && !client.closed)
                .expect("the broker writes only to open connections");
            let mut frames = Vec::new();
            core.take_output(conn, &mut frames);
            let version = client.wire_version.unwrap_or(ProtocolVersion::V5);
            if let Some(spoken) = core.protocol_version(conn) {
                assert_eq!(spoken, version, "the broker speaks the level of the connection's first CONNECT");
            }
            for frame in frames {
                written_bytes += frame.len();
                client.inbox.extend_from_slice(&frame);
            }
            while let Some(packet) =
                decode_packet(&mut client.inbox, version, u32::MAX).expect("what the broker writes decodes")
            {
                if let Packet::ConnAck(connack) = packet {
                    assert!(!client.accepted, "one CONNACK per connection");
                    client.accepted = connack.reason.is_success();
                }
            }
            client.closed |= close;
        });
        assert!(written_bytes <= OUTPUT_PER_OPERATION_BYTES_MAX, "{written_bytes} bytes from one operation");
    }

    fn check_sessions(&self) {
        let connected: usize = self.cores.iter().map(|core| core.stats_snapshot().sessions.clients_connected).sum();
        let live = self.clients.iter().filter(|client| client.accepted && !client.closed).count();
        assert_eq!(connected, live, "sessions marked connected vs accepted open connections");
        for client in &self.clients {
            if let (Some((shard, conn)), true) = (client.at, client.closed) {
                assert!(!self.cores[shard].has_connection(conn), "a closed connection is forgotten");
            }
        }
    }
}

pub fn check(data: &[u8]) {
    let mut harness = Harness::new();
    let mut script = Script { data };
    let mut steps = 0;
    while !script.data.is_empty() && steps < 256 {
        harness.step(&mut script);
        harness.pump();
        harness.check_sessions();
        steps += 1;
    }
}
