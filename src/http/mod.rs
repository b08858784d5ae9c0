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
use std::sync::Arc;

pub use router::{Api, OPENAPI_JSON};
pub use settings::HttpSettings;

use crate::auth::TokenStore;
use crate::shard::Control;
use crate::transport::tls::TlsAcceptor;

/// Starts the HTTP API, over TLS when `cert_file` and `key_file` are set (and the token expiry thread when
/// tokens exist); returns the bound address, or None when `[http]` has no `bind`. A bad certificate or
/// key is an error here, naming the file.
pub fn start(
    settings: &HttpSettings,
    tokens: Option<Arc<TokenStore>>,
    control: &Control,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(bind) = &settings.bind else { return Ok(None) };
    let addr: SocketAddr = bind
        .parse()
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("http.bind: {err}")))?;
    if let Some(store) = &tokens {
        tokens::start_expiry(Arc::clone(store), control.clone())?;
    }
    let tls = match settings.tls() {
        Some(tls) => Some(Arc::new(
            TlsAcceptor::new(tls)
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("http: {err}")))?,
        )),
        None => None,
    };
    let api = Arc::new(Api::new(settings.clone(), control.clone(), tokens));
    server::serve(addr, api, tls).map(Some)
}
