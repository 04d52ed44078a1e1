//! The tape of one live call: every host answer, in order, captured where
//! the host gives it (a cluster wrapper, the clocks, the HTTP hook).

use super::format::{Answer, HostAnswer, HttpResponse};
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use bytes::Bytes;
use serde_json::Value;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// Most answers one call's tape keeps; past it the tape is marked
/// truncated. Cluster and HTTP answers are already bounded by the call's
/// budget; this bounds clock readings, which are not.
pub const TAPE_ANSWERS: usize = 4096;

#[derive(Debug, Default)]
struct TapeInner {
    answers: Vec<HostAnswer>,
    truncated: bool,
}

/// The answers of one call, shared by the places that give them.
#[derive(Debug, Clone, Default)]
pub struct Tape(Arc<Mutex<TapeInner>>);

impl Tape {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapeInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `answer`; returns its index, or `None` past the cap.
    fn push(&self, answer: HostAnswer) -> Option<usize> {
        let mut tape = self.lock();
        if tape.answers.len() >= TAPE_ANSWERS {
            tape.truncated = true;
            return None;
        }
        tape.answers.push(answer);
        Some(tape.answers.len() - 1)
    }

    /// Runs `f` on the HTTP response at `index`, if it is one.
    fn with_response(&self, index: usize, f: impl FnOnce(&mut HttpResponse)) {
        if let Some(HostAnswer::Http {
            result: Answer::Ok(response),
            ..
        }) = self.lock().answers.get_mut(index)
        {
            f(response);
        }
    }

    /// The answers so far, and whether any were left out.
    pub fn take(&self) -> (Vec<HostAnswer>, bool) {
        let mut tape = self.lock();
        (std::mem::take(&mut tape.answers), tape.truncated)
    }
}

fn answer<T>(result: &Result<T, ClusterError>, keep: impl FnOnce(&T) -> T) -> Answer<T> {
    match result {
        Ok(v) => Answer::Ok(keep(v)),
        Err(e) => Answer::ClusterError(e.clone()),
    }
}

/// A cluster that records every read it answers (the staged view reads
/// through it, so what lands on the tape is what the backend answered).
pub struct RecordingCluster {
    base: Arc<dyn Cluster>,
    tape: Tape,
}

impl RecordingCluster {
    /// Records `base`'s answers on `tape`.
    pub fn new(base: Arc<dyn Cluster>, tape: Tape) -> Self {
        RecordingCluster { base, tape }
    }
}

#[async_trait::async_trait]
impl Cluster for RecordingCluster {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        self.base.get(key).await
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.base.list(group, kind, namespace, labels).await
    }

    async fn get_at(&self, key: &ObjectKey, api_version: &str) -> Result<Value, ClusterError> {
        let result = self.base.get_at(key, api_version).await;
        self.tape.push(HostAnswer::ClusterGet {
            key: key.clone(),
            api_version: api_version.to_string(),
            result: answer(&result, Value::clone),
        });
        result
    }

    async fn list_at(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        let result = self
            .base
            .list_at(api_version, kind, namespace, labels)
            .await;
        self.tape.push(HostAnswer::ClusterList {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            labels: labels.to_vec(),
            result: answer(&result, Vec::clone),
        });
        result
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        self.base.apply(writes).await
    }

    async fn apply_before(
        &self,
        writes: Vec<Write>,
        deadline: std::time::Instant,
    ) -> Result<Vec<Option<Value>>, ClusterError> {
        self.base.apply_before(writes, deadline).await
    }
}

/// The host's wall clock, each reading recorded.
pub struct RecordingWallClock {
    inner: Box<dyn HostWallClock + Send>,
    tape: Tape,
}

impl RecordingWallClock {
    /// Records the host clock's readings on `tape`.
    pub fn new(tape: Tape) -> Self {
        RecordingWallClock {
            inner: wasmtime_wasi::clocks::wall_clock(),
            tape,
        }
    }
}

impl HostWallClock for RecordingWallClock {
    fn resolution(&self) -> Duration {
        self.inner.resolution()
    }

