//! Heap bytes the broker holds per idle connection, counted by a global allocator wrapper (not RSS):
//! connections accepted by a real shard (connection slot, epoll registration, core state), first before
//! CONNECT and then connected with a keep-alive. Prints the figures; fails if an idle connection costs
//! more than the budget below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardmq::config::Config;
use shardmq::connection::{open_accepted, pump_reads, ConnectionPermit};
use shardmq::shard::mesh::build_mesh;
use shardmq::shard::turn::{Shard, ShardMeshItem};

struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CONNECTIONS: usize = 1000;
/// Runtime + core heap bytes one idle connected client may cost: 530-544 B measured (perf/RESULTS.md,
/// "Idle connection memory"), plus ~18%.
const IDLE_CONNECTED_BUDGET_BYTES: isize = 640;

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = b"\x00\x04MQTT\x04\x02\x01\x2c".to_vec(); // 3.1.1, clean session, keep-alive 300 s
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn idle_connections_cost_little_heap() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted_all = Arc::new(AtomicBool::new(false));
    let measure = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = std::sync::mpsc::channel::<(&'static str, isize)>();

    let shard_done = accepted_all.clone();
    let shard_measure = measure.clone();
    let shard_thread = std::thread::spawn(move || {
        let executor =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(64 * 1024).make().unwrap();
        executor.run(async move {
            let (senders, _receivers) = build_mesh::<ShardMeshItem>(1, 4).pop().unwrap().connect().await;
            let config = Arc::new(Config::default());
            let shard = Rc::new(Shard::new(0, 1, config, senders, ConnectionPermit::new(CONNECTIONS * 2)));
            let turns = glommio::spawn_local(shard.clone().run_turns());
            let reads = glommio::spawn_local(pump_reads(shard.clone()));
            let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
            let listener = unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // Warm up: allocator caches, maps and the timer wheel reach their steady size.
            let before = LIVE_BYTES.load(Ordering::Relaxed);
            for _ in 0..CONNECTIONS {
                let stream = listener.accept().await.unwrap();
                open_accepted(&shard, stream, shard.permits.try_acquire().unwrap());
            }
            glommio::timer::sleep(Duration::from_millis(200)).await;
            report_tx.send(("accepted, before CONNECT", LIVE_BYTES.load(Ordering::Relaxed) - before)).unwrap();
            shard_done.store(true, Ordering::SeqCst);
            while !shard_measure.load(Ordering::SeqCst) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            report_tx.send(("connected, idle", LIVE_BYTES.load(Ordering::Relaxed) - before)).unwrap();
            assert_eq!(shard.core.borrow().gauges().connections, CONNECTIONS);
            drop(reads);
            drop(turns);
        });
    });

    let mut clients: Vec<std::net::TcpStream> =
        (0..CONNECTIONS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    while !accepted_all.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stage, accepted_bytes) = report_rx.recv().unwrap();
    println!("{stage}: {} heap bytes per connection", accepted_bytes / CONNECTIONS as isize);
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&connect_packet(&format!("idle-{i:05}"))).unwrap();
    }
    for client in &mut clients {
        let mut connack = [0u8; 4];
        client.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }
    std::thread::sleep(Duration::from_millis(300));
    measure.store(true, Ordering::SeqCst);
    let (stage, connected_bytes) = report_rx.recv().unwrap();
    let per_connection = connected_bytes / CONNECTIONS as isize;
    println!("{stage}: {per_connection} heap bytes per connection");
    shard_thread.join().unwrap();
    assert!(
        per_connection <= IDLE_CONNECTED_BUDGET_BYTES,
        "an idle connection costs {per_connection} heap bytes (budget {IDLE_CONNECTED_BUDGET_BYTES})"
    );
}
