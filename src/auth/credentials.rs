//! Where methods look users up: the `CredentialStore` trait and `MemoryCredentialStore`, and
//! `ScramUsers`, the `[[mqtt.scram_users]]` of the config: their keys are derived while the config is
//! read, once for the whole process, so no configured password is kept anywhere (not in the config, not
//! per shard). Mosquitto password files are read by `password_file`.

use std::fmt;
use std::sync::Arc;

use ahash::AHashMap;
use serde::{Deserialize, Deserializer};

use super::scram::{hmac_sha256, sha256, ScramSha256};

/// PBKDF2 iterations for keys derived from configured passwords: the minimum RFC 7677 section 4 asks for.
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Bytes of random salt per derived user.
const SALT_BYTES: usize = 16;

/// One `[[mqtt.scram_users]]` entry as written in the config; lives only while the config is read.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScramUser {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for ScramUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramUser").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// What a SCRAM server stores per user (RFC 5802 section 3): enough to verify a proof and to sign, not to
/// log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramCredentials {
    /// Derives the stored keys from a password (SaltedPassword = PBKDF2-HMAC-SHA-256). The password is
    /// used as its UTF-8 bytes: SASLprep is not applied, so non-ASCII passwords must be configured in the
    /// form clients send.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramCredentials {
        let mut salted_password = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut salted_password);
        let client_key = hmac_sha256(&salted_password, &[b"Client Key"]);
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted_password, &[b"Server Key"]),
        }
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

/// Answers what a method needs to know about a user. Shared by every shard, so `Send + Sync`.
pub trait CredentialStore: Send + Sync {
    /// The user's SCRAM-SHA-256 keys; None when the user is unknown (or has none).
    fn scram_sha256(&self, username: &str) -> Option<ScramCredentials>;
}

/// Users held in memory, from the config.
#[derive(Default)]
pub struct MemoryCredentialStore {
    scram: AHashMap<String, ScramCredentials>,
}

impl MemoryCredentialStore {
    /// Derives every user's keys with a fresh random salt ([`SCRAM_ITERATIONS`] rounds each).
    /// Panics only when the operating system has no random source.
    pub fn from_users(users: &[ScramUser]) -> MemoryCredentialStore {
        let mut store = MemoryCredentialStore::default();
        for user in users {
            let mut salt = [0u8; SALT_BYTES];
            getrandom::fill(&mut salt).expect("the OS random source works (salts for scram_users)");
            store.insert(&user.username, ScramCredentials::derive(&user.password, &salt, SCRAM_ITERATIONS));
        }
        store
    }

    pub fn insert(&mut self, username: &str, credentials: ScramCredentials) {
        self.scram.insert(username.to_owned(), credentials);
    }

    pub fn is_empty(&self) -> bool {
        self.scram.is_empty()
    }
}

impl CredentialStore for MemoryCredentialStore {
    fn scram_sha256(&self, username: &str) -> Option<ScramCredentials> {
        self.scram.get(username).cloned()
    }
}

/// The SCRAM-SHA-256 users of the config, as derived keys behind the method that serves them (built
/// once; every shard shares it). Deserialized from `[[mqtt.scram_users]]`: the passwords are hashed as the
/// file is read and dropped with the parser's copy.
#[derive(Clone, Default)]
pub struct ScramUsers {
    usernames: Vec<String>,
    method: Option<Arc<ScramSha256>>,
}

impl ScramUsers {
    /// Derives every user's keys ([`MemoryCredentialStore::from_users`]); empty = SCRAM not offered.
    pub fn from_users(users: &[ScramUser]) -> ScramUsers {
        if users.is_empty() {
            return ScramUsers::default();
        }
        let store = Arc::new(MemoryCredentialStore::from_users(users));
        ScramUsers {
            usernames: users.iter().map(|user| user.username.clone()).collect(),
            method: Some(Arc::new(ScramSha256::new(store))),
        }
    }

    /// The SCRAM-SHA-256 method over these users; `None` when there are none.
    pub fn method(&self) -> Option<Arc<ScramSha256>> {
        self.method.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.usernames.is_empty()
    }
}

impl<'de> Deserialize<'de> for ScramUsers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let users = Vec::<ScramUser>::deserialize(deserializer)?;
        Ok(ScramUsers::from_users(&users))
    }
}

impl fmt::Debug for ScramUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ScramUsers").field(&self.usernames).finish()
    }
}

impl PartialEq for ScramUsers {
    /// The same users (keys are salted afresh each time, so they cannot be compared).
    fn eq(&self, other: &Self) -> bool {
        self.usernames == other.usernames
    }
}

impl Eq for ScramUsers {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_get_distinct_salts_and_only_derived_keys() {
        let users = [
            ScramUser { username: "alice".into(), password: "secret".into() },
            ScramUser { username: "bob".into(), password: "secret".into() },
        ];
        let store = MemoryCredentialStore::from_users(&users);
        let alice = store.scram_sha256("alice").expect("alice configured");
        let bob = store.scram_sha256("bob").expect("bob configured");
        assert_eq!(alice.iterations, SCRAM_ITERATIONS);
        assert_ne!(alice.salt, bob.salt, "same password, different salts");
        assert_ne!(alice.stored_key, bob.stored_key);
        assert_eq!(alice, ScramCredentials::derive("secret", &alice.salt, SCRAM_ITERATIONS));
        assert!(store.scram_sha256("carol").is_none());
    }

    #[test]
    fn scram_users_from_the_config_keep_no_password() {
        #[derive(Deserialize)]
        struct Table {
            scram_users: ScramUsers,
        }
        let table: Table = toml::from_str("[[scram_users]]\nusername = \"alice\"\npassword = \"hunter2\"\n").unwrap();
        assert!(table.scram_users.method().is_some());
        assert!(!format!("{:?}", table.scram_users).contains("hunter2"));
        assert!(ScramUsers::default().method().is_none());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let user = ScramUser { username: "alice".into(), password: "hunter2".into() };
        assert!(!format!("{user:?}").contains("hunter2"));
        let credentials = ScramCredentials::derive("hunter2", b"salt", 1);
        assert!(!format!("{credentials:?}").contains("key"));
    }
}
