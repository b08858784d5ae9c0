//! An idle broker sleeps: with connections open and nothing happening, its shards wait in the kernel
//! until a completion or a deadline (the timer wheel's 100 ms tick while keep-alives are armed), so
//! its CPU over a few seconds stays near zero. A busy loop (a shard that keeps finding work it does not
//! do, a wait that returns at once) shows here as a whole core.

mod support;

use std::time::{Duration, Instant};

use support::raw::{self, Level, RawClient};
use support::{spread_client_ids, Broker};

/// Broker CPU (user + system) in seconds, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after_name = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf(3) with a valid name.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_broker_with_open_connections_uses_almost_no_cpu() {
    let broker = Broker::start();
    let mut clients = Vec::new();
    for id in spread_client_ids("idle-cpu", 40) {
        let level = if clients.len() % 2 == 0 { Level::V5 } else { Level::V311 };
        let mut client = RawClient::connect(broker.port(), level).await;
        client.handshake(&raw::connect(level, &id, true, 60, None)).await;
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (started, before) = (Instant::now(), cpu_seconds(broker.pid()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(broker.pid()) - before;
    let share = used / started.elapsed().as_secs_f64();
    println!("idle broker: {used:.3} CPU-s in {:?} ({:.2}% of one core)", started.elapsed(), share * 100.0);
    // A busy shard would show ~100%; the 100 ms timer ticks of two shards cost well under 1%.
    assert!(share < 0.05, "an idle broker used {:.1}% of a core", share * 100.0);
    drop(clients);
}
