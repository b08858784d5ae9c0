//! Shutting the broker down with SIGTERM: v5 clients get DISCONNECT 0x8B (Server shutting down), 3.1.1
//! clients a plain close, and the process exits 0.
// Test names end in `__mqtt_<spec clause>` so a failure points at the rule broken.
#![allow(non_snake_case)]

mod support;

use support::raw::{self, Level, RawClient};
use support::{client_id_on_shard, Broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_disconnect_0x8b_to_v5_clients_and_exits_0__mqtt_3_14_2_1() {
    let mut broker = Broker::start();
    if support::skip_on_mosquitto(&broker, "Mosquitto 2.0.11 closes without DISCONNECT 0x8B on SIGTERM") {
        return;
    }
    let mut v5_clients = Vec::new();
    let mut v311_clients = Vec::new();
    for shard in 0..support::SHARDS {
        let mut v5 = RawClient::connect(broker.port(), Level::V5).await;
        v5.handshake(&raw::connect(Level::V5, &client_id_on_shard("v5", shard), true, 30, None)).await;
        v5_clients.push(v5);
        let mut v311 = RawClient::connect(broker.port(), Level::V311).await;
        v311.handshake(&raw::connect(Level::V311, &client_id_on_shard("v311", shard), true, 30, None)).await;
        v311_clients.push(v311);
    }
    let status = tokio::task::block_in_place(|| broker.terminate());
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?}, expected 0");
    for client in &mut v5_clients {
        client.expect_disconnect_and_close(0x8B).await;
    }
    for client in &mut v311_clients {
        let packets = client.expect_closed().await;
        assert!(packets.is_empty(), "3.1.1 has no DISCONNECT from the server: {packets:?}");
    }
}
