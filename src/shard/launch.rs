//! Starting the shards: plan (shard count and CPUs from the affinity mask), bind the listeners, build the
//! mesh, start one pinned thread per shard (each builds its own io_uring), wait until every shard is
//! ready, and later wait for all of them to finish after a stop request.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::affinity;
use super::control::{control_channels, Control};
use super::event_loop::{ListenerSocket, ListenerTransport, Shard, ShardMeshItem, ShardSetup};
use super::listener;
use super::mesh::build_mesh;
use super::reload::{ReloadOutcome, Reloader};
use crate::config::{Config, ConfigError, ListenerConfig, TransportKind};
use crate::connection::ConnectionPermit;
use crate::transport::tls::{TlsAcceptor, TlsError};
use crate::transport::websocket::WebSocketSettings;

/// How long the shards may take to start (each normally needs milliseconds; seconds on a loaded machine).
/// Past it the process reports the failure and exits instead of hanging unnoticed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where each shard runs: `cpus[i]` is the CPU shard `i` is pinned to; its length is the shard count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub cpus: Vec<usize>,
}

/// Why the broker could not start. Printed as one line before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the process CPU affinity mask: {0}")]
    Affinity(std::io::Error),
    #[error("cannot set up the stop signal handling: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("shard {shard} (CPU {cpu}) could not start: {reason}")]
    Shard { shard: usize, cpu: usize, reason: String },
    #[error("not all of the {shards} shards were ready within {secs} s; giving up")]
    StartTimeout { shards: usize, secs: u64 },
    #[error("listener {bind}: {source}")]
    Tls { bind: String, source: TlsError },
    #[error(transparent)]
    Persistence(#[from] crate::persist::PersistError),
    #[error("cannot read RLIMIT_MEMLOCK: {0}")]
    MemlockLimit(std::io::Error),
    #[error("the locked-memory limit (ulimit -l) of {limit_kib} KiB is too small for {shards} shards: each shard's io_uring needs at least {needed_kib} KiB; raise it (ulimit -l, systemd LimitMEMLOCK=) or run fewer shards")]
    MemlockTooSmall { limit_kib: u64, shards: usize, needed_kib: u64 },
}

/// Bytes of locked memory a shard's ring of `entries` submission slots is charged (an unprivileged
/// process's io_uring rings count against RLIMIT_MEMLOCK): the SQ and CQ rings (the CQ has four times the
/// entries), the SQE array and the page of the provided-buffer ring, each rounded up to whole pages.
pub fn ring_locked_bytes(entries: u32) -> u64 {
    let page = |bytes: u64| bytes.div_ceil(4096) * 4096;
    let entries = u64::from(entries);
    page(64 + entries * 4 + entries * 4 * 16) + page(entries * 64) + 4096
}

/// The ring size every shard gets: the configured one, or the largest power of two that lets all
/// `shards` rings fit under the locked-memory limit (`None`: no limit, as for root).
pub fn ring_entries_within(
    configured: u32,
    shards: usize,
    memlock_limit_bytes: Option<u64>,
) -> Result<u32, StartError> {
    let Some(limit) = memlock_limit_bytes else { return Ok(configured) };
    let per_shard = limit / shards.max(1) as u64;
    let mut entries = configured;
    while entries > MIN_RING_ENTRIES && ring_locked_bytes(entries) > per_shard {
        entries /= 2;
    }
    if ring_locked_bytes(entries) > per_shard {
        return Err(StartError::MemlockTooSmall {
            limit_kib: limit / 1024,
            shards,
            needed_kib: ring_locked_bytes(MIN_RING_ENTRIES).div_ceil(1024),
        });
    }
    Ok(entries)
}

/// The smallest ring a shard runs with (it still works: a full queue is submitted early).
const MIN_RING_ENTRIES: u32 = 8;

/// RLIMIT_MEMLOCK of this process, `None` when it does not bind (unlimited, or CAP_IPC_LOCK as root).
fn memlock_limit() -> Result<Option<u64>, StartError> {
    // SAFETY: getrlimit(2) fills a plain struct.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(StartError::MemlockLimit(std::io::Error::last_os_error()));
    }
    let privileged = unsafe { libc::geteuid() } == 0;
    Ok((limit.rlim_cur != libc::RLIM_INFINITY && !privileged).then_some(limit.rlim_cur))
}

/// Shard count and CPUs from the config and the affinity mask.
pub fn plan(config: &Config) -> Result<ShardPlan, StartError> {
    let allowed = affinity::allowed_cpus().map_err(StartError::Affinity)?;
    let shards = config.shards.unwrap_or(allowed.len());
    if shards > allowed.len() {
        tracing::warn!(shards, cpus = ?allowed, "more shards than CPUs in the affinity mask; shards share CPUs");
    }
    Ok(ShardPlan { cpus: affinity::shard_cpus(shards, &allowed) })
}

