//! Record framing: `[length u32 LE][crc32c of the payload u32 LE][payload]`. A crash can leave the last
//! frame half written (torn) and a bad disk can flip bits (corrupt); `scan_frames` stops at the first frame
//! that is not whole and intact, and says where, so recovery cuts the log there instead of trusting (or
//! panicking on) what follows.

/// Bytes before a frame's payload.
pub const FRAME_HEADER_BYTES: usize = 8;
/// A frame longer than this is damage, not data (a record holds at most one message of 256 MiB).
pub const FRAME_PAYLOAD_MAX_BYTES: usize = 300 << 20;

/// Appends one frame holding `payload`.
pub fn append_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Where a scan of a byte run ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ScanEnd {
    /// Every byte belonged to a whole, intact frame.
    Clean,
    /// The run ends inside a frame (a write cut short by a crash).
    Torn { offset: usize },
    /// A whole frame whose checksum does not match, or a length no record can have.
    Corrupt { offset: usize },
}

/// The intact frames' payloads, in order, and how the run ended.
#[derive(Debug)]
pub struct FrameScan<'a> {
    pub payloads: Vec<&'a [u8]>,
    pub end: ScanEnd,
}

impl FrameScan<'_> {
    /// Bytes of the run that are whole frames (where a torn or corrupt tail is cut).
    pub fn valid_len(&self, total: usize) -> usize {
        match self.end {
            ScanEnd::Clean => total,
            ScanEnd::Torn { offset } | ScanEnd::Corrupt { offset } => offset,
        }
    }
}

pub fn scan_frames(bytes: &[u8]) -> FrameScan<'_> {
    let mut payloads = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < FRAME_HEADER_BYTES {
            return FrameScan { payloads, end: ScanEnd::Torn { offset } };
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > FRAME_PAYLOAD_MAX_BYTES {
            return FrameScan { payloads, end: ScanEnd::Corrupt { offset } };
        }
        let Some(payload) = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
            return FrameScan { payloads, end: ScanEnd::Torn { offset } };
        };
        if crc32c::crc32c(payload) != crc {
            return FrameScan { payloads, end: ScanEnd::Corrupt { offset } };
        }
        payloads.push(payload);
        offset += FRAME_HEADER_BYTES + len;
    }
    FrameScan { payloads, end: ScanEnd::Clean }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_frames() -> Vec<u8> {
        let mut log = Vec::new();
        for payload in [&b"one"[..], b"", b"three"] {
            append_frame(&mut log, payload);
        }
        log
    }

    #[test]
    fn intact_frames_scan_clean() {
        let log = three_frames();
        let scan = scan_frames(&log);
        assert_eq!(scan.payloads, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(scan.end, ScanEnd::Clean);
        assert_eq!(scan.valid_len(log.len()), log.len());
    }

    #[test]
    fn a_torn_tail_at_every_cut_point_keeps_the_whole_frames_before_it() {
        let log = three_frames();
        let second_end = 2 * FRAME_HEADER_BYTES + 3;
        for cut in second_end + 1..log.len() {
            let scan = scan_frames(&log[..cut]);
            assert_eq!(scan.payloads.len(), 2, "cut at {cut}");
            assert_eq!(scan.end, ScanEnd::Torn { offset: second_end }, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_is_corrupt_and_nothing_after_it_is_trusted() {
        let mut log = three_frames();
        log[FRAME_HEADER_BYTES + 1] ^= 0x10; // inside "one"
        let scan = scan_frames(&log);
        assert!(scan.payloads.is_empty());
        assert_eq!(scan.end, ScanEnd::Corrupt { offset: 0 });
    }

    #[test]
    fn an_absurd_length_is_corrupt_not_an_allocation() {
        let mut log = three_frames();
        log[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan_frames(&log).end, ScanEnd::Corrupt { offset: 0 });
    }
}
