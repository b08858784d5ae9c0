//! The MQTT 3.1 / 3.1.1 / 5.0 codec: packet types, streaming decode with strict validation, and encoding
//! into a caller's buffer. Pure functions over bytes; no I/O.

mod byte_str;
mod decode;
mod encode;
mod encoded_publish;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
pub mod wire;

pub use byte_str::ByteStr;
pub use decode::decode_packet;
pub use encode::encode_packet;
pub use encoded_publish::{Delivery, EncodedPublish, PublishFrame};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;
