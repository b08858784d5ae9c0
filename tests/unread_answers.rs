//! A client that sends requests and never reads the answers (issue 23): past `out_queue_pause_bytes` owed
//! to it the broker stops reading from it, so TCP pushes back on the flooder and the broker's memory stays
//! bounded; other clients are still served; past `out_queue_stall_max_secs` the flooder is closed with a
//! log line naming the bound. Raw sockets against the real binary, for PINGREQ [MQTT-3.12.4-1] and for
//! PUBREL of unknown packet ids (answered PUBCOMP [MQTT-4.3.3-11], v5 0x92), on 3.1.1 and 5.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::raw::{self, Level, PacketFields, RawClient};
use support::{skip_on_mosquitto, unique, Broker, BrokerLimits};

const STALL_SECS: u64 = 3;
/// Growth allowed while flooding. Without the bound the broker grew 37-41 MiB within a second; with it
/// the flooders owe at most about twice the pause bound each (queue + send in flight).
const RSS_GROWTH_MAX_KIB: u64 = 24 * 1024;

fn start_broker() -> Broker {
    Broker::start_with(&BrokerLimits {
        shardmq_mqtt_toml: Some(format!("out_queue_pause_bytes = 65536\nout_queue_stall_max_secs = {STALL_SECS}")),
        // Small kernel buffers, so a client that does not read is felt within a few hundred KiB.
        shardmq_toml: Some("socket_send_buffer_bytes = 65536\nsocket_recv_buffer_bytes = 65536".into()),
        log_filter: Some("info".into()),
        ..BrokerLimits::default()
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// Connects with a blocking socket, reads the CONNACK, then writes `request` over and over and never
/// reads again, until the broker closes the connection (a write fails) or `for_at_most` passes. Returns
/// the bytes written and whether the broker closed it.
fn flood(port: u16, level: Level, request: Vec<u8>, for_at_most: Duration) -> thread::JoinHandle<(usize, bool)> {
    thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let socket = socket2::SockRef::from(&stream);
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        stream.write_all(&raw::connect(level, &unique("flooder"), true, 0, None)).expect("send CONNECT");
        let mut connack = [0u8; 64];
        let read = stream.read(&mut connack).expect("read CONNACK");
        assert!(read >= 4 && connack[0] == 0x20, "CONNACK expected, got {:02X?}", &connack[..read]);
        stream.set_write_timeout(Some(Duration::from_millis(200))).expect("write timeout");
        let burst: Vec<u8> = request.iter().copied().cycle().take(request.len() * 8192).collect();
        let (started, mut written) = (Instant::now(), 0usize);
        while started.elapsed() < for_at_most {
            match stream.write(&burst) {
                Ok(n) => written += n,
                Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return (written, true),
            }
        }
        (written, false)
    })
}

/// A well-behaved client still gets its QoS 1 message through while the flooders push.
async fn round_trip_works(port: u16, level: Level) {
    let topic = unique("unread/ok");
    let mut client = RawClient::connect(port, level).await;
    client.handshake(&raw::connect(level, &unique("bystander"), true, 30, None)).await;
    client.send(&raw::subscribe(level, 1, &[(&topic, 1)])).await;
    assert_eq!(client.expect_packet().await.ack_reasons(), vec![1]);
    client.send(&raw::publish(level, &topic, 1, false, 2, b"still served")).await;
    let mut got_message = false;
    let mut got_puback = false;
    while !(got_message && got_puback) {
        match client.expect_packet().await {
            packet @ shardmq::protocol::Packet::Publish(_) => {
                assert_eq!(packet.publish().1, b"still served");
                got_message = true;
            }
            shardmq::protocol::Packet::PubAck(_) => got_puback = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn flooders_are_bounded_and_closed(level: Level) {
    let broker = start_broker();
    if skip_on_mosquitto(&broker, "out_queue_pause_bytes is shardmq's") {
        return;
    }
    let before_kib = rss_kib(broker.pid());
    let flood_for = Duration::from_secs(STALL_SECS * 4);
    let pingreq_flooder = flood(broker.port(), level, raw::pingreq(), flood_for);
    // PUBREL for packet ids the broker never saw: each one is answered with PUBCOMP.
    let pubrel_flooder = flood(broker.port(), level, raw::publish_ack(raw::PUBREL, 7), flood_for);
    thread::sleep(Duration::from_millis(1500));
    let during_kib = rss_kib(broker.pid());
    round_trip_works(broker.port(), level).await;
    let (pinged, ping_closed) = tokio::task::spawn_blocking(move || pingreq_flooder.join().unwrap()).await.unwrap();
    let (released, rel_closed) = tokio::task::spawn_blocking(move || pubrel_flooder.join().unwrap()).await.unwrap();
    let growth_kib = during_kib.saturating_sub(before_kib);
    assert!(
        growth_kib < RSS_GROWTH_MAX_KIB,
        "broker RSS grew {growth_kib} KiB ({before_kib} -> {during_kib}) while two clients flooded requests"
    );
    assert!(pinged > 0 && released > 0, "the flooders wrote something");
    assert!(ping_closed && rel_closed, "the flooders were not closed within {flood_for:?}");
    let line = broker.wait_for_log_line(Duration::from_secs(2), |line| line.contains("out_queue_stall_max_secs"));
    assert!(line.is_some(), "no log line names out_queue_stall_max_secs:\n{}", broker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_clients_flooding_pingreq_and_pubrel_without_reading_stay_bounded_and_are_closed_mqtt_3_12_4_1() {
    flooders_are_bounded_and_closed(Level::V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_clients_flooding_pingreq_and_pubrel_without_reading_stay_bounded_and_are_closed_mqtt_4_3_3_11() {
    flooders_are_bounded_and_closed(Level::V5).await;
}
