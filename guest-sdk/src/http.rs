//! [`HttpClient`]: outbound HTTP over `wasi:http/outgoing-handler`.
//!
//! The host lets a task reach only the hosts its descriptor declared; every
//! redirect hop is a new outgoing request, so the host checks each one.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::error::TaskError;

/// Largest chunk written to a request body stream at once.
const WRITE_CHUNK: usize = 4096;
/// Largest chunk read from a response body stream at once.
const READ_CHUNK: u64 = 64 * 1024;

/// Why an HTTP request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The host refused the request: the task's descriptor does not allow
    /// this host (`wasi:http` error code `HTTP-request-denied`).
    #[error("outbound HTTP to {url} is denied: the host is not in the task's outbound hosts")]
    Denied {
        /// The URL that was refused.
        url: String,
    },
    /// The URL could not be parsed, or is not `http` or `https`.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request itself is malformed: a bad method or a bad or forbidden
    /// header.
    #[error("invalid HTTP request: {0}")]
    InvalidRequest(String),
    /// The request failed on the way: DNS, connection, TLS, protocol or
    /// stream errors.
    #[error("HTTP request failed: {0}")]
    Transport(String),
    /// The server redirected more often than the client follows.
    #[error("too many redirects (more than {max}); the last pointed to {url}")]
    TooManyRedirects {
        /// Where the last redirect pointed.
        url: String,
        /// How many redirects the client follows.
        max: u8,
    },
    /// A body could not be encoded or decoded as JSON.
    #[error("HTTP body is not the expected JSON: {0}")]
    Json(String),
}

/// [`HttpError::Denied`] is fatal with code `NETWORK_DENIED`; every other
/// error is retryable with code `HTTP_ERROR`.
impl From<HttpError> for TaskError {
    fn from(error: HttpError) -> Self {
        match &error {
            HttpError::Denied { url } => {
                let details = serde_json::json!({ "url": url });
                TaskError::fatal(&error)
                    .with_code("NETWORK_DENIED")
                    .with_details(details)
            }
            _ => TaskError::retryable(&error).with_code("HTTP_ERROR"),
        }
    }
}

/// An HTTP request: method, absolute `http` or `https` URL, headers and
/// body.
///
/// ```
/// use pipeweave_sdk::Request;
///
/// let request = Request::post("https://api.example.com/v1/items")
///     .header("authorization", "Bearer token")
///     .json(&serde_json::json!({ "name": "widget" }))
///     .unwrap();
/// assert_eq!(request.method, "POST");
/// assert_eq!(request.body, br#"{"name":"widget"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET`; compared case-insensitively.
    pub method: String,
    /// The absolute URL, such as `https://api.example.com/v1/items?page=2`.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body; empty for none.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url`, no headers and an empty body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Self {
        Self::new("HEAD", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON and the `content-type` header to
    /// `application/json`.
    ///
    /// # Errors
    ///
    /// [`HttpError::Json`] if `value` does not serialize.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, HttpError> {
        self.body = serde_json::to_vec(value).map_err(|e| HttpError::Json(e.to_string()))?;
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        Ok(self)
    }
}

/// An HTTP response, with its body read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, such as 200.
    pub status: u16,
    /// Header names (lowercase) and values, in order; values that are not
    /// UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of the header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text; bytes that are not UTF-8 are replaced with U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body deserialized from JSON.
    ///
    /// # Errors
    ///
    /// [`HttpError::Json`] if the body does not deserialize as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Json(e.to_string()))
    }
}

