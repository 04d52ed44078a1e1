//! Outgoing HTTP for metric providers: the allow-list, clamped timeouts and a
//! capped response body, all enforced in the one hook every request passes.

use super::insecure_tls::{self, INSECURE_TLS_HEADER};
use super::limits::HttpPolicy;
use super::recorder::{HttpRecorder, HttpReplay, ReplaySource, Tape};
use super::state::{SharedRecord, record_denial};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The connection I/O that goes with a response.
type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// Where a call's HTTP responses come from.
pub enum HttpAnswers {
    /// The network.
    Live,
    /// The network, each exchange recorded on the tape.
    Recorded(Tape),
    /// A recording (a replay): no request leaves the process.
    Replayed(Arc<ReplaySource>),
}

/// The per-call HTTP hooks of a plugin.
pub struct PolicyHooks {
    policy: Arc<HttpPolicy>,
    record: SharedRecord,
    /// Upper bound on every transport timeout: the call's deadline.
    max_timeout: Duration,
    body_cap: usize,
    answers: HttpAnswers,
}

impl PolicyHooks {
    /// Hooks enforcing `policy` for one call.
    pub fn new(
        policy: Arc<HttpPolicy>,
        record: SharedRecord,
        max_timeout: Duration,
        body_cap: usize,
        answers: HttpAnswers,
    ) -> Self {
        PolicyHooks {
            policy,
            record,
            max_timeout,
            body_cap,
            answers,
        }
    }
}

fn clamp(requested: Option<Duration>, max: Duration) -> Option<Duration> {
    Some(requested.map_or(max, |d| d.min(max)))
}

impl WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        drop(fut);
        let mut request = request;
        let insecure = request.headers_mut().remove(INSECURE_TLS_HEADER).is_some();
        let uri = request.uri();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.policy.allows(&host, port) {
            record_denial(
                &self.record,
                format!(
                    "HTTP to {host}:{port} ({}) is not on the plugin's allow-list; add \"{host}:{port}\" (or \"{host}\") to `http.allowHosts` in its registration if it should be",
                    uri
                ),
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if insecure && https && !self.policy.allow_insecure {
            record_denial(
                &self.record,
                format!(
                    "HTTPS to {host}:{port} without verifying its certificate (the metric's `insecure: true`) is not allowed for this plugin; set `http.allowInsecure: true` in its registration if it should be"
                ),
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let unverified = insecure && https;
        let recorder = match &self.answers {
            HttpAnswers::Live => None,
            HttpAnswers::Recorded(tape) => Some(HttpRecorder::start(tape, &request)),
            HttpAnswers::Replayed(source) => {
                let answer = source.http(request.method().as_str(), &request.uri().to_string());
                return Box::new(async move {
                    match answer {
                        Ok(response) => Ok((response, Box::new(async { Ok(()) }) as IoFuture)),
                        Err(HttpReplay::Failed(e)) => Err(e),
                        // Cut off by the call's deadline, as the recorded call was.
                        Err(HttpReplay::NeverAnswered) => std::future::pending().await,
                    }
                });
            }
        };
        let max = self.max_timeout;
        let options = RequestOptions {
            connect_timeout: clamp(options.and_then(|o| o.connect_timeout), max),
            first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout), max),
            between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout), max),
        };
        let cap = self.body_cap;
        Box::new(async move {
            let sent: Result<(http::Response<WasiBody>, IoFuture), HttpError> = if unverified {
                insecure_tls::send(request, options)
                    .await
                    .map(|(response, io)| (response, Box::new(io) as IoFuture))
            } else {
                wasmtime_wasi_http::default_send_request(request, Some(options))
                    .await
                    .map(|(response, io)| {
                        (response.map(|b| b.boxed_unsync()), Box::new(io) as IoFuture)
                    })
            };
            let (response, io) = match (sent, &recorder) {
                (Ok(sent), _) => sent,
                (Err(e), Some(recorder)) => {
                    recorder.failed(&e);
                    return Err(e);
                }
                (Err(e), None) => return Err(e),
            };
            if let Some(length) = response.headers().get(http::header::CONTENT_LENGTH)
                && length
                    .to_str()
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok())
                    .is_some_and(|l| l > cap as u64)
            {
                let error = HttpError::HttpResponseBodySize(Some(cap as u64));
                if let Some(recorder) = &recorder {
                    recorder.failed(&error);
                }
                return Err(error);
            }
            let response = response.map(|body| capped(body, cap));
            // The tee sits behind the cap: it never holds more than the guest may read.
            let response = match recorder {
                Some(recorder) => recorder.responded(response),
                None => response,
            };
            Ok((response, io))
        })
    }
}

/// Wraps a response body so that more than `cap` bytes is an error.
fn capped(
    body: impl http_body::Body<Data = Bytes, Error = HttpError> + Send + 'static,
    cap: usize,
) -> WasiBody {
    http_body_util::Limited::new(body, cap)
        .map_err(move |e| match e.downcast::<HttpError>() {
            Ok(inner) => *inner,
            Err(_) => HttpError::HttpResponseBodySize(Some(cap as u64)),
        })
        .boxed_unsync()
}
