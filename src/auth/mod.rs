//! Client authentication: the seam the broker core calls for MQTT 5 enhanced authentication (v5 section
//! 4.12) and the stores credentials come from.
//!
//! - `method`: the `AuthMethod` trait (one per Authentication Method name), the per-connection
//!   `AuthExchange` state machine it starts, and `AuthMethods`, the registry the core looks names up in.
//! - `credentials`: the `CredentialStore` trait (what a method asks about a user) and the in-memory store
//!   built from the config. Other stores (a Mosquitto password file, token verifiers) and an ACL check
//!   plug in beside it behind the same traits; none exist yet.
//! - `scram`: SCRAM-SHA-256 (RFC 5802 + RFC 7677), the built-in method.
//!
//! Everything here is sans-I/O and per shard (`Rc`, no locks): each shard builds its own registry at start.

mod credentials;
mod method;
mod scram;

pub use credentials::{CredentialStore, MemoryCredentialStore, ScramCredentials, ScramUser, SCRAM_ITERATIONS};
pub use method::{AuthExchange, AuthFailure, AuthMethod, AuthMethods, Authenticated, FailureKind, Step};
pub use scram::{ScramSha256, SCRAM_SHA_256};
