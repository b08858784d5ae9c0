//! Shard-to-shard wakeup latency: how long a batch sent on the mesh takes to be seen by the receiving shard,
//! with the receiver idle (parked) and busy (always runnable tasks), for glommio's default executor settings
//! and for the settings the broker uses (`shard::launch::executor_builder`).
//!
//! Run: `cargo bench --bench shard_wakeup`. Prints one line per scenario with p50 / p99 / max.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardmq::shard::{affinity, io_budget, launch, mesh};

const SAMPLES: usize = 300;
const SEND_GAP: Duration = Duration::from_millis(3);
/// Work the busy receiver does between yields, like a shard serving many connections.
const BUSY_SLICE: Duration = Duration::from_micros(20);

#[derive(Clone, Copy)]
enum Settings {
    GlommioDefault,
    Broker,
}

fn builder(settings: Settings, shard: usize, cpu: usize, budget: io_budget::IoBudget) -> LocalExecutorBuilder {
    match settings {
        Settings::GlommioDefault => LocalExecutorBuilder::new(Placement::Fixed(cpu)).io_memory(budget.io_memory_bytes),
        Settings::Broker => launch::executor_builder(shard, cpu, budget, Duration::ZERO),
    }
}

fn run_scenario(settings: Settings, busy: bool) -> Vec<Duration> {
    let allowed = affinity::allowed_cpus().expect("affinity mask");
    let cpus = affinity::shard_cpus(2, &allowed);
    let budget = io_budget::plan(io_budget::memlock_limit_bytes().unwrap(), 2, None).expect("locked memory");
    let mut ends = mesh::build_mesh::<Instant>(2, 64);
    let receiver_ends = ends.pop().unwrap();
    let sender_ends = ends.pop().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (result_tx, result_rx) = mpsc::channel();

    let sender_builder = builder(settings, 0, cpus[0], budget);
    let sender = std::thread::spawn(move || {
        let executor = sender_builder.make().expect("sender executor");
        executor.run(async move {
            let (senders, _receivers) = sender_ends.connect().await;
            let mut outbox = mesh::MeshOutbox::new(2, usize::MAX, |_| mesh::Shedding::Never);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            for _ in 0..SAMPLES {
                outbox.push(1, Instant::now());
                outbox.flush(&senders);
                glommio::timer::sleep(SEND_GAP).await;
            }
            senders.close();
        });
    });
    let receiver_builder = builder(settings, 1, cpus[1], budget);
    let busy_done = done.clone();
    let receiver = std::thread::spawn(move || {
        let executor = receiver_builder.make().expect("receiver executor");
        executor.run(async move {
            let (_senders, mut receivers) = receiver_ends.connect().await;
            let (_, queue) = receivers.pop().unwrap();
            let worker = busy.then(|| glommio::spawn_local(busy_loop(busy_done.clone())));
            let mut latencies = Vec::with_capacity(SAMPLES);
            while let Some(batch) = queue.recv().await {
                let now = Instant::now();
                latencies.extend(batch.into_iter().map(|sent| now - sent));
            }
            busy_done.store(true, Ordering::Relaxed);
            if let Some(worker) = worker {
                worker.await;
            }
            result_tx.send(latencies).unwrap();
        });
    });
    sender.join().unwrap();
    receiver.join().unwrap();
    result_rx.recv().unwrap()
}

async fn busy_loop(done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        let start = Instant::now();
        while start.elapsed() < BUSY_SLICE {
            std::hint::spin_loop();
        }
        futures_lite::future::yield_now().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("shard wakeup latency, {SAMPLES} batches per scenario, one every {SEND_GAP:?}; loadavg {}", load.trim());
    for (name, settings) in [("glommio defaults", Settings::GlommioDefault), ("broker settings", Settings::Broker)] {
        for busy in [false, true] {
            let mut latencies = run_scenario(settings, busy);
            latencies.sort();
            let receiver = if busy { "busy receiver" } else { "idle receiver" };
            println!(
                "{name:<17} {receiver:<14} p50 {:>10.1?}  p99 {:>10.1?}  max {:>10.1?}",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies[latencies.len() - 1]
            );
        }
    }
}
