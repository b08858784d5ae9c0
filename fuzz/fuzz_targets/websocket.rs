//! Fuzz target `websocket`: a wrapper around `shardmq::fuzz_checks::websocket::check`
//! (src/fuzz_checks/websocket.rs says what it feeds and which invariants it asserts).
//! `tests/fuzz_smoke.rs` runs the same check under `cargo test` over the seeds and mutations of them.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shardmq::fuzz_checks::websocket::check(data));
