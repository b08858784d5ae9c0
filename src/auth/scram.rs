//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), server side, as the Authentication Method
//! "SCRAM-SHA-256": client-first in CONNECT (or AUTH 0x19), server-first in AUTH 0x18, client-final in
//! AUTH 0x18, server-final (the server signature) in CONNACK (or AUTH 0x00).
//!
//! No channel binding is offered (gs2 flag "n" or "y"; "p=" fails), no authorization identity other than
//! the user itself. Unknown users get a mock salt and iteration count derived from a per-start key, so the
//! server-first message does not tell whether a user exists (RFC 5802 section 5.1); they fail at the proof
//! like a wrong password.

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::credentials::{CredentialStore, ScramCredentials, SCRAM_ITERATIONS};
use super::method::{AuthExchange, AuthFailure, AuthMethod, Authenticated, Step};

/// The Authentication Method name (as registered with IANA for SASL).
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// Random bytes in the server's part of the nonce (base64: 24 printable characters).
const SERVER_NONCE_BYTES: usize = 18;
/// Salt bytes of the mock credentials of unknown users (as for real ones).
const MOCK_SALT_BYTES: usize = 16;

/// The SCRAM-SHA-256 method over a credential store.
pub struct ScramSha256 {
    store: Rc<dyn CredentialStore>,
    /// Key for the mock credentials of unknown users; random per start.
    mock_key: [u8; 32],
}

impl ScramSha256 {
    /// Panics only when the operating system has no random source.
    pub fn new(store: Rc<dyn CredentialStore>) -> ScramSha256 {
        let mut mock_key = [0u8; 32];
        getrandom::fill(&mut mock_key).expect("the OS random source works (SCRAM mock key)");
        ScramSha256 { store, mock_key }
    }

    fn exchange(&self, fixed_server_nonce: Option<String>) -> ScramExchange {
        ScramExchange {
            store: Rc::clone(&self.store),
            mock_key: self.mock_key,
            fixed_server_nonce,
            state: State::AwaitingClientFirst,
        }
    }
}

impl AuthMethod for ScramSha256 {
    fn name(&self) -> &str {
        SCRAM_SHA_256
    }

    fn begin(&self) -> Box<dyn AuthExchange> {
        Box::new(self.exchange(None))
    }
}

struct ScramExchange {
    store: Rc<dyn CredentialStore>,
    mock_key: [u8; 32],
    /// Only tests set it (to replay RFC 7677's vector); otherwise the server nonce is random.
    fixed_server_nonce: Option<String>,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(Box<ServerFirstSent>),
    Done,
}

/// What the client-final message is checked against.
struct ServerFirstSent {
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credentials: ScramCredentials,
    /// False for the mock credentials of an unknown user: the proof then fails whatever it is.
    user_known: bool,
}

impl AuthExchange for ScramExchange {
    fn start(&mut self, client_data: &[u8]) -> Step {
        if !matches!(self.state, State::AwaitingClientFirst) {
            self.state = State::Done;
            return Step::Fail(AuthFailure::not_authorized("SCRAM client-first-message sent twice"));
        }
        match self.server_first(client_data) {
            Ok(sent) => {
                let server_first = sent.server_first.clone().into_bytes();
                self.state = State::AwaitingClientFinal(Box::new(sent));
                Step::Continue(server_first)
            }
            Err(failure) => {
                self.state = State::Done;
                Step::Fail(failure)
            }
        }
    }

    fn proceed(&mut self, client_data: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingClientFinal(sent) => match verify_client_final(&sent, client_data) {
                Ok(server_final) => {
                    Step::Success(Authenticated { user: sent.username, server_data: Some(server_final.into_bytes()) })
                }
                Err(failure) => Step::Fail(failure),
            },
            State::AwaitingClientFirst => {
                Step::Fail(AuthFailure::not_authorized("SCRAM exchange continued before client-first-message"))
            }
            State::Done => Step::Fail(AuthFailure::not_authorized("SCRAM exchange continued after it ended")),
        }
    }
}

impl ScramExchange {
    /// Parses client-first-message and builds server-first-message: r=nonce,s=salt,i=iterations.
    fn server_first(&mut self, client_data: &[u8]) -> Result<ServerFirstSent, AuthFailure> {
        let text = std::str::from_utf8(client_data).map_err(|_| malformed("client-first-message is not UTF-8"))?;
        let first = parse_client_first(text)?;
        if first.authzid.as_ref().is_some_and(|authzid| *authzid != first.username) {
            return Err(AuthFailure::not_authorized("SCRAM authorization identity differs from the user"));
        }
        let (credentials, user_known) = match self.store.scram_sha256(&first.username) {
            Some(credentials) => (credentials, true),
            None => (self.mock_credentials(&first.username), false),
        };
        let server_nonce = match self.fixed_server_nonce.take() {
            Some(nonce) => nonce,
            None => random_nonce()?,
        };
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!("r={nonce},s={},i={}", BASE64.encode(&credentials.salt), credentials.iterations);
        Ok(ServerFirstSent {
            username: first.username,
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
            credentials,
            user_known,
        })
    }

