//! Scale simulation: millions of sessions on the sans-I/O broker core, without sockets.
//!
//! One process here can hold only ~19,900 sockets, so this drives `ShardCore`s directly (two shards by
//! default, mesh carried by hand) to measure what a session costs the broker itself. Memory is read from
//! the allocator (a counting wrapper around mimalloc, the binary's allocator), not estimated.
//!
//! Run: `cargo bench --bench scale -- --sessions 1000000` (and `--sessions 5000000`). Options:
//! `--shards N` (2), `--keepalive-secs S` (30), `--publishes N` (200000), `--broadcast` (also subscribe every
//! session to one topic and route one message to all of them).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{ProtocolVersion, QoS};
use shardmq::sim::{OutputMode, SimClient, SimCluster};

/// mimalloc with a running total of live requested bytes.
struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        MIMALLOC.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        MIMALLOC.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        MIMALLOC.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

struct Options {
    sessions: usize,
    shards: usize,
    keepalive_secs: u16,
    publishes: usize,
    broadcast: bool,
}

fn parse_options() -> Options {
    let mut options =
        Options { sessions: 1_000_000, shards: 2, keepalive_secs: 30, publishes: 200_000, broadcast: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            let text = args.next().unwrap_or_else(|| panic!("{name} needs a value"));
            text.parse().unwrap_or_else(|_| panic!("{name}: not a number: {text}"))
        };
        match arg.as_str() {
            "--sessions" => options.sessions = value("--sessions"),
            "--shards" => options.shards = value("--shards"),
            "--keepalive-secs" => options.keepalive_secs = value("--keepalive-secs") as u16,
            "--publishes" => options.publishes = value("--publishes"),
            "--broadcast" => options.broadcast = true,
            // `cargo bench` passes `--bench`; ignore flags meant for other harnesses.
            _ => {}
        }
    }
    options
}

fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn settings(sessions: usize) -> BrokerSettings {
    // Keep-alives up to an hour and room for every session (and the publishers) on one shard (the default
    // stops at 1M per shard); nothing else differs from the defaults a user gets.
    BrokerSettings { keepalive_max_secs: 3600, sessions_per_shard_max: sessions + 16, ..BrokerSettings::default() }
}

fn main() {
    let options = parse_options();
    let start = Instant::now();
    let mut now = start;
    let mut cluster =
        SimCluster::new(options.shards, settings(options.sessions), ProtocolVersion::V5, OutputMode::Discard);
    println!(
        "scale simulation: {} sessions over {} shards, keep-alive {} s",
        options.sessions, options.shards, options.keepalive_secs
    );

    let (bytes_before, rss_before) = (live_bytes(), rss_bytes());
    let timer = Instant::now();
    let mut clients: Vec<SimClient> = Vec::with_capacity(options.sessions);
    for id in 0..options.sessions {
        clients.push(cluster.connect(&format!("dev{id:08}"), options.keepalive_secs, now));
        if id % 4096 == 0 {
            cluster.pump(now);
        }
    }
    cluster.pump(now);
    let connect_time = timer.elapsed();
    let clients_vec_bytes = clients.capacity() * std::mem::size_of::<SimClient>();
    let session_bytes = live_bytes() - bytes_before - clients_vec_bytes;
    let rss_sessions = rss_bytes().saturating_sub(rss_before);
    let connected: usize = cluster.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(connected, options.sessions, "every simulated client must be connected");

    let bytes_before_subs = live_bytes();
    let timer = Instant::now();
    for (id, client) in clients.iter().enumerate() {
        cluster.subscribe(*client, &format!("devices/dev{id:08}/cmd"), QoS::AtLeastOnce, 1, now);
        if id % 4096 == 0 {
            cluster.pump(now);
        }
    }
    cluster.pump(now);
    let subscribe_time = timer.elapsed();
    let subscription_bytes = live_bytes() - bytes_before_subs;
    let trie_nodes: usize = cluster.cores().iter().map(|core| core.gauges().subscription_trie_nodes).sum();
    let interest_nodes: usize = cluster.cores().iter().map(|core| core.gauges().interest_trie_nodes).sum();

    // Keep-alive: every client pings once per keep-alive interval; the shard ticks its timer wheel each second.
    let simulated_secs = 2 * u64::from(options.keepalive_secs);
    let pings_per_sec = options.sessions as u64 / u64::from(options.keepalive_secs);
    let timer = Instant::now();
    let mut next_client = 0usize;
    for _ in 0..simulated_secs {
        now += Duration::from_secs(1);
        for _ in 0..pings_per_sec {
            cluster.ping(clients[next_client], now);
            next_client = (next_client + 1) % clients.len();
        }
        cluster.tick(now);
        cluster.pump(now);
    }
    let keepalive_time = timer.elapsed();
    let still_connected: usize = cluster.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(still_connected, options.sessions, "pinging clients must not time out");

    // Point publishes: one device's command topic each, from a publisher on shard 0's side.
    let publisher = cluster.connect("publisher", 0, now);
    cluster.pump(now);
    let connected: usize = cluster.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(connected, options.sessions + 1, "the publisher must be connected too");
    let payload = Bytes::from_static(&[0x5a; 64]);
    let bytes_before_pub = cluster.counts().bytes;
    let timer = Instant::now();
    let mut target = 0x9e37_79b9usize;
    for _ in 0..options.publishes {
        target = target.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let id = (target >> 17) % options.sessions;
        cluster.publish(publisher, &format!("devices/dev{id:08}/cmd"), payload.clone(), now);
        cluster.pump(now);
    }
    let publish_time = timer.elapsed();
    let publish_bytes = cluster.counts().bytes - bytes_before_pub;

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| sessions created | {} in {:.2} s ({:.0}/s) |",
        options.sessions,
        connect_time.as_secs_f64(),
        options.sessions as f64 / connect_time.as_secs_f64()
    );
    println!(
        "| broker heap per connected idle session (allocator) | {:.0} B |",
        session_bytes as f64 / options.sessions as f64
    );
    println!("| RSS per connected idle session | {:.0} B |", rss_sessions as f64 / options.sessions as f64);
    println!("| subscriptions created | {} in {:.2} s |", options.sessions, subscribe_time.as_secs_f64());
    println!("| heap per distinct filter (subscription + interest entries, session entry) | {:.0} B ({} subscription + {} interest entries) |",
        subscription_bytes as f64 / options.sessions as f64, trie_nodes, interest_nodes);
    println!("| keep-alive: {} pings/s + 1 tick/s, CPU per simulated second | {:.2} ms ({:.3}% of a core per 100k connections) |",
        pings_per_sec, keepalive_time.as_secs_f64() * 1e3 / simulated_secs as f64,
        keepalive_time.as_secs_f64() / simulated_secs as f64 * 100.0 * 100_000.0 / options.sessions as f64);
    println!(
        "| point publish routed and encoded (QoS1 sub, 64 B) | {:.0} ns each, {} B written |",
        publish_time.as_nanos() as f64 / options.publishes as f64,
        publish_bytes
    );

    if options.broadcast {
        let per_subscriber = run_broadcast(&mut cluster, &clients, now);
        // The same sessions subscribing once more, to one filter that already exists, cost the session and
        // subscriber entries only; what the distinct filters cost beyond that is their map entries.
        let trie_bytes = subscription_bytes as f64 - per_subscriber * options.sessions as f64;
        println!("| filter memory (subscription + interest entries) for {} distinct filters (distinct - same-filter subscriptions) | {:.1} MiB = {:.0} B per filter, {:.0} B per entry |",
            options.sessions, trie_bytes / (1 << 20) as f64, trie_bytes / options.sessions as f64,
            trie_bytes / (trie_nodes + interest_nodes).max(1) as f64);
        measure_wildcard_trie(&mut cluster, &clients, per_subscriber, now);
    }
    println!("| total heap now | {:.1} MiB |", live_bytes() as f64 / (1 << 20) as f64);
    println!("| total RSS now | {:.1} MiB |", rss_bytes() as f64 / (1 << 20) as f64);
    println!("(wall time {:.1} s)", start.elapsed().as_secs_f64());
}

