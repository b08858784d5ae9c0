//! The seam between the broker core and who may do what: an `Authenticator` answers a CONNECT, an
//! `Authorizer` answers publish / subscribe / deliver checks, both per listener, and `AccessControl` holds
//! them all.
//!
//! `AccessControl` is built once at start from the `[auth]` settings (one `AuthSettings` per listener,
//! index = `ListenerId`), is immutable, `Send + Sync`, and shared by every shard behind an `Arc`. A reload
//! ([`AccessControl::reload`]) re-reads the files into a new value, or returns the error (file:line) and
//! leaves the old one in use; the runtime hands the new `Arc` to each shard (`ShardCore::replace_access`).
//!
//! The built-in pair is Mosquitto's: `PasswordAuthenticator` (allow_anonymous + password file) and the
//! ACL file (`AclFile`). Checks are synchronous; `AuthDecision::Pending` is reserved for asynchronous
//! hooks (HTTP, plugins) that do not exist yet.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::acl_file::{AclFile, AclFileError, AclSubject};
use super::dynsec::{DynamicSecurity, DynsecAuthenticator, DynsecFileError};
use super::external::{ExternalAuth, HttpAuthSettings, PostgresAuthSettings};
use super::method::AuthFailure;
use super::password_file::{PasswordFile, PasswordFileError, PasswordHash};
use super::token::{TokenGrant, TokenStore, TOKEN_PREFIX};

/// The listener a connection arrived on: the index into the configured listeners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u16);

/// The `[auth]` table: Mosquitto's `allow_anonymous`, `password_file` and `acl_file`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Clients that give no user name may connect. Default true (as shardmq always allowed; Mosquitto 2
    /// defaults to false once a listener is configured).
    pub allow_anonymous: bool,
    /// Mosquitto password file (`shardmq passwd` or `mosquitto_passwd`): a client giving a user name must
    /// give that user's password. Without one, user names are accepted unchecked (as Mosquitto does).
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file: once set, clients may only publish, subscribe and receive what it grants.
    pub acl_file: Option<PathBuf>,
    /// The Common Name of the client's verified TLS certificate is its user name (Mosquitto's
    /// `use_identity_as_username`): the CONNECT's User Name and Password are not checked, and a client
    /// without a verified certificate is refused. Set from the listener's TLS settings, not from `[auth]`.
    #[serde(skip)]
    pub identity_as_username: bool,
    /// The JSON file of Mosquitto's dynamic security plugin (`mosquitto_ctrl dynsec init FILE admin`):
    /// its clients log in, its roles decide what they may do, and `mosquitto_ctrl dynsec` changes both at
    /// run time (the file is rewritten after each change). Not together with `password_file` / `acl_file`.
    pub dynamic_security_file: Option<PathBuf>,
    /// `[auth.http]`: an HTTP backend decides CONNECTs (`authenticate_url`, instead of `password_file`)
    /// and/or PUBLISH and SUBSCRIBE (`authorize_url`, instead of `acl_file`). One for the whole broker; a
    /// listener opts out with `[listeners.auth] external = false`.
    pub http: Option<HttpAuthSettings>,
    /// `[auth.postgres]`: PostgreSQL decides CONNECTs (`password_query`) and/or PUBLISH and SUBSCRIBE
    /// (`acl_query`), as `[auth.http]` does; not together with it.
    pub postgres: Option<PostgresAuthSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            identity_as_username: false,
            dynamic_security_file: None,
            http: None,
            postgres: None,
        }
    }
}

/// What a CONNECT presents.
#[derive(Clone, Copy, Debug)]
pub struct ConnectRequest<'a> {
    pub listener: ListenerId,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// Who the transport says the peer is (a TLS client certificate's identity), when it knows.
    pub peer_identity: Option<&'a str>,
}

/// An authenticator's answer to a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Connect; `username` is who the client is for authorization (None = anonymous).
    Allow { username: Option<String> },
    /// CONNACK with the failure's reason code (0x86 / 0x87; 3.x return codes 4 / 5), then close.
    Refuse(AuthFailure),
    /// The answer comes later: the listener's external backend (`[auth.http]`) decides; the core parks
    /// the CONNECT and asks it (`broker::external_auth`).
    Pending,
    /// Connect as the holder of this API token (`crate::auth::token`): its ACL, and only its ACL, decides
    /// what the client may do, on every listener.
    Token(Arc<TokenGrant>),
}

