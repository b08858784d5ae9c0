//! SCRAM-SHA-256 server checked against RFC 7677's example exchange and against an independent client
//! (the `scram` crate), plus every way a client message can be refused.

use std::rc::Rc;

use super::*;
use crate::auth::{FailureKind, MemoryCredentialStore};

/// RFC 7677 section 3: user "user", password "pencil", salt and nonces as printed there.
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_method() -> ScramSha256 {
    let salt = BASE64.decode(RFC_SALT_B64).expect("RFC salt is base64");
    let mut store = MemoryCredentialStore::default();
    store.insert("user", ScramCredentials::derive("pencil", &salt, 4096));
    ScramSha256::new(Rc::new(store))
}

fn method_with(users: &[(&str, &str)]) -> ScramSha256 {
    let users: Vec<_> = users
        .iter()
        .map(|(username, password)| crate::auth::ScramUser {
            username: (*username).into(),
            password: (*password).into(),
        })
        .collect();
    ScramSha256::new(Rc::new(MemoryCredentialStore::from_users(&users)))
}

fn continue_data(step: Step) -> String {
    match step {
        Step::Continue(data) => String::from_utf8(data).expect("server messages are UTF-8"),
        other => panic!("expected Continue, got {other:?}"),
    }
}

fn failure_kind(step: Step) -> FailureKind {
    match step {
        Step::Fail(failure) => failure.kind,
        other => panic!("expected Fail, got {other:?}"),
    }
}

/// Runs the `scram` crate's client against our server; returns the server's last step and whether the
/// client accepted the server signature.
fn exchange_with_client(method: &ScramSha256, username: &str, password: &str) -> (Step, bool) {
    let client = scram::ScramClient::new(username, password, None);
    let (client, client_first) = client.client_first();
    let mut exchange = method.begin();
    let server_first = continue_data(exchange.start(client_first.as_bytes()));
    let client = client.handle_server_first(&server_first).expect("client accepts our server-first");
    let (client, client_final) = client.client_final();
    let step = exchange.proceed(client_final.as_bytes());
    let verified = match &step {
        Step::Success(Authenticated { server_data: Some(data), .. }) => {
            client.handle_server_final(std::str::from_utf8(data).expect("UTF-8")).is_ok()
        }
        _ => false,
    };
    (step, verified)
}

#[test]
fn rfc_7677_example_exchange_is_reproduced_exactly() {
    let method = rfc_method();
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    assert_eq!(continue_data(exchange.start(RFC_CLIENT_FIRST.as_bytes())), RFC_SERVER_FIRST);
    let step = exchange.proceed(RFC_CLIENT_FINAL.as_bytes());
    let expected = Authenticated { user: "user".into(), server_data: Some(RFC_SERVER_FINAL.as_bytes().to_vec()) };
    assert_eq!(step, Step::Success(expected));
}

#[test]
fn rfc_7677_client_final_with_one_flipped_proof_bit_fails() {
    let method = rfc_method();
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    exchange.start(RFC_CLIENT_FIRST.as_bytes());
    let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(failure_kind(exchange.proceed(tampered.as_bytes())), FailureKind::BadCredentials);
}

#[test]
fn independent_client_authenticates_and_verifies_the_server() {
    let method = method_with(&[("alice", "correct horse"), ("bob", "battery staple")]);
    let (step, client_verified_server) = exchange_with_client(&method, "alice", "correct horse");
    assert!(matches!(&step, Step::Success(done) if done.user == "alice"), "{step:?}");
    assert!(client_verified_server, "the scram crate rejected our server signature");
}

#[test]
fn wrong_password_is_bad_credentials() {
    let method = method_with(&[("alice", "correct horse")]);
    let (step, _) = exchange_with_client(&method, "alice", "wrong horse");
    assert_eq!(failure_kind(step), FailureKind::BadCredentials);
}

