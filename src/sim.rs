//! An in-process shard set without sockets or executors: drives several `ShardCore`s in one thread,
//! carrying their mesh messages by hand. Used by the scale benchmark (`benches/scale.rs`) and by tests that
//! need many sessions (far beyond what one process can hold as sockets).
//!
//! Clients are plain connection handles; what the broker writes to them is decoded (so counts are of real
//! MQTT packets, not of guesses) or, in `OutputMode::Discard`, only measured in bytes.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::broker::{home_shard, run_actions, ActionTarget, BrokerSettings, ConnId, MeshMessage, ShardCore, ShardId};
use crate::protocol::{
    decode_packet, ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
};

/// What the simulation does with the frames the broker writes to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Decode every frame and count packets by kind (exact, slower).
    Decode,
    /// Count only bytes and frames (what a benchmark of the core alone wants).
    Discard,
}

/// Totals of what the broker wrote to clients and did, since the cluster was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimCounts {
    pub connacks: u64,
    pub connack_refusals: u64,
    pub subacks: u64,
    pub publishes_delivered: u64,
    pub pingresps: u64,
    pub other_packets: u64,
    pub frames: u64,
    pub bytes: u64,
    pub mesh_messages: u64,
    pub closes: u64,
}

/// A client of the simulated broker: the shard it lives on and its connection there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimClient {
    pub shard: ShardId,
    pub conn: ConnId,
}

/// Mesh messages between in-process cores, oldest first: (from, to, message).
pub type MeshQueue = VecDeque<(ShardId, ShardId, MeshMessage)>;

/// The in-process target of the cores' actions (the runtime's is `shard::event_loop`; both go through
/// `broker::run_actions`): runs every core's actions until nothing moves. A write or a close calls
/// `output` with the core, shard, connection and whether it closes (it takes the frames); mesh messages go
/// to their shard, or wait in `mesh` while `hold_mesh` (a slow mesh). Returns how many mesh messages were
/// delivered.
pub fn pump_cores(
    cores: &mut [ShardCore],
    mesh: &mut MeshQueue,
    hold_mesh: bool,
    now: Instant,
    mut output: impl FnMut(&mut ShardCore, ShardId, ConnId, bool),
) -> u64 {
    let mut delivered = 0;
    loop {
        let mut moved = false;
        for (shard, core) in cores.iter_mut().enumerate() {
            moved |= run_actions(&mut InProcess { core, shard, mesh, output: &mut output });
        }
        if !hold_mesh {
            while let Some((from, to, msg)) = mesh.pop_front() {
                moved = true;
                delivered += 1;
                cores[to].handle_mesh(from, msg, now);
            }
        }
        if !moved {
            return delivered;
        }
    }
}

/// One core's actions carried out in process: output to the caller, mesh messages queued.
struct InProcess<'a, F> {
    core: &'a mut ShardCore,
    shard: ShardId,
    mesh: &'a mut MeshQueue,
    output: &'a mut F,
}

impl<F: FnMut(&mut ShardCore, ShardId, ConnId, bool)> ActionTarget for InProcess<'_, F> {
    fn core(&mut self) -> &mut ShardCore {
        self.core
    }

    fn write(&mut self, conn: ConnId) {
        (self.output)(self.core, self.shard, conn, false);
    }

    fn close(&mut self, conn: ConnId) {
        (self.output)(self.core, self.shard, conn, true);
    }

    fn mesh(&mut self, to: ShardId, msg: MeshMessage) {
        self.mesh.push_back((self.shard, to, msg));
    }
}

/// Several shard cores in one thread, with the mesh between them carried by `pump`.
pub struct SimCluster {
    cores: Vec<ShardCore>,
    mesh: MeshQueue,
    output: SimOutput,
}

/// What the simulated clients were sent, and how it is looked at.
struct SimOutput {
    version: ProtocolVersion,
    mode: OutputMode,
    frames: Vec<Bytes>,
    decode_buf: BytesMut,
    counts: SimCounts,
}

