//! External authentication and authorization over HTTP (`[auth.http]`), as mosquitto-go-auth's and
//! EMQX's HTTP backends do: a CONNECT is POSTed as JSON to `authenticate_url`, a PUBLISH topic or
//! SUBSCRIBE filter to `authorize_url`, and the JSON answer allows or denies.
//!
//! - `ExternalAuth` (here): the settings, a bounded request queue and a few worker threads that make the
//!   calls, so a slow or hanging backend never blocks a shard. A shard posts a `Check` and goes on; the
//!   answer comes back through the reply sink the runtime installs (`ExternalAuth::start`: a control job
//!   on the asking shard), where the core completes or refuses what waited (`broker::external_auth`).
//! - `http_client`: one bounded blocking POST; `cache`: the per-shard `VerdictCache`.
//!
//! Fail closed: a timeout, refused connection, non-200 status, or an answer that is not the expected JSON
//! refuses (one warn line naming the backend, the URL and why), unless `fail_open = true`. Failures are
//! never cached.

mod cache;
mod http_client;
mod postgres;

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tracing::warn;

pub use cache::VerdictCache;
pub use http_client::{HttpCallError, HttpUrl};
pub use postgres::PostgresAuthSettings;

use postgres::{PostgresBackend, PostgresConnection};

use super::ListenerId;

/// `[auth.http]`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpAuthSettings {
    /// Where CONNECTs are checked; `None`: the listener's other settings (password file) decide them.
    pub authenticate_url: Option<String>,
    /// Where PUBLISH topics and SUBSCRIBE filters are checked; `None`: the ACL file (if any) decides.
    pub authorize_url: Option<String>,
    /// A call that has not answered within this is a failure (connect, send and answer together).
    pub timeout_ms: u64,
    /// How long a shard remembers an allow or deny; 0 = ask every time.
    pub cache_ttl_secs: u64,
    /// Answers each shard remembers at most.
    #[serde(alias = "cache_entries_max")]
    pub cache_max_entries: usize,
    /// Calls made at once (one worker thread each).
    pub requests_in_flight_max: usize,
    /// Checks waiting for a worker at most; past it a check fails at once (and is refused unless fail_open).
    pub queued_requests_max: usize,
    /// A failed call (timeout, connection refused, 5xx, bad JSON) allows instead of refusing.
    pub fail_open: bool,
}

impl Default for HttpAuthSettings {
    fn default() -> Self {
        HttpAuthSettings {
            authenticate_url: None,
            authorize_url: None,
            timeout_ms: 5000,
            cache_ttl_secs: 60,
            cache_max_entries: 10_000,
            requests_in_flight_max: 4,
            queued_requests_max: 1024,
            fail_open: false,
        }
    }
}

impl HttpAuthSettings {
    /// The URLs parse and the limits make sense (named in the error).
    pub fn validate(&self) -> Result<(), String> {
        for (field, url) in [("authenticate_url", &self.authenticate_url), ("authorize_url", &self.authorize_url)] {
            if let Some(url) = url {
                HttpUrl::parse(url).map_err(|reason| format!("auth.http.{field}: {reason}"))?;
            }
        }
        if self.authenticate_url.is_none() && self.authorize_url.is_none() {
            return Err("auth.http: set authenticate_url, authorize_url or both".into());
        }
        if self.timeout_ms == 0 || self.requests_in_flight_max == 0 || self.queued_requests_max == 0 {
            return Err(
                "auth.http: timeout_ms, requests_in_flight_max and queued_requests_max must be at least 1".into()
            );
        }
        Ok(())
    }
}

/// What an ACL check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclAction {
    Publish,
    Subscribe,
}

impl AclAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Publish => "publish",
            AclAction::Subscribe => "subscribe",
        }
    }
}

/// One question for the backend.
#[derive(Clone, Debug)]
pub enum CheckRequest {
    Login {
        listener: ListenerId,
        client_id: String,
        username: Option<String>,
        password: Option<String>,
        peer: Option<SocketAddr>,
    },
    Acl {
        listener: ListenerId,
        client_id: String,
        username: Option<String>,
        peer: Option<SocketAddr>,
        action: AclAction,
        /// The topic of a PUBLISH, or the filter of a SUBSCRIBE (without `$share/{group}/`).
        topic: String,
    },
}

/// A check posted by a shard: `token` is the shard's own (it names the connection), handed back as is.
#[derive(Debug)]
pub struct Check {
    pub shard: usize,
    pub token: u64,
    pub request: CheckRequest,
}

/// The backend's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// The backend failed (logged by the worker) and `fail_open` is off.
    Unavailable,
}

