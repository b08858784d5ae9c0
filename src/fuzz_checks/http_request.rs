//! Target `http_request`: arbitrary bytes as HTTP/1.1 request heads, fed to
//! `transport::http::RequestReader` (what the HTTP API and the WebSocket upgrade read with) in pieces whose
//! size the first byte picks, under small bounds. It must never panic, never hold more than its bound, and a
//! head it accepts must be within its bounds; the head's accessors and the API's percent-decoding of path
//! and query must not panic either.

use crate::http::server::percent_decode;
use crate::transport::http::{RequestLimits, RequestReader};

pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk_bytes = usize::from(first % 64) + 1;
    let limits = RequestLimits { head_max_bytes: 1024, headers_max: 8 };
    let mut reader = RequestReader::new(limits);
    let mut input = rest;
    while !input.is_empty() {
        let (chunk, later) = input.split_at(chunk_bytes.min(input.len()));
        input = later;
        match reader.push(chunk) {
            Ok(None) => {}
            Err(err) => {
                let _ = err.status();
                return;
            }
            Ok(Some((head, after))) => {
                assert!(head.headers.len() <= limits.headers_max, "more header fields than the bound");
                assert!(after.len() <= rest.len(), "more bytes after the head than were given");
                let _ = percent_decode(head.path());
                let _ = head.target.split_once('?').map(|(_, query)| percent_decode(query));
                let _ = head.single_value("content-length");
                let _ = head.has_token("connection", "upgrade");
                let _ = head.tokens("sec-websocket-protocol").count();
                // The next request on a kept-alive connection starts with what followed.
                reader = RequestReader::new(limits);
                input = &[];
                let _ = reader.push(&after);
            }
        }
    }
}
