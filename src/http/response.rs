//! What every HTTP handler answers with: a `Response` (status, content type, body, extra headers) and the
//! JSON error `ApiError` (`{"code": <status>, "message": "..."}`). Shared by every route, so a new route
//! (metrics, a dashboard) answers the same way.

use serde::Serialize;

use crate::transport::http::Status;

/// A whole response before it is written (the server adds `Content-Length` and `Connection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// `value` as JSON.
    pub fn json(status: Status, value: &impl Serialize) -> Response {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response { status, content_type: "application/json", body, headers: Vec::new() }
    }

    /// A body of another type (text, HTML, a Prometheus exposition).
    pub fn bytes(status: Status, content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status, content_type, body, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// A refusal: the status and one line saying which rule the request broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {message}", status.code, status.reason)]
pub struct ApiError {
    pub status: Status,
    pub message: String,
    /// For 405: the methods the path takes (the `Allow` header).
    pub allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: Status, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), allow: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::NOT_FOUND, message)
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError { status: Status::METHOD_NOT_ALLOWED, message: format!("this path takes {allow}"), allow: Some(allow) }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(Status::SERVICE_UNAVAILABLE, message)
    }

    pub fn into_response(self) -> Response {
        let mut response = Response::json(self.status, &ErrorBody { code: self.status.code, message: &self.message });
        if self.status == Status::UNAUTHORIZED {
            response = response.with_header("WWW-Authenticate", "Bearer");
        }
        if let Some(allow) = self.allow {
            response = response.with_header("Allow", allow);
        }
        response
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Response {
        error.into_response()
    }
}
