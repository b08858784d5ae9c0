//! A small HTTP/1.1 listener for `/metrics` (Prometheus text) and `/` (the dashboard), on its own thread,
//! bound from `[metrics] bind`. One request per connection, answered in order: it serves a scraper and a
//! browser, not a crowd. The HTTP API listener can serve the same pages through [`page`].

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::collector::Collector;
use super::{dashboard, render_prometheus};

/// The Prometheus text format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest request head we read; anything larger is answered 431.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status, content type, body.
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// What `GET path` answers, or `None` when the path is not one of ours (`/metrics`, `/`).
pub fn page(path: &str, collector: &Collector) -> Option<Page> {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => Some(match collector.snapshot() {
            Ok(snapshot) => {
                Page { status: 200, content_type: PROMETHEUS_CONTENT_TYPE, body: render_prometheus(&snapshot) }
            }
            Err(err) => Page { status: 503, content_type: "text/plain", body: format!("shards unreachable: {err}\n") },
        }),
        "/" | "/index.html" => {
            Some(Page { status: 200, content_type: "text/html; charset=utf-8", body: dashboard::PAGE.to_string() })
        }
        _ => None,
    }
}

/// Binds `bind` and serves on a thread of its own. Returns the bound address (port 0 picks one).
pub fn start(bind: &str, collector: Arc<Collector>) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let handle = std::thread::Builder::new().name("shardmq-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(err) = answer(stream, &collector) {
                        tracing::debug!(%err, "metrics request failed");
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "metrics listener accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    })?;
    Ok((addr, handle))
}

fn answer(stream: TcpStream, collector: &Collector) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut head_bytes = request_line.len();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line)?;
        head_bytes += read;
        if head_bytes > REQUEST_HEAD_BYTES_MAX {
            return write(&stream, &text(431, "request head too large\n"), true);
        }
        if read == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return write(&stream, &text(405, "only GET\n"), true);
    }
    let page = page(path, collector).unwrap_or_else(|| text(404, "not found\n"));
    write(&stream, &page, method == "GET")
}

fn text(status: u16, body: &str) -> Page {
    Page { status, content_type: "text/plain; charset=utf-8", body: body.to_string() }
}

fn write(mut stream: &TcpStream, page: &Page, with_body: bool) -> std::io::Result<()> {
    let reason = match page.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        page.status,
        page.content_type,
        page.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(page.body.as_bytes())?;
    }
    stream.flush()
}
