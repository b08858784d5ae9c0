//! What one shard runs inside its pinned executor: connect the mesh, take over its listening socket,
//! report ready, accept and serve until the stop flag is set, then shut down through a gate that waits
//! for every connection task to flush and finish.

use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::ConnectedReceiver;

use super::mesh::MeshEnds;
use super::turn::{Shard, ShardMeshItem};
use crate::config::Config;
use crate::connection::{self, ConnectionPermit};

/// How often a shard looks at the process stop flag (set by the SIGINT/SIGTERM handler).
pub const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long shutdown waits for connections to flush their last frames.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of descriptors) before trying again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// What a shard knows about the process it runs in.
pub struct ShardContext {
    pub shard: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    pub stop: Arc<AtomicBool>,
    pub permits: ConnectionPermit,
}

pub async fn run(
    context: ShardContext,
    mesh: MeshEnds<ShardMeshItem>,
    listener: std::net::TcpListener,
    ready: impl FnOnce(),
) {
    let connected = futures_lite::future::or(async { Some(mesh.connect().await) }, async {
        wait_for_stop(&context.stop).await;
        None
    })
    .await;
    let Some((senders, receivers)) = connected else { return };
    let ShardContext { shard: id, shards, config, stop, permits } = context;
    let shard = Rc::new(Shard::new(id, shards, config, senders, permits));
    for (from, receiver) in receivers {
        glommio::spawn_local(receive_mesh(shard.clone(), from, receiver)).detach();
    }
    let turns = glommio::spawn_local(shard.clone().run_turns());
    // SAFETY: the listener's descriptor moves into the glommio listener, which now owns it.
    let listener = unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(listener.into_raw_fd()) };
    ready();
    futures_lite::future::or(accept_loop(shard.clone(), listener), wait_for_stop(&stop)).await;
    shut_down(&shard).await;
    drop(turns);
}

async fn accept_loop(shard: Rc<Shard>, listener: glommio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => match shard.permits.try_acquire() {
                Some(permit) => connection::open_accepted(&shard, stream, permit),
                None => {
                    tracing::warn!(shard = shard.id, max_connections = shard.permits.max_connections(),
                        "refusing connection: max_connections reached");
                }
            },
            Err(err) => {
                tracing::warn!(shard = shard.id, %err, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

async fn receive_mesh(shard: Rc<Shard>, from: usize, receiver: ConnectedReceiver<Vec<ShardMeshItem>>) {
    while let Some(batch) = receiver.recv().await {
        let now = std::time::Instant::now();
        for item in batch {
            match item {
                ShardMeshItem::Core(msg) => shard.core.borrow_mut().handle_mesh(from, msg, now),
                ShardMeshItem::Handoff(handoff) => connection::adopt(&shard, handoff, &shard.permits),
            }
        }
        shard.request_turn();
    }
}

async fn shut_down(shard: &Rc<Shard>) {
    shard.begin_shutdown();
    let flushed = futures_lite::future::or(async { shard.gate.close().await.is_ok() }, async {
        glommio::timer::sleep(SHUTDOWN_FLUSH_TIMEOUT).await;
        false
    })
    .await;
    shard.run_actions();
    shard.close_mesh();
    let (backlog, dropped_batches) = shard.mesh_backlog();
    tracing::debug!(shard = shard.id, flushed, backlog, dropped_batches, "shard stopped");
}

async fn wait_for_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL_INTERVAL).await;
    }
}
