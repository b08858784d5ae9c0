//! HTTP/1.1 request heads and error responses, over `httparse`: the part of HTTP the WebSocket upgrade
//! (and later the HTTP API listener) needs, and nothing about WebSocket itself.
//!
//! [`RequestReader`] collects a request head that may arrive in any number of pieces, bounded in bytes and
//! in header fields, and hands back an owned [`RequestHead`] plus the bytes that followed it. It parses only
//! once the blank line that ends a head has arrived, so a client dribbling bytes costs one scan per byte,
//! not one parse per byte. [`response`] and [`error_response`] write a whole response as one `Bytes`.

use bytes::{BufMut, Bytes, BytesMut};

/// Bounds on a request head: a client controls both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Request line, header fields and the blank line, in bytes.
    pub head_max_bytes: usize,
    /// Header fields (lines), counted by `httparse`.
    pub headers_max: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { head_max_bytes: 8 * 1024, headers_max: 64 }
    }
}

/// Why a request head was refused; [`HttpError::status`] is the answer to send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// The head is not HTTP/1.x syntax (RFC 9112 section 2.2 and 3).
    #[error("RFC 9112 2.2: malformed HTTP request head ({0})")]
    Malformed(httparse::Error),
    /// No blank line within `head_max_bytes` bytes.
    #[error("RFC 6585 5: HTTP request head longer than {head_max_bytes} bytes")]
    HeadTooLarge { head_max_bytes: usize },
    /// More header fields than `headers_max`.
    #[error("RFC 6585 5: HTTP request with more than {headers_max} header fields")]
    TooManyHeaders { headers_max: usize },
}

impl HttpError {
    pub fn status(&self) -> Status {
        match self {
            HttpError::Malformed(_) => Status::BAD_REQUEST,
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => Status::HEADERS_TOO_LARGE,
        }
    }
}

/// An HTTP status line's code and reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

impl Status {
    pub const SWITCHING_PROTOCOLS: Status = Status { code: 101, reason: "Switching Protocols" };
    pub const CONTINUE: Status = Status { code: 100, reason: "Continue" };
    pub const OK: Status = Status { code: 200, reason: "OK" };
    pub const CREATED: Status = Status { code: 201, reason: "Created" };
    pub const BAD_REQUEST: Status = Status { code: 400, reason: "Bad Request" };
    pub const UNAUTHORIZED: Status = Status { code: 401, reason: "Unauthorized" };
    pub const FORBIDDEN: Status = Status { code: 403, reason: "Forbidden" };
    pub const NOT_FOUND: Status = Status { code: 404, reason: "Not Found" };
    pub const METHOD_NOT_ALLOWED: Status = Status { code: 405, reason: "Method Not Allowed" };
    pub const REQUEST_TIMEOUT: Status = Status { code: 408, reason: "Request Timeout" };
    pub const LENGTH_REQUIRED: Status = Status { code: 411, reason: "Length Required" };
    pub const CONTENT_TOO_LARGE: Status = Status { code: 413, reason: "Content Too Large" };
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status { code: 415, reason: "Unsupported Media Type" };
    pub const TOO_MANY_REQUESTS: Status = Status { code: 429, reason: "Too Many Requests" };
    pub const INTERNAL_SERVER_ERROR: Status = Status { code: 500, reason: "Internal Server Error" };
    pub const HEADERS_TOO_LARGE: Status = Status { code: 431, reason: "Request Header Fields Too Large" };
    pub const SERVICE_UNAVAILABLE: Status = Status { code: 503, reason: "Service Unavailable" };
}

/// One header field as received: the name as sent, the value with surrounding whitespace removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub value: Vec<u8>,
}

/// A parsed request head, owned (it outlives the read buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent, e.g. `/mqtt?x=1`.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<HeaderField>,
}

impl RequestHead {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(path, _)| path)
    }

    /// Every value of the header `name` (matched case-insensitively), in the order received.
    pub fn values<'a: 'n, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n {
        self.headers
            .iter()
            .filter(move |field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value.as_slice())
    }

    /// The value of `name` when it appears exactly once; `Err(count)` when it is missing or repeated.
    pub fn single_value(&self, name: &str) -> Result<&[u8], usize> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (Some(value), None) => Ok(value),
            (None, _) => Err(0),
            (Some(_), Some(_)) => Err(2 + values.count()),
        }
    }

    /// Whether the comma-separated lists in the `name` headers hold `token` (case-insensitively), as for
    /// `Connection: keep-alive, Upgrade` (RFC 9110 5.6.1).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The items of the comma-separated lists in every `name` header, trimmed, empty items skipped.
    pub fn tokens<'a: 'n, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n {
        self.values(name).flat_map(|value| value.split(|&byte| byte == b',')).map(trim).filter(|item| !item.is_empty())
    }
}

/// Collects one request head from pieces (see the module doc).
#[derive(Debug)]
pub struct RequestReader {
    limits: RequestLimits,
    buffered: Vec<u8>,
    /// Bytes of `buffered` already searched for the end of the head.
    scanned: usize,
}

