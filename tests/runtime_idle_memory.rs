//! Heap bytes the broker holds per idle connection, counted by a global allocator wrapper (not RSS):
//! connections accepted by the real runtime started in this process (connection slot, table entries,
//! core state), first before CONNECT and then connected with a keep-alive. Prints the figures; fails if
//! an idle connection costs more than the budget below.

mod counting_allocator;

use std::io::{Read, Write};
use std::time::Duration;

use shardmq::config::Config;

#[global_allocator]
static ALLOCATOR: counting_allocator::CountingAllocator = counting_allocator::CountingAllocator;

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
    let config =
        Config { listen: Some("127.0.0.1:0".into()), shards: Some(1), log_level: "warn".into(), ..Config::default() };
    let broker = shardmq::shard::start(config).expect("broker starts");
    let addr = broker.bound();
    // Warm up: allocator caches, maps and the timer wheel reach their steady size.
    let mut warm: Vec<std::net::TcpStream> = (0..64).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    connect_all(&mut warm, "warm");
    std::thread::sleep(Duration::from_millis(200));
    let before = counting_allocator::live_bytes();
    let mut clients: Vec<std::net::TcpStream> =
        (0..CONNECTIONS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let accepted = (counting_allocator::live_bytes() - before) / CONNECTIONS as isize;
    println!("accepted, before CONNECT: {accepted} heap bytes per connection");
    connect_all(&mut clients, "idle");
    std::thread::sleep(Duration::from_millis(300));
    let per_connection = (counting_allocator::live_bytes() - before) / CONNECTIONS as isize;
    println!("connected, idle: {per_connection} heap bytes per connection");
    broker.stop();
    broker.join();
    assert!(
        per_connection <= IDLE_CONNECTED_BUDGET_BYTES,
        "an idle connection costs {per_connection} heap bytes (budget {IDLE_CONNECTED_BUDGET_BYTES})"
    );
}

fn connect_all(clients: &mut [std::net::TcpStream], prefix: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&connect_packet(&format!("{prefix}-{i:05}"))).unwrap();
    }
    for client in clients.iter_mut() {
        let mut connack = [0u8; 4];
        client.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
    }
}
