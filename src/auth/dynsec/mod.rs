//! Dynamic security compatible with Mosquitto's plugin (`mosquitto_dynamic_security.so`): clients,
//! groups and roles kept in the plugin's JSON file (`file`), compiled into the `Rules` every check reads
//! (`rules`), changed at run time by the JSON commands `mosquitto_ctrl dynsec` publishes on
//! `$CONTROL/dynamic-security/v1` (`commands`).
//!
//! `DynamicSecurity` is shared by every shard (inside `AccessControl`). Checks on the hot path (CONNECT,
//! each PUBLISH, SUBSCRIBE and delivery) read the current `Rules` through an `ArcSwap`: one atomic load,
//! no lock, never blocked by a change. A command batch (cold path) takes the mutex over the file state,
//! applies the commands, writes the file (temporary file + rename) and swaps in freshly compiled rules,
//! so every shard sees the change at its next check. Connections of clients that were deleted, disabled
//! or given new credentials are closed by the broker core (`broker::dynsec`).

mod commands;
mod file;
mod rules;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{info, warn};

pub use commands::{apply as apply_commands, Outcome as ControlOutcome, COMMANDS_PER_PAYLOAD_MAX};
pub use file::{DynsecFile, DynsecFileError};
pub use rules::Rules;

use super::access::{AuthDecision, Authenticator, Authorizer, ClientIdentity, ConnectRequest};
use super::method::AuthFailure;
use super::password_file::{PasswordHash, PBKDF2_ITERATIONS, SALT_BYTES};

/// The topic `mosquitto_ctrl dynsec` publishes its commands to.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the answers go.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// The plugin's state and the rules compiled from it; see the module doc.
pub struct DynamicSecurity {
    path: PathBuf,
    rules: ArcSwap<Rules>,
    /// The file's contents; only commands take it.
    state: Mutex<DynsecFile>,
    /// Verified against for unknown users, so they take as long to refuse as a wrong password.
    decoy: PasswordHash,
}

impl DynamicSecurity {
    /// Reads the file (`mosquitto_ctrl dynsec init FILE admin` makes one).
    pub fn load(path: &Path) -> Result<DynamicSecurity, DynsecFileError> {
        let state = DynsecFile::load(path)?;
        Ok(DynamicSecurity::from_state(path.to_path_buf(), state))
    }

    /// Rules from `state`, written back to `path` after each change.
    pub fn from_state(path: PathBuf, state: DynsecFile) -> DynamicSecurity {
        let rules = ArcSwap::from_pointee(Rules::compile(&state));
        let decoy = PasswordHash::pbkdf2_with(b"decoy", vec![0; SALT_BYTES], PBKDF2_ITERATIONS);
        DynamicSecurity { path, rules, state: Mutex::new(state), decoy }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules in force now.
    pub fn rules(&self) -> arc_swap::Guard<Arc<Rules>> {
        self.rules.load()
    }

    /// Applies one `$CONTROL/dynamic-security/v1` payload sent by `admin` (for the log). On a change the
    /// file is rewritten and the new rules swapped in before this returns; a file that cannot be written
    /// is logged and the change stays in force (as the plugin does).
    pub fn handle_control(&self, payload: &[u8], admin: &str) -> ControlOutcome {
        // A poisoned lock only means another command panicked midway; the state is still a valid file.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let outcome = commands::apply(&mut state, payload);
        if outcome.changed {
            self.rules.store(Arc::new(Rules::compile(&state)));
            if let Err(err) = state.write(&self.path) {
                warn!(admin, "dynamic security change applied but not saved: {err}");
            }
            info!(admin, kicked = ?outcome.kick, "dynamic security changed");
        }
        outcome
    }

    /// The CONNECT check: a dynsec client with this user name, enabled, the client id it is bound to (if
    /// any) and its password. Clients without a user name pass when `allow_anonymous` (they get the
    /// anonymous group's roles).
    pub fn authenticate(&self, request: &ConnectRequest<'_>, allow_anonymous: bool) -> AuthDecision {
        let Some(username) = request.username else {
            if allow_anonymous {
                return AuthDecision::Allow { username: None };
            }
            return AuthDecision::Refuse(AuthFailure::not_authorized(
                "anonymous clients are not allowed (allow_anonymous = false)",
            ));
        };
        let password = request.password.unwrap_or_default();
        let rules = self.rules();
        let Some(client) = rules.client(username) else {
            self.decoy.verify(password);
            return AuthDecision::Refuse(AuthFailure::bad_credentials("no such dynamic security client"));
        };
        let Some(hash) = &client.password else {
            return AuthDecision::Refuse(AuthFailure::bad_credentials("dynamic security client has no password"));
        };
        if !hash.verify(password) {
            return AuthDecision::Refuse(AuthFailure::bad_credentials("wrong password"));
        }
        if client.disabled {
            return AuthDecision::Refuse(AuthFailure::not_authorized("dynamic security client is disabled"));
        }
        if client.clientid.as_deref().is_some_and(|bound| bound != request.client_id) {
            return AuthDecision::Refuse(AuthFailure::not_authorized(
                "client id differs from the one the dynamic security client is bound to",
            ));
        }
        AuthDecision::Allow { username: Some(username.to_string()) }
    }

    pub fn may_unsubscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        self.rules().may_unsubscribe(client.username, filter)
    }
}

