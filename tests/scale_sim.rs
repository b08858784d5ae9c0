//! Checks the scale simulation's own counts, so `benches/scale.rs` cannot silently measure nothing: every
//! simulated session really connects and subscribes, point publishes reach exactly their one device, pings
//! are answered, silent clients time out, and a broadcast reaches every subscriber on both shards. It also
//! holds the heap an idle session costs to a budget.

use std::time::{Duration, Instant};

use bytes::Bytes;
use shardmq::broker::BrokerSettings;
use shardmq::protocol::{ProtocolVersion, QoS};
use shardmq::sim::{OutputMode, SimCluster};

const SESSIONS: usize = 10_000;

fn cluster(version: ProtocolVersion) -> SimCluster {
    SimCluster::new(2, BrokerSettings::default(), version, OutputMode::Decode)
}

#[test]
fn simulated_sessions_connect_subscribe_and_receive_point_publishes() {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let now = Instant::now();
        let mut sim = cluster(version);
        let clients: Vec<_> = (0..SESSIONS).map(|id| sim.connect(&format!("dev{id}"), 30, now)).collect();
        sim.pump(now);
        assert_eq!(sim.counts().connacks, SESSIONS as u64, "{version:?}: one successful CONNACK per session");
        let per_shard: Vec<usize> = sim.cores().iter().map(|core| core.gauges().connections).collect();
        assert!(per_shard.iter().all(|&n| n > SESSIONS / 4), "{version:?}: both shards hold sessions: {per_shard:?}");

        for (id, client) in clients.iter().enumerate() {
            sim.subscribe(*client, &format!("devices/dev{id}/cmd"), QoS::AtLeastOnce, 1, now);
        }
        sim.pump(now);
        assert_eq!(sim.counts().subacks, SESSIONS as u64, "{version:?}: one SUBACK per SUBSCRIBE");
        assert!(sim.counts().mesh_messages > 0, "{version:?}: interest must cross to the other shard");

        let publisher = sim.connect("publisher", 0, now);
        sim.pump(now);
        for id in (0..SESSIONS).step_by(7) {
            sim.publish(publisher, &format!("devices/dev{id}/cmd"), Bytes::from_static(b"on"), now);
        }
        sim.publish(publisher, "devices/nobody/cmd", Bytes::from_static(b"lost"), now);
        sim.pump(now);
        let expected = (0..SESSIONS).step_by(7).count() as u64;
        assert_eq!(sim.counts().publishes_delivered, expected, "{version:?}: each point publish reaches one device");
    }
}

#[test]
fn simulated_keepalive_pings_are_answered_and_silent_clients_time_out() {
    let start = Instant::now();
    let mut sim = cluster(ProtocolVersion::V5);
    let clients: Vec<_> = (0..1000).map(|id| sim.connect(&format!("k{id}"), 10, start)).collect();
    sim.pump(start);
    // The first half pings every 5 s for 30 s; the second half stays silent and must be closed after 15 s.
    for step in 1..=6u64 {
        let now = start + Duration::from_secs(5 * step);
        for client in &clients[..500] {
            sim.ping(*client, now);
        }
        sim.tick(now);
        sim.pump(now);
    }
    assert_eq!(sim.counts().pingresps, 6 * 500, "every PINGREQ gets a PINGRESP");
    let connected: usize = sim.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(connected, 500, "clients silent for 1.5x keep-alive are closed [MQTT-3.1.2-24]");
}

#[test]
fn simulated_broadcast_reaches_every_subscriber_on_both_shards() {
    let now = Instant::now();
    let mut sim = cluster(ProtocolVersion::V5);
    let clients: Vec<_> = (0..SESSIONS).map(|id| sim.connect(&format!("b{id}"), 0, now)).collect();
    for client in &clients {
        sim.subscribe(*client, "broadcast/all", QoS::AtMostOnce, 1, now);
    }
    sim.pump(now);
    let publisher = sim.connect("broadcaster", 0, now);
    sim.pump(now);
    sim.publish(publisher, "broadcast/all", Bytes::from_static(&[7; 64]), now);
    sim.pump(now);
    assert_eq!(sim.counts().publishes_delivered, SESSIONS as u64);
}

/// Heap bytes allocated minus freed by this thread: the simulation runs on the test's own thread, so
/// tests running beside it in other threads do not disturb the count.
mod thread_heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct ThreadCountingAllocator;

    thread_local! {
        static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    }

    fn add(bytes: isize) {
        // `try_with`: allocations during thread teardown are not counted.
        let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
    }

    pub fn live_bytes() -> isize {
        LIVE_BYTES.with(Cell::get)
    }

    unsafe impl GlobalAlloc for ThreadCountingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            add(layout.size() as isize);
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            add(-(layout.size() as isize));
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            add(new_size as isize - layout.size() as isize);
            System.realloc(ptr, layout, new_size)
        }
    }
}

#[global_allocator]
static ALLOCATOR: thread_heap::ThreadCountingAllocator = thread_heap::ThreadCountingAllocator;

/// Heap per idle session with its `devices/{id}/cmd` subscription, measured as `benches/scale.rs` does
/// (issue 14 aims at <= 512 B). 60,000 sessions fill each shard's slabs to ~90% of their doubled size;
/// 575 B were measured here (468 B at 1M sessions, perf/SCALE.md); the budget leaves ~15%, so a
/// regression fails here.
const IDLE_SESSION_WITH_SUBSCRIPTION_BUDGET_BYTES: isize = 650;

#[test]
fn idle_session_with_its_subscription_stays_within_the_heap_budget() {
    const MEMORY_SESSIONS: usize = 60_000;
    let now = Instant::now();
    let before = thread_heap::live_bytes();
    let mut sim = SimCluster::new(2, BrokerSettings::default(), ProtocolVersion::V5, OutputMode::Discard);
    // Pumped every 4,096 operations as the benchmark does, so queues of actions in flight stay short.
    let mut clients = Vec::with_capacity(MEMORY_SESSIONS);
    for id in 0..MEMORY_SESSIONS {
        clients.push(sim.connect(&format!("dev{id:08}"), 30, now));
        if id % 4096 == 0 {
            sim.pump(now);
        }
    }
    sim.pump(now);
    for (id, client) in clients.iter().enumerate() {
        sim.subscribe(*client, &format!("devices/dev{id:08}/cmd"), QoS::AtLeastOnce, 1, now);
        if id % 4096 == 0 {
            sim.pump(now);
        }
    }
    sim.pump(now);
    let connected: usize = sim.cores().iter().map(|core| core.gauges().connections).sum();
    assert_eq!(connected, MEMORY_SESSIONS);
    let clients_bytes = (clients.capacity() * std::mem::size_of_val(&clients[0])) as isize;
    let per_session = (thread_heap::live_bytes() - before - clients_bytes) / MEMORY_SESSIONS as isize;
    println!("heap per idle session with one subscription: {per_session} B");
    assert!(
        per_session <= IDLE_SESSION_WITH_SUBSCRIPTION_BUDGET_BYTES,
        "an idle session with its subscription costs {per_session} B (budget {IDLE_SESSION_WITH_SUBSCRIPTION_BUDGET_BYTES})"
    );
}
