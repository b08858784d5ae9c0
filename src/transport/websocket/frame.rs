//! RFC 6455 section 5 framing: the frame header read in pieces, payload unmasking, and the unmasked
//! headers and close payloads a server writes. No policy here (which frames are allowed is the
//! transport's business), except what makes a header unreadable.

use bytes::{BufMut, BytesMut};

/// The opcodes RFC 6455 section 5.2 defines (the others are reserved).
pub const OPCODE_CONTINUATION: u8 = 0x0;
pub const OPCODE_TEXT: u8 = 0x1;
pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;

/// Control frames carry at most this many payload bytes (RFC 6455 5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Longest header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
const HEADER_BYTES_MAX: usize = 14;

/// One frame's header as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 in the low three bits (non-zero only with an extension, and we negotiate none).
    pub reserved_bits: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_bytes: u64,
}

impl FrameHeader {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// The header's first bytes as they arrive; yields the header once all of it is there.
#[derive(Debug, Default)]
pub struct HeaderReader {
    bytes: [u8; HEADER_BYTES_MAX],
    len: usize,
}

/// Why a header cannot be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthMsbSet;

impl HeaderReader {
    /// Take header bytes from the front of `input`; returns how many were taken and the header once
    /// complete (the reader is then empty for the next one).
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, Option<FrameHeader>), LengthMsbSet> {
        let mut taken = 0;
        loop {
            let needed = self.needed_bytes();
            if self.len == needed {
                let header = self.decode()?;
                self.len = 0;
                return Ok((taken, Some(header)));
            }
            let step = (needed - self.len).min(input.len() - taken);
            if step == 0 {
                return Ok((taken, None));
            }
            self.bytes[self.len..self.len + step].copy_from_slice(&input[taken..taken + step]);
            self.len += step;
            taken += step;
        }
    }

    /// Header bytes needed given what has arrived (2 until the length byte is known).
    fn needed_bytes(&self) -> usize {
        if self.len < 2 {
            return 2;
        }
        let extended = match self.bytes[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.bytes[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn decode(&self) -> Result<FrameHeader, LengthMsbSet> {
        let [first, second] = [self.bytes[0], self.bytes[1]];
        let (payload_bytes, mask_at) = match second & 0x7F {
            126 => (u64::from(u16::from_be_bytes([self.bytes[2], self.bytes[3]])), 4),
            127 => {
                let mut length = [0u8; 8];
                length.copy_from_slice(&self.bytes[2..10]);
                let length = u64::from_be_bytes(length);
                // RFC 6455 5.2: "the most significant bit MUST be 0".
                if length >> 63 != 0 {
                    return Err(LengthMsbSet);
                }
                (length, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = (second & 0x80 != 0).then(|| {
            let mut key = [0u8; 4];
            key.copy_from_slice(&self.bytes[mask_at..mask_at + 4]);
            key
        });
        Ok(FrameHeader {
            fin: first & 0x80 != 0,
            reserved_bits: (first >> 4) & 0x7,
            opcode: first & 0x0F,
            mask,
            payload_bytes,
        })
    }
}

/// XOR `payload` with `mask`, `payload[0]` being byte `offset` of the frame's payload (RFC 6455 5.3).
pub fn unmask(payload: &mut [u8], mask: [u8; 4], offset: u64) {
    let mut key = mask;
    key.rotate_left((offset % 4) as usize);
    // Eight bytes at a time: the unmasking of a large PUBLISH is the only per-byte work we do.
    let word = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (index, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// Append a final, unmasked server frame header for `payload_bytes` (RFC 6455 5.2, minimal length).
pub fn put_server_header(out: &mut BytesMut, opcode: u8, payload_bytes: usize) {
    out.put_u8(0x80 | opcode);
    if payload_bytes < 126 {
        out.put_u8(payload_bytes as u8);
    } else if let Ok(short) = u16::try_from(payload_bytes) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(payload_bytes as u64);
    }
}

/// A whole close frame from the server with `code` and a reason cut to fit a control frame (RFC 6455
/// 5.5.1); `None` = no status code (answering a close that had none).
pub fn put_close_frame(out: &mut BytesMut, code: Option<u16>, reason: &str) {
    let Some(code) = code else {
        put_server_header(out, OPCODE_CLOSE, 0);
        return;
    };
    let mut cut = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    put_server_header(out, OPCODE_CLOSE, 2 + cut);
    out.put_u16(code);
    out.put_slice(&reason.as_bytes()[..cut]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> FrameHeader {
        let mut reader = HeaderReader::default();
        let (taken, header) = reader.push(bytes).unwrap();
        assert_eq!(taken, bytes.len());
        header.unwrap()
    }

    #[test]
    fn short_masked_header_is_read() {
        let header = read_all(&[0x82, 0x85, 1, 2, 3, 4]);
        assert_eq!(
            header,
            FrameHeader { fin: true, reserved_bits: 0, opcode: 2, mask: Some([1, 2, 3, 4]), payload_bytes: 5 }
        );
    }

    #[test]
    fn extended_lengths_are_read() {
        assert_eq!(read_all(&[0x02, 0xFE, 0x01, 0x00, 9, 9, 9, 9]).payload_bytes, 256);
        let header = read_all(&[0x00, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 9, 9, 9, 9]);
        assert_eq!(header.payload_bytes, 1 << 32);
        assert!(!header.fin);
        assert_eq!(header.opcode, OPCODE_CONTINUATION);
    }

    #[test]
    fn header_read_one_byte_at_a_time_stops_at_its_end() {
        let bytes = [0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4, 0xAA];
        let mut reader = HeaderReader::default();
        for &byte in &bytes[..7] {
            assert_eq!(reader.push(&[byte]), Ok((1, None)));
        }
        let (taken, header) = reader.push(&bytes[7..]).unwrap();
        assert_eq!(taken, 1, "the payload byte after the header is left");
        assert_eq!(header.unwrap().payload_bytes, 126);
    }

    #[test]
    fn length_with_most_significant_bit_set_is_unreadable() {
        let mut reader = HeaderReader::default();
        assert_eq!(reader.push(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]), Err(LengthMsbSet));
    }

    #[test]
    fn unmask_matches_the_byte_wise_definition_at_every_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let original: Vec<u8> = (0..37).collect();
        for offset in 0..8u64 {
            let mut data = original.clone();
            unmask(&mut data, mask, offset);
            for (index, (&got, &plain)) in data.iter().zip(&original).enumerate() {
                assert_eq!(got, plain ^ mask[((offset as usize) + index) % 4]);
            }
        }
    }

    #[test]
    fn server_headers_use_the_minimal_length_encoding() {
        let encode = |len| {
            let mut out = BytesMut::new();
            put_server_header(&mut out, OPCODE_BINARY, len);
            out.to_vec()
        };
        assert_eq!(encode(125), vec![0x82, 125]);
        assert_eq!(encode(126), vec![0x82, 126, 0, 126]);
        assert_eq!(encode(65_535), vec![0x82, 126, 0xFF, 0xFF]);
        assert_eq!(encode(65_536), vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_reason_is_cut_to_a_control_frame_on_a_char_boundary() {
        let mut out = BytesMut::new();
        put_close_frame(&mut out, Some(1002), &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        let len = out[1] as usize;
        assert!(len <= CONTROL_PAYLOAD_BYTES_MAX);
        assert_eq!(&out[2..4], &1002u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..2 + len]).is_ok());
        let mut empty = BytesMut::new();
        put_close_frame(&mut empty, None, "ignored");
        assert_eq!(&empty[..], &[0x88, 0]);
    }
}
