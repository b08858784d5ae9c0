//! The HTTP/1.1 server of the API: a blocking `std` listener on its own thread, one thread per open
//! connection (bounded by `connections_max`; an admin API has few clients, and a blocked request then
//! blocks only its own thread, never a shard). Keep-alive and pipelining, heads read by
//! `transport::http::RequestReader` (bounded bytes and fields), `Content-Length` bodies only (bounded:
//! 413), `Expect: 100-continue`, a deadline per request (408) and per idle connection. With `cert_file`
//! and `key_file` each connection is TLS (rustls over the blocking socket; the handshake runs under the
//! same deadlines as a request).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::response::{ApiError, Response};
use super::router::{route, Api};
use crate::transport::http::{response, HttpError, RequestHead, RequestLimits, RequestReader, Status};
use crate::transport::tls::TlsAcceptor;

/// A request as the router sees it.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.head.method
    }

    pub fn path(&self) -> &str {
        self.head.path()
    }

    /// The value of query parameter `name` (no percent-decoding beyond `%XX` and `+`).
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.head.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, v)| percent_decode(v))
    }
}

/// `%XX` and `+` decoded; invalid escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[index]) {
            (Some(byte), _) => {
                out.push(byte);
                index += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the accept thread of one listener; returns the bound address. `tls`: HTTPS only, with this
/// configuration. `open` counts the API's open connections over all its listeners (`connections_max`).
pub fn serve(
    addr: SocketAddr,
    api: Arc<Api>,
    tls: Option<Arc<TlsAcceptor>>,
    open: Arc<AtomicUsize>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("http-accept".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(err) => {
                    warn!("HTTP accept failed: {err}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            accept(stream, &api, tls.as_deref(), &open);
        }
    })?;
    Ok(bound)
}

fn accept(mut stream: TcpStream, api: &Arc<Api>, tls: Option<&TlsAcceptor>, open: &Arc<AtomicUsize>) {
    if open.fetch_add(1, Ordering::AcqRel) >= api.settings.connections_max {
        open.fetch_sub(1, Ordering::AcqRel);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let refusal = ApiError::unavailable("too many HTTP connections (http.connections_max)").into_response();
        // Over TLS the refusal would need a handshake first: the connection is just closed.
        if tls.is_none() {
            let _ = stream.write_all(&encode(refusal, false));
        }
        return;
    }
    let (api, open) = (Arc::clone(api), Arc::clone(open));
    let tls = tls.map(TlsAcceptor::server_connection);
    let spawned = std::thread::Builder::new().name("http-conn".into()).stack_size(256 * 1024).spawn(move || {
        if let Err(err) = Connection::new(stream, tls).and_then(|mut connection| connection.run(&api)) {
            debug!("HTTP connection ended: {err}");
        }
        open.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        warn!("cannot start an HTTP connection thread");
    }
}

/// One connection's bytes: the socket itself, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

struct Connection {
    stream: Stream,
    peer: SocketAddr,
    /// Bytes read past the previous request (a pipelined next one).
    pending: Vec<u8>,
}

/// How reading one request ended.
enum Read1 {
    Request(Box<Request>),
    /// The client closed or stayed idle: close without an answer.
    Closed,
    /// Answer this, then close.
    Refuse(Response),
}

impl Connection {
    fn new(socket: TcpStream, tls: Option<rustls::ServerConnection>) -> io::Result<Connection> {
        socket.set_nodelay(true)?;
        let peer = socket.peer_addr()?;
        let stream = match tls {
            Some(tls) => Stream::Tls(Box::new(rustls::StreamOwned::new(tls, socket))),
            None => Stream::Plain(socket),
        };
        Ok(Connection { stream, peer, pending: Vec::new() })
    }

    /// Writes one answer whole (TLS: its records flushed to the socket).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn run(&mut self, api: &Api) -> io::Result<()> {
        loop {
            let request = match self.read_request(api)? {
                Read1::Request(request) => request,
                Read1::Closed => return Ok(()),
                Read1::Refuse(refusal) => return self.send(&encode(refusal, false)),
            };
            let keep_alive = wants_keep_alive(&request.head);
            let answer = route(api, &request);
            self.send(&encode(answer, keep_alive))?;
            if !keep_alive {
                return Ok(());
            }
        }
    }

    fn read_request(&mut self, api: &Api) -> io::Result<Read1> {
        let settings = &api.settings;
        let limits = RequestLimits { head_max_bytes: settings.head_max_bytes, headers_max: 64 };
        let mut reader = RequestReader::new(limits);
        let mut deadline = None;
        let mut input = std::mem::take(&mut self.pending);
        let mut buffer = vec![0u8; 8192];
        let (head, rest) = loop {
            if !input.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(settings.request_timeout_secs));
                match reader.push(&input) {
                    Ok(Some(done)) => break done,
                    Ok(None) => {}
                    Err(err) => return Ok(Read1::Refuse(head_refusal(&err))),
                }
            }
            let wait = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(settings.idle_timeout_secs),
            };
            match self.read_some(&mut buffer, wait)? {
                Some(0) => return Ok(Read1::Closed),
                Some(read) => input = buffer[..read].to_vec(),
                None if deadline.is_none() => return Ok(Read1::Closed),
                None => return Ok(Read1::Refuse(timeout_refusal())),
            }
        };
        let deadline = deadline.unwrap_or_else(Instant::now);
        let length = match body_length(&head, settings.body_max_bytes) {
            Ok(length) => length,
            Err(refusal) => return Ok(Read1::Refuse(refusal.into_response())),
        };
        if length > rest.len() && head.has_token("expect", "100-continue") {
            self.send(&response(Status::CONTINUE, &[], b""))?;
        }
        let mut body = rest;
        while body.len() < length {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.read_some(&mut buffer, wait)? {
                Some(0) => return Ok(Read1::Closed),
                Some(read) => body.extend_from_slice(&buffer[..read]),
                None => return Ok(Read1::Refuse(timeout_refusal())),
            }
        }
        self.pending = body.split_off(length);
        Ok(Read1::Request(Box::new(Request { head, body, peer: self.peer })))
    }

    /// One read within `wait`: `Some(0)` at end of stream, `None` when the time ran out.
    fn read_some(&mut self, buffer: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        if wait.is_zero() {
            return Ok(None);
        }
        self.stream.socket().set_read_timeout(Some(wait))?;
        match self.stream.read(buffer) {
            Ok(read) => Ok(Some(read)),
            Err(err) if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(Some(0)),
            Err(err) => Err(err),
        }
    }
}

