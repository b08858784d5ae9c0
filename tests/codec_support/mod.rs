//! Raw-packet builders shared by the codec test tables (`codec_valid.rs`, `codec_malformed.rs`): cases are
//! written byte by byte, these only add the length prefixes.

/// The Remaining Length (variable byte integer) of `len`.
pub fn remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            return out;
        }
    }
}

/// A packet: first byte, Remaining Length of the concatenated `parts`, the parts.
pub fn pkt(first_byte: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    [&[first_byte][..], &remaining_length(body.len()), &body].concat()
}

/// A length-prefixed string or binary field.
pub fn s(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u16).to_be_bytes()[..], bytes].concat()
}

/// A property section: Property Length (variable byte integer), then the properties.
pub fn props(parts: &[&[u8]]) -> Vec<u8> {
    let content = parts.concat();
    [&remaining_length(content.len())[..], &content].concat()
}