/// A check and its answer, on their way back to the asking shard.
#[derive(Debug)]
pub struct Answer {
    pub shard: usize,
    pub token: u64,
    pub request: CheckRequest,
    pub verdict: Verdict,
    /// A real answer of the backend (not a failure turned into allow by `fail_open`).
    pub cacheable: bool,
}

/// How answers reach their shard (installed by the runtime: a control job on `answer.shard`).
pub type ReplySink = Box<dyn Fn(Answer) + Send + Sync>;

/// The external backend of every listener that uses it: settings, queue and workers (started once, by
/// `start`), shared by all shards.
pub struct ExternalAuth {
    backend: Backend,
    limits: Limits,
    queue: OnceLock<SyncSender<Check>>,
}

enum Backend {
    Http { authenticate_url: Option<HttpUrl>, authorize_url: Option<HttpUrl> },
    Postgres(Box<PostgresBackend>),
}

/// What every backend has: the call bound, the cache, the workers, the queue and fail_open.
#[derive(Clone, Debug)]
struct Limits {
    timeout_ms: u64,
    cache_ttl_secs: u64,
    cache_max_entries: usize,
    workers: usize,
    queued_requests_max: usize,
    fail_open: bool,
}

/// What a worker keeps between checks (its database connection).
#[derive(Default)]
struct WorkerState {
    postgres: PostgresConnection,
}

impl std::fmt::Debug for ExternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAuth").field("backend", &self.backend_name()).field("limits", &self.limits).finish()
    }
}

impl ExternalAuth {
    pub fn new(settings: HttpAuthSettings) -> Result<ExternalAuth, String> {
        settings.validate()?;
        let parse = |url: &Option<String>| url.as_deref().map(HttpUrl::parse).transpose();
        Ok(ExternalAuth {
            backend: Backend::Http {
                authenticate_url: parse(&settings.authenticate_url)?,
                authorize_url: parse(&settings.authorize_url)?,
            },
            limits: Limits {
                timeout_ms: settings.timeout_ms,
                cache_ttl_secs: settings.cache_ttl_secs,
                cache_max_entries: settings.cache_max_entries,
                workers: settings.requests_in_flight_max,
                queued_requests_max: settings.queued_requests_max,
                fail_open: settings.fail_open,
            },
            queue: OnceLock::new(),
        })
    }

