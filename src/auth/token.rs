//! Scoped access tokens with a lifetime, made by the HTTP API (`POST /api/v1/tokens`): a token is a
//! random secret that a client gives as its MQTT User Name (with an empty password) or as its Password
//! (with any User Name), or as an HTTP `Authorization: Bearer` value. Each token carries an ACL (topic
//! filters with `publish` and/or `subscribe`) that is the whole of what its holder may do.
//!
//! Only the SHA-256 of a token is kept, in memory and in the JSON file (`[http] tokens_file`) that makes
//! tokens survive a restart. A plain hash is enough, unlike for passwords: the secret is 32 random bytes,
//! so there is nothing to guess and a slow, salted hash (PBKDF2) would only make every CONNECT and HTTP
//! request cost milliseconds. The hash is also the lookup key, so a presented token is found without
//! comparing secrets byte by byte.
//!
//! A `TokenGrant` is shared (`Arc`) by the store and by every session that logged in with it; revoking or
//! expiring it flips its state at once for every shard, and the HTTP side then closes its clients.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::replace_file::{replace_file, FileMode};
use crate::protocol::topic::{topic_matches, validate_topic_filter};

/// Every token starts with this, so the authenticator knows a token from a password without a lookup.
pub const TOKEN_PREFIX: &str = "smqt_";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// Rules one token may carry.
pub const TOKEN_RULES_MAX: usize = 64;
/// Longest `info` text kept with a token, bytes.
pub const TOKEN_INFO_BYTES_MAX: usize = 1024;
/// Tokens kept at once (live ones; expired ones are removed).
pub const TOKENS_MAX: usize = 100_000;

/// One ACL rule of a token: a topic filter and what it allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRule {
    pub filter: String,
    pub publish: bool,
    pub subscribe: bool,
}

const LIVE: u8 = 0;
const EXPIRED: u8 = 1;
const REVOKED: u8 = 2;

/// Why a token no longer works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenEnd {
    /// Its lifetime passed: v5 clients get DISCONNECT 0xA0 (Maximum connect time).
    Expired,
    /// Deleted through the API: v5 clients get DISCONNECT 0x87 (Not authorized).
    Revoked,
}

/// What a token allows, shared by the store and the sessions that logged in with it.
#[derive(Debug)]
pub struct TokenGrant {
    /// Public name of the token (listing, revoking, logs); not a secret.
    pub id: String,
    pub rules: Vec<TokenRule>,
    pub expires_at: SystemTime,
    pub created_at: SystemTime,
    pub info: Option<String>,
    state: AtomicU8,
}

impl TokenGrant {
    pub fn new(
        id: String,
        rules: Vec<TokenRule>,
        created_at: SystemTime,
        expires_at: SystemTime,
        info: Option<String>,
    ) -> TokenGrant {
        TokenGrant { id, rules, expires_at, created_at, info, state: AtomicU8::new(LIVE) }
    }

    /// Live: neither revoked nor marked expired. The expiry itself is marked by the store's sweep (the HTTP
    /// server's expiry thread), so a check on the delivery path is one atomic load, no clock read.
    pub fn is_live(&self) -> bool {
        self.state.load(Ordering::Acquire) == LIVE
    }

    pub fn end(&self) -> Option<TokenEnd> {
        match self.state.load(Ordering::Acquire) {
            EXPIRED => Some(TokenEnd::Expired),
            REVOKED => Some(TokenEnd::Revoked),
            _ => None,
        }
    }

    fn mark(&self, end: TokenEnd) {
        let state = if end == TokenEnd::Expired { EXPIRED } else { REVOKED };
        self.state.store(state, Ordering::Release);
    }

    /// May its holder publish to the topic name `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        self.is_live() && self.rules.iter().any(|rule| rule.publish && topic_matches(&rule.filter, topic))
    }

    /// May its holder subscribe to `filter`? Only when one rule's filter covers every topic `filter` can
    /// match (`users/alice/#` covers `users/alice/+`, not `users/#`), so a refused subscription is refused in
    /// the SUBACK instead of being accepted and then silently filtered.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.is_live() && self.rules.iter().any(|rule| rule.subscribe && filter_covers(&rule.filter, filter))
    }

    /// May its holder receive a message published on `topic`?
    pub fn may_receive(&self, topic: &str) -> bool {
        self.is_live() && self.rules.iter().any(|rule| rule.subscribe && topic_matches(&rule.filter, topic))
    }
}

