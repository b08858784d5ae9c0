//! The dashboard page served at `/`: one static HTML file with its script inline (no build step, no
//! external resources), which polls `/metrics` every second and draws connections and message rates
//! over time, per-shard load, and the client list of the HTTP API (`/api/v1/clients`, admin token).

/// The page, embedded at compile time.
pub const PAGE: &str = include_str!("dashboard.html");