impl RequestReader {
    pub fn new(limits: RequestLimits) -> Self {
        RequestReader { limits, buffered: Vec::new(), scanned: 0 }
    }

    /// Append `input`; `Ok(Some((head, rest)))` once the head is complete, `rest` being the bytes that came
    /// after it (the start of the next protocol). `Ok(None)` = need more bytes. Call again only after `None`.
    pub fn push(&mut self, input: &[u8]) -> Result<Option<(RequestHead, Vec<u8>)>, HttpError> {
        // Take no more than one byte over the bound: enough to tell "too large" without holding the rest.
        let room = (self.limits.head_max_bytes + 1).saturating_sub(self.buffered.len());
        self.buffered.extend_from_slice(&input[..input.len().min(room)]);
        let overflow = &input[input.len().min(room)..];
        while let Some(end) = find_head_end(&self.buffered, self.scanned) {
            self.scanned = end;
            if end > self.limits.head_max_bytes {
                break;
            }
            if let Some(head) = self.parse(end)? {
                let mut rest = self.buffered.split_off(end);
                rest.extend_from_slice(overflow);
                self.buffered = Vec::new();
                self.scanned = 0;
                return Ok(Some((head, rest)));
            }
        }
        if self.buffered.len() > self.limits.head_max_bytes {
            return Err(HttpError::HeadTooLarge { head_max_bytes: self.limits.head_max_bytes });
        }
        // Refuse a head that is already wrong (MQTT or TLS bytes on an HTTP port, say) at once, rather than
        // waiting for a blank line that will never come.
        self.check_so_far()?;
        // The last bytes may be the start of a terminator: scan them again next time.
        self.scanned = self.scanned.max(self.buffered.len().saturating_sub(3));
        Ok(None)
    }

    /// Whether the incomplete head read so far can still become a request.
    fn check_so_far(&self) -> Result<(), HttpError> {
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.headers_max];
        match httparse::Request::new(&mut fields).parse(&self.buffered) {
            Ok(_) | Err(httparse::Error::TooManyHeaders) => Ok(()),
            Err(error) => Err(HttpError::Malformed(error)),
        }
    }

    /// Parse `buffered[..end]`; `None` when `httparse` still wants more (leading blank lines it skips).
    fn parse(&self, end: usize) -> Result<Option<RequestHead>, HttpError> {
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.headers_max];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(&self.buffered[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders { headers_max: self.limits.headers_max })
            }
            Err(error) => return Err(HttpError::Malformed(error)),
        }
        // httparse only reports Complete with method, path and version all present.
        Ok(Some(RequestHead {
            method: request.method.unwrap_or_default().to_owned(),
            target: request.path.unwrap_or_default().to_owned(),
            minor_version: request.version.unwrap_or_default(),
            headers: request
                .headers
                .iter()
                .map(|field| HeaderField { name: field.name.to_owned(), value: trim(field.value).to_vec() })
                .collect(),
        }))
    }
}

/// The index just past the first blank line (`\n\n` or `\n\r\n`) that ends after `from`.
fn find_head_end(buffered: &[u8], from: usize) -> Option<usize> {
    // A terminator ending after `from` starts at most two bytes before it.
    let mut index = from.saturating_sub(2);
    while let Some(offset) = buffered.get(index..)?.iter().position(|&byte| byte == b'\n') {
        let newline = index + offset;
        let end = match buffered.get(newline + 1..) {
            Some([b'\n', ..]) => Some(newline + 2),
            Some([b'\r', b'\n', ..]) => Some(newline + 3),
            _ => None,
        };
        match end {
            Some(end) if end > from => return Some(end),
            _ => index = newline + 1,
        }
    }
    None
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|byte| !byte.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|byte| !byte.is_ascii_whitespace()).map_or(start, |last| last + 1);
    &bytes[start..end]
}

