//! The MQTT data representations (section 1.5): a bounds-checked `Reader` over one packet's body that
//! hands out zero-copy `Bytes` slices, and the matching writers into a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::packet::PacketType;
use super::ByteStr;

/// Largest value a Variable Byte Integer can carry (four bytes), hence the largest Remaining Length.
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// Longest string or binary field: its length is a two-byte integer.
pub const FIELD_LEN_MAX: usize = u16::MAX as usize;

/// Decodes a Variable Byte Integer from the front of `bytes`. `Ok(None)` when more bytes are needed;
/// otherwise the value and the number of bytes it took.
pub fn decode_variable_byte_integer(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(DecodeError::VariableByteIntegerNotMinimal);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::VariableByteIntegerTooLong);
    }
    Ok(None)
}

/// Reads the fields of one packet body. Every read is bounds-checked against `end`; running past it is
/// `UnexpectedEndOfPacket`.
pub(crate) struct Reader {
    bytes: Bytes,
    pos: usize,
    end: usize,
    packet_type: PacketType,
}

impl Reader {
    pub(crate) fn new(bytes: Bytes, packet_type: PacketType) -> Reader {
        let end = bytes.len();
        Reader { bytes, pos: 0, end, packet_type }
    }

    pub(crate) fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn past_end(&self) -> DecodeError {
        DecodeError::UnexpectedEndOfPacket { packet_type: self.packet_type }
    }

    /// Narrows the readable range to the next `len` bytes; returns the old end for [`Reader::restore_end`].
    pub(crate) fn limit_to(&mut self, len: usize) -> usize {
        let old_end = self.end;
        self.end = self.pos + len;
        old_end
    }

    pub(crate) fn restore_end(&mut self, end: usize) {
        self.end = end;
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= self.end {
            return Err(self.past_end());
        }
        let value = self.bytes[self.pos];
        self.pos += 1;
        Ok(value)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let slice = self.raw(2)?;
        Ok(u16::from_be_bytes([slice[0], slice[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let slice = self.raw(4)?;
        Ok(u32::from_be_bytes([slice[0], slice[1], slice[2], slice[3]]))
    }

    pub(crate) fn variable_byte_integer(&mut self) -> Result<u32, DecodeError> {
        match decode_variable_byte_integer(&self.bytes[self.pos..self.end])? {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None => Err(self.past_end()),
        }
    }

    /// The next `len` bytes as a borrowed slice.
    fn raw(&mut self, len: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < len {
            return Err(self.past_end());
        }
        let start = self.pos;
        self.pos += len;
        Ok(&self.bytes[start..self.pos])
    }

    /// The next `len` bytes as a shared slice of the packet (no copy).
    fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < len {
            return Err(self.past_end());
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.bytes.slice(start..self.pos))
    }

    /// Binary Data: two-byte length, then that many bytes (section 1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Binary Data compared in place without taking a slice (for the protocol name).
    pub(crate) fn binary_borrowed(&mut self) -> Result<&[u8], DecodeError> {
        let len = self.u16()?;
        self.raw(usize::from(len))
    }

    /// UTF-8 Encoded String: well-formed [MQTT-1.5.4-1] and without U+0000 [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<ByteStr, DecodeError> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        ByteStr::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Everything up to the end of the packet (the PUBLISH payload). Hands over the reader's own reference to
    /// the packet rather than taking a new one (saving a reference-count round trip); the reader is empty
    /// afterwards.
    pub(crate) fn take_rest(&mut self) -> Bytes {
        let mut rest = std::mem::take(&mut self.bytes);
        rest.truncate(self.end);
        rest.advance(self.pos);
        self.pos = 0;
        self.end = 0;
        rest
    }

    /// Fails when bytes remain after the last field.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { packet_type: self.packet_type, count }),
        }
    }
}

/// Bytes a Variable Byte Integer of `value` takes.
pub fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`VARIABLE_BYTE_INTEGER_MAX`], checked by the caller) as a Variable Byte Integer.
pub fn put_variable_byte_integer(out: &mut BytesMut, value: usize) {
    debug_assert!(value <= VARIABLE_BYTE_INTEGER_MAX as usize);
    let mut rest = value;
    loop {
        let byte = (rest % 128) as u8;
        rest /= 128;
        if rest == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Wire size of a string or binary field (two-byte length prefix included), checking its limit.
pub fn field_len(len_bytes: usize) -> Result<usize, EncodeError> {
    if len_bytes > FIELD_LEN_MAX {
        return Err(EncodeError::FieldTooLong { len_bytes });
    }
    Ok(2 + len_bytes)
}

/// Writes a string or binary field whose length was checked by [`field_len`].
pub fn put_field(out: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= FIELD_LEN_MAX);
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

/// Writes the fixed header: the first byte and the Remaining Length.
pub fn put_fixed_header(out: &mut BytesMut, first_byte: u8, remaining_bytes: usize) -> Result<(), EncodeError> {
    if remaining_bytes > VARIABLE_BYTE_INTEGER_MAX as usize {
        return Err(EncodeError::PacketTooLarge { remaining_bytes });
    }
    out.reserve(1 + variable_byte_integer_len(remaining_bytes) + remaining_bytes);
    out.put_u8(first_byte);
    put_variable_byte_integer(out, remaining_bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_byte_integer_boundaries() {
        for value in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut out = BytesMut::new();
            put_variable_byte_integer(&mut out, value);
            assert_eq!(out.len(), variable_byte_integer_len(value));
            assert_eq!(decode_variable_byte_integer(&out), Ok(Some((value as u32, out.len()))));
            assert_eq!(decode_variable_byte_integer(&out[..out.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn variable_byte_integer_rejects_five_bytes_and_padding_mqtt_1_5_5_1() {
        assert_eq!(
            decode_variable_byte_integer(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::VariableByteIntegerTooLong)
        );
        assert_eq!(decode_variable_byte_integer(&[0x80, 0x00]), Err(DecodeError::VariableByteIntegerNotMinimal));
    }
}
