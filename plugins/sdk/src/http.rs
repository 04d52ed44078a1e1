//! A small blocking HTTP client over `wasi:http`, for metric providers.
//!
//! The host decides where requests may go (the plugin's allow-list) and how
//! long they may take; a refused host comes back as [`HttpError::Denied`].

use crate::provider::wasi::http::outgoing_handler;
use crate::provider::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::provider::wasi::io::streams::StreamError;

/// An HTTP request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `PUT`...
    pub method: String,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header name/value pairs.
    pub headers: Vec<(String, String)>,
    /// Request body, if any.
    pub body: Option<Vec<u8>>,
    /// Timeout for connect, first byte and between bytes; the host caps it at the call deadline.
    pub timeout_ms: Option<u64>,
    /// HTTPS without verifying the server's certificate (a metric's
    /// `insecure: true`). The host honours it only when the plugin's
    /// registration sets `http.allowInsecure`; otherwise the request is
    /// refused as [`HttpError::Denied`], naming that setting.
    pub insecure: bool,
}

/// The header that carries [`Request::insecure`] to the host, which
/// removes it before sending.
pub const INSECURE_TLS_HEADER: &str = "weir-insecure-tls";

impl Request {
    /// A `GET` of `url` with no headers.
    pub fn get(url: &str) -> Self {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: None,
            timeout_ms: None,
            insecure: false,
        }
    }
}

/// A received HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
}

/// Why a request failed.
#[derive(Debug, Clone)]
pub enum HttpError {
    /// The URL could not be used.
    InvalidUrl(String),
    /// The host refused the request (not on the plugin's allow-list).
    Denied(String),
    /// The request failed on the way (connection, timeout, body too large...).
    Failed(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
            HttpError::Failed(m) => write!(f, "request failed: {m}"),
        }
    }
}

impl HttpError {
    /// The plugin error a provider reports for this failure of a request
    /// to `target` (named in the message): a refused host is `denied`, a
    /// bad URL `invalid-config` and a failed exchange `transient`.
    pub fn into_plugin_error(self, target: &str) -> crate::PluginError {
        use crate::PluginError;
        match self {
            HttpError::Denied(m) => PluginError::Denied(format!("{target}: {m}")),
            HttpError::InvalidUrl(m) => PluginError::InvalidConfig(format!("{target}: {m}")),
            HttpError::Failed(m) => PluginError::Transient(format!("{target}: {m}")),
        }
    }
}

struct ParsedUrl<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parse_url(url: &str) -> Result<ParsedUrl<'_>, HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "{url:?} must start with http:// or https://"
        )));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("{url:?} has no host")));
    }
    let path_and_query = if path.is_empty() { "/" } else { path };
    Ok(ParsedUrl {
        scheme,
        authority,
        path_and_query,
    })
}

fn method(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

fn describe(code: &ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied("HTTP request denied".into()),
        other => HttpError::Failed(format!("{other:?}")),
    }
}

/// Sends `request` and reads the whole response body.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let url = parse_url(&request.url)?;
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::InvalidUrl(format!("header {name:?}: {e:?}")))?;
    }
    if request.insecure {
        headers
            .append(INSECURE_TLS_HEADER, b"1")
            .map_err(|e| HttpError::InvalidUrl(format!("header {INSECURE_TLS_HEADER}: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let bad = |what: &str| HttpError::InvalidUrl(format!("{what} of {:?}", request.url));
    outgoing
        .set_method(&method(&request.method))
        .map_err(|_| bad("method"))?;
    outgoing
        .set_scheme(Some(&url.scheme))
        .map_err(|_| bad("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|_| bad("authority"))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|_| bad("path"))?;

    let body = outgoing
        .body()
        .map_err(|_| HttpError::Failed("request body taken twice".into()))?;
    let options = RequestOptions::new();
    if let Some(ms) = request.timeout_ms {
        let ns = ms.saturating_mul(1_000_000);
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
    }
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(|e| describe(&e))?;
    {
        let stream = body
            .write()
            .map_err(|_| HttpError::Failed("request body stream".into()))?;
        if let Some(bytes) = &request.body {
            for chunk in bytes.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Failed(format!("writing request body: {e:?}")))?;
            }
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| describe(&e))?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(describe(&code)),
        Some(Err(())) | None => return Err(HttpError::Failed("response already taken".into())),
    };
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| HttpError::Failed("response body".into()))?;
    let stream = incoming
        .stream()
        .map_err(|_| HttpError::Failed("response body stream".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Failed(format!(
                    "reading response body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(Response {
        status,
        body: bytes,
    })
}

/// The longest piece of a response [`excerpt`] keeps.
pub const EXCERPT_CHARS: usize = 512;

/// The start of a response body as text (at most [`EXCERPT_CHARS`]
/// characters), to quote in an error message.
pub fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// `key=value&…` with both sides percent-encoded: a query string or a
/// form body.
pub fn encode_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                encode_query_component(k),
                encode_query_component(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes `text` for a URL query component (RFC 3986 unreserved
/// characters pass through).
pub fn encode_query_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