enum StartReport {
    Ready,
    Failed { shard: usize, reason: String },
}

/// A listener as bound (port 0 resolved) and what it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundListener {
    pub addr: SocketAddr,
    pub transport: TransportKind,
}

/// A started broker: its bound listeners, a way to stop it and its shard threads.
pub struct RunningBroker {
    listeners: Vec<BoundListener>,
    control: Control,
    reloader: Arc<Reloader>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningBroker {
    /// The address of the first listener, as bound (port 0 resolved).
    pub fn bound(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Every listener, in configuration order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The way into the shards (jobs on their cores, stop) for the rest of the process.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Asks every shard to stop (as SIGTERM does).
    pub fn stop(&self) {
        self.control.stop_all();
    }

    /// Reads the configured files again and swaps in the ones that read cleanly (as SIGHUP does).
    pub fn reload(&self) -> ReloadOutcome {
        self.reloader.reload()
    }

    /// Waits until every shard has shut down.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

/// Starts every shard and returns once all accept connections.
pub fn start(config: Config) -> Result<RunningBroker, StartError> {
    let mut config = config;
    let plan = plan(&config)?;
    let shards = plan.cpus.len();
    config.ring_entries = ring_entries_within(config.ring_entries, shards, memlock_limit()?)?;
    let caps = listener::SocketBufferCaps {
        send_bytes: config.socket_send_buffer_bytes,
        recv_bytes: config.socket_recv_buffer_bytes,
    };
    let mut per_shard: Vec<Vec<ListenerSocket>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    let mut tls_acceptors = Vec::new();
    let mut listener_caps = Vec::new();
    for spec in config.effective_listeners()? {
        listener_caps.push(spec.connections_max);
        let transport = Arc::new(listener_transport(&spec, config.mqtt.packet_size_max_bytes)?);
        if let ListenerTransport::Tls(acceptor) | ListenerTransport::WebSocketTls(acceptor, _) = &*transport {
            tls_acceptors.push((spec.bind.clone(), acceptor.clone()));
        }
        let addr = spec.bind_addr().map_err(|reason| ConfigError::Invalid { field: "listeners.bind", reason })?;
        let (sockets, addr) = listener::bind_reuseport(addr, shards, caps).map_err(StartError::Listen)?;
        bound.push(BoundListener { addr, transport: spec.transport });
        for (shard, socket) in sockets.into_iter().enumerate() {
            per_shard[shard].push(ListenerSocket { socket, transport: transport.clone() });
        }
    }
    tracing::info!(shards, cpus = ?plan.cpus, ring_entries = config.ring_entries, "starting shards");
    let config = Arc::new(config);
    let per_address = crate::connection::address_limit::AddressLimits {
        connections_max: config.connections_per_address_max,
        connect_rate_max_per_second: config.connect_rate_per_address_max_per_second,
    };
    let permits = ConnectionPermit::with_limits(config.connections_max, &listener_caps, per_address);
    let mesh = build_mesh::<ShardMeshItem>(shards, config.mesh_queue_batches);
    let (control, control_receivers) = control_channels(shards).map_err(StartError::Signals)?;
    if let Some(external) = config.mqtt.access.external() {
        // The auth backend's answers go back to the asking shard as control jobs (a cold path: one job
        // per call to the backend, never per message).
        let control = control.clone();
        external.start(Box::new(move |answer| {
            let shard = answer.shard;
            let _ = control.run_on(shard, move |core, now| core.external_answer(answer, now));
        }));
    }
    let reloader = Arc::new(Reloader::new(
        control.clone(),
        tls_acceptors,
        config.mqtt.access.clone(),
        config.mqtt.validation_rules.clone(),
    ));
    let (report_tx, report_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    let mut logs = open_logs(&config, shards)?;
    let memory = Arc::new(crate::broker::MemoryBudget::new(config.memory_max_bytes));
    super::memory_watch::start(&memory);
    for (shard, (listeners, control_receiver)) in per_shard.into_iter().zip(control_receivers).enumerate() {
        let setup = ShardSetup {
            log: logs.get_mut(shard).and_then(Option::take),
            shard,
            shards,
            config: config.clone(),
            control: control_receiver,
            permits: permits.clone(),
            links: mesh.links(shard),
            listeners,
            memory: memory.clone(),
        };
        let cpu = plan.cpus[shard];
        let report = report_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{shard}"))
            .spawn(move || run_shard(cpu, setup, report))
            .map_err(|err| StartError::Shard { shard, cpu, reason: err.to_string() })?;
        threads.push(thread);
    }
    drop(report_tx);
    let running = RunningBroker { listeners: bound, control, reloader, threads };
    match wait_until_ready(&report_rx, shards, &plan) {
        Ok(()) => Ok(running),
        // A shard that never started may never see the stop either: return without joining (the process
        // exits with the error, taking the stuck thread with it).
        Err(err @ StartError::StartTimeout { .. }) => {
            running.stop();
            Err(err)
        }
        Err(err) => {
            running.stop();
            running.join();
            Err(err)
        }
    }
}

/// Each shard's log, opened and replayed (in order, before any shard starts), when `[persistence] dir` is
/// set; a directory of another format or shard count stops the start here.
fn open_logs(
    config: &Config,
    shards: usize,
) -> Result<Vec<Option<(crate::persist::ShardLog, crate::persist::RecoveredState)>>, StartError> {
    let Some(dir) = &config.persistence.dir else { return Ok(Vec::new()) };
    let started = std::time::Instant::now();
    let log_dir = crate::persist::LogDir::open(dir, shards)?;
    let logs = (0..shards)
        .map(|shard| crate::persist::open_shard_log(&log_dir, shard).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(dir = %dir.display(), durability = ?config.persistence.durability, ms = started.elapsed().as_millis() as u64, "persistence: logs read");
    Ok(logs)
}

/// Runs the broker until SIGINT/SIGTERM and every shard has shut down; SIGHUP reloads the files the
/// configuration names. `on_ready` runs once, with the bound listeners and the control handle (to start
/// side threads with), after every shard is accepting.
pub fn run(config: Config, on_ready: impl FnOnce(&[BoundListener], &Control)) -> Result<(), StartError> {
    let running = start(config)?;
    let reloader = running.reloader.clone();
    running
        .control
        .on_signals(move || {
            reloader.reload();
        })
        .map_err(StartError::Signals)?;
    on_ready(running.listeners(), running.control());
    running.join();
    Ok(())
}

/// What carries a listener's connections, built once (a TLS listener's certificates are read here).
fn listener_transport(spec: &ListenerConfig, packet_size_max_bytes: u32) -> Result<ListenerTransport, StartError> {
    let tls = || {
        let settings = spec.tls.clone().unwrap_or_default();
        TlsAcceptor::new(settings).map(Arc::new).map_err(|source| StartError::Tls { bind: spec.bind.clone(), source })
    };
    let websocket = || WebSocketSettings {
        path: spec.websocket_path.clone(),
        origins: spec.websocket_origins.clone(),
        // A whole MQTT packet fits one frame (or one reassembled message); a frame header is at most 14 bytes.
        max_frame_bytes: packet_size_max_bytes as usize + 16,
        ..WebSocketSettings::default()
    };
    match spec.transport {
        TransportKind::Mqtt => Ok(ListenerTransport::Plain),
        TransportKind::Tls => Ok(ListenerTransport::Tls(tls()?)),
        TransportKind::Ws => Ok(ListenerTransport::WebSocket(websocket())),
        TransportKind::Wss => Ok(ListenerTransport::WebSocketTls(tls()?, websocket())),
    }
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

fn run_shard(cpu: usize, setup: ShardSetup, report: mpsc::Sender<StartReport>) {
    let shard_index = setup.shard;
    if let Err(err) = affinity::pin_current_thread(cpu) {
        tracing::warn!(shard = shard_index, cpu, %err, "cannot pin the shard thread to its CPU; it runs unpinned");
    }
    match Shard::new(setup) {
        Ok(shard) => {
            let _ = report.send(StartReport::Ready);
            shard.run();
        }
        Err(err) => {
            let _ = report.send(StartReport::Failed { shard: shard_index, reason: err.to_string() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_shrink_to_fit_the_locked_memory_limit() {
        assert_eq!(ring_entries_within(4096, 2, None).unwrap(), 4096, "no limit: as configured");
        assert_eq!(ring_entries_within(4096, 2, Some(8 << 20)).unwrap(), 4096, "8 MiB fits two 4096-entry rings");
        let small = ring_entries_within(4096, 2, Some(64 << 10)).unwrap();
        assert!(small < 4096 && 2 * ring_locked_bytes(small) <= 64 << 10, "{small}");
        assert!(2 * ring_locked_bytes(small * 2) > 64 << 10, "the largest that fits: {small}");
    }

    #[test]
    fn a_limit_too_small_for_the_smallest_ring_is_a_clear_error() {
        let err = ring_entries_within(4096, 2, Some(8 << 10)).unwrap_err().to_string();
        assert!(err.contains("ulimit -l") && err.contains("8 KiB") && err.contains("2 shards"), "{err}");
    }
}
