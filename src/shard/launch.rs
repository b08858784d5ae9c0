//! Starting the shards: plan (shard count, CPUs, locked-memory budget), bind the listeners, build the mesh,
//! start one pinned glommio executor per shard on its own thread, wait until every shard is ready, and
//! later wait for all of them to finish after a stop request.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::affinity;
use super::io_budget::{self, IoBudget, IoBudgetError};
use super::listener;
use super::mesh::{build_mesh, MeshEnds};
use super::stop::stop_channels;
use super::turn::ShardMeshItem;
use super::worker::{self, ShardContext};
use crate::config::{Config, ConfigError};
use crate::connection::ConnectionPermit;

/// How long a shard runs tasks before it polls io_uring again. glommio's default (100 ms) means a shard
/// that always has runnable tasks sees socket completions and mesh batches up to 100 ms late (measured:
/// `cargo bench --bench shard_wakeup`, perf/RESULTS.md); a task queue marked `Latency::Matters` only lowers
/// it while that queue has runnable tasks, which a waiting mesh receiver does not.
pub const PREEMPT_TIMER: Duration = Duration::from_micros(500);

/// How long the shards may take to start (each normally needs milliseconds; seconds on a loaded machine).
/// Past it the process reports the failure and exits instead of hanging unnoticed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and with what each shard runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// `cpus[i]` is the CPU shard `i` is pinned to; its length is the shard count.
    pub cpus: Vec<usize>,
    pub budget: IoBudget,
}

/// Why the broker could not start. Printed as one line before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the process CPU affinity mask: {0}")]
    Affinity(std::io::Error),
    #[error("cannot read RLIMIT_MEMLOCK: {0}")]
    MemlockLimit(std::io::Error),
    #[error(transparent)]
    IoBudget(#[from] IoBudgetError),
    #[error("cannot set up the stop signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("shard {shard} (CPU {cpu}) could not start: {reason}")]
    Shard { shard: usize, cpu: usize, reason: String },
    #[error("not all of the {shards} shards were ready within {secs} s (an executor stuck starting); giving up")]
    StartTimeout { shards: usize, secs: u64 },
}

/// Shard count and CPUs from the config and the affinity mask; io memory from RLIMIT_MEMLOCK.
pub fn plan(config: &Config) -> Result<ShardPlan, StartError> {
    let allowed = affinity::allowed_cpus().map_err(StartError::Affinity)?;
    let shards = config.shards.unwrap_or(allowed.len());
    if shards > allowed.len() {
        tracing::warn!(shards, cpus = ?allowed, "more shards than CPUs in the affinity mask; shards share CPUs");
    }
    let limit = io_budget::memlock_limit_bytes().map_err(StartError::MemlockLimit)?;
    let budget = io_budget::plan(limit, shards, config.io_memory_bytes)?;
    Ok(ShardPlan { cpus: affinity::shard_cpus(shards, &allowed), budget })
}

/// The executor builder every shard uses (also used by the wakeup-latency bench, so it measures this).
/// `spin_before_park`: how long an executor with nothing to run keeps polling before it sleeps (zero: it
/// sleeps at once, as glommio does by default). Spinning saves a wake-up when work arrives within the spin,
/// but at low message rates every message ends a spin: 50 µs cost 18-57% more CPU per message at 1,500
/// msgs/s (perf/RESULTS.md "Low-rate CPU"), with no measurable gain in shard wakeup latency.
pub fn executor_builder(
    shard: usize,
    cpu: usize,
    budget: IoBudget,
    spin_before_park: Duration,
) -> LocalExecutorBuilder {
    let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{shard}"))
        .io_memory(budget.io_memory_bytes)
        .ring_depth(budget.ring_depth)
        .preempt_timer(PREEMPT_TIMER);
    if spin_before_park.is_zero() {
        builder
    } else {
        builder.spin_before_park(spin_before_park)
    }
}

