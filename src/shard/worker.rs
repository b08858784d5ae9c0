//! What one shard runs inside its pinned executor: connect the mesh, take over its listening socket,
//! report ready, accept and serve until a stop arrives, then shut down through a gate that waits
//! for every connection task to flush and finish.

use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::ConnectedReceiver;

use super::mesh::MeshEnds;
use super::stop::StopReceiver;
use super::turn::{Shard, ShardMeshItem};
use crate::config::Config;
use crate::connection::{self, ConnectionPermit};

/// How long shutdown waits for connections to flush their last frames.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of descriptors) before trying again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Least time between two log lines about connections refused at `max_connections`.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What a shard knows about the process it runs in.
pub struct ShardContext {
    pub shard: usize,
    pub shards: usize,
    pub config: Arc<Config>,
    pub stop: StopReceiver,
    pub permits: ConnectionPermit,
}

pub async fn run(
    context: ShardContext,
    mesh: MeshEnds<ShardMeshItem>,
    listener: std::net::TcpListener,
    ready: impl FnOnce(),
) {
    let ShardContext { shard: id, shards, config, stop, permits } = context;
    let stop = stop.into_shard_stop();
    let stopped = async {
        stop.wait().await;
        None
    };
    let connecting = futures_lite::future::or(async { Some(mesh.connect().await) }, keep_polling());
    let connected = futures_lite::future::or(connecting, stopped).await;
    let Some((senders, receivers)) = connected else { return };
    let shard = Rc::new(Shard::new(id, shards, config, senders, permits));
    for (from, receiver) in receivers {
        glommio::spawn_local(receive_mesh(shard.clone(), from, receiver)).detach();
    }
    let turns = glommio::spawn_local(shard.clone().run_turns());
    let reads = glommio::spawn_local(connection::pump_reads(shard.clone()));
    // SAFETY: the listener's descriptor moves into the glommio listener, which now owns it.
    let listener =
        unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(listener.into_raw_fd()) };
    ready();
    futures_lite::future::or(accept_loop(shard.clone(), listener), stop.wait()).await;
    shut_down(&shard).await;
    drop(reads);
    drop(turns);
}

/// Keeps the shard from parking while the mesh connects. glommio 0.9 does not wake a parked executor when
/// a peer connects its end of a shared channel (measured: a shard slept until unrelated I/O arrived), and
/// the 1 ms sleep timer first used here to wake it left a shard asleep for good about once in a few
/// hundred starts under load (a fresh-clone CI run: no listening line in 30 s and SIGTERM unanswered; see
/// glommio issues #326 and #547 on short sleeps that never return). Yielding instead never parks: the
/// executor polls its rings and shared channels on every turn, and `thread::yield_now` lets a peer
/// pinned to the same CPU run. It lasts until every peer has connected (milliseconds). Never completes.
async fn keep_polling<T>() -> Option<T> {
    loop {
        std::thread::yield_now();
        futures_lite::future::yield_now().await;
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: glommio::net::TcpListener) {
    let mut refusals = RefusalLog::default();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let peer = stream.peer_addr().ok();
                match shard.permits.try_acquire() {
                    Some(permit) => {
                        tracing::debug!(
                            shard = shard.id,
                            peer = peer.map(tracing::field::display),
                            "connection accepted"
                        );
                        connection::open_accepted(&shard, stream, permit);
                    }
                    // Closed at accept, as Mosquitto and EMQX do: no CONNECT is read, no state is built.
                    None => refusals.refused(&shard, peer),
                }
            }
            Err(err) => {
                tracing::warn!(shard = shard.id, %err, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

/// Logs connections refused at `max_connections`: the first at once, then at most one line per
/// `REFUSAL_LOG_INTERVAL` with the count since the last line, so a connection storm at the limit cannot
/// flood the log.
#[derive(Default)]
struct RefusalLog {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, shard: &Shard, peer: Option<std::net::SocketAddr>) {
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self.last_logged.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            shard = shard.id,
            peer = peer.map(tracing::field::display),
            max_connections = shard.permits.max_connections(),
            refused = self.unlogged,
            "connection refused: max_connections reached, closed at accept"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

async fn receive_mesh(shard: Rc<Shard>, from: usize, receiver: ConnectedReceiver<Vec<ShardMeshItem>>) {
    while let Some(batch) = receiver.recv().await {
        let now = std::time::Instant::now();
        for item in batch {
            match item {
                ShardMeshItem::Core(msg) => shard.core.borrow_mut().handle_mesh(from, msg, now),
                ShardMeshItem::Handoff(handoff) => {
                    tracing::debug!(shard = shard.id, from_shard = from, client_id = %handoff.client_id(),
                        "connection handed over to its home shard");
                    connection::adopt(&shard, handoff)
                }
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
    let (backlog, drops) = shard.mesh_backlog();
    tracing::debug!(shard = shard.id, flushed, backlog, ?drops, "shard stopped");
}