    pub fn postgres(settings: PostgresAuthSettings) -> Result<ExternalAuth, String> {
        let limits = Limits {
            timeout_ms: settings.timeout_ms,
            cache_ttl_secs: settings.cache_ttl_secs,
            cache_max_entries: settings.cache_max_entries,
            workers: settings.pool_connections_max,
            queued_requests_max: settings.queued_requests_max,
            fail_open: settings.fail_open,
        };
        let backend = Backend::Postgres(Box::new(PostgresBackend::new(settings)?));
        Ok(ExternalAuth { backend, limits, queue: OnceLock::new() })
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Http { .. } => "http",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether CONNECTs go to the backend.
    pub fn authenticates(&self) -> bool {
        match &self.backend {
            Backend::Http { authenticate_url, .. } => authenticate_url.is_some(),
            Backend::Postgres(postgres) => postgres.settings().password_query.is_some(),
        }
    }

    /// Whether PUBLISH and SUBSCRIBE go to the backend.
    pub fn authorizes(&self) -> bool {
        match &self.backend {
            Backend::Http { authorize_url, .. } => authorize_url.is_some(),
            Backend::Postgres(postgres) => postgres.settings().acl_query.is_some(),
        }
    }

    /// A fresh per-shard cache sized by the settings.
    pub fn new_cache(&self) -> VerdictCache {
        VerdictCache::new(Duration::from_secs(self.limits.cache_ttl_secs), self.limits.cache_max_entries)
    }

    /// Starts the workers; answers go to `reply`. Once only (later calls are ignored).
    pub fn start(self: &Arc<Self>, reply: ReplySink) {
        if self.queue.get().is_some() {
            return;
        }
        let (sender, receiver) = sync_channel::<Check>(self.limits.queued_requests_max);
        if self.queue.set(sender).is_err() {
            return;
        }
        let receiver = Arc::new(Mutex::new(receiver));
        let reply: Arc<ReplySink> = Arc::new(reply);
        for worker in 0..self.limits.workers {
            let (auth, receiver, reply) = (Arc::clone(self), Arc::clone(&receiver), Arc::clone(&reply));
            let spawned = std::thread::Builder::new()
                .name(format!("shardmq-auth-{worker}"))
                .spawn(move || auth.serve(&receiver, &reply));
            if let Err(err) = spawned {
                warn!(%err, "cannot start an external auth worker thread");
            }
        }
    }

    /// Queues a check; when the queue is full or the workers never started, the check comes back with the
    /// verdict the caller must apply at once (refused, or allowed with fail_open).
    pub fn submit(&self, check: Check) -> Result<(), Box<Answer>> {
        let failed = |check: Check, reason: &str| -> Box<Answer> {
            let target = self.target(&check.request);
            warn!(
                backend = self.backend_name(),
                target,
                client_id = client_of(&check.request),
                "external auth check not made: {reason}; {}",
                self.failure_word()
            );
            Box::new(Answer {
                shard: check.shard,
                token: check.token,
                request: check.request,
                verdict: self.failure_verdict(),
                cacheable: false,
            })
        };
        let Some(queue) = self.queue.get() else { return Err(failed(check, "the workers are not running")) };
        match queue.try_send(check) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(check)) => Err(failed(check, "queued_requests_max checks already wait")),
            Err(TrySendError::Disconnected(check)) => Err(failed(check, "the workers stopped")),
        }
    }

    fn serve(&self, receiver: &Mutex<Receiver<Check>>, reply: &ReplySink) {
        let mut state = WorkerState::default();
        loop {
            let next = receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
            let Ok(check) = next else { return };
            let (verdict, cacheable) = match self.decide(&mut state, &check.request) {
                Ok(allowed) => (if allowed { Verdict::Allow } else { Verdict::Deny }, true),
                Err(reason) => {
                    let target = self.target(&check.request);
                    warn!(
                        backend = self.backend_name(),
                        target,
                        client_id = client_of(&check.request),
                        "external auth backend failed: {reason}; {}",
                        self.failure_word()
                    );
                    (self.failure_verdict(), false)
                }
            };
            reply(Answer { shard: check.shard, token: check.token, request: check.request, verdict, cacheable });
        }
    }

    fn failure_verdict(&self) -> Verdict {
        if self.limits.fail_open {
            Verdict::Allow
        } else {
            Verdict::Unavailable
        }
    }

    fn failure_word(&self) -> &'static str {
        if self.limits.fail_open {
            "allowed (fail_open = true)"
        } else {
            "refused (fail closed)"
        }
    }

    /// The URL or database host a check goes to, for log lines.
    fn target(&self, request: &CheckRequest) -> String {
        match (&self.backend, request) {
            (Backend::Postgres(postgres), _) => postgres.settings().host(),
            (Backend::Http { authenticate_url: url, .. }, CheckRequest::Login { .. })
            | (Backend::Http { authorize_url: url, .. }, CheckRequest::Acl { .. }) => {
                url.as_ref().map_or("-".into(), |url| format!("http://{}{}", url.authority, url.path))
            }
        }
    }

    /// One call: true allow, false deny, Err the failure for the log.
    fn decide(&self, state: &mut WorkerState, request: &CheckRequest) -> Result<bool, String> {
        let (authenticate_url, authorize_url) = match &self.backend {
            Backend::Postgres(postgres) => {
                return match request {
                    CheckRequest::Login { client_id, username, password, .. } => {
                        postgres.login(&mut state.postgres, username.as_deref(), client_id, password.as_deref())
                    }
                    CheckRequest::Acl { client_id, username, action, topic, .. } => {
                        postgres.acl(&mut state.postgres, username.as_deref(), client_id, *action, topic)
                    }
                }
            }
            Backend::Http { authenticate_url, authorize_url } => (authenticate_url, authorize_url),
        };
        let url = match request {
            CheckRequest::Login { .. } => authenticate_url,
            CheckRequest::Acl { .. } => authorize_url,
        };
        let url = url.as_ref().ok_or("no URL configured for this check")?;
        let body = request_body(request);
        let answer = http_client::post_json(url, body.as_bytes(), Duration::from_millis(self.limits.timeout_ms))
            .map_err(|err| err.to_string())?;
        match answer.status {
            200 => parse_verdict(&answer.body),
            // An explicit refusal, as mosquitto-go-auth's status mode reads them.
            401 | 403 => Ok(false),
            status => Err(format!("HTTP status {status}")),
        }
    }
}

fn client_of(request: &CheckRequest) -> &str {
    match request {
        CheckRequest::Login { client_id, .. } | CheckRequest::Acl { client_id, .. } => client_id,
    }
}