/// Decides CONNECTs. Synchronous today; see [`AuthDecision::Pending`].
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision;
}

/// Who an authorization check is about.
#[derive(Clone, Copy, Debug)]
pub struct ClientIdentity<'a> {
    pub listener: ListenerId,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

/// Decides what a connected client may do. Called on the shard thread for every check, so it must be
/// cheap and never block.
pub trait Authorizer: Send + Sync {
    /// May the client publish to `topic` (also checked for its will when the will is published)?
    fn may_publish(&self, client: &ClientIdentity<'_>, topic: &str) -> bool;
    /// May the client subscribe to `filter` (for a shared subscription: the filter after `$share/{group}/`)?
    fn may_subscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool;
    /// May the client receive a message published on `topic` (checked at every delivery)?
    fn may_receive(&self, client: &ClientIdentity<'_>, topic: &str) -> bool;
    /// May the client unsubscribe from `filter`? (Only dynamic security restricts it.)
    fn may_unsubscribe(&self, _client: &ClientIdentity<'_>, _filter: &str) -> bool {
        true
    }
}

impl Authorizer for AclFile {
    fn may_publish(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        AclFile::may_publish(self, subject(client), topic)
    }

    fn may_subscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        AclFile::may_subscribe(self, subject(client), filter)
    }

    fn may_receive(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        AclFile::may_receive(self, subject(client), topic)
    }
}

fn subject<'a>(client: &ClientIdentity<'a>) -> AclSubject<'a> {
    AclSubject { username: client.username, client_id: client.client_id }
}

/// Mosquitto's built-in authentication: `allow_anonymous` and an optional password file.
/// A listener with `use_identity_as_username`: the verified client certificate's Common Name is the user
/// name; the password file is not used for the listener (as in Mosquitto).
pub struct CertificateAuthenticator;

impl Authenticator for CertificateAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        match request.peer_identity {
            Some(common_name) if !common_name.is_empty() => {
                AuthDecision::Allow { username: Some(common_name.to_string()) }
            }
            _ => AuthDecision::Refuse(AuthFailure::not_authorized(
                "use_identity_as_username: no verified client certificate with a Common Name",
            )),
        }
    }
}

/// A listener whose CONNECTs the HTTP backend decides: always `Pending` (the core asks the backend).
pub struct ExternalAuthenticator;

impl Authenticator for ExternalAuthenticator {
    fn authenticate(&self, _request: &ConnectRequest<'_>) -> AuthDecision {
        AuthDecision::Pending
    }
}

pub struct PasswordAuthenticator {
    allow_anonymous: bool,
    passwords: Option<Arc<PasswordFile>>,
    /// Verified against for unknown users, so they take as long to refuse as a wrong password.
    decoy: PasswordHash,
}

impl PasswordAuthenticator {
    pub fn new(allow_anonymous: bool, passwords: Option<Arc<PasswordFile>>) -> PasswordAuthenticator {
        let decoy = PasswordHash::pbkdf2_with(
            b"decoy",
            vec![0; super::password_file::SALT_BYTES],
            super::password_file::PBKDF2_ITERATIONS,
        );
        PasswordAuthenticator { allow_anonymous, passwords, decoy }
    }
}

impl Authenticator for PasswordAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        let Some(username) = request.username else {
            if self.allow_anonymous {
                return AuthDecision::Allow { username: None };
            }
            return AuthDecision::Refuse(AuthFailure::not_authorized(
                "anonymous clients are not allowed (allow_anonymous = false)",
            ));
        };
        let Some(passwords) = &self.passwords else {
            return AuthDecision::Allow { username: Some(username.to_string()) };
        };
        let password = request.password.unwrap_or_default();
        match passwords.find(username) {
            Some(hash) if hash.verify(password) => AuthDecision::Allow { username: Some(username.to_string()) },
            Some(_) if request.password.is_none() => {
                AuthDecision::Refuse(AuthFailure::bad_credentials("no password given"))
            }
            Some(_) => AuthDecision::Refuse(AuthFailure::bad_credentials("wrong password")),
            None => {
                self.decoy.verify(password);
                AuthDecision::Refuse(AuthFailure::bad_credentials("user not in the password file"))
            }
        }
    }
}