impl Authorizer for DynamicSecurity {
    fn may_publish(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        self.rules().may_publish(client.username, topic)
    }

    fn may_subscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        self.rules().may_subscribe(client.username, filter)
    }

    fn may_receive(&self, client: &ClientIdentity<'_>, topic: &str) -> bool {
        self.rules().may_receive(client.username, topic)
    }

    fn may_unsubscribe(&self, client: &ClientIdentity<'_>, filter: &str) -> bool {
        DynamicSecurity::may_unsubscribe(self, client, filter)
    }
}

/// The CONNECT check of a listener under dynamic security.
pub struct DynsecAuthenticator {
    pub dynsec: Arc<DynamicSecurity>,
    pub allow_anonymous: bool,
}

impl Authenticator for DynsecAuthenticator {
    fn authenticate(&self, request: &ConnectRequest<'_>) -> AuthDecision {
        self.dynsec.authenticate(request, self.allow_anonymous)
    }
}

impl std::fmt::Debug for DynamicSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicSecurity").field("path", &self.path).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{FailureKind, ListenerId};

    fn dynsec(name: &str) -> (DynamicSecurity, PathBuf) {
        let dir = std::env::temp_dir().join(format!("shardmq-dynsec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ds.json");
        std::fs::write(&path, file::tests::MOSQUITTO_INIT).unwrap();
        (DynamicSecurity::load(&path).unwrap(), dir)
    }

    fn connect<'a>(username: Option<&'a str>, password: &'a [u8], client_id: &'a str) -> ConnectRequest<'a> {
        ConnectRequest { listener: ListenerId(0), client_id, username, password: Some(password), peer_identity: None }
    }

    fn refused(decision: AuthDecision) -> Option<FailureKind> {
        match decision {
            AuthDecision::Refuse(failure) => Some(failure.kind),
            _ => None,
        }
    }

    #[test]
    fn the_admin_mosquitto_ctrl_init_made_logs_in_and_may_publish_commands() {
        let (dynsec, dir) = dynsec("admin");
        let admin = dynsec.authenticate(&connect(Some("admin"), b"pw", "any"), false);
        assert_eq!(admin, AuthDecision::Allow { username: Some("admin".into()) });
        assert_eq!(
            refused(dynsec.authenticate(&connect(Some("admin"), b"PW", "any"), false)),
            Some(FailureKind::BadCredentials)
        );
        assert_eq!(
            refused(dynsec.authenticate(&connect(Some("eve"), b"pw", "any"), false)),
            Some(FailureKind::BadCredentials)
        );
        let who = ClientIdentity { listener: ListenerId(0), client_id: "any", username: Some("admin") };
        assert!(dynsec.may_publish(&who, CONTROL_TOPIC));
        assert!(!dynsec.may_publish(&who, "app/topic"), "the admin role has no publishClientSend on #");
        assert!(dynsec.may_subscribe(&who, RESPONSE_TOPIC));
        let anonymous = ClientIdentity { listener: ListenerId(0), client_id: "x", username: None };
        assert!(!dynsec.may_publish(&anonymous, CONTROL_TOPIC));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_command_changes_the_rules_at_once_and_is_saved() {
        let (dynsec, dir) = dynsec("save");
        let payload = br#"{"commands":[{"command":"createClient","username":"dev","password":"d","clientid":"dev-1"},
            {"command":"disableClient","username":"dev"}]}"#;
        let outcome = dynsec.handle_control(payload, "admin");
        assert_eq!(
            outcome.kick,
            ["dev"],
            "disabling kicks; creating has no one to kick (a username unknown to dynsec cannot log in)"
        );
        let disabled = dynsec.authenticate(&connect(Some("dev"), b"d", "dev-1"), false);
        assert_eq!(refused(disabled), Some(FailureKind::NotAuthorized));
        dynsec.handle_control(br#"{"commands":[{"command":"enableClient","username":"dev"}]}"#, "admin");
        assert!(matches!(dynsec.authenticate(&connect(Some("dev"), b"d", "dev-1"), false), AuthDecision::Allow { .. }));
        let wrong_id = dynsec.authenticate(&connect(Some("dev"), b"d", "dev-2"), false);
        assert_eq!(refused(wrong_id), Some(FailureKind::NotAuthorized));
        let reloaded = DynamicSecurity::load(&dir.join("ds.json")).unwrap();
        assert!(matches!(
            reloaded.authenticate(&connect(Some("dev"), b"d", "dev-1"), false),
            AuthDecision::Allow { .. }
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
