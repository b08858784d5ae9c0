//! shardmq: a thread-per-core MQTT broker.
//!
//! Layers, from the wire inwards: `protocol` (codec), then the sans-I/O `broker` core, then `shard`
//! (executors, mesh, timers) and `connection` (per-connection driver); `metrics` shows what the broker does
//! (`$SYS`, Prometheus, the dashboard). See ARCHITECTURE.md.

pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
/// The fuzz targets' checks, shared by `fuzz/` (libFuzzer) and `tests/fuzz_smoke.rs`; not an API.
#[doc(hidden)]
pub mod fuzz_checks;
pub mod http;
pub mod metrics;
pub mod persist;
pub mod protocol;
pub mod shard;
pub mod sim;
pub mod transport;
pub mod validation;