/// Two grants are the same token when their ids are equal (ids are random and never reused).
impl PartialEq for TokenGrant {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for TokenGrant {}

/// Whether every topic that `inner` matches is also matched by `outer` (both valid filters).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if outer.starts_with(['+', '#']) && inner.starts_with('$') {
        // A wildcard first level never matches `$` topics [MQTT-4.7.2-1].
        return false;
    }
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(o), Some(i)) if o == i && i != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a token cannot be made or the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("acl: between 1 and {TOKEN_RULES_MAX} rules")]
    RuleCount,
    #[error("acl filter {filter:?}: {reason}")]
    BadFilter { filter: String, reason: String },
    #[error("acl filter {filter:?}: actions must name \"publish\" and/or \"subscribe\"")]
    NoActions { filter: String },
    #[error("info: at most {TOKEN_INFO_BYTES_MAX} bytes")]
    InfoTooLong,
    #[error("ttl_seconds: between 1 and {max_secs}")]
    Ttl { max_secs: u64 },
    #[error("at most {TOKENS_MAX} tokens may exist at once")]
    TooMany,
    #[error("token file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// What the token file holds for one token (never the secret).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    id: String,
    sha256: String,
    rules: Vec<TokenRule>,
    created_at_unix_secs: u64,
    expires_at_unix_secs: u64,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// The tokens that exist, by the hash of their secret; shared by the HTTP server and the authenticator.
#[derive(Debug, Default)]
pub struct TokenStore {
    /// Where tokens are saved after every change; None keeps them in memory only (tests).
    path: Option<PathBuf>,
    by_hash: RwLock<HashMap<[u8; 32], Arc<TokenGrant>>>,
}

impl TokenStore {
    pub fn in_memory() -> TokenStore {
        TokenStore::default()
    }

    /// Reads the token file (a missing file is an empty store); tokens already expired are dropped.
    pub fn open(path: &Path, now: SystemTime) -> Result<TokenStore, TokenError> {
        let file_error = |reason: String| TokenError::File { path: path.to_path_buf(), reason };
        let mut by_hash = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: TokenFile = serde_json::from_str(&text).map_err(|err| file_error(err.to_string()))?;
                for stored in file.tokens {
                    let hash = decode_hash(&stored.sha256)
                        .ok_or_else(|| file_error(format!("token {}: sha256 is not 64 hex digits", stored.id)))?;
                    let grant = TokenGrant::new(
                        stored.id,
                        stored.rules,
                        UNIX_EPOCH + Duration::from_secs(stored.created_at_unix_secs),
                        UNIX_EPOCH + Duration::from_secs(stored.expires_at_unix_secs),
                        stored.info,
                    );
                    if grant.expires_at > now {
                        by_hash.insert(hash, Arc::new(grant));
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(file_error(err.to_string())),
        }
        Ok(TokenStore { path: Some(path.to_path_buf()), by_hash: RwLock::new(by_hash) })
    }

    /// Makes a token; returns its secret (shown once, never stored) and its grant. Saved before it is
    /// returned, so a token the caller has seen survives a restart.
    pub fn create(
        &self,
        rules: Vec<TokenRule>,
        ttl: Duration,
        info: Option<String>,
        now: SystemTime,
    ) -> Result<(String, Arc<TokenGrant>), TokenError> {
        check_rules(&rules)?;
        if info.as_ref().is_some_and(|info| info.len() > TOKEN_INFO_BYTES_MAX) {
            return Err(TokenError::InfoTooLong);
        }
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).expect("the OS random source works (token secret)");
        let mut id_bytes = [0u8; 8];
        getrandom::fill(&mut id_bytes).expect("the OS random source works (token id)");
        let token = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let id: String = id_bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let grant = Arc::new(TokenGrant::new(id, rules, now, now + ttl, info));
        let mut tokens = self.write();
        if tokens.len() >= TOKENS_MAX {
            return Err(TokenError::TooMany);
        }
        tokens.insert(hash_of(token.as_bytes()), Arc::clone(&grant));
        if let Err(err) = self.save(&tokens) {
            tokens.remove(&hash_of(token.as_bytes()));
            return Err(err);
        }
        Ok((token, grant))
    }