/// A blocking HTTP client over `wasi:http`.
///
/// It follows redirects (301, 302, 303, 307 and 308), at most
/// [`DEFAULT_MAX_REDIRECTS`](Self::DEFAULT_MAX_REDIRECTS) hops unless
/// changed. A 303, or a 301 or 302 answering a `POST`, turns into a `GET`
/// without a body; `authorization` and `cookie` headers are dropped when a
/// redirect leaves the original scheme and authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClient {
    max_redirects: u8,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// How many redirects a new client follows.
    pub const DEFAULT_MAX_REDIRECTS: u8 = 5;

    /// A client that follows up to five redirects.
    pub fn new() -> Self {
        Self {
            max_redirects: Self::DEFAULT_MAX_REDIRECTS,
        }
    }

    /// Sets how many redirects to follow; 0 returns redirect responses as
    /// they are.
    #[must_use]
    pub fn max_redirects(mut self, max: u8) -> Self {
        self.max_redirects = max;
        self
    }

    /// Sends a `GET` request to `url`.
    ///
    /// # Errors
    ///
    /// See [`HttpError`].
    pub fn get(&self, url: &str) -> Result<Response, HttpError> {
        self.request(Request::get(url))
    }

    /// Sends a `POST` request to `url` with `value` as a JSON body.
    ///
    /// # Errors
    ///
    /// See [`HttpError`].
    pub fn post_json<T: Serialize + ?Sized>(
        &self,
        url: &str,
        value: &T,
    ) -> Result<Response, HttpError> {
        self.request(Request::post(url).json(value)?)
    }

    /// Sends `request`, following redirects.
    ///
    /// # Errors
    ///
    /// See [`HttpError`]. A response with an error status is not an error:
    /// check [`Response::is_success`].
    pub fn request(&self, request: Request) -> Result<Response, HttpError> {
        let Request {
            mut method,
            url,
            mut headers,
            mut body,
        } = request;
        let mut url = Url::parse(&url)?;
        let mut redirects = 0u8;
        loop {
            let response = send(&method, &url, &headers, &body)?;
            let status = response.status;
            if !matches!(status, 301 | 302 | 303 | 307 | 308) || self.max_redirects == 0 {
                return Ok(response);
            }
            let Some(location) = response.header("location") else {
                return Ok(response);
            };
            let next = url.join(location)?;
            if redirects == self.max_redirects {
                return Err(HttpError::TooManyRedirects {
                    url: next.to_string(),
                    max: self.max_redirects,
                });
            }
            redirects += 1;
            let to_get = status == 303
                || (matches!(status, 301 | 302) && method.eq_ignore_ascii_case("POST"));
            if to_get {
                if !method.eq_ignore_ascii_case("HEAD") {
                    method = "GET".to_owned();
                }
                body.clear();
                headers.retain(|(name, _)| {
                    !name.eq_ignore_ascii_case("content-type")
                        && !name.eq_ignore_ascii_case("content-length")
                });
            }
            if next.scheme != url.scheme || next.authority != url.authority {
                headers.retain(|(name, _)| {
                    !name.eq_ignore_ascii_case("authorization")
                        && !name.eq_ignore_ascii_case("cookie")
                });
            }
            url = next;
        }
    }
}

/// One request and its response, without redirects.
fn send(
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    // The whole body is known, so send its length rather than a chunked
    // body, which some servers do not read.
    let wants_length = !body.is_empty()
        || ["POST", "PUT", "PATCH"]
            .iter()
            .any(|m| method.eq_ignore_ascii_case(m));
    if wants_length && !entries.iter().any(|(name, _)| name == "content-length") {
        entries.push((
            "content-length".to_owned(),
            body.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&entries)
        .map_err(|e| HttpError::InvalidRequest(format!("bad or forbidden header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&wasi_method(method))
        .map_err(|()| HttpError::InvalidRequest(format!("invalid method `{method}`")))?;
    let scheme = match url.scheme {
        UrlScheme::Http => Scheme::Http,
        UrlScheme::Https => Scheme::Https,
    };
    let invalid_url = |reason: &str| HttpError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_owned(),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid_url("scheme rejected"))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| invalid_url("authority rejected"))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| invalid_url("path rejected"))?;
    let outgoing_body = request
        .body()
        .map_err(|()| HttpError::Transport("the request body was already taken".to_owned()))?;

    // Send first, then stream the body, so a large body cannot fill the
    // pipe before anyone reads it.
    let future = outgoing_handler::handle(request, None).map_err(|code| from_code(code, url))?;
    {
        let stream = outgoing_body.write().map_err(|()| {
            HttpError::Transport("the request body stream was already taken".to_owned())
        })?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| transport("writing the request body", e))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|code| from_code(code, url))?;

    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| HttpError::Transport("the response was already taken".to_owned()))?
        .map_err(|code| from_code(code, url))?;

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming_body = response
        .consume()
        .map_err(|()| HttpError::Transport("the response body was already taken".to_owned()))?;
    let mut body = Vec::new();
    {
        let stream = incoming_body.stream().map_err(|()| {
            HttpError::Transport("the response body stream was already taken".to_owned())
        })?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(transport("reading the response body", e)),
            }
        }
    }
    drop(incoming_body);
    drop(response);
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn from_code(code: ErrorCode, url: &Url) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied {
            url: url.to_string(),
        },
        other => HttpError::Transport(format!("{other:?} ({url})")),
    }
}

fn transport(what: &str, error: StreamError) -> HttpError {
    match error {
        StreamError::LastOperationFailed(e) => {
            HttpError::Transport(format!("{what} failed: {}", e.to_debug_string()))
        }
        StreamError::Closed => HttpError::Transport(format!("{what} failed: stream closed")),
    }
}

fn wasi_method(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(method.to_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlScheme {
    Http,
    Https,
}

/// An absolute `http` or `https` URL, split the way `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    scheme: UrlScheme,
    /// `host[:port]`, lowercase, with IPv6 hosts in brackets.
    authority: String,
    /// The path, starting with `/`, and the query; no fragment.
    path_with_query: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.path_with_query)
    }
}

