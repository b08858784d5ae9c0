//! The checks behind the fuzz targets, one module per target, each a `check(data)` that panics when an
//! invariant breaks. They live in the library so that one copy serves two runners: the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (libFuzzer, nightly, for hours) are one-line wrappers around them, and
//! `tests/fuzz_smoke.rs` runs them under `cargo test` over the committed seeds and a bounded number of
//! mutations of them (seconds, stable). Not an API: nothing in the broker calls them.

pub mod acl_file;
pub mod config;
pub mod core_sequence;
pub mod decode;
pub mod dynsec;
pub mod http_request;
pub mod password_file;
pub mod websocket;

/// A check: returns when the input keeps every invariant, panics otherwise.
pub type Check = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` and `fuzz/corpus/<target>/` name them.
pub const TARGETS: [(&str, Check); 8] = [
    ("acl_file", acl_file::check),
    ("config", config::check),
    ("core_sequence", core_sequence::check),
    ("decode", decode::check),
    ("dynsec", dynsec::check),
    ("http_request", http_request::check),
    ("password_file", password_file::check),
    ("websocket", websocket::check),
];