    /// The live token `presented` names, if any.
    pub fn find(&self, presented: &[u8]) -> Option<Arc<TokenGrant>> {
        if !presented.starts_with(TOKEN_PREFIX.as_bytes()) {
            return None;
        }
        let tokens = self.by_hash.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.get(&hash_of(presented)).filter(|grant| grant.is_live()).cloned()
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<Arc<TokenGrant>> {
        let tokens = self.by_hash.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut grants: Vec<Arc<TokenGrant>> = tokens.values().cloned().collect();
        grants.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        grants
    }

    /// Revokes the token with this id: it stops working at once and is removed from the file.
    pub fn revoke(&self, id: &str) -> Result<Option<Arc<TokenGrant>>, TokenError> {
        let mut tokens = self.write();
        let Some(hash) = tokens.iter().find(|(_, grant)| grant.id == id).map(|(hash, _)| *hash) else {
            return Ok(None);
        };
        let grant = tokens.remove(&hash);
        if let Some(grant) = &grant {
            grant.mark(TokenEnd::Revoked);
        }
        self.save(&tokens)?;
        Ok(grant)
    }

    /// Marks and removes the tokens whose lifetime has passed; returns them (their clients must go).
    pub fn remove_expired(&self, now: SystemTime) -> Vec<Arc<TokenGrant>> {
        let mut tokens = self.write();
        let mut expired = Vec::new();
        tokens.retain(|_, grant| {
            if grant.expires_at > now {
                return true;
            }
            grant.mark(TokenEnd::Expired);
            expired.push(Arc::clone(grant));
            false
        });
        if !expired.is_empty() {
            if let Err(err) = self.save(&tokens) {
                tracing::warn!("expired tokens removed in memory but not from the file: {err}");
            }
        }
        expired
    }

    /// When the next token expires.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        let tokens = self.by_hash.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.values().map(|grant| grant.expires_at).min()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], Arc<TokenGrant>>> {
        self.by_hash.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the whole file to a temporary name and renames it over the old one, so a crash leaves the
    /// old or the new file, never half of one. Mode 0600: the hashes are not secrets, the ACLs may be.
    fn save(&self, tokens: &HashMap<[u8; 32], Arc<TokenGrant>>) -> Result<(), TokenError> {
        let Some(path) = &self.path else { return Ok(()) };
        let file_error = |err: std::io::Error| TokenError::File { path: path.clone(), reason: err.to_string() };
        let mut stored: Vec<StoredToken> = tokens
            .iter()
            .map(|(hash, grant)| StoredToken {
                id: grant.id.clone(),
                sha256: hash.iter().map(|byte| format!("{byte:02x}")).collect(),
                rules: grant.rules.clone(),
                created_at_unix_secs: unix_secs(grant.created_at),
                expires_at_unix_secs: unix_secs(grant.expires_at),
                info: grant.info.clone(),
            })
            .collect();
        stored.sort_by(|a, b| (a.created_at_unix_secs, &a.id).cmp(&(b.created_at_unix_secs, &b.id)));
        let text = serde_json::to_string_pretty(&TokenFile { tokens: stored }).expect("token file serializes");
        replace_file(path, text.as_bytes(), FileMode::OwnerOnly).map_err(file_error)
    }
}

pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn check_rules(rules: &[TokenRule]) -> Result<(), TokenError> {
    if rules.is_empty() || rules.len() > TOKEN_RULES_MAX {
        return Err(TokenError::RuleCount);
    }
    for rule in rules {
        if let Err(err) = validate_topic_filter(&rule.filter) {
            return Err(TokenError::BadFilter { filter: rule.filter.clone(), reason: err.to_string() });
        }
        if rule.filter.starts_with("$share/") {
            let reason = "a $share/ form; name the topic filter itself".to_string();
            return Err(TokenError::BadFilter { filter: rule.filter.clone(), reason });
        }
        if !rule.publish && !rule.subscribe {
            return Err(TokenError::NoActions { filter: rule.filter.clone() });
        }
    }
    Ok(())
}

fn hash_of(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut hash = [0u8; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, publish: bool, subscribe: bool) -> TokenRule {
        TokenRule { filter: filter.into(), publish, subscribe }
    }

    #[test]
    fn a_filter_covers_only_filters_whose_every_topic_it_matches() {
        for (outer, inner) in [
            ("users/alice/#", "users/alice/+"),
            ("users/alice/#", "users/alice"),
            ("users/alice/#", "users/alice/#"),
            ("users/+/inbox", "users/bob/inbox"),
            ("users/+/inbox", "users/+/inbox"),
            ("#", "a/+/#"),
            ("a/b", "a/b"),
        ] {
            assert!(filter_covers(outer, inner), "{outer} covers {inner}");
        }
        for (outer, inner) in [
            ("users/alice/#", "users/#"),
            ("users/alice/#", "users/+/x"),
            ("users/+/inbox", "users/#"),
            ("users/+/inbox", "users/bob/inbox/x"),
            ("a/b", "a/+"),
            ("a/+", "a/#"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
        ] {
            assert!(!filter_covers(outer, inner), "{outer} does not cover {inner}");
        }
    }

    #[test]
    fn a_grant_allows_only_its_actions_and_nothing_once_revoked() {
        let store = TokenStore::in_memory();
        let rules = vec![rule("notify/alice/#", false, true), rule("in/alice", true, false)];
        let (token, grant) = store.create(rules, Duration::from_secs(60), None, SystemTime::now()).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        let found = store.find(token.as_bytes()).expect("found by its secret");
        assert!(found.may_subscribe("notify/alice/#") && found.may_receive("notify/alice/x"));
        assert!(!found.may_subscribe("notify/bob/#") && !found.may_receive("notify/bob/x"));
        assert!(!found.may_publish("notify/alice/x"), "subscribe-only rule");
        assert!(found.may_publish("in/alice") && !found.may_subscribe("in/alice"));
        assert!(store.find(b"smqt_not-a-token").is_none() && store.find(b"password").is_none());
        assert!(store.revoke(&grant.id).unwrap().is_some());
        assert_eq!(found.end(), Some(TokenEnd::Revoked));
        assert!(!found.may_receive("notify/alice/x"), "revocation reaches sessions holding the grant");
        assert!(store.find(token.as_bytes()).is_none());
    }

    #[test]
    fn tokens_survive_a_reopen_hashed_and_expired_ones_are_dropped() {
        let dir = std::env::temp_dir().join(format!("shardmq-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.json");
        let _ = std::fs::remove_file(&path);
        let now = SystemTime::now();
        let store = TokenStore::open(&path, now).unwrap();
        let (long, _) = store.create(vec![rule("a/#", true, true)], Duration::from_secs(3600), None, now).unwrap();
        let (short, _) = store.create(vec![rule("b", true, false)], Duration::from_secs(5), None, now).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&long[TOKEN_PREFIX.len()..]), "no secret in the file");
        let reopened = TokenStore::open(&path, now + Duration::from_secs(10)).unwrap();
        assert!(reopened.find(long.as_bytes()).is_some());
        assert!(reopened.find(short.as_bytes()).is_none(), "expired while the broker was down");
        assert_eq!(reopened.list().len(), 1);
    }

    #[test]
    fn expiry_marks_grants_and_removes_them() {
        let store = TokenStore::in_memory();
        let now = SystemTime::now();
        let (_, grant) = store.create(vec![rule("a", true, true)], Duration::from_secs(5), None, now).unwrap();
        assert_eq!(store.next_expiry(), Some(grant.expires_at));
        assert!(store.remove_expired(now + Duration::from_secs(4)).is_empty());
        let expired = store.remove_expired(now + Duration::from_secs(5));
        assert_eq!(expired.len(), 1);
        assert_eq!(grant.end(), Some(TokenEnd::Expired));
        assert!(!grant.may_publish("a"));
        assert_eq!(store.next_expiry(), None);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_filter() {
        let store = TokenStore::in_memory();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(5);
        assert!(matches!(store.create(vec![], ttl, None, now), Err(TokenError::RuleCount)));
        let err = store.create(vec![rule("a/#/b", true, false)], ttl, None, now).unwrap_err();
        assert!(err.to_string().contains("a/#/b"), "{err}");
        assert!(matches!(
            store.create(vec![rule("a", false, false)], ttl, None, now),
            Err(TokenError::NoActions { .. })
        ));
        assert!(store.create(vec![rule("$share/g/a", true, false)], ttl, None, now).is_err());
        assert!(store.list().is_empty());
    }
}
