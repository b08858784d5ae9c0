//! Target `decode`: arbitrary bytes decoded as back-to-back packets at every protocol level with a small
//! maximum packet size. The decoder must never panic nor allocate from an unchecked length, and every
//! packet it accepts must encode and decode again to an equal packet.

use bytes::BytesMut;

use crate::protocol::{decode_packet, encode_packet, ProtocolVersion};

const MAX_PACKET_SIZE_BYTES: u32 = 64 * 1024;

pub fn check(data: &[u8]) {
    for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        check_version(data, version);
    }
}

/// Decodes `data` at `version` until it runs dry or an error ends the "connection", re-encoding each packet.
pub fn check_version(data: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decode_packet(&mut buf, version, MAX_PACKET_SIZE_BYTES) {
        let mut encoded = BytesMut::new();
        encode_packet(&packet, version, &mut encoded).expect("a decoded packet encodes");
        let again = decode_packet(&mut encoded, version, u32::MAX).expect("a re-encoded packet decodes");
        assert_eq!(again.as_ref(), Some(&packet), "re-encoding changed the packet");
        assert!(encoded.is_empty(), "re-encoding produced trailing bytes");
    }
}