/// A whole response: status line, `headers` in order, `Content-Length` when `body` is not empty or the
/// status is not 1xx, then the body.
pub fn response(status: Status, headers: &[(&str, &str)], body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(128 + body.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.code.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.reason.as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if status.code >= 200 {
        out.put_slice(b"Content-Length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// An error response after which the server closes the connection: `Connection: close`, a plain-text
/// body with `reason` (one line, for whoever reads it with curl), and any `extra_headers`.
pub fn error_response(status: Status, extra_headers: &[(&str, &str)], reason: &str) -> Bytes {
    let mut headers = Vec::with_capacity(extra_headers.len() + 2);
    headers.push(("Connection", "close"));
    headers.push(("Content-Type", "text/plain; charset=utf-8"));
    headers.extend_from_slice(extra_headers);
    let mut body = reason.as_bytes().to_vec();
    body.push(b'\n');
    response(status, &headers, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET /mqtt?a=b HTTP/1.1\r\nHost: example\r\nConnection: keep-alive, Upgrade\r\n\
        Upgrade: websocket\r\nX-Dup: 1\r\nx-dup:  2 \r\n\r\n";

    fn reader() -> RequestReader {
        RequestReader::new(RequestLimits::default())
    }

    #[test]
    fn whole_request_parses_with_fields_and_trailing_bytes() {
        let mut input = REQUEST.to_vec();
        input.extend_from_slice(b"\x82\x80rest");
        let (head, rest) = reader().push(&input).unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/mqtt?a=b");
        assert_eq!(head.path(), "/mqtt");
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.single_value("host"), Ok(&b"example"[..]));
        assert_eq!(head.single_value("x-dup"), Err(2));
        assert_eq!(head.single_value("missing"), Err(0));
        assert_eq!(head.values("X-DUP").collect::<Vec<_>>(), vec![&b"1"[..], &b"2"[..]]);
        assert!(head.has_token("connection", "upgrade"));
        assert!(!head.has_token("connection", "close"));
        assert_eq!(rest, b"\x82\x80rest");
    }

    #[test]
    fn byte_at_a_time_request_parses_once_complete() {
        let mut reader = reader();
        for &byte in &REQUEST[..REQUEST.len() - 1] {
            assert_eq!(reader.push(&[byte]), Ok(None));
        }
        let (head, rest) = reader.push(&REQUEST[REQUEST.len() - 1..]).unwrap().unwrap();
        assert_eq!(head.path(), "/mqtt");
        assert!(rest.is_empty());
    }

    #[test]
    fn bare_newlines_and_leading_blank_lines_are_accepted() {
        let (head, rest) = reader().push(b"\r\nGET / HTTP/1.1\nHost: h\n\nX").unwrap().unwrap();
        assert_eq!(head.single_value("Host"), Ok(&b"h"[..]));
        assert_eq!(rest, b"X");
    }

    #[test]
    fn head_over_the_byte_bound_is_refused_with_431() {
        let limits = RequestLimits { head_max_bytes: 64, headers_max: 64 };
        let mut reader = RequestReader::new(limits);
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', 100));
        let error = reader.push(&input).unwrap_err();
        assert_eq!(error, HttpError::HeadTooLarge { head_max_bytes: 64 });
        assert_eq!(error.status().code, 431);
    }

    #[test]
    fn head_ending_past_the_byte_bound_is_refused_even_when_complete() {
        let limits = RequestLimits { head_max_bytes: 20, headers_max: 64 };
        assert!(matches!(RequestReader::new(limits).push(REQUEST), Err(HttpError::HeadTooLarge { .. })));
        // Exactly at the bound is fine.
        let exact = b"GET / HTTP/1.1\r\n\r\n";
        let limits = RequestLimits { head_max_bytes: exact.len(), headers_max: 64 };
        assert!(RequestReader::new(limits).push(exact).unwrap().is_some());
    }

    #[test]
    fn dribbled_head_over_the_byte_bound_is_refused() {
        let limits = RequestLimits { head_max_bytes: 32, headers_max: 64 };
        let mut reader = RequestReader::new(limits);
        let mut last = Ok(None);
        for _ in 0..40 {
            last = reader.push(b"a");
            if last.is_err() {
                break;
            }
        }
        assert_eq!(last, Err(HttpError::HeadTooLarge { head_max_bytes: 32 }));
    }

    #[test]
    fn too_many_header_fields_is_refused_with_431() {
        let limits = RequestLimits { head_max_bytes: 8192, headers_max: 3 };
        let error = RequestReader::new(limits).push(REQUEST).unwrap_err();
        assert_eq!(error, HttpError::TooManyHeaders { headers_max: 3 });
        assert_eq!(error.status().code, 431);
    }

    #[test]
    fn bytes_that_cannot_start_a_request_are_refused_before_any_blank_line() {
        // An MQTT CONNECT sent to a WebSocket port: no line end ever comes, but it is not HTTP already.
        let error = reader().push(b"\x10\x1f\x00\x04MQTT\x04\x02\x00<").unwrap_err();
        assert!(matches!(error, HttpError::Malformed(_)), "{error:?}");
        assert_eq!(reader().push(b"GET /mq").unwrap(), None, "a valid start waits for the rest");
    }

    #[test]
    fn malformed_request_line_is_refused_with_400() {
        let error = reader().push(b"GET\x01 / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(matches!(error, HttpError::Malformed(_)));
        assert_eq!(error.status(), Status::BAD_REQUEST);
        assert!(matches!(reader().push(b"GET / HTTP/2.0\r\n\r\n"), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn error_response_closes_and_counts_its_body() {
        let bytes = error_response(Status::FORBIDDEN, &[("X-A", "b")], "origin not allowed");
        assert_eq!(
            &bytes[..],
            &b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
               X-A: b\r\nContent-Length: 19\r\n\r\norigin not allowed\n"[..]
        );
    }

    #[test]
    fn informational_response_has_no_content_length() {
        let bytes = response(Status::SWITCHING_PROTOCOLS, &[("Upgrade", "websocket")], b"");
        assert_eq!(&bytes[..], &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"[..]);
    }
}
