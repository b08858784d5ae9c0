//! The first bytes of every payload loadgen publishes: who sent it, its sequence number, and when it was
//! *meant* to be sent. Latency is measured from that intended time, so a broker that stalls the sender shows
//! up as latency instead of a quietly lower send rate (no coordinated omission).

/// Bytes the stamp takes at the start of a payload; `--payload-bytes` must be at least this.
pub const STAMP_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub sequence: u64,
    pub intended_ns: u64,
}

impl Stamp {
    pub fn to_bytes(self) -> [u8; STAMP_BYTES] {
        let mut bytes = [0u8; STAMP_BYTES];
        bytes[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        bytes[4..12].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.intended_ns.to_le_bytes());
        bytes
    }

    /// None when the payload is too short to be one of ours.
    pub fn from_payload(payload: &[u8]) -> Option<Stamp> {
        let bytes: &[u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
        Some(Stamp {
            publisher: u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            sequence: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
            intended_ns: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_short_payload_is_rejected() {
        let stamp = Stamp { publisher: 7, sequence: 1 << 40, intended_ns: 123_456_789_012 };
        let mut payload = stamp.to_bytes().to_vec();
        payload.extend_from_slice(&[0; 44]);
        assert_eq!(Stamp::from_payload(&payload), Some(stamp));
        assert_eq!(Stamp::from_payload(&payload[..19]), None);
    }
}
