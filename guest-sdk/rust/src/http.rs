//! Outbound HTTP through wasi:http, to the origins the subscriber is
//! granted in service.toml (`http = ["https://api.example.com"]`). Calls
//! block the handler until the response has arrived, body included.
//!
//! ```ignore
//! use natsapp_guest::http;
//!
//! let resp = http::Request::post("https://api.example.com/charges")
//!     .header("Authorization", &format!("Bearer {key}"))
//!     .json(&charge)?
//!     .send()?;
//! if resp.status >= 500 {
//!     return Err(Error::retry(format!("payment service answered {}", resp.status)));
//! }
//! ```

use super::bindings::wasi::http::outgoing_handler;
use super::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use super::bindings::wasi::io::streams::StreamError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The runtime refused it (origin not granted, an internal address);
    /// the text names the rule.
    Denied(String),
    /// The tenant's `http_rate` or `http_concurrency` is spent for now.
    Quota(String),
    /// No connection, response or next body chunk in time.
    Timeout,
    /// The response body is larger than the subscriber's `http_response` limit.
    TooLarge,
    /// The request itself is wrong (URL, header).
    Invalid(String),
    /// Anything else (refused connection, TLS, DNS), with wasi:http's code.
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HttpError::Denied(m) | HttpError::Quota(m) => write!(f, "{m}"),
            HttpError::Timeout => f.write_str("HTTP request timed out"),
            HttpError::TooLarge => f.write_str("HTTP response body larger than the limit"),
            HttpError::Invalid(m) => write!(f, "invalid HTTP request: {m}"),
            HttpError::Failed(m) => write!(f, "HTTP request failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A denied or invalid request will not succeed later: reject; anything
/// else may: retry.
impl From<HttpError> for super::Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(_) | HttpError::Invalid(_) => super::Error::reject(e),
            _ => super::Error::retry(e),
        }
    }
}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InternalError(Some(m)) if m.starts_with("denied: quota: ") => HttpError::Quota(m),
            ErrorCode::InternalError(Some(m)) if m.starts_with("denied: ") => HttpError::Denied(m),
            ErrorCode::HttpRequestDenied => HttpError::Denied("request denied".into()),
            ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
                HttpError::Timeout
            }
            ErrorCode::DnsTimeout => HttpError::Timeout,
            ErrorCode::HttpResponseBodySize(_) => HttpError::TooLarge,
            ErrorCode::HttpRequestUriInvalid => HttpError::Invalid("bad URL".into()),
            other => HttpError::Failed(format!("{other:?}")),
        }
    }
}

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Failed(format!("response is not the JSON expected: {e}")))
    }
}

/// A request to build and send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with `method` ("GET", "POST", …) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        Request { method, url: url.to_string(), headers: Vec::new(), body: Vec::new(), timeout: None }
    }

    /// A GET request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| HttpError::Invalid(format!("cannot encode JSON: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Waits at most this long to connect, for the response, and between
    /// body chunks (the runtime caps it at the subscriber's `http_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, rest) = if let Some(rest) = self.url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = self.url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(HttpError::Invalid(format!("{:?} is not an http or https URL", self.url)));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let entries: Vec<(String, Vec<u8>)> =
            self.headers.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())).collect();
        let fields = Fields::from_list(&entries).map_err(|e| HttpError::Invalid(format!("header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let invalid = |what: &str| HttpError::Invalid(what.to_string());
        request.set_method(&self.method).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
        request.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;
        let options = self.timeout.map(|t| {
            let ns = t.as_nanos().min(u64::MAX as u128) as u64;
            let o = RequestOptions::new();
            let _ = o.set_connect_timeout(Some(ns));
            let _ = o.set_first_byte_timeout(Some(ns));
            let _ = o.set_between_bytes_timeout(Some(ns));
            o
        });
        // Sent first, so the runtime reads the body while it is written: the
        // stream buffers little, and a larger body written before would wait
        // forever.
        let future = outgoing_handler::handle(request, options)?;
        {
            let out = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in self.body.chunks(4096) {
                out.blocking_write_and_flush(chunk).map_err(|e| HttpError::Failed(format!("writing the body: {e:?}")))?;
            }
        }
        OutgoingBody::finish(body, None)?;
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(result)) => result?,
            _ => return Err(HttpError::Failed("no response".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| HttpError::Failed("no body".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming.stream().map_err(|()| HttpError::Failed("no body stream".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(match super::bindings::wasi::http::types::http_error_code(&e) {
                            Some(code) => code.into(),
                            None => HttpError::Failed(e.to_debug_string()),
                        })
                    }
                }
            }
        }
        let _trailers = IncomingBody::finish(incoming);
        Ok(Response { status, headers, body })
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}
