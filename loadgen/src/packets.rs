//! The packets a load client sends, built as `shardmq::protocol` values and encoded with its codec, so
//! loadgen exercises the same codec the broker uses.

use bytes::{BufMut, BytesMut};
use shardmq::protocol::{
    encode_packet, ByteStr, Connect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

/// Largest packet loadgen accepts from a broker.
pub const PACKET_BYTES_MAX: u32 = 16 * 1024 * 1024;

pub fn protocol_version(level: u8) -> ProtocolVersion {
    if level == 5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V3_1_1
    }
}

pub fn qos(level: u8) -> QoS {
    QoS::from_u8(level).unwrap_or(QoS::AtMostOnce)
}

pub fn connect(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    keepalive_secs: u16,
    session_expiry_secs: u32,
) -> Packet {
    let mut properties = Properties::default();
    if version.is_v5() && session_expiry_secs > 0 {
        properties.session_expiry_interval_secs = Some(session_expiry_secs);
    }
    Packet::Connect(Box::new(Connect {
        version,
        clean_start,
        keep_alive_secs: keepalive_secs,
        client_id: ByteStr::from(client_id),
        will: None,
        username: None,
        password: None,
        properties,
    }))
}

/// One SUBSCRIBE carrying every filter, all at `qos`.
pub fn subscribe(filters: &[String], qos: QoS) -> Packet {
    let options = SubscriptionOptions { qos, ..SubscriptionOptions::default() };
    let filters = filters.iter().map(|filter| (ByteStr::from(filter.as_str()), options)).collect();
    Packet::Subscribe(Subscribe { packet_id: 1, filters, properties: Properties::default() })
}

/// A PUBLISH whose payload is `stamp` followed by zeros up to `payload_bytes`.
pub fn publish(topic: &ByteStr, qos: QoS, packet_id: u16, stamp: &[u8], payload_bytes: usize) -> Packet {
    let mut payload = BytesMut::with_capacity(payload_bytes.max(stamp.len()));
    payload.put_slice(stamp);
    payload.put_bytes(0, payload_bytes.saturating_sub(stamp.len()));
    Packet::Publish(Publish { qos, topic: topic.clone(), packet_id, payload: payload.freeze(), ..Publish::default() })
}

pub fn response(packet_id: u16) -> PubResponse {
    PubResponse { packet_id, ..PubResponse::default() }
}

/// Encodes into `out`; the packets above are always valid, so a failure is a bug worth a loud message.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), String> {
    encode_packet(packet, version, out).map_err(|err| format!("encoding {:?}: {err}", packet.packet_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardmq::protocol::decode_packet;

    #[test]
    fn publish_decodes_back_with_the_stamp_and_padding_for_both_versions() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut out = BytesMut::new();
            let stamp = [9u8; 20];
            encode(&publish(&ByteStr::from("a/b"), QoS::AtLeastOnce, 7, &stamp, 64), version, &mut out).unwrap();
            let packet = decode_packet(&mut out, version, PACKET_BYTES_MAX).unwrap().unwrap();
            let Packet::Publish(decoded) = packet else { panic!("PUBLISH expected, got {packet:?}") };
            let payload = decoded.payload;
            assert_eq!(payload.len(), 64);
            assert_eq!(&payload[..20], &stamp);
            assert!(out.is_empty());
        }
    }
}