/// Why the auth files cannot be loaded (at start: the broker exits; at reload: the old rules stay).
#[derive(Debug, thiserror::Error)]
pub enum AuthLoadError {
    #[error(transparent)]
    PasswordFile(#[from] PasswordFileError),
    #[error(transparent)]
    AclFile(#[from] AclFileError),
    #[error(transparent)]
    DynamicSecurity(#[from] DynsecFileError),
    #[error("dynamic_security_file decides who may connect and what they may do: do not set password_file or acl_file beside it")]
    DynamicSecurityWithFiles,
    #[error("{0}")]
    External(String),
    #[error("[auth.http] / [auth.postgres] and {file} would both decide {what}: set one")]
    ExternalWithFile { what: &'static str, file: &'static str },
    #[error("set [auth.http] or [auth.postgres], not both")]
    TwoExternalBackends,
}

/// The authenticator and authorizer of one listener.
#[derive(Clone)]
pub struct ListenerAccess {
    pub authenticator: Arc<dyn Authenticator>,
    /// None: no ACL, everything allowed (and no check is made at all).
    pub authorizer: Option<Arc<dyn Authorizer>>,
}

/// Every listener's authentication and authorization, built once and shared by all shards.
#[derive(Clone)]
pub struct AccessControl {
    /// Index = `ListenerId`; never empty.
    listeners: Vec<ListenerAccess>,
    /// What `reload` re-reads; empty for hand-built values.
    settings: Vec<AuthSettings>,
    /// Some listener has an authorizer: when false, the core skips every check.
    any_authorizer: bool,
    /// API tokens (`[http]`), accepted on every listener before its own authenticator is asked.
    tokens: Option<Arc<TokenStore>>,
    /// Dynamic security, when a listener uses it: the core hands it `$CONTROL/dynamic-security/v1`.
    dynsec: Option<Arc<DynamicSecurity>>,
    /// The HTTP backend (`[auth.http]`) and, per listener (index = `ListenerId`), whether it uses it.
    external: Option<Arc<ExternalAuth>>,
    external_listeners: Vec<bool>,
}

/// Two access controls are equal when they were loaded from the same settings (for comparing configs).
impl PartialEq for AccessControl {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl AccessControl {
    /// Anonymous clients allowed, user names unchecked, no ACL: what shardmq did before `[auth]`.
    pub fn allow_all() -> AccessControl {
        AccessControl::load(&[AuthSettings::default()]).expect("default auth settings read no file")
    }

    /// Reads every listener's files (`listeners[i]` is `ListenerId(i)`; empty = one default listener).
    /// A file named by several listeners is read once.
    pub fn load(listeners: &[AuthSettings]) -> Result<AccessControl, AuthLoadError> {
        AccessControl::load_keeping(listeners, Vec::new(), None)
    }

    /// `load`, reusing the dynamic security already running for a file (its state lives in memory and
    /// in its file, which it keeps current: reading it again would only race the commands).
    fn load_keeping(
        listeners: &[AuthSettings],
        mut dynsec_files: Vec<(PathBuf, Arc<DynamicSecurity>)>,
        mut external: Option<Arc<ExternalAuth>>,
    ) -> Result<AccessControl, AuthLoadError> {
        let default = [AuthSettings::default()];
        let settings = if listeners.is_empty() { &default[..] } else { listeners };
        let mut password_files: Vec<(PathBuf, Arc<PasswordFile>)> = Vec::new();
        let mut acl_files: Vec<(PathBuf, Arc<AclFile>)> = Vec::new();
        let mut built = Vec::with_capacity(settings.len());
        let mut dynsec = None;
        let mut external_listeners = Vec::with_capacity(settings.len());
        for listener in settings {
            let http = match (&listener.http, &listener.postgres) {
                (Some(_), Some(_)) => return Err(AuthLoadError::TwoExternalBackends),
                (None, None) => None,
                (http, postgres) => {
                    let authenticates = http
                        .as_ref()
                        .map(|http| http.authenticate_url.is_some())
                        .or(postgres.as_ref().map(|postgres| postgres.password_query.is_some()))
                        .unwrap_or(false);
                    let authorizes = http
                        .as_ref()
                        .map(|http| http.authorize_url.is_some())
                        .or(postgres.as_ref().map(|postgres| postgres.acl_query.is_some()))
                        .unwrap_or(false);
                    if authenticates && listener.password_file.is_some() {
                        return Err(AuthLoadError::ExternalWithFile { what: "logins", file: "password_file" });
                    }
                    if authorizes && listener.acl_file.is_some() {
                        return Err(AuthLoadError::ExternalWithFile { what: "publish / subscribe", file: "acl_file" });
                    }
                    if external.is_none() {
                        let built = match (http, postgres) {
                            (Some(http), _) => ExternalAuth::new(http.clone()),
                            (_, Some(postgres)) => ExternalAuth::postgres(postgres.clone()),
                            (None, None) => unreachable!("matched above"),
                        };
                        external = Some(Arc::new(built.map_err(AuthLoadError::External)?));
                    }
                    external.clone()
                }
            };
            external_listeners.push(http.is_some());
            if let Some(path) = &listener.dynamic_security_file {
                if listener.password_file.is_some() || listener.acl_file.is_some() {
                    return Err(AuthLoadError::DynamicSecurityWithFiles);
                }
                let shared = load_once(&mut dynsec_files, path, DynamicSecurity::load)?;
                let authenticator = Arc::new(DynsecAuthenticator {
                    dynsec: Arc::clone(&shared),
                    allow_anonymous: listener.allow_anonymous,
                });
                built.push(ListenerAccess {
                    authenticator,
                    authorizer: Some(Arc::clone(&shared) as Arc<dyn Authorizer>),
                });
                dynsec.get_or_insert(shared);
                continue;
            }
            let passwords = match &listener.password_file {
                Some(path) => Some(load_once(&mut password_files, path, PasswordFile::load)?),
                None => None,
            };
            let authorizer = match &listener.acl_file {
                Some(path) => Some(load_once(&mut acl_files, path, AclFile::load)? as Arc<dyn Authorizer>),
                None => None,
            };
            let authenticator: Arc<dyn Authenticator> = if listener.identity_as_username {
                Arc::new(CertificateAuthenticator)
            } else if http.as_ref().is_some_and(|http| http.authenticates()) {
                Arc::new(ExternalAuthenticator)
            } else {
                Arc::new(PasswordAuthenticator::new(listener.allow_anonymous, passwords))
            };
            built.push(ListenerAccess { authenticator, authorizer });
        }
        let mut access = AccessControl::from_parts(built, settings.to_vec());
        access.dynsec = dynsec;
        if external_listeners.iter().any(|uses| *uses) {
            access.external = external;
            access.external_listeners = external_listeners;
        }
        Ok(access)
    }

    /// Hand-built hooks (tests, future plugins); `reload` of such a value returns it unchanged.
    pub fn from_listeners(listeners: Vec<ListenerAccess>) -> AccessControl {
        assert!(!listeners.is_empty(), "AccessControl needs at least one listener");
        AccessControl::from_parts(listeners, Vec::new())
    }

    fn from_parts(listeners: Vec<ListenerAccess>, settings: Vec<AuthSettings>) -> AccessControl {
        let any_authorizer = listeners.iter().any(|listener| listener.authorizer.is_some());
        AccessControl {
            listeners,
            settings,
            any_authorizer,
            tokens: None,
            dynsec: None,
            external: None,
            external_listeners: Vec::new(),
        }
    }

    /// The same access control that also accepts the store's tokens as credentials.
    pub fn with_tokens(mut self, tokens: Arc<TokenStore>) -> AccessControl {
        self.tokens = Some(tokens);
        self
    }

    /// The API token store, when the HTTP API is configured.
    pub fn tokens(&self) -> Option<&Arc<TokenStore>> {
        self.tokens.as_ref()
    }

    /// Re-reads the same files into a new value; on error (naming file:line) the caller keeps `self`.
    pub fn reload(&self) -> Result<AccessControl, AuthLoadError> {
        if self.settings.is_empty() {
            return Ok(self.clone());
        }
        let running = self.dynsec.iter().map(|dynsec| (dynsec.path().to_path_buf(), Arc::clone(dynsec))).collect();
        // The HTTP backend's workers keep running: its settings come from the config, which a reload keeps.
        let reloaded = AccessControl::load_keeping(&self.settings, running, self.external.clone())?;
        // Tokens live in their own store (changed through the API), not in the files a reload re-reads.
        Ok(AccessControl { tokens: self.tokens.clone(), ..reloaded })
    }

    /// The dynamic security in use, if a listener has one (the core gives it the control topic).
    pub fn dynamic_security(&self) -> Option<&Arc<DynamicSecurity>> {
        self.dynsec.as_ref()
    }

    /// The HTTP backend (`[auth.http]`), when a listener uses it (the runtime starts its workers).
    pub fn external(&self) -> Option<&Arc<ExternalAuth>> {
        self.external.as_ref()
    }

    /// The HTTP backend of this listener, if it uses one.
    pub fn external_for(&self, id: ListenerId) -> Option<&Arc<ExternalAuth>> {
        let uses = self.external_listeners.get(usize::from(id.0)).or(self.external_listeners.first());
        self.external.as_ref().filter(|_| uses.copied().unwrap_or(false))
    }

    /// Whether some listener sends PUBLISH / SUBSCRIBE checks to the HTTP backend.
    pub fn external_authorizes(&self) -> bool {
        self.external.as_ref().is_some_and(|external| external.authorizes())
    }

    /// The listener's hooks; an id beyond the configured listeners gets the first listener's.
    pub fn listener(&self, id: ListenerId) -> &ListenerAccess {
        self.listeners.get(usize::from(id.0)).unwrap_or(&self.listeners[0])
    }

    /// Whether any listener restricts what clients may do (false: the core makes no checks at all).
    pub fn authorizes(&self) -> bool {
        self.any_authorizer
    }

    /// An API token (as the User Name with an empty password, or as the Password) decides first; other
    /// credentials go to the listener's authenticator. Credentials shaped like a token that name no live
    /// token are refused rather than passed on, so a revoked token never logs in as a plain user name.
    pub fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        if let Some(tokens) = &self.tokens {
            if let Some(presented) = presented_token(request) {
                return match tokens.find(presented) {
                    Some(grant) => AuthDecision::Token(grant),
                    None => AuthDecision::Refuse(AuthFailure::bad_credentials("unknown, expired or revoked token")),
                };
            }
        }
        self.listener(request.listener).authenticator.authenticate(request)
    }

    pub fn may_publish(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        self.listener(client.listener).authorizer.as_ref().is_none_or(|acl| acl.may_publish(client, topic))
    }

    pub fn may_subscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        self.listener(client.listener).authorizer.as_ref().is_none_or(|acl| acl.may_subscribe(client, filter))
    }

    pub fn may_receive(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        self.listener(client.listener).authorizer.as_ref().is_none_or(|acl| acl.may_receive(client, topic))
    }

    pub fn may_unsubscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        self.listener(client.listener).authorizer.as_ref().is_none_or(|acl| acl.may_unsubscribe(client, filter))
    }
}

impl Default for AccessControl {
    fn default() -> Self {
        AccessControl::allow_all()
    }
}

impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessControl")
            .field("listeners", &self.listeners.len())
            .field("settings", &self.settings)
            .finish()
    }
}

