//! The one interpreter of a core's actions. The shard's event loop (sockets, the mesh) and the in-process
//! simulation (`sim::pump_cores`, which the core test harness and the fuzz checks use) differ only in
//! what a write, a close and a mesh message do; which action means which call is decided here.

use super::message::{Action, MeshMessage};
use super::{ConnId, ShardCore, ShardId};

/// What carries out a core's actions.
pub trait ActionTarget {
    /// The core whose actions are run.
    fn core(&mut self) -> &mut ShardCore;
    /// Frames are queued for `conn`: take them (`ShardCore::take_output`) and write them.
    fn write(&mut self, conn: ConnId);
    /// Take `conn`'s last frames, write them, then close it; the core has already forgotten it.
    fn close(&mut self, conn: ConnId);
    /// Carry `msg` to shard `to`.
    fn mesh(&mut self, to: ShardId, msg: MeshMessage);
}

/// Carries out every action the core has queued, oldest first, including those queued meanwhile.
/// Returns whether there was any.
pub fn run_actions(target: &mut impl ActionTarget) -> bool {
    let mut any = false;
    while let Some(action) = target.core().poll_action() {
        any = true;
        match action {
            Action::Write(conn) => target.write(conn),
            Action::Close(conn) => target.close(conn),
            Action::Mesh { to, msg } => target.mesh(to, msg),
        }
    }
    any
}
