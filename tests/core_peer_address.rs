//! The admin client listing's peer addresses, driven through `ShardCore` by hand: the core keeps none per
//! connection; a job asks (`want_peer_addresses`), the runtime fills them after that turn's jobs, and the
//! listing job that follows takes them.

mod core_harness;

use std::net::SocketAddr;

use core_harness::*;
use shardmq::protocol::ProtocolVersion;

#[test]
fn peer_addresses_are_listed_only_after_a_job_asked_and_only_once() {
    let mut broker = Broker::new(1);
    let (client, _) = broker.connect(connect(ProtocolVersion::V3_1_1, "addr", true));
    let core = &mut broker.shards[client.shard];
    let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    assert_eq!(core.connected_clients()[0].address, None, "not asked for: none kept");

    core.want_peer_addresses(None);
    assert!(core.peer_addresses_wanted());
    core.fill_peer_addresses(|conn| (conn == client.conn).then_some(peer));
    assert!(!core.peer_addresses_wanted(), "one fill answers one request");
    assert_eq!(core.connected_clients()[0].address, Some(peer));
    assert_eq!(core.connected_clients()[0].address, None, "the listing took them");

    core.want_peer_addresses(Some("addr"));
    let mut looked_up = Vec::new();
    core.fill_peer_addresses(|conn| {
        looked_up.push(conn);
        Some(peer)
    });
    assert_eq!(looked_up, vec![client.conn], "one client asked for: one lookup");
    assert_eq!(core.connected_client("addr").map(|found| found.address), Some(Some(peer)));

    core.want_peer_addresses(Some("not-connected"));
    assert!(!core.peer_addresses_wanted(), "a client not connected here needs no lookup");
}
