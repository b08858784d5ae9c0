//! The enhanced-authentication seam: an `AuthMethod` per Authentication Method name, each starting one
//! `AuthExchange` per connection (CONNECT) or re-authentication (AUTH 0x19), and the `AuthMethods` registry.
//!
//! The broker core owns the MQTT side (which packet carries which step, reason codes, timeouts); a method
//! sees only the Authentication Data bytes and answers with a `Step`.

use std::fmt;
use std::rc::Rc;

use super::credentials::{MemoryCredentialStore, ScramUser};
use super::scram::ScramSha256;

/// One authentication method, e.g. SCRAM-SHA-256. Lives as long as the shard.
pub trait AuthMethod {
    /// The Authentication Method name clients put in CONNECT (case-sensitive, as the spec compares strings).
    fn name(&self) -> &str;
    /// A fresh exchange for one connection (or one re-authentication of it).
    fn begin(&self) -> Box<dyn AuthExchange>;
}

/// The server side of one authentication exchange. Absent Authentication Data is passed as empty bytes.
pub trait AuthExchange {
    /// The client's first data: from CONNECT, or from an AUTH with reason 0x19 (Re-authenticate).
    fn start(&mut self, client_data: &[u8]) -> Step;
    /// The client's next data, from an AUTH with reason 0x18 (Continue authentication).
    fn proceed(&mut self, client_data: &[u8]) -> Step;
}

/// What the method wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this data to the client in an AUTH 0x18 and wait for its answer.
    Continue(Vec<u8>),
    /// The client is authenticated; the final data goes in the CONNACK (or AUTH 0x00 on re-authentication).
    Success(Authenticated),
    /// Authentication failed; the exchange is over.
    Fail(AuthFailure),
}

/// A finished, successful exchange.
#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// Who the client proved to be (for logs, for re-authentication checks, later for ACLs).
    pub user: String,
    /// Final server data for the client (SCRAM: the server signature), if the method has any.
    pub server_data: Option<Vec<u8>>,
}

/// Why an exchange failed; `kind` picks the reason code, `detail` is for the log line only (never sent:
/// it could tell an attacker which user names exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    pub kind: FailureKind,
    pub detail: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Wrong password, unknown user: 0x86 (Bad User Name or Password) in CONNACK.
    BadCredentials,
    /// Anything else the server will not accept (malformed or out-of-order data, an unsupported option):
    /// 0x87 (Not authorized).
    NotAuthorized,
}

impl AuthFailure {
    pub fn bad_credentials(detail: &'static str) -> AuthFailure {
        AuthFailure { kind: FailureKind::BadCredentials, detail }
    }

    pub fn not_authorized(detail: &'static str) -> AuthFailure {
        AuthFailure { kind: FailureKind::NotAuthorized, detail }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail)
    }
}

/// The methods this shard offers, looked up by the name in CONNECT. Empty means enhanced authentication
/// is not offered at all (every Authentication Method gets 0x8C).
#[derive(Default, Clone)]
pub struct AuthMethods {
    methods: Vec<Rc<dyn AuthMethod>>,
}

impl AuthMethods {
    /// The built-in methods the config enables: SCRAM-SHA-256 when `scram_users` is not empty.
    pub fn from_config(scram_users: &[ScramUser]) -> AuthMethods {
        let mut methods = AuthMethods::default();
        if !scram_users.is_empty() {
            let store = Rc::new(MemoryCredentialStore::from_users(scram_users));
            methods.register(Rc::new(ScramSha256::new(store)));
        }
        methods
    }

    /// Adds a method; a later method with the same name replaces the earlier one.
    pub fn register(&mut self, method: Rc<dyn AuthMethod>) {
        self.methods.retain(|known| known.name() != method.name());
        self.methods.push(method);
    }

    pub fn find(&self, name: &str) -> Option<Rc<dyn AuthMethod>> {
        self.methods.iter().find(|method| method.name() == name).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|method| method.name())
    }
}

impl fmt::Debug for AuthMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method that accepts anyone after one round trip, to exercise the registry.
    struct Echo(&'static str);

    struct EchoExchange;

    impl AuthMethod for Echo {
        fn name(&self) -> &str {
            self.0
        }
        fn begin(&self) -> Box<dyn AuthExchange> {
            Box::new(EchoExchange)
        }
    }

    impl AuthExchange for EchoExchange {
        fn start(&mut self, client_data: &[u8]) -> Step {
            Step::Continue(client_data.to_vec())
        }
        fn proceed(&mut self, client_data: &[u8]) -> Step {
            let user = String::from_utf8_lossy(client_data).into_owned();
            Step::Success(Authenticated { user, server_data: None })
        }
    }

    #[test]
    fn registry_finds_methods_by_exact_name() {
        let mut methods = AuthMethods::default();
        assert!(methods.is_empty());
        methods.register(Rc::new(Echo("ECHO")));
        assert!(methods.find("ECHO").is_some());
        assert!(methods.find("echo").is_none(), "method names are compared exactly");
        assert!(methods.find("OTHER").is_none());
        let mut exchange = methods.find("ECHO").map(|method| method.begin()).expect("registered");
        assert_eq!(exchange.start(b"hi"), Step::Continue(b"hi".to_vec()));
        assert_eq!(
            exchange.proceed(b"alice"),
            Step::Success(Authenticated { user: "alice".into(), server_data: None })
        );
    }

    #[test]
    fn scram_is_offered_only_when_users_are_configured() {
        assert!(AuthMethods::from_config(&[]).is_empty());
        let users = [ScramUser { username: "alice".into(), password: "pw".into() }];
        let methods = AuthMethods::from_config(&users);
        assert_eq!(methods.names().collect::<Vec<_>>(), ["SCRAM-SHA-256"]);
    }

    #[test]
    fn registering_a_name_again_replaces_the_method() {
        let mut methods = AuthMethods::default();
        methods.register(Rc::new(Echo("ECHO")));
        methods.register(Rc::new(Echo("ECHO")));
        assert_eq!(methods.names().count(), 1);
    }
}
