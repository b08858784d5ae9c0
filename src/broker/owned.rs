//! Copies of decoded data that outlive their packet. Decoded strings and payloads are slices of the
//! shard's pooled read buffers; anything the core keeps for long (client ids, subscription filters, wills,
//! retained messages, topic aliases) is copied so it does not pin a whole read buffer per idle client.

use bytes::Bytes;

use crate::protocol::{ByteStr, Properties};

pub fn owned_str(text: &ByteStr) -> ByteStr {
    ByteStr::from(text.as_str())
}

pub fn owned_bytes(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// The properties of a published message that travel with it to subscribers (v5 section 3.3.2.3),
/// copied: the per-hop ones (topic alias, subscription identifiers, expiry, will delay) are dropped.
pub fn owned_forwarded_properties(properties: &Properties) -> Properties {
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        content_type: properties.content_type.as_ref().map(owned_str),
        response_topic: properties.response_topic.as_ref().map(owned_str),
        correlation_data: properties.correlation_data.as_ref().map(owned_bytes),
        user_properties: properties
            .user_properties
            .iter()
            .map(|(name, value)| (owned_str(name), owned_str(value)))
            .collect(),
        ..Properties::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_do_not_share_the_source_buffer() {
        let buffer = Bytes::from(b"client-1/topic".to_vec());
        let slice = ByteStr::from_utf8(buffer.slice(0..8)).expect("utf8");
        let copy = owned_str(&slice);
        assert_eq!(copy, "client-1");
        assert_ne!(copy.as_bytes().as_ptr(), buffer.as_ptr());
        let properties = Properties {
            content_type: Some(slice.clone()),
            topic_alias: Some(3),
            message_expiry_interval_secs: Some(9),
            user_properties: vec![(slice.clone(), slice)],
            ..Properties::default()
        };
        let owned = owned_forwarded_properties(&properties);
        assert_eq!(owned.content_type.as_deref(), Some("client-1"));
        assert_eq!(owned.topic_alias, None, "per-hop properties are dropped");
        assert_eq!(owned.message_expiry_interval_secs, None);
        assert_ne!(owned.user_properties[0].0.as_bytes().as_ptr(), buffer.as_ptr());
    }
}
