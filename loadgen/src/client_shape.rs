//! How a load connection paces its bytes on the socket. The default (`batched`) is the fastest client
//! there is: TCP_NODELAY, every packet due in one turn written with one `write`, acks sent together with
//! whatever else is queued. Real client libraries do less well, and a broker that only works with the
//! best-behaved client hides bugs (issue 18: a 1 s stall that paho-mqtt showed and loadgen did not).
//!
//! `paho` copies what paho-mqtt 2.x does on the wire (seen with `strace -f -e trace=network`): Nagle left
//! on (no TCP_NODELAY), one `send` per MQTT packet, and each PUBACK/PUBREC written on its own as soon as
//! its PUBLISH was read, never coalesced with other packets.

use serde::{Deserialize, Serialize};

#[derive(clap::ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientShape {
    /// TCP_NODELAY; all queued packets of a turn in one write.
    #[default]
    Batched,
    /// Nagle on; one write per packet; each ack in its own write right after its PUBLISH.
    Paho,
}

impl ClientShape {
    /// Whether the socket sets TCP_NODELAY.
    pub fn no_delay(self) -> bool {
        self == ClientShape::Batched
    }

    /// Whether each packet is written as soon as it is encoded (its own write), not batched per turn.
    pub fn write_per_packet(self) -> bool {
        self == ClientShape::Paho
    }
}
