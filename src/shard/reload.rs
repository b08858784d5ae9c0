//! SIGHUP: read the files the configuration names again (TLS certificates and keys, password files,
//! ACL files, validation schemas and word lists) and swap them in without dropping a connection.
//!
//! Each kind is reloaded on its own: a file with an error is named (with its line where the parser
//! knows it) and that kind keeps its previous contents, while the others still take their new ones.
//! Rules reach every shard's core through a control job; connected clients keep their sessions and
//! every later check, including deliveries to subscriptions made before, uses the new rules. New TLS
//! connections use the new certificates; established ones keep the session they negotiated.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::control::{Control, ControlError};
use crate::auth::AccessControl;
use crate::transport::tls::TlsAcceptor;
use crate::validation::RuleSet;

/// How long a reload waits for each shard to take the new rules.
const SWAP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a reload can re-read, and what is in use now.
pub struct Reloader {
    control: Control,
    /// Every TLS listener's acceptor, with the listener's bind address for log lines.
    tls: Vec<(String, Arc<TlsAcceptor>)>,
    current: Mutex<Current>,
}

struct Current {
    access: Arc<AccessControl>,
    validation: Option<Arc<RuleSet>>,
}

/// What one reload did, kind by kind (`Err` holds the message naming the file; that kind kept its
/// previous contents).
#[derive(Debug)]
pub struct ReloadOutcome {
    pub tls: Vec<(String, Result<(), String>)>,
    pub access: Result<(), String>,
    pub validation: Result<(), String>,
}

impl ReloadOutcome {
    pub fn all_ok(&self) -> bool {
        self.tls.iter().all(|(_, result)| result.is_ok()) && self.access.is_ok() && self.validation.is_ok()
    }
}

impl Reloader {
    pub fn new(
        control: Control,
        tls: Vec<(String, Arc<TlsAcceptor>)>,
        access: Arc<AccessControl>,
        validation: Option<Arc<RuleSet>>,
    ) -> Reloader {
        Reloader { control, tls, current: Mutex::new(Current { access, validation }) }
    }

    /// Re-reads every file and swaps in what read cleanly; logs one line per kind.
    pub fn reload(&self) -> ReloadOutcome {
        // One reload at a time: two SIGHUPs in a row must not interleave their swaps.
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tls = self
            .tls
            .iter()
            .map(|(bind, acceptor)| {
                let result = acceptor.reload().map_err(|err| err.to_string());
                match &result {
                    Ok(()) => tracing::info!(listener = %bind, "reload: TLS certificate and key read again"),
                    Err(err) => {
                        tracing::error!(listener = %bind, "reload: TLS files refused, the previous ones stay: {err}")
                    }
                }
                (bind.clone(), result)
            })
            .collect();
        let access = match current.access.reload() {
            Ok(access) => {
                let access = Arc::new(access);
                let swapped =
                    self.swap(|core, access: &Arc<AccessControl>| core.replace_access(access.clone()), &access);
                if swapped.is_ok() {
                    current.access = access;
                    tracing::info!("reload: password and ACL files read again");
                }
                swapped
            }
            Err(err) => {
                tracing::error!("reload: password/ACL file refused, the previous rules stay: {err}");
                Err(err.to_string())
            }
        };
        let validation = match current.validation.as_ref().map(|rules| rules.reload()) {
            None => Ok(()),
            Some(Ok(rules)) => {
                let rules = Some(Arc::new(rules));
                let swapped =
                    self.swap(|core, rules: &Option<Arc<RuleSet>>| core.set_validation(rules.clone()), &rules);
                if swapped.is_ok() {
                    current.validation = rules;
                    tracing::info!("reload: validation rules compiled again");
                }
                swapped
            }
            Some(Err(err)) => {
                tracing::error!("reload: validation rules refused, the previous rules stay: {err}");
                Err(err.to_string())
            }
        };
        ReloadOutcome { tls, access, validation }
    }

    /// Gives `value` to every shard's core with `apply`, waiting until all have it.
    fn swap<T: Clone + Send + Sync + 'static>(
        &self,
        apply: fn(&mut crate::broker::ShardCore, &T),
        value: &T,
    ) -> Result<(), String> {
        let value = value.clone();
        self.control.call_all(SWAP_TIMEOUT, move |core, _| apply(core, &value)).map(drop).map_err(
            |err: ControlError| {
                tracing::error!("reload: could not reach every shard: {err}");
                err.to_string()
            },
        )
    }
}