    /// Stable per user within a run, so asking twice does not reveal the user is unknown.
    fn mock_credentials(&self, username: &str) -> ScramCredentials {
        let salt = hmac_sha256(&self.mock_key, &[b"salt:", username.as_bytes()]);
        ScramCredentials {
            salt: salt[..MOCK_SALT_BYTES].to_vec(),
            iterations: SCRAM_ITERATIONS,
            stored_key: hmac_sha256(&self.mock_key, &[b"stored key:", username.as_bytes()]),
            server_key: hmac_sha256(&self.mock_key, &[b"server key:", username.as_bytes()]),
        }
    }
}

/// Checks client-final-message (c=, r=, p=) and returns server-final-message (v=ServerSignature).
fn verify_client_final(sent: &ServerFirstSent, client_data: &[u8]) -> Result<String, AuthFailure> {
    let text = std::str::from_utf8(client_data).map_err(|_| malformed("client-final-message is not UTF-8"))?;
    // The proof is the last attribute; the AuthMessage covers everything before it.
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(malformed("client-final-message has no proof"))?;
    let mut attributes = without_proof.split(',');
    let channel_binding =
        attribute(attributes.next(), 'c').ok_or(malformed("client-final-message has no channel binding"))?;
    let nonce = attribute(attributes.next(), 'r').ok_or(malformed("client-final-message has no nonce"))?;
    // With no channel binding, c= carries just the gs2 header ("biws" for "n,,").
    if BASE64.decode(channel_binding).ok().as_deref() != Some(sent.gs2_header.as_bytes()) {
        return Err(AuthFailure::not_authorized("SCRAM channel binding does not match the gs2 header"));
    }
    if nonce != sent.nonce {
        return Err(AuthFailure::not_authorized("SCRAM nonce differs from the server-first-message"));
    }
    let proof = BASE64.decode(proof).map_err(|_| malformed("client proof is not base64"))?;
    let proof: [u8; 32] = proof.as_slice().try_into().map_err(|_| malformed("client proof is not 32 bytes"))?;
    let auth_message = format!("{},{},{without_proof}", sent.client_first_bare, sent.server_first);
    let client_signature = hmac_sha256(&sent.credentials.stored_key, &[auth_message.as_bytes()]);
    let mut client_key = proof;
    client_key.iter_mut().zip(client_signature).for_each(|(byte, signature)| *byte ^= signature);
    let proof_valid: bool = sha256(&client_key).ct_eq(&sent.credentials.stored_key).into();
    if !(proof_valid && sent.user_known) {
        return Err(AuthFailure::bad_credentials("SCRAM proof does not match (wrong password or unknown user)"));
    }
    let server_signature = hmac_sha256(&sent.credentials.server_key, &[auth_message.as_bytes()]);
    Ok(format!("v={}", BASE64.encode(server_signature)))
}

/// The parts of client-first-message: gs2-header client-first-message-bare.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    authzid: Option<String>,
    bare: &'a str,
    username: String,
    client_nonce: &'a str,
}

fn parse_client_first(text: &str) -> Result<ClientFirst<'_>, AuthFailure> {
    let (flag, rest) = text.split_once(',').ok_or(malformed("client-first-message has no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        _ if flag.starts_with("p=") => {
            return Err(AuthFailure::not_authorized("SCRAM channel binding is not supported"))
        }
        _ => return Err(malformed("client-first-message has an unknown gs2 channel binding flag")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(malformed("client-first-message gs2 header is not closed"))?;
    let authzid = match authzid {
        "" => None,
        _ => Some(sasl_name(authzid.strip_prefix("a=").ok_or(malformed("gs2 authzid without a="))?)?),
    };
    let gs2_header = &text[..text.len() - bare.len()];
    let mut attributes = bare.split(',');
    let first = attributes.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(AuthFailure::not_authorized("SCRAM mandatory extension is not supported"));
    }
    let username = sasl_name(attribute(Some(first), 'n').ok_or(malformed("client-first-message has no user name"))?)?;
    let client_nonce = attribute(attributes.next(), 'r').ok_or(malformed("client-first-message has no nonce"))?;
    if username.is_empty() || !is_printable_nonce(client_nonce) {
        return Err(malformed("client-first-message has an empty user name or an invalid nonce"));
    }
    Ok(ClientFirst { gs2_header, authzid, bare, username, client_nonce })
}

/// The value of `name=value` when the attribute has that name.
fn attribute(attribute: Option<&str>, name: char) -> Option<&str> {
    attribute?.strip_prefix(name)?.strip_prefix('=')
}

/// Decodes a saslname: "=2C" is ',', "=3D" is '='; any other '=' is malformed (RFC 5802 section 5.1).
fn sasl_name(encoded: &str) -> Result<String, AuthFailure> {
    let mut decoded = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        decoded.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(malformed("user name has an invalid '=' escape")),
        });
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// A nonce is printable ASCII without ',' (RFC 5802 section 7).
fn is_printable_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|byte| (0x21..=0x7E).contains(&byte) && byte != b',')
}

fn random_nonce() -> Result<String, AuthFailure> {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| AuthFailure::not_authorized("no random source for the SCRAM nonce"))?;
    Ok(BASE64.encode(bytes))
}

fn malformed(detail: &'static str) -> AuthFailure {
    AuthFailure::not_authorized(detail)
}

/// HMAC-SHA-256 of the concatenated `parts`.
pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

#[cfg(test)]
mod tests;
