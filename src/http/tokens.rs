//! `POST /api/v1/tokens` (make a token: its secret is in this answer only), `GET /api/v1/tokens` (list,
//! no secrets), `DELETE /api/v1/tokens/{id}` (revoke: it stops working at once and its MQTT clients are
//! disconnected with v5 0x87). All need the admin token. Also the expiry thread: when a token's lifetime
//! ends, its clients are disconnected with v5 0xA0.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::publish::parse_json;
use super::response::{ApiError, Response};
use super::router::{shard_error, Api, SHARD_TIMEOUT};
use super::server::Request;
use crate::auth::{unix_secs, TokenEnd, TokenError, TokenGrant, TokenRule, TokenStore};
use crate::shard::Control;
use crate::transport::http::Status;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    acl: Vec<AclEntry>,
    ttl_seconds: u64,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AclEntry {
    filter: String,
    actions: Vec<Action>,
}

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    Publish,
    Subscribe,
}

#[derive(Serialize)]
struct Created {
    token: String,
    id: String,
    expires_at: u64,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    acl: Vec<AclEntry>,
    created_at: u64,
    expires_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<String>,
}

#[derive(Serialize)]
struct TokenList {
    tokens: Vec<TokenView>,
}

#[derive(Serialize)]
struct Revoked {
    id: String,
    disconnected: usize,
}

pub fn create(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let store = api.token_store()?;
    let body: CreateBody = parse_json(&request.body)?;
    let max_secs = api.settings.token_ttl_max_secs;
    if body.ttl_seconds == 0 || body.ttl_seconds > max_secs {
        return Err(ApiError::bad_request(TokenError::Ttl { max_secs }.to_string()));
    }
    let rules = body
        .acl
        .iter()
        .map(|entry| TokenRule {
            filter: entry.filter.clone(),
            publish: entry.actions.contains(&Action::Publish),
            subscribe: entry.actions.contains(&Action::Subscribe),
        })
        .collect();
    let (token, grant) = store
        .create(rules, Duration::from_secs(body.ttl_seconds), body.info, SystemTime::now())
        .map_err(|err| match err {
            TokenError::File { .. } => ApiError::unavailable(err.to_string()),
            _ => ApiError::bad_request(err.to_string()),
        })?;
    info!(token = %grant.id, expires_at = unix_secs(grant.expires_at), "API token created");
    let created = Created { token, id: grant.id.clone(), expires_at: unix_secs(grant.expires_at) };
    Ok(Response::json(Status::CREATED, &created))
}

pub fn list(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let tokens = api.token_store()?.list().iter().map(|grant| view(grant)).collect();
    Ok(Response::json(Status::OK, &TokenList { tokens }))
}

pub fn revoke(api: &Api, request: &Request, id: &str) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let grant = api
        .token_store()?
        .revoke(id)
        .map_err(|err| ApiError::unavailable(err.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no token {id:?}")))?;
    info!(token = %grant.id, "API token revoked");
    let disconnected = end_sessions(&api.control, &grant.id, TokenEnd::Revoked).map_err(shard_error)?;
    Ok(Response::json(Status::OK, &Revoked { id: grant.id.clone(), disconnected }))
}

fn view(grant: &TokenGrant) -> TokenView {
    let acl = grant
        .rules
        .iter()
        .map(|rule| {
            let actions = [(rule.publish, Action::Publish), (rule.subscribe, Action::Subscribe)];
            AclEntry {
                filter: rule.filter.clone(),
                actions: actions.iter().filter(|(on, _)| *on).map(|(_, action)| *action).collect(),
            }
        })
        .collect();
    TokenView {
        id: grant.id.clone(),
        acl,
        created_at: unix_secs(grant.created_at),
        expires_at: unix_secs(grant.expires_at),
        info: grant.info.clone(),
    }
}

/// Ends the sessions of the token's clients on every shard; how many.
fn end_sessions(control: &Control, id: &str, end: TokenEnd) -> Result<usize, crate::shard::ControlError> {
    let id = id.to_string();
    let counts = control.call_all(SHARD_TIMEOUT, move |core, now| core.end_token_sessions(&id, end, now))?;
    Ok(counts.iter().sum())
}

/// Starts the thread that expires tokens: it sleeps until the next token's end (at most a second, so a
/// token made meanwhile is seen), marks the expired ones (they stop working at once) and disconnects
/// their clients.
pub fn start_expiry(store: Arc<TokenStore>, control: Control) -> std::io::Result<()> {
    std::thread::Builder::new().name("http-token-expiry".into()).spawn(move || loop {
        let now = SystemTime::now();
        let wait = store
            .next_expiry()
            .map_or(Duration::from_secs(1), |at| at.duration_since(now).unwrap_or_default())
            .min(Duration::from_secs(1));
        std::thread::sleep(wait.max(Duration::from_millis(10)));
        for grant in store.remove_expired(SystemTime::now()) {
            match end_sessions(&control, &grant.id, TokenEnd::Expired) {
                Ok(count) => info!(token = %grant.id, disconnected = count, "API token expired"),
                Err(crate::shard::ControlError::Stopped(_)) => return,
                Err(err) => warn!(token = %grant.id, "API token expired but its clients could not be reached: {err}"),
            }
        }
    })?;
    Ok(())
}