/// The token a CONNECT presents: the Password when it looks like a token, else the User Name when it
/// looks like one and the password is empty or absent.
fn presented_token<'a>(request: &ConnectRequest<'a>) -> Option<&'a [u8]> {
    let prefix = TOKEN_PREFIX.as_bytes();
    if let Some(password) = request.password.filter(|password| password.starts_with(prefix)) {
        return Some(password);
    }
    let username = request.username.filter(|username| username.starts_with(TOKEN_PREFIX))?;
    request.password.is_none_or(<[u8]>::is_empty).then_some(username.as_bytes())
}

fn load_once<T, E>(
    cache: &mut Vec<(PathBuf, Arc<T>)>,
    path: &Path,
    load: fn(&Path) -> Result<T, E>,
) -> Result<Arc<T>, E> {
    if let Some((_, loaded)) = cache.iter().find(|(known, _)| known == path) {
        return Ok(Arc::clone(loaded));
    }
    let loaded = Arc::new(load(path)?);
    cache.push((path.to_path_buf(), Arc::clone(&loaded)));
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::FailureKind;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shardmq-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_certificate_listener_takes_the_common_name_and_ignores_the_connect_credentials() {
        let with_cert = ConnectRequest { peer_identity: Some("alice"), ..request(Some("mallory"), Some(b"whatever")) };
        assert_eq!(
            CertificateAuthenticator.authenticate(&with_cert),
            AuthDecision::Allow { username: Some("alice".into()) }
        );
        assert_eq!(
            refused_kind(CertificateAuthenticator.authenticate(&request(Some("alice"), Some(b"pw")))),
            Some(FailureKind::NotAuthorized),
            "no verified certificate: refused, whatever the CONNECT says"
        );
    }

    fn request<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> ConnectRequest<'a> {
        ConnectRequest { listener: ListenerId(0), client_id: "c", username, password, peer_identity: None }
    }

    fn refused_kind(decision: AuthDecision) -> Option<FailureKind> {
        match decision {
            AuthDecision::Refuse(failure) => Some(failure.kind),
            _ => None,
        }
    }

    #[test]
    fn the_password_file_decides_named_users_and_allow_anonymous_the_rest() {
        let mut file = PasswordFile::default();
        file.set("alice", PasswordHash::new_pbkdf2(b"secret"));
        let strict = PasswordAuthenticator::new(false, Some(Arc::new(file)));
        assert_eq!(
            strict.authenticate(&request(Some("alice"), Some(b"secret"))),
            AuthDecision::Allow { username: Some("alice".into()) }
        );
        assert_eq!(
            refused_kind(strict.authenticate(&request(Some("alice"), Some(b"nope")))),
            Some(FailureKind::BadCredentials)
        );
        assert_eq!(refused_kind(strict.authenticate(&request(Some("alice"), None))), Some(FailureKind::BadCredentials));
        assert_eq!(
            refused_kind(strict.authenticate(&request(Some("bob"), Some(b"secret")))),
            Some(FailureKind::BadCredentials)
        );
        assert_eq!(refused_kind(strict.authenticate(&request(None, None))), Some(FailureKind::NotAuthorized));
        let open = PasswordAuthenticator::new(true, None);
        assert_eq!(open.authenticate(&request(None, None)), AuthDecision::Allow { username: None });
        assert_eq!(
            open.authenticate(&request(Some("x"), None)),
            AuthDecision::Allow { username: Some("x".into()) },
            "no password file: user names unchecked, as Mosquitto"
        );
    }

    #[test]
    fn listeners_get_their_own_settings_and_unknown_ids_the_first() {
        let acl = temp_file("acl-listeners", "topic read public/#\n");
        let open = AuthSettings::default();
        let guarded = AuthSettings {
            allow_anonymous: false,
            password_file: None,
            acl_file: Some(acl),
            ..AuthSettings::default()
        };
        let access = AccessControl::load(&[open, guarded]).unwrap();
        assert!(access.authorizes());
        let anon = |listener| ClientIdentity { listener: ListenerId(listener), client_id: "c", username: None };
        assert!(access.may_publish(&anon(0), "anything"), "listener 0 has no ACL");
        assert!(!access.may_publish(&anon(1), "public/x") && access.may_receive(&anon(1), "public/x"));
        assert!(access.may_publish(&anon(7), "anything"), "unknown listener ids fall back to listener 0");
        let refused = access.authenticate(&ConnectRequest { listener: ListenerId(1), ..request(None, None) });
        assert_eq!(refused_kind(refused), Some(FailureKind::NotAuthorized));
        assert!(!AccessControl::allow_all().authorizes());
    }

    #[test]
    fn reload_reads_the_files_again_and_a_broken_file_keeps_the_old_rules() {
        let path = temp_file("acl-reload", "topic read a\n");
        let settings = AuthSettings { acl_file: Some(path.clone()), ..AuthSettings::default() };
        let first = AccessControl::load(&[settings]).unwrap();
        let anon = ClientIdentity { listener: ListenerId(0), client_id: "c", username: None };
        assert!(first.may_receive(&anon, "a") && !first.may_receive(&anon, "b"));
        std::fs::write(&path, "topic read b\n").unwrap();
        let second = first.reload().unwrap();
        assert!(second.may_receive(&anon, "b") && !second.may_receive(&anon, "a"));
        std::fs::write(&path, "topic read b\nbogus line\n").unwrap();
        let err = second.reload().unwrap_err().to_string();
        assert!(err.contains("acl-reload:2:"), "{err}");
        assert!(second.may_receive(&anon, "b"), "the old value is untouched");
    }

    #[test]
    fn load_errors_name_file_and_line() {
        let path = temp_file("pw-broken", "alice:$7$101$AAAA$AAAA\n");
        let settings = AuthSettings { password_file: Some(path), ..AuthSettings::default() };
        let err = AccessControl::load(&[settings]).expect_err("refused").to_string();
        assert!(err.contains("pw-broken:1:"), "{err}");
        let missing = AuthSettings { acl_file: Some("/nonexistent/acl".into()), ..AuthSettings::default() };
        let err = AccessControl::load(&[missing]).expect_err("refused").to_string();
        assert!(err.contains("/nonexistent/acl"), "{err}");
    }
}