    fn now(&self) -> Duration {
        let now = self.inner.now();
        self.tape.push(HostAnswer::WallClock {
            nanos: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        });
        now
    }
}

/// The host's monotonic clock, each reading recorded.
pub struct RecordingMonotonicClock {
    inner: Box<dyn HostMonotonicClock + Send>,
    tape: Tape,
}

impl RecordingMonotonicClock {
    /// Records the host clock's readings on `tape`.
    pub fn new(tape: Tape) -> Self {
        RecordingMonotonicClock {
            inner: wasmtime_wasi::clocks::monotonic_clock(),
            tape,
        }
    }
}

impl HostMonotonicClock for RecordingMonotonicClock {
    fn resolution(&self) -> u64 {
        self.inner.resolution()
    }

    fn now(&self) -> u64 {
        let now = self.inner.now();
        self.tape.push(HostAnswer::MonotonicClock { nanos: now });
        now
    }
}

/// The request line and headers of an outgoing request, as recorded.
pub(crate) fn request_parts<B>(
    request: &http::Request<B>,
) -> (String, String, Vec<(String, String)>) {
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    (
        request.method().as_str().to_string(),
        request.uri().to_string(),
        headers,
    )
}

/// The name of a wasi:http error, as recorded.
pub(crate) fn http_error_name(error: &HttpError) -> String {
    let debug = format!("{error:?}");
    // `ConnectionRefused`, `DnsError { .. }` -> `DnsError`, `Hyper(..)` -> `Hyper`.
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Records an HTTP exchange: the request now, the response when it comes.
pub(crate) struct HttpRecorder {
    tape: Tape,
    index: Option<usize>,
}

impl HttpRecorder {
    /// Puts the request on the tape (answered as an error until the
    /// response arrives: a call cut off while waiting recorded no answer).
    pub(crate) fn start<B>(tape: &Tape, request: &http::Request<B>) -> Self {
        let (method, uri, request_headers) = request_parts(request);
        let index = tape.push(HostAnswer::Http {
            method,
            uri,
            request_headers,
            result: Answer::HttpError(super::source::NO_RESPONSE.into()),
        });
        HttpRecorder {
            tape: tape.clone(),
            index,
        }
    }

    /// Records the transport error the request ended with.
    pub(crate) fn failed(&self, error: &HttpError) {
        if let Some(i) = self.index
            && let Some(HostAnswer::Http { result, .. }) = self.tape.lock().answers.get_mut(i)
        {
            *result = Answer::HttpError(http_error_name(error));
        }
    }

    /// Records the response's head and wraps its body so that what the
    /// guest reads of it is recorded too.
    pub(crate) fn responded(self, response: http::Response<WasiBody>) -> http::Response<WasiBody> {
        let Some(index) = self.index else {
            return response;
        };
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Some(HostAnswer::Http { result, .. }) = self.tape.lock().answers.get_mut(index) {
            *result = Answer::Ok(HttpResponse {
                status: response.status().as_u16(),
                headers,
                ..HttpResponse::default()
            });
        }
        let tape = self.tape;
        response.map(|body| {
            http_body_util::BodyExt::boxed_unsync(RecordedBody {
                inner: body,
                tape,
                index,
                bytes: Vec::new(),
            })
        })
    }
}

/// A response body that copies what passes through it onto the tape.
struct RecordedBody {
    inner: WasiBody,
    tape: Tape,
    index: usize,
    bytes: Vec<u8>,
}

impl RecordedBody {
    fn flush(&mut self, error: Option<&HttpError>) {
        let bytes = std::mem::take(&mut self.bytes);
        let error = error.map(http_error_name);
        self.tape.with_response(self.index, |response| {
            match String::from_utf8(bytes) {
                Ok(text) => response.body = text,
                Err(e) => {
                    use base64::Engine as _;
                    response.body_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes()));
                }
            }
            response.body_error = error;
        });
    }
}

impl http_body::Body for RecordedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // Bounded: the inner body is capped at the call's
                    // `limits.httpBodyBytes`.
                    this.bytes.extend_from_slice(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.flush(Some(&e));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.flush(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    // A body the guest stopped reading part way still leaves what it read.
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.flush(None);
        }
    }
}
