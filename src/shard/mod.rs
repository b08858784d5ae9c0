//! The shards: one pinned thread per CPU in the affinity mask, each running one loop over its own
//! io_uring (`event_loop`, `ring`), with its own SO_REUSEPORT listener sockets (`listener`), connected
//! by a full mesh of bounded lock-free queues with a MSG_RING doorbell (`mesh`); where they run
//! (`affinity`), how they start (`launch`), and how the rest of the process reaches them: stop, jobs on
//! a shard's core (`control`), what a quiet shard gives back (`idle_trim`), and the sampler of the
//! process's memory budget (`memory_watch`).

pub mod affinity;
pub mod control;
pub mod event_loop;
pub mod idle_trim;
pub mod launch;
pub mod listener;
pub mod memory_watch;
pub mod mesh;
pub mod reload;
pub mod ring;

pub use control::{Control, ControlError};
pub use launch::{run, start, BoundListener, RunningBroker, StartError};