/// Filters without wildcards live in an exact-topic map; this is the trie's own cost: every session also
/// subscribes to a distinct wildcard filter `devices/{id}/+`, less what the subscription entries cost.
fn measure_wildcard_trie(cluster: &mut SimCluster, clients: &[SimClient], per_subscriber: f64, now: Instant) {
    let nodes = |cluster: &SimCluster| -> usize {
        cluster
            .cores()
            .iter()
            .map(|core| core.gauges().subscription_trie_nodes + core.gauges().interest_trie_nodes)
            .sum()
    };
    let (bytes_before, nodes_before) = (live_bytes(), nodes(cluster));
    for (index, client) in clients.iter().enumerate() {
        cluster.subscribe(*client, &format!("devices/dev{index:08}/+"), QoS::AtMostOnce, 3, now);
        if index % 4096 == 0 {
            cluster.pump(now);
        }
    }
    cluster.pump(now);
    let trie_bytes = (live_bytes() - bytes_before) as f64 - per_subscriber * clients.len() as f64;
    let new_nodes = nodes(cluster) - nodes_before;
    println!("| trie memory for {} distinct wildcard filters devices/{{id}}/+ (subscription + interest tries) | {:.1} MiB = {:.0} B per filter, {} nodes |",
        clients.len(), trie_bytes / (1 << 20) as f64, trie_bytes / clients.len() as f64, new_nodes);
}

/// Every session also subscribes to one topic at QoS 0; one message then goes to all of them.
/// Returns the heap bytes per extra subscription.
fn run_broadcast(cluster: &mut SimCluster, clients: &[SimClient], now: Instant) -> f64 {
    let bytes_before = live_bytes();
    for (index, client) in clients.iter().enumerate() {
        cluster.subscribe(*client, "broadcast/all", QoS::AtMostOnce, 2, now);
        if index % 4096 == 0 {
            cluster.pump(now);
        }
    }
    cluster.pump(now);
    let per_subscriber = (live_bytes() - bytes_before) as f64 / clients.len() as f64;
    let publisher = cluster.connect("broadcaster", 0, now);
    cluster.pump(now);
    let frames_before = cluster.counts().frames;
    let timer = Instant::now();
    cluster.publish(publisher, "broadcast/all", Bytes::from_static(&[0xa5; 64]), now);
    cluster.pump(now);
    let elapsed = timer.elapsed();
    let frames = cluster.counts().frames - frames_before;
    assert!(frames >= clients.len() as u64, "broadcast reached {frames} frames for {} subscribers", clients.len());
    println!("| broadcast to {} subscribers (QoS0, 64 B) | {:.1} ms, {:.0} ns per subscriber; {:.0} B heap per extra subscription |",
        clients.len(), elapsed.as_secs_f64() * 1e3, elapsed.as_nanos() as f64 / clients.len() as f64, per_subscriber);
    per_subscriber
}
