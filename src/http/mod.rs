//! The HTTP API (`[http]`, off by default): publish over HTTP, scoped API tokens with a lifetime that
//! clients use as MQTT credentials, admin endpoints (clients, sessions, retained messages, stats) and
//! its OpenAPI document. It runs on its own threads and reaches the shards only through
//! `crate::shard::Control` jobs, so a request never blocks a shard.
//!
//! - `settings`: the `[http]` table; `server`: the HTTP/1.1 listener (keep-alive, bounds, timeouts; TLS
//!   through `transport::tls`'s configuration, so certificates load as for MQTT listeners);
//!   `router`: every route in one `match`, and the `Api` state handlers share; `response`: `Response`
//!   and the JSON `ApiError` every handler answers with.
//! - `publish`, `tokens`, `admin`: the handlers; `openapi.json`: the document that describes them.

mod admin;
mod publish;
pub mod response;
pub mod router;
pub mod server;
mod settings;
mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use router::{Api, OPENAPI_JSON};
pub use settings::HttpSettings;

use crate::auth::TokenStore;
use crate::shard::Control;
use crate::transport::tls::TlsAcceptor;

/// Starts the HTTP API on each of its listeners, over TLS where a listener has `cert_file` and `key_file`
/// (and the token expiry thread when tokens exist); returns each listener's bound address with its scheme,
/// in `HttpSettings::effective_listeners` order (none when the API is off). A bad certificate or key is an
/// error here, naming the file; so is an address that cannot be bound.
pub fn start(
    settings: &HttpSettings,
    tokens: Option<Arc<TokenStore>>,
    control: &Control,
) -> std::io::Result<Vec<(SocketAddr, &'static str)>> {
    let invalid = |err: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, err);
    let listeners = settings.effective_listeners();
    if listeners.is_empty() {
        return Ok(Vec::new());
    }
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        let addr: SocketAddr =
            listener.bind.parse().map_err(|err| invalid(format!("http bind {}: {err}", listener.bind)))?;
        let tls = match listener.tls() {
            Some(tls) => Some(Arc::new(TlsAcceptor::new(tls).map_err(|err| invalid(format!("http: {err}")))?)),
            None => None,
        };
        bound.push((addr, tls));
    }
    if let Some(store) = &tokens {
        tokens::start_expiry(Arc::clone(store), control.clone())?;
    }
    let api = Arc::new(Api::new(settings.clone(), control.clone(), tokens));
    let open = Arc::new(AtomicUsize::new(0));
    let mut addrs = Vec::with_capacity(bound.len());
    for ((addr, tls), listener) in bound.into_iter().zip(&listeners) {
        addrs.push((server::serve(addr, Arc::clone(&api), tls, open.clone())?, listener.scheme()));
    }
    Ok(addrs)
}