/// The JSON POSTed: `clientid`, `username` (null when none), `password` (login) or `topic` and `action`
/// (`publish` / `subscribe`), `listener` (its index in the config) and `peer` (`ip:port`, when known).
pub fn request_body(request: &CheckRequest) -> String {
    let value = match request {
        CheckRequest::Login { listener, client_id, username, password, peer } => serde_json::json!({
            "clientid": client_id,
            "username": username,
            "password": password,
            "listener": listener.0,
            "peer": peer.map(|peer| peer.to_string()),
        }),
        CheckRequest::Acl { listener, client_id, username, peer, action, topic } => serde_json::json!({
            "clientid": client_id,
            "username": username,
            "topic": topic,
            "action": action.as_str(),
            "listener": listener.0,
            "peer": peer.map(|peer| peer.to_string()),
        }),
    };
    value.to_string()
}

/// A 200 answer: `{"result": "allow" | "deny"}` (EMQX) or `{"ok": true | false}` (mosquitto-go-auth's
/// JSON mode). Anything else is a failure, not a denial, so fail_open applies to it.
pub fn parse_verdict(body: &[u8]) -> Result<bool, String> {
    let shown = || String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("answer is not JSON ({err}): `{}`", shown()))?;
    if let Some(result) = value.get("result").and_then(serde_json::Value::as_str) {
        return match result {
            "allow" => Ok(true),
            "deny" => Ok(false),
            other => Err(format!("answer's \"result\" is `{other}`, not \"allow\" or \"deny\"")),
        };
    }
    if let Some(ok) = value.get("ok").and_then(serde_json::Value::as_bool) {
        return Ok(ok);
    }
    Err(format!("answer has no \"result\": \"allow\"|\"deny\" nor \"ok\": true|false: `{}`", shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_allow_deny_or_fail_but_never_guess() {
        assert_eq!(parse_verdict(br#"{"result":"allow"}"#), Ok(true));
        assert_eq!(parse_verdict(br#"{"result":"deny","reason":"x"}"#), Ok(false));
        assert_eq!(parse_verdict(br#"{"ok":true}"#), Ok(true));
        assert_eq!(parse_verdict(br#"{"ok":false,"error":"no"}"#), Ok(false));
        assert!(parse_verdict(br#"{"result":"ignore"}"#).is_err());
        assert!(parse_verdict(br#"{"ok":"yes"}"#).is_err());
        assert!(parse_verdict(b"<html>oops</html>").unwrap_err().contains("not JSON"));
        assert!(parse_verdict(b"[]").is_err());
    }

    #[test]
    fn request_bodies_name_every_field() {
        let login = CheckRequest::Login {
            listener: ListenerId(1),
            client_id: "c1".into(),
            username: Some("alice".into()),
            password: Some("pw".into()),
            peer: Some("127.0.0.1:5000".parse().unwrap()),
        };
        let body: serde_json::Value = serde_json::from_str(&request_body(&login)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"clientid":"c1","username":"alice","password":"pw","listener":1,"peer":"127.0.0.1:5000"})
        );
        let acl = CheckRequest::Acl {
            listener: ListenerId(0),
            client_id: "c1".into(),
            username: None,
            peer: None,
            action: AclAction::Subscribe,
            topic: "a/#".into(),
        };
        let body: serde_json::Value = serde_json::from_str(&request_body(&acl)).unwrap();
        assert_eq!(body["action"], "subscribe");
        assert_eq!(body["username"], serde_json::Value::Null);
    }

    #[test]
    fn settings_need_a_url_and_refuse_https_and_zero_limits() {
        assert!(HttpAuthSettings::default().validate().is_err());
        let ok = HttpAuthSettings { authenticate_url: Some("http://127.0.0.1:1/a".into()), ..Default::default() };
        assert!(ok.validate().is_ok());
        let https = HttpAuthSettings { authorize_url: Some("https://x/".into()), ..ok.clone() };
        assert!(https.validate().unwrap_err().contains("authorize_url"));
        assert!(HttpAuthSettings { timeout_ms: 0, ..ok }.validate().is_err());
    }

    #[test]
    fn a_check_without_running_workers_comes_back_refused_or_allowed_by_fail_open() {
        let settings = HttpAuthSettings { authenticate_url: Some("http://127.0.0.1:1/a".into()), ..Default::default() };
        let request = CheckRequest::Login {
            listener: ListenerId(0),
            client_id: "c".into(),
            username: None,
            password: None,
            peer: None,
        };
        let closed = ExternalAuth::new(settings.clone()).unwrap();
        let answer = closed.submit(Check { shard: 0, token: 7, request: request.clone() }).unwrap_err();
        assert_eq!((answer.token, answer.verdict, answer.cacheable), (7, Verdict::Unavailable, false));
        let open = ExternalAuth::new(HttpAuthSettings { fail_open: true, ..settings }).unwrap();
        assert_eq!(open.submit(Check { shard: 0, token: 7, request }).unwrap_err().verdict, Verdict::Allow);
    }
}