#[test]
fn unknown_user_gets_a_stable_mock_challenge_then_bad_credentials() {
    let method = method_with(&[("alice", "correct horse")]);
    let salt_of = |first: &str| {
        let server_first = continue_data(method.begin().start(first.as_bytes()));
        server_first.split(',').find(|part| part.starts_with("s=")).map(str::to_owned).expect("salt attribute")
    };
    assert_eq!(salt_of("n,,n=mallory,r=abc"), salt_of("n,,n=mallory,r=xyz"), "mock salt must not change per attempt");
    assert_ne!(salt_of("n,,n=mallory,r=abc"), salt_of("n,,n=trudy,r=abc"));
    let (step, _) = exchange_with_client(&method, "mallory", "anything");
    assert_eq!(failure_kind(step), FailureKind::BadCredentials);
}

#[test]
fn server_nonce_is_fresh_and_extends_the_client_nonce() {
    let method = method_with(&[("alice", "pw")]);
    let nonce_of = || {
        let server_first = continue_data(method.begin().start(b"n,,n=alice,r=clientnonce"));
        server_first.split(',').next().map(str::to_owned).expect("nonce attribute")
    };
    let (first, second) = (nonce_of(), nonce_of());
    assert!(first.starts_with("r=clientnonce") && first.len() > "r=clientnonce".len() + 16, "{first}");
    assert_ne!(first, second);
}

#[test]
fn channel_binding_data_must_match_the_gs2_header() {
    let method = rfc_method();
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    exchange.start(RFC_CLIENT_FIRST.as_bytes());
    // "eSws" is base64("y,,"): not what this client sent in its gs2 header.
    let mismatched = RFC_CLIENT_FINAL.replace("c=biws", "c=eSws");
    assert_eq!(failure_kind(exchange.proceed(mismatched.as_bytes())), FailureKind::NotAuthorized);
}

#[test]
fn nonce_must_be_the_one_the_server_sent() {
    let method = rfc_method();
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    exchange.start(RFC_CLIENT_FIRST.as_bytes());
    let other_nonce = RFC_CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1");
    assert_eq!(failure_kind(exchange.proceed(other_nonce.as_bytes())), FailureKind::NotAuthorized);
}

#[test]
fn unsupported_or_malformed_client_first_messages_fail() {
    let method = rfc_method();
    for first in [
        "p=tls-unique,,n=user,r=abc",
        "x,,n=user,r=abc",
        "n,,m=ext,n=user,r=abc",
        "n,,n=user",
        "n,,n=,r=abc",
        "n,,n=us=er,r=abc",
        "n,,r=abc",
        "n,a=admin,n=user,r=abc",
        "",
    ] {
        assert_eq!(failure_kind(method.begin().start(first.as_bytes())), FailureKind::NotAuthorized, "{first:?}");
    }
    assert_eq!(failure_kind(method.begin().start(&[0xFF, 0xFE])), FailureKind::NotAuthorized, "invalid UTF-8");
}

#[test]
fn escaped_user_names_and_matching_authzid_are_accepted() {
    // Hand-written messages: the `scram` crate 0.6 client does not escape ',' and '=' in user names.
    let mut store = MemoryCredentialStore::default();
    let credentials = ScramCredentials::derive("pw", b"escaped-user-salt", 4096);
    store.insert("a,b=c", credentials.clone());
    let method = ScramSha256::new(Rc::new(store));
    let server_first = continue_data(method.begin().start(b"n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=abc"));
    let salt = format!("s={}", BASE64.encode(&credentials.salt));
    assert!(server_first.split(',').any(|part| part == salt), "decoded name must find the stored user: {server_first}");
}

#[test]
fn steps_out_of_order_fail() {
    let method = rfc_method();
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    assert_eq!(failure_kind(exchange.proceed(RFC_CLIENT_FINAL.as_bytes())), FailureKind::NotAuthorized);
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    exchange.start(RFC_CLIENT_FIRST.as_bytes());
    assert_eq!(failure_kind(exchange.start(RFC_CLIENT_FIRST.as_bytes())), FailureKind::NotAuthorized);
    let mut exchange = method.exchange(Some(RFC_SERVER_NONCE.into()));
    exchange.start(RFC_CLIENT_FIRST.as_bytes());
    assert!(matches!(exchange.proceed(RFC_CLIENT_FINAL.as_bytes()), Step::Success(_)));
    assert_eq!(
        failure_kind(exchange.proceed(RFC_CLIENT_FINAL.as_bytes())),
        FailureKind::NotAuthorized,
        "replay after success"
    );
}
