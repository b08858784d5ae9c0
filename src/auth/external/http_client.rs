//! The smallest blocking HTTP/1.1 client the auth backend needs: one `POST` of a JSON body to an
//! `http://host:port/path` URL, one connection per call (`Connection: close`), the whole call bounded by
//! one deadline (connect, write and every read), the answer bounded in size. Runs on the external-auth
//! worker threads, never on a shard. Why not a crate: this is all the backend needs (no TLS, no redirects,
//! no keep-alive), `httparse` is already a dependency, and the deadline covers the whole call, where
//! client crates time each read separately.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// An answer larger than this (headers and body) is refused: auth answers are a few bytes of JSON.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// A parsed `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` as written (the port defaulted to 80), for the Host header and for logs.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]`; `https` is refused (not supported by this client).
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("`{url}`: https is not supported for auth URLs yet (use http on a trusted network)")
            } else {
                format!("`{url}` is not an http:// URL")
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| format!("`{url}`: port `{port}` is not a number"))?;
                (host.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host"));
        }
        Ok(HttpUrl { authority: format!("{host}:{port}"), host: host.to_string(), port, path: path.to_string() })
    }
}

/// Why a call gave no usable answer (the worker logs it with the URL).
#[derive(Debug, thiserror::Error)]
pub enum HttpCallError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("connection refused or failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0} ms")]
    TimedOut(u128),
    #[error("connection failed: {0}")]
    Io(std::io::Error),
    #[error("answer is not HTTP/1.x: {0}")]
    BadResponse(String),
    #[error("answer larger than {RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
}

/// A status code and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POSTs `body` (JSON) to `url` and reads the answer, all within `timeout`.
pub fn post_json(url: &HttpUrl, body: &[u8], timeout: Duration) -> Result<HttpAnswer, HttpCallError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let timed_out = || HttpCallError::TimedOut(timeout.as_millis());
    let addr: SocketAddr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| HttpCallError::Resolve(url.authority.clone()))?
        .next()
        .ok_or_else(|| HttpCallError::Resolve(url.authority.clone()))?;
    let left = |deadline: Instant| deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero());
    let mut stream = TcpStream::connect_timeout(&addr, left(deadline).ok_or_else(timed_out)?).map_err(|err| {
        if err.kind() == std::io::ErrorKind::TimedOut {
            timed_out()
        } else {
            HttpCallError::Connect(err)
        }
    })?;
    let _ = stream.set_nodelay(true);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardmq\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        body.len()
    );
    let io = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => HttpCallError::Io(err),
    };
    stream.set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?)).map_err(io)?;
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).map_err(io)?;
    let mut received = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(answer) = parse_answer(&received, false)? {
            return Ok(answer);
        }
        stream.set_read_timeout(Some(left(deadline).ok_or_else(timed_out)?)).map_err(io)?;
        let read = stream.read(&mut chunk).map_err(io)?;
        if read == 0 {
            return parse_answer(&received, true)?
                .ok_or_else(|| HttpCallError::BadResponse("connection closed before a whole answer".into()));
        }
        if received.len() + read > RESPONSE_BYTES_MAX {
            return Err(HttpCallError::TooLarge);
        }
        received.extend_from_slice(&chunk[..read]);
    }
}

/// The answer in `received` if it is complete (`closed`: the server closed, so a body without a length
/// ends here); `None` while more is needed.
fn parse_answer(received: &[u8], closed: bool) -> Result<Option<HttpAnswer>, HttpCallError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(received) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(HttpCallError::BadResponse(err.to_string())),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value).trim().to_ascii_lowercase())
    };
    let rest = &received[head_len..];
    if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        return dechunk(rest).map(|body| body.map(|body| HttpAnswer { status, body }));
    }
    if let Some(length) = header("content-length") {
        let length: usize =
            length.parse().map_err(|_| HttpCallError::BadResponse(format!("Content-Length `{length}`")))?;
        if length > RESPONSE_BYTES_MAX {
            return Err(HttpCallError::TooLarge);
        }
        return Ok((rest.len() >= length).then(|| HttpAnswer { status, body: rest[..length].to_vec() }));
    }
    // No length: the body runs to the close (204 and 304 have none).
    if status == 204 || status == 304 || closed {
        return Ok(Some(HttpAnswer { status, body: if closed { rest.to_vec() } else { Vec::new() } }));
    }
    Ok(None)
}

/// A chunked body, once its last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HttpCallError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|pair| pair == b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpCallError::BadResponse(format!("chunk size `{size_text}`")))?;
        let data = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_are_http_with_a_host_and_an_optional_port_and_path() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/mqtt/auth?x=1").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("127.0.0.1", 8080, "/mqtt/auth?x=1"));
        assert_eq!(HttpUrl::parse("http://auth.local").unwrap().authority, "auth.local:80");
        assert!(HttpUrl::parse("https://a/b").unwrap_err().contains("https is not supported"));
        assert!(HttpUrl::parse("ftp://a/b").is_err());
        assert!(HttpUrl::parse("http://:80/").is_err());
        assert!(HttpUrl::parse("http://a:http/").is_err());
    }

    #[test]
    fn answers_with_length_chunks_or_close_are_read_whole() {
        let whole = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).unwrap().unwrap();
        assert_eq!((whole.status, whole.body.as_slice()), (200, &b"ok"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false).unwrap().is_none());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked, false).unwrap().unwrap().body, b"abcde");
        let until_close = parse_answer(b"HTTP/1.0 500 Oops\r\n\r\nbroken", true).unwrap().unwrap();
        assert_eq!((until_close.status, until_close.body.as_slice()), (500, &b"broken"[..]));
        assert!(parse_answer(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn a_server_that_never_answers_times_out_within_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let started = Instant::now();
        let err = post_json(&url, b"{}", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, HttpCallError::TimedOut(200)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        let refused = post_json(&url, b"{}", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(refused, HttpCallError::Connect(_)), "{refused}");
    }
}
