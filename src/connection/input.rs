//! Input of one connection: decode every complete packet of its plaintext bytes and hand it to the core,
//! or, for a CONNECT whose home is another shard, say where the connection must go. What is left in the
//! buffer is a partial packet.

use std::time::Instant;

use bytes::BytesMut;

use super::placement::move_target;
use crate::broker::{ConnId, InputGate, ShardCore, ShardId};
use crate::protocol::{decode_packet, Packet, ProtocolVersion};

/// Whether the connection's home shard is still to be decided by its first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Decided,
    /// The first packet decides: a CONNECT homed elsewhere moves (`shard` is this one).
    Undecided {
        shard: ShardId,
        shard_count: usize,
    },
}

/// What feeding input produced.
#[derive(Debug)]
// `MoveTo` carries the CONNECT once per connection, on its way to the home shard; boxing it would cost an
// allocation there to save bytes in a value that only lives on the stack.
#[allow(clippy::large_enum_variant)]
pub enum InputStep {
    /// Everything complete was handled; keep reading.
    Continue,
    /// Malformed input, or the core ended the connection: nothing more is read from it.
    Stop,
    /// The connection owes its client too much (`ShardCore::input_gate`): read nothing more until a send
    /// has drained it. What was not decoded stays in the buffer.
    Pause,
    /// The first packet is a CONNECT for another shard: hand the connection (and what is left in the
    /// buffer) over to `home`. The core has not seen it.
    MoveTo { home: ShardId, connect: Packet },
}

/// Decodes and handles every complete packet in `buf` (see the module doc).
pub fn feed_input(
    core: &mut ShardCore,
    conn: ConnId,
    buf: &mut BytesMut,
    mut placement: Placement,
    now: Instant,
) -> InputStep {
    let packet_size_max_bytes = core.settings().packet_size_max_bytes;
    loop {
        let version = core.protocol_version(conn).unwrap_or(ProtocolVersion::V5);
        match decode_packet(buf, version, packet_size_max_bytes) {
            Ok(None) => return InputStep::Continue,
            Ok(Some(packet)) => {
                if let Placement::Undecided { shard, shard_count } = placement {
                    if let Some(home) = move_target(&packet, shard, shard_count) {
                        return InputStep::MoveTo { home, connect: packet };
                    }
                    placement = Placement::Decided;
                }
                core.handle_packet(conn, packet, now);
                match core.input_gate(conn, now) {
                    InputGate::Open => {}
                    InputGate::Paused => return InputStep::Pause,
                    InputGate::Closed => return InputStep::Stop,
                }
            }
            Err(err) => {
                core.handle_decode_error(conn, &err, now);
                return InputStep::Stop;
            }
        }
    }
}
