//! Client authentication and authorization: who may connect, and what a connected client may publish,
//! subscribe to and receive.
//!
//! - `access`: the seam the broker core calls: `Authenticator` (CONNECT), `Authorizer` (publish /
//!   subscribe / deliver), `ListenerId`, the `[auth]` settings, and `AccessControl`, which holds every
//!   listener's hooks, is built once at start, shared by all shards and rebuilt by a reload.
//! - `dynsec`: Mosquitto's dynamic security (clients, groups, roles in its JSON file, changed at run time
//!   through `$CONTROL/dynamic-security/v1`, as `mosquitto_ctrl dynsec` does), checked without locks.
//! - `password_file`, `acl_file`: Mosquitto's password file (`$7$` PBKDF2-SHA512 and `$6$` SHA-512) and
//!   ACL file, read unchanged; `passwd`: the `shardmq passwd` command (like `mosquitto_passwd`).
//! - `method`: MQTT 5 enhanced authentication: the `AuthMethod` trait (one per Authentication Method
//!   name), the per-connection `AuthExchange` state machine, and the `AuthMethods` registry.
//! - `token`: scoped tokens with a lifetime made through the HTTP API (`TokenStore`, `TokenGrant`), accepted
//!   as MQTT credentials on every listener; stored hashed in a JSON file.
//! - `external`: the HTTP backend (`[auth.http]`): CONNECT and PUBLISH / SUBSCRIBE checks POSTed as
//!   JSON by worker threads off the shards, answers cached per shard, fail closed.
//! - `credentials`: the `CredentialStore` trait and the SCRAM users of the config (keys derived once);
//!   `scram`: SCRAM-SHA-256 (RFC 5802 + RFC 7677), the built-in method.
//!
//! Everything here is sans-I/O except loading the files; what is built at start is immutable and
//! `Send + Sync`. Per-connection exchanges live on the shard that owns the connection.

mod access;
mod acl_file;
mod credentials;
pub mod dynsec;
pub mod external;
mod method;
pub mod passwd;
mod password_file;
mod replace_file;
mod scram;
mod token;

pub use access::{
    AccessControl, AuthDecision, AuthLoadError, AuthSettings, Authenticator, Authorizer, ClientIdentity,
    ConnectRequest, ListenerAccess, ListenerId, PasswordAuthenticator,
};
pub use acl_file::{Access, AclFile, AclFileError, AclSubject};
pub use credentials::{
    CredentialStore, MemoryCredentialStore, ScramCredentials, ScramUser, ScramUsers, SCRAM_ITERATIONS,
};
pub use method::{AuthExchange, AuthFailure, AuthMethod, AuthMethods, Authenticated, FailureKind, Step};
pub use password_file::{PasswordFile, PasswordFileError, PasswordHash, PBKDF2_ITERATIONS, SALT_BYTES};
pub use scram::{ScramSha256, SCRAM_SHA_256};
pub use token::{filter_covers, unix_secs, TokenEnd, TokenError, TokenGrant, TokenRule, TokenStore, TOKEN_PREFIX};
