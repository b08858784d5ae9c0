//! The shards: one pinned glommio executor per CPU in the affinity mask, each with its own SO_REUSEPORT
//! listener, connected by a full mesh of bounded SPSC queues; where they run (`affinity`), how much locked
//! memory they get (`io_budget`), how they start and stop (`launch`, `worker`).

pub mod affinity;
pub mod io_budget;
pub mod launch;
pub mod listener;
pub mod mesh;
pub mod placement;
pub mod stop;
pub mod turn;
mod worker;

pub use launch::{run, StartError};
