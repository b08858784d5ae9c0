//! Heap bytes one TLS connection's transport (`TlsTransport`: the rustls `ServerConnection` and our state)
//! holds once the handshake is done, counted by a global allocator wrapper as the bytes freed when the
//! transport is dropped: idle after a CONNECT/CONNACK, and after 64 KiB went each way (grown buffers).
//! Prints the figures; fails if an idle TLS connection costs more than the budget below.
//! One test only in this binary, so no other test allocates while it measures.

mod counting_allocator;
mod tls_support;

use bytes::Bytes;
use rustls::version::{TLS12, TLS13};
use shardmq::transport::tls::TlsAcceptor;
use tls_support::{client_config, settings, Authority, Files, Pair};

#[global_allocator]
static ALLOCATOR: counting_allocator::CountingAllocator = counting_allocator::CountingAllocator;

/// What an idle TLS connection may hold on the heap: 6177 (TLS 1.2) / 6281 (TLS 1.3) bytes measured with
/// rustls 0.23.46 + ring, of which 4096 are rustls's read buffer; plus ~25%.
const IDLE_BUDGET_BYTES: isize = 8 * 1024;

/// Heap bytes freed by dropping the server side of `pair`.
fn held_by_server(pair: Pair) -> isize {
    let Pair { server, client, .. } = pair;
    let before = counting_allocator::live_bytes();
    drop(server);
    let freed = before - counting_allocator::live_bytes();
    drop(client);
    freed
}

#[test]
fn tls_connection_heap_after_handshake() {
    let ca = Authority::new("server CA");
    let files = Files::new();
    let acceptor = TlsAcceptor::new(settings(&files, &ca.server_cert("broker"), None, false)).expect("acceptor");
    let connect = [0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 4, b't', b'e', b's', b't'];
    let connack = Bytes::from_static(&[0x20, 0x02, 0x00, 0x00]);

    for (name, version) in [("TLS 1.3", &TLS13), ("TLS 1.2", &TLS12)] {
        let connected = |acceptor: &TlsAcceptor| {
            let mut pair = Pair::new(acceptor, client_config(&ca, &[version], None));
            pair.pump().expect("handshake");
            pair.client_sends(&connect);
            pair.pump().expect("CONNECT");
            pair.server_sends(vec![connack.clone()]).expect("CONNACK");
            pair
        };
        let bulk = |pair: &mut Pair| {
            pair.client_sends(&vec![1u8; 64 * 1024]);
            pair.pump().expect("upload");
            pair.server_sends(vec![Bytes::from(vec![2u8; 64 * 1024])]).expect("download");
            pair.pump().expect("quiet");
        };
        let idle = held_by_server(connected(&acceptor));
        let mut pair = connected(&acceptor);
        bulk(&mut pair);
        let after_bulk = held_by_server(pair);
        // rustls shrinks its read buffer at the next read that finds it empty: here a PINGREQ.
        let mut pair = connected(&acceptor);
        bulk(&mut pair);
        pair.client_sends(&[0xC0, 0x00]);
        pair.pump().expect("PINGREQ");
        pair.server_sends(vec![Bytes::from_static(&[0xD0, 0x00])]).expect("PINGRESP");
        let after_ping = held_by_server(pair);
        println!(
            "{name}: TlsTransport holds {idle} heap bytes idle after the handshake and a CONNECT/CONNACK, \
             {after_bulk} right after 64 KiB each way, {after_ping} after a PINGREQ/PINGRESP that followed \
             (size_of = {} bytes inline)",
            std::mem::size_of::<shardmq::transport::tls::TlsTransport>()
        );
        assert!(idle > 0, "the measurement sees the connection");
        assert!(idle <= IDLE_BUDGET_BYTES, "{name}: idle TLS connection holds {idle} bytes");
        assert!(after_ping <= IDLE_BUDGET_BYTES, "{name}: buffers grown by a burst stay: {after_ping} bytes");
    }
}