fn head_refusal(err: &HttpError) -> Response {
    ApiError::new(err.status(), err.to_string()).into_response()
}

fn timeout_refusal() -> Response {
    ApiError::new(Status::REQUEST_TIMEOUT, "the request did not arrive within http.request_timeout_secs")
        .into_response()
}

/// The body length the head announces, within the bound. Only `Content-Length` framing is accepted.
fn body_length(head: &RequestHead, body_max_bytes: usize) -> Result<usize, ApiError> {
    if head.values("transfer-encoding").next().is_some() {
        let message = "Transfer-Encoding is not accepted: send the body with Content-Length";
        return Err(ApiError::new(Status::LENGTH_REQUIRED, message));
    }
    let length = match head.single_value("content-length") {
        Err(0) => return Ok(0),
        Err(_) => return Err(ApiError::bad_request("RFC 9112 6.3: more than one Content-Length")),
        Ok(value) => std::str::from_utf8(value)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .and_then(|text| text.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("RFC 9112 6.3: Content-Length is not a number"))?,
    };
    if length > body_max_bytes {
        let message = format!("request body of {length} bytes is over http.body_max_bytes ({body_max_bytes})");
        return Err(ApiError::new(Status::CONTENT_TOO_LARGE, message));
    }
    Ok(length)
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless told `keep-alive`.
fn wants_keep_alive(head: &RequestHead) -> bool {
    match head.minor_version {
        0 => head.has_token("connection", "keep-alive"),
        _ => !head.has_token("connection", "close"),
    }
}

fn encode(answer: Response, keep_alive: bool) -> bytes::Bytes {
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", answer.content_type)];
    headers.push(("Connection", if keep_alive { "keep-alive" } else { "close" }));
    headers.push(("Cache-Control", "no-store"));
    headers.extend(answer.headers.iter().map(|(name, value)| (*name, value.as_str())));
    response(answer.status, &headers, &answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        RequestReader::new(RequestLimits::default()).push(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn bodies_are_framed_by_one_content_length_within_the_bound() {
        assert_eq!(body_length(&head("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), 10), Ok(5));
        assert_eq!(body_length(&head("GET / HTTP/1.1\r\n\r\n"), 10), Ok(0));
        let over = body_length(&head("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"), 10).unwrap_err();
        assert_eq!(over.status, Status::CONTENT_TOO_LARGE);
        let twice = head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(body_length(&twice, 10).unwrap_err().status, Status::BAD_REQUEST);
        let signed = head("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n");
        assert_eq!(body_length(&signed, 10).unwrap_err().status, Status::BAD_REQUEST);
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_length(&chunked, 10).unwrap_err().status, Status::LENGTH_REQUIRED);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(wants_keep_alive(&head("GET / HTTP/1.1\r\n\r\n")));
        assert!(!wants_keep_alive(&head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")));
        assert!(!wants_keep_alive(&head("GET / HTTP/1.0\r\n\r\n")));
        assert!(wants_keep_alive(&head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")));
    }

    #[test]
    fn percent_escapes_in_paths_and_queries_are_decoded() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41"), "A");
    }
}