impl Url {
    fn parse(input: &str) -> Result<Self, HttpError> {
        let invalid = |reason: &str| HttpError::InvalidUrl {
            url: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = input
            .trim()
            .split_once("://")
            .ok_or_else(|| invalid("expected an absolute http:// or https:// URL"))?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            UrlScheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            UrlScheme::Https
        } else {
            return Err(invalid("only http and https are supported"));
        };
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_with_query) = rest.split_at(end);
        if authority.contains('@') {
            return Err(invalid("user information in URLs is not supported"));
        }

        let port = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed `[` in the host"))?;
            let valid_v6 = host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
            if !valid_v6 {
                return Err(invalid("invalid IPv6 address"));
            }
            match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("unexpected text after the IPv6 address"))?,
                ),
            }
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(invalid("missing host"));
            }
            let valid_host = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !valid_host {
                return Err(invalid("invalid character in the host"));
            }
            port
        };
        if let Some(port) = port
            && (port.is_empty()
                || !port.chars().all(|c| c.is_ascii_digit())
                || port.parse::<u16>().is_err())
        {
            return Err(invalid("invalid port"));
        }

        let path_with_query = match path_with_query.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{}", encode_path(path_with_query)),
            Some(_) => encode_path(path_with_query),
        };
        Ok(Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
            path_with_query,
        })
    }

    /// Resolves a redirect's `location` against this URL.
    fn join(&self, location: &str) -> Result<Self, HttpError> {
        let location = location.trim();
        let has_scheme = location.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        let scheme = match self.scheme {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        };
        if has_scheme {
            Self::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Self::parse(&format!("{scheme}://{rest}"))
        } else if location.starts_with('/') {
            Self::parse(&format!("{scheme}://{}{location}", self.authority))
        } else {
            let path = self
                .path_with_query
                .split_once('?')
                .map_or(self.path_with_query.as_str(), |(path, _)| path);
            let base = if location.starts_with('?') {
                path
            } else {
                path.rsplit_once('/').map_or("", |(dir, _)| dir)
            };
            let sep = if location.starts_with('?') { "" } else { "/" };
            Self::parse(&format!(
                "{scheme}://{}{base}{sep}{location}",
                self.authority
            ))
        }
    }
}

/// Percent-encodes the bytes of a path and query that may not appear in a
/// request target as they are (spaces, controls, non-ASCII).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_graphic() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn parses_urls() {
        let u = url("http://127.0.0.1:8080/a/b?c=d#frag");
        assert_eq!(u.scheme, UrlScheme::Http);
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.path_with_query, "/a/b?c=d");

        let u = url("HTTPS://Example.COM");
        assert_eq!(u.scheme, UrlScheme::Https);
        assert_eq!(u.authority, "example.com");
        assert_eq!(u.path_with_query, "/");

        let u = url("https://example.com?x=1");
        assert_eq!(u.path_with_query, "/?x=1");

        let u = url("http://[::1]:9000/x y");
        assert_eq!(u.authority, "[::1]:9000");
        assert_eq!(u.path_with_query, "/x%20y");
        assert_eq!(u.to_string(), "http://[::1]:9000/x%20y");

        assert_eq!(url("http://[::1]/").authority, "[::1]");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "example.com",
            "ftp://example.com/",
            "http:///path",
            "http://user@example.com/",
            "http://example.com:99999/",
            "http://example.com:/",
            "http://example.com:8a/",
            "http://[::1/",
            "http://[::1]x/",
            "http://exa mple.com/",
            "http://a:1:2/",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(HttpError::InvalidUrl { .. })),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn joins_redirect_locations() {
        let base = url("http://127.0.0.1:8080/dir/page?q=1");
        assert_eq!(
            base.join("https://other.example/x").unwrap().to_string(),
            "https://other.example/x"
        );
        assert_eq!(
            base.join("//other.example/x").unwrap().to_string(),
            "http://other.example/x"
        );
        assert_eq!(
            base.join("/root").unwrap().to_string(),
            "http://127.0.0.1:8080/root"
        );
        assert_eq!(
            base.join("next?z=2").unwrap().to_string(),
            "http://127.0.0.1:8080/dir/next?z=2"
        );
        assert_eq!(
            base.join("?z=2").unwrap().to_string(),
            "http://127.0.0.1:8080/dir/page?z=2"
        );
    }

    #[test]
    fn maps_errors_to_task_errors() {
        let denied: TaskError = HttpError::Denied {
            url: "http://x/".into(),
        }
        .into();
        assert!(!denied.is_retryable());
        assert_eq!(denied.code(), Some("NETWORK_DENIED"));
        let other: TaskError = HttpError::Transport("boom".into()).into();
        assert!(other.is_retryable());
        assert_eq!(other.code(), Some("HTTP_ERROR"));
    }
}
