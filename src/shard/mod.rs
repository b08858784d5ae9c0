//! The shards: one pinned thread per CPU in the affinity mask, each running one loop over its own
//! io_uring (`event_loop`, `ring`), with its own SO_REUSEPORT listener sockets (`listener`), connected
//! by a full mesh of bounded lock-free queues with a MSG_RING doorbell (`mesh`); where they run
//! (`affinity`), how they start and stop (`launch`, `stop`).

pub mod affinity;
pub mod event_loop;
pub mod launch;
pub mod listener;
pub mod mesh;
pub mod ring;
pub mod stop;

pub use launch::{run, start, BoundListener, RunningBroker, StartError};
