//! Reading the broker's Prometheus text on its `[metrics]` listener.

/// The value of a counter on the broker's /metrics, summed over its series (the per-shard ones and
/// `shard="all"` alike: good for "did it count", not for exact totals).
pub fn counter(port: u16, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listener");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics answer");
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
