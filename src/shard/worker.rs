//! What one shard runs inside its pinned executor: connect the mesh, take over its listening socket,
//! report ready, serve until the stop flag is set, then shut down through a gate.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::mesh::MeshEnds;

/// How often a shard looks at the process stop flag (set by the SIGINT/SIGTERM handler).
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a shard knows about the process it runs in.
pub struct ShardContext {
    pub shard: usize,
    pub stop: Arc<AtomicBool>,
}

/// What travels between shards.
pub enum ShardMeshItem {}

pub async fn run(
    context: ShardContext,
    mesh: MeshEnds<ShardMeshItem>,
    listener: std::net::TcpListener,
    ready: impl FnOnce(),
) {
    let context = Rc::new(context);
    let connected = futures_lite::future::or(async { Some(mesh.connect().await) }, async {
        wait_for_stop(&context.stop).await;
        None
    })
    .await;
    let Some((senders, _receivers)) = connected else { return };
    let _listener = listener;
    ready();
    wait_for_stop(&context.stop).await;
    senders.close();
    tracing::debug!(shard = context.shard, "shard stopped");
}

async fn wait_for_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL_INTERVAL).await;
    }
}
