//! Every route of the HTTP API in one `match` (method and path segments): add an arm to add an endpoint.
//! Also the state every handler shares (`Api`: settings, the shards' control handle, the token store)
//! and who is calling (`Caller`: the admin token or an API token).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::response::{ApiError, Response};
use super::server::{percent_decode, Request};
use super::settings::HttpSettings;
use super::{admin, publish, tokens};
use crate::auth::{TokenGrant, TokenStore};
use crate::shard::{Control, ControlError};
use crate::transport::http::Status;

/// The OpenAPI 3 document of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// How long a handler waits for the shards.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct Api {
    pub settings: HttpSettings,
    pub control: Control,
    pub tokens: Option<Arc<TokenStore>>,
    /// Which shard the next API publish runs on (round robin spreads the routing work).
    next_shard: AtomicUsize,
    /// Token bucket of `request_rate_max_per_second`: (tokens left, when it was last filled).
    bucket: Mutex<(f64, Instant)>,
}

/// Who sent a request.
pub enum Caller {
    Admin,
    Token(Arc<TokenGrant>),
}

impl Api {
    pub fn new(settings: HttpSettings, control: Control, tokens: Option<Arc<TokenStore>>) -> Api {
        let burst = f64::from(settings.request_rate_max_per_second);
        Api { settings, control, tokens, next_shard: AtomicUsize::new(0), bucket: Mutex::new((burst, Instant::now())) }
    }

    /// The shard for the next publish.
    pub fn publish_shard(&self) -> usize {
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.control.shard_count().max(1)
    }

    /// `Authorization: Bearer <admin token or API token>`; 401 when absent or unknown.
    pub fn caller(&self, request: &Request) -> Result<Caller, ApiError> {
        let value = request
            .head
            .single_value("authorization")
            .map_err(|_| ApiError::unauthorized("send exactly one Authorization: Bearer <token> header"))?;
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
            .map(|token| token.trim_ascii())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be Bearer <token>"))?;
        if let Some(admin) = &self.settings.admin_token {
            if bool::from(admin.as_bytes().ct_eq(token)) {
                return Ok(Caller::Admin);
            }
        }
        match self.tokens.as_ref().and_then(|tokens| tokens.find(token)) {
            Some(grant) => Ok(Caller::Token(grant)),
            None => Err(ApiError::unauthorized("unknown, expired or revoked token")),
        }
    }

    /// 401 / 403 unless the admin token is the caller.
    pub fn require_admin(&self, request: &Request) -> Result<(), ApiError> {
        match self.caller(request)? {
            Caller::Admin => Ok(()),
            Caller::Token(_) => Err(ApiError::forbidden("this endpoint needs the admin token")),
        }
    }

    /// The token store, or 404 when tokens are off.
    pub fn token_store(&self) -> Result<&Arc<TokenStore>, ApiError> {
        self.tokens.as_ref().ok_or_else(|| ApiError::not_found("API tokens are not enabled"))
    }

    /// False when the request is over `request_rate_max_per_second`.
    fn admit(&self) -> bool {
        let rate = f64::from(self.settings.request_rate_max_per_second);
        if rate == 0.0 {
            return true;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let (tokens, filled_at) = *bucket;
        let tokens = (tokens + now.duration_since(filled_at).as_secs_f64() * rate).min(rate);
        let admitted = tokens >= 1.0;
        *bucket = (if admitted { tokens - 1.0 } else { tokens }, now);
        admitted
    }
}

/// A shard did not answer: 503.
pub fn shard_error(err: ControlError) -> ApiError {
    ApiError::unavailable(format!("the broker could not answer: {err}"))
}

/// Answers one request.
pub fn route(api: &Api, request: &Request) -> Response {
    if !api.admit() {
        let message = "over http.request_rate_max_per_second; retry later";
        return ApiError::new(Status::TOO_MANY_REQUESTS, message).into_response().with_header("Retry-After", "1");
    }
    let path = request.path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = request.method();
    let answer = match (method, segments.as_slice()) {
        ("GET", ["api", "v1", "openapi.json"]) => {
            Ok(Response::bytes(Status::OK, "application/json", OPENAPI_JSON.as_bytes().to_vec()))
        }
        (_, ["api", "v1", "openapi.json"]) => Err(ApiError::method_not_allowed("GET")),
        ("POST", ["api", "v1", "publish"]) => publish::one(api, request),
        ("POST", ["api", "v1", "publish", "batch"]) => publish::batch(api, request),
        (_, ["api", "v1", "publish"] | ["api", "v1", "publish", "batch"]) => Err(ApiError::method_not_allowed("POST")),
        ("POST", ["api", "v1", "tokens"]) => tokens::create(api, request),
        ("GET", ["api", "v1", "tokens"]) => tokens::list(api, request),
        (_, ["api", "v1", "tokens"]) => Err(ApiError::method_not_allowed("GET, POST")),
        ("DELETE", ["api", "v1", "tokens", id]) => tokens::revoke(api, request, &percent_decode(id)),
        (_, ["api", "v1", "tokens", _]) => Err(ApiError::method_not_allowed("DELETE")),
        ("GET", ["api", "v1", "clients"]) => admin::clients(api, request),
        (_, ["api", "v1", "clients"]) => Err(ApiError::method_not_allowed("GET")),
        ("GET", ["api", "v1", "clients", id]) => admin::client(api, request, &percent_decode(id)),
        ("DELETE", ["api", "v1", "clients", id]) => admin::kick(api, request, &percent_decode(id)),
        (_, ["api", "v1", "clients", _]) => Err(ApiError::method_not_allowed("GET, DELETE")),
        ("GET", ["api", "v1", "sessions"]) => admin::sessions(api, request),
        (_, ["api", "v1", "sessions"]) => Err(ApiError::method_not_allowed("GET")),
        ("GET", ["api", "v1", "retained"]) => admin::retained(api, request),
        (_, ["api", "v1", "retained"]) => Err(ApiError::method_not_allowed("GET")),
        ("DELETE", ["api", "v1", "retained", ..]) => admin::delete_retained(api, request, retained_topic(&path)),
        (_, ["api", "v1", "retained", ..]) => Err(ApiError::method_not_allowed("DELETE")),
        ("GET", ["api", "v1", "stats"]) => admin::stats(api, request),
        (_, ["api", "v1", "stats"]) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    };
    answer.unwrap_or_else(ApiError::into_response)
}

/// The topic of `DELETE /api/v1/retained/{topic}`: everything after the prefix, percent-decoded (a topic
/// has slashes; they may be sent as they are or as `%2F`).
fn retained_topic(path: &str) -> String {
    percent_decode(path.strip_prefix("/api/v1/retained/").unwrap_or_default())
}