impl SimCluster {
    /// `version` is the protocol level every simulated client connects with.
    pub fn new(shard_count: usize, settings: BrokerSettings, version: ProtocolVersion, mode: OutputMode) -> SimCluster {
        let settings = Rc::new(settings);
        let cores = (0..shard_count).map(|shard| ShardCore::new(shard, shard_count, settings.clone())).collect();
        let output =
            SimOutput { version, mode, frames: Vec::new(), decode_buf: BytesMut::new(), counts: SimCounts::default() };
        SimCluster { cores, mesh: VecDeque::new(), output }
    }

    pub fn counts(&self) -> &SimCounts {
        &self.output.counts
    }

    pub fn cores(&self) -> &[ShardCore] {
        &self.cores
    }

    /// Connects `client_id` on its home shard (as the runtime places it) and answers the CONNACK.
    pub fn connect(&mut self, client_id: &str, keep_alive_secs: u16, now: Instant) -> SimClient {
        let shard = home_shard(client_id, self.cores.len());
        let conn = self.cores[shard].open_connection(now, crate::broker::ListenerId(0));
        let connect = Connect {
            version: self.output.version,
            clean_start: true,
            keep_alive_secs,
            client_id: ByteStr::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        };
        self.cores[shard].handle_packet(conn, Packet::Connect(Box::new(connect)), now);
        SimClient { shard, conn }
    }

    pub fn subscribe(&mut self, client: SimClient, filter: &str, qos: QoS, packet_id: u16, now: Instant) {
        let options = SubscriptionOptions { qos, ..Default::default() };
        let subscribe =
            Subscribe { packet_id, filters: vec![(ByteStr::from(filter), options)], properties: Default::default() };
        self.cores[client.shard].handle_packet(client.conn, Packet::Subscribe(subscribe), now);
    }

    pub fn publish(&mut self, client: SimClient, topic: &str, payload: Bytes, now: Instant) {
        let publish = Publish { topic: ByteStr::from(topic), payload, ..Default::default() };
        self.cores[client.shard].handle_packet(client.conn, Packet::Publish(publish), now);
    }

    pub fn ping(&mut self, client: SimClient, now: Instant) {
        self.cores[client.shard].handle_packet(client.conn, Packet::PingReq, now);
    }

    pub fn tick(&mut self, now: Instant) {
        for core in &mut self.cores {
            core.tick(now);
        }
    }

    /// Runs every core's actions until nothing is left: writes are counted, mesh messages delivered.
    pub fn pump(&mut self, now: Instant) {
        let output = &mut self.output;
        let delivered = pump_cores(&mut self.cores, &mut self.mesh, false, now, |core, _shard, conn, close| {
            output.take_frames(core, conn);
            output.counts.closes += u64::from(close);
        });
        self.output.counts.mesh_messages += delivered;
    }
}

impl SimOutput {
    fn take_frames(&mut self, core: &mut ShardCore, conn: ConnId) {
        self.frames.clear();
        core.take_output(conn, &mut self.frames);
        for frame in &self.frames {
            self.counts.frames += 1;
            self.counts.bytes += frame.len() as u64;
            if self.mode == OutputMode::Decode {
                self.decode_buf.extend_from_slice(frame);
            }
        }
        if self.mode == OutputMode::Decode {
            self.decode_written();
        }
    }

    /// Decodes what one connection was sent; frames of one packet may be split (header, payload).
    fn decode_written(&mut self) {
        while let Ok(Some(packet)) = decode_packet(&mut self.decode_buf, self.version, u32::MAX) {
            match packet {
                Packet::ConnAck(ack) if ack.reason.is_success() => self.counts.connacks += 1,
                Packet::ConnAck(_) => self.counts.connack_refusals += 1,
                Packet::SubAck(_) => self.counts.subacks += 1,
                Packet::Publish(_) => self.counts.publishes_delivered += 1,
                Packet::PingResp => self.counts.pingresps += 1,
                _ => self.counts.other_packets += 1,
            }
        }
        assert!(self.decode_buf.is_empty(), "the broker wrote a partial or undecodable packet");
    }
}
