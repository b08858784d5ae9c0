//! The MQTT 3.1 / 3.1.1 / 5.0 codec: packet types, streaming decode with strict validation, and encoding
//! into a caller's buffer. Pure functions over bytes; no I/O.

mod byte_str;
pub mod packet;
pub mod properties;
pub mod reason;

pub use byte_str::ByteStr;
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;