enum StartReport {
    Ready,
    Failed { shard: usize, reason: String },
}

/// Runs the broker until SIGINT/SIGTERM and every shard has shut down. `on_ready` runs once, with the
/// bound address, after every shard is accepting.
pub fn run(config: Config, on_ready: impl FnOnce(SocketAddr)) -> Result<(), StartError> {
    let plan = plan(&config)?;
    let shards = plan.cpus.len();
    let listen = config.listen_addr()?;
    let caps = listener::SocketBufferCaps {
        send_bytes: config.socket_send_buffer_bytes,
        recv_bytes: config.socket_recv_buffer_bytes,
    };
    let (listeners, bound) = listener::bind_reuseport(listen, shards, caps).map_err(StartError::Listen)?;
    tracing::info!(shards, cpus = ?plan.cpus, io_memory_bytes = plan.budget.io_memory_bytes,
        ring_depth = plan.budget.ring_depth, "starting shards");
    let config = Arc::new(config);
    let permits = ConnectionPermit::new(config.max_connections);
    let meshes = build_mesh::<ShardMeshItem>(shards, config.mesh_queue_batches);
    let (stop, stop_receivers) = stop_channels(shards).map_err(StartError::Signals)?;
    let stop = Arc::new(stop);
    stop.on_signals().map_err(StartError::Signals)?;
    let (report_tx, report_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    let per_shard = meshes.into_iter().zip(listeners).zip(stop_receivers);
    for (shard, ((mesh, listener), stop)) in per_shard.enumerate() {
        let context = ShardContext { shard, shards, config: config.clone(), stop, permits: permits.clone() };
        let cpu = plan.cpus[shard];
        let spin = Duration::from_micros(config.spin_before_park_micros);
        let builder = executor_builder(shard, cpu, plan.budget, spin);
        let report = report_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{shard}"))
            .spawn(move || run_shard(builder, context, mesh, listener, report))
            .map_err(|err| StartError::Shard { shard, cpu, reason: err.to_string() })?;
        threads.push(thread);
    }
    drop(report_tx);
    let started = wait_until_ready(&report_rx, shards, &plan);
    match &started {
        Ok(()) => on_ready(bound),
        // A shard that never started may never see the stop either: return without joining (the process
        // exits with the error, taking the stuck thread with it).
        Err(StartError::StartTimeout { .. }) => {
            stop.stop_all();
            return started;
        }
        Err(_) => stop.stop_all(),
    }
    for thread in threads {
        if thread.join().is_err() {
            tracing::error!("a shard thread panicked");
        }
    }
    started
}

fn wait_until_ready(reports: &mpsc::Receiver<StartReport>, shards: usize, plan: &ShardPlan) -> Result<(), StartError> {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    for _ in 0..shards {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match reports.recv_timeout(left) {
            Ok(StartReport::Ready) => {}
            Ok(StartReport::Failed { shard, reason }) => {
                return Err(StartError::Shard { shard, cpu: plan.cpus[shard], reason })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(StartError::StartTimeout { shards, secs: START_TIMEOUT.as_secs() })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(StartError::Shard { shard: 0, cpu: plan.cpus[0], reason: "thread ended early".into() })
            }
        }
    }
    Ok(())
}

fn run_shard(
    builder: LocalExecutorBuilder,
    context: ShardContext,
    mesh: MeshEnds<ShardMeshItem>,
    listener: std::net::TcpListener,
    report: mpsc::Sender<StartReport>,
) {
    let shard = context.shard;
    let executor = match builder.make() {
        Ok(executor) => executor,
        Err(err) => {
            let reason = format!("{err} (locked memory or io_uring unavailable?)");
            let _ = report.send(StartReport::Failed { shard, reason });
            return;
        }
    };
    executor.run(async move {
        let ready = move || {
            let _ = report.send(StartReport::Ready);
        };
        worker::run(context, mesh, listener, ready).await;
    });
}
