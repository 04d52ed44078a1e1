//! The host answers of a replay, served from a recording: a cluster that
//! answers reads as recorded, the recorded HTTP responses, and the recorded
//! clock readings. A read the recording has no answer for (another build
//! may read other things) is answered from what the recording saw, and
//! noted as a divergence.

use super::format::{Answer, HostAnswer, HttpResponse};
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, group_of, labels_match};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// The recorded answers of one call, handed out again.
#[derive(Debug)]
pub struct ReplaySource {
    answers: Vec<HostAnswer>,
    used: Mutex<Vec<bool>>,
    /// The next wall and monotonic readings to hand out.
    clocks: Mutex<(usize, usize)>,
    walls: Vec<u64>,
    monotonics: Vec<u64>,
    divergences: Mutex<Vec<String>>,
}

/// Most divergences kept (a replay of a different build can diverge on
/// every read).
const DIVERGENCES: usize = 64;

impl ReplaySource {
    /// Serves `answers`.
    pub fn new(answers: Vec<HostAnswer>) -> Self {
        let walls = answers
            .iter()
            .filter_map(|a| match a {
                HostAnswer::WallClock { nanos } => Some(*nanos),
                _ => None,
            })
            .collect();
        let monotonics = answers
            .iter()
            .filter_map(|a| match a {
                HostAnswer::MonotonicClock { nanos } => Some(*nanos),
                _ => None,
            })
            .collect();
        ReplaySource {
            used: Mutex::new(vec![false; answers.len()]),
            answers,
            clocks: Mutex::new((0, 0)),
            walls,
            monotonics,
            divergences: Mutex::default(),
        }
    }

    /// What the replayed call asked for that the recording has no answer for.
    pub fn divergences(&self) -> Vec<String> {
        self.divergences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn diverged(&self, what: String) {
        let mut list = self.divergences.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() < DIVERGENCES {
            list.push(what);
        }
    }

    /// The first unused answer `matches` accepts, marked used; failing
    /// that, the first used one (a build that reads twice gets the same).
    fn take(&self, matches: impl Fn(&HostAnswer) -> bool) -> Option<&HostAnswer> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut again = None;
        for (i, answer) in self.answers.iter().enumerate() {
            if !matches(answer) {
                continue;
            }
            match used.get_mut(i) {
                Some(flag) if !*flag => {
                    *flag = true;
                    return Some(answer);
                }
                _ => {
                    again.get_or_insert(answer);
                }
            }
        }
        again
    }

    /// Every object any recorded read returned (the cluster as the call saw it).
    fn seen(&self) -> impl Iterator<Item = &Value> {
        self.answers.iter().flat_map(|a| -> Vec<&Value> {
            match a {
                HostAnswer::ClusterGet {
                    result: Answer::Ok(v),
                    ..
                } => vec![v],
                HostAnswer::ClusterList {
                    result: Answer::Ok(items),
                    ..
                } => items.iter().collect(),
                _ => vec![],
            }
        })
    }

    /// The recorded response to `request`: `None` when the recording has
    /// none (the request is refused, as a divergence), `Some(Err)` for a
    /// recorded transport error, and a response that never comes for a
    /// request the recorded call was cut off waiting on.
    pub(crate) fn http(
        &self,
        method: &str,
        uri: &str,
    ) -> Result<http::Response<WasiBody>, HttpReplay> {
        let found = self.take(
            |a| matches!(a, HostAnswer::Http { method: m, uri: u, .. } if m == method && u == uri),
        );
        match found {
            Some(HostAnswer::Http {
                result: Answer::Ok(response),
                ..
            }) => Ok(response_of(response)),
            Some(HostAnswer::Http {
                result: Answer::HttpError(name),
                ..
            }) if name == NO_RESPONSE => Err(HttpReplay::NeverAnswered),
            Some(HostAnswer::Http {
                result: Answer::HttpError(name),
                ..
            }) => Err(HttpReplay::Failed(http_error_of(name))),
            _ => {
                self.diverged(format!(
                    "HTTP {method} {uri}: the recording has no response for it (refused)"
                ));
                Err(HttpReplay::Failed(HttpError::HttpRequestDenied))
            }
        }
    }
}

/// How a replayed HTTP request that got no recorded response ends.
pub(crate) enum HttpReplay {
    /// With this transport error.
    Failed(HttpError),
    /// Never: the recorded call was cut off waiting for it.
    NeverAnswered,
}

/// The answer recorded for a request still waiting when the call ended.
pub(crate) const NO_RESPONSE: &str = "NoResponse";

fn response_of(recorded: &HttpResponse) -> http::Response<WasiBody> {
    let mut builder = http::Response::builder().status(recorded.status);
    for (name, value) in &recorded.headers {
        builder = builder.header(name, value);
    }
    let body = match &recorded.body_base64 {
        Some(b64) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default()
        }
        None => recorded.body.clone().into_bytes(),
    };
    let error = recorded.body_error.as_deref().map(http_error_of);
    let frames = futures_util::stream::iter(
        std::iter::once(Ok(http_body::Frame::data(Bytes::from(body)))).chain(error.map(Err)),
    );
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    builder.body(body).unwrap_or_else(|_| {
        http::Response::new(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    })
}

/// The wasi:http error a recorded name stands for.
fn http_error_of(name: &str) -> HttpError {
    match name {
        "ConnectionRefused" => HttpError::ConnectionRefused,
        "ConnectionTimeout" => HttpError::ConnectionTimeout,
        "ConnectionReadTimeout" => HttpError::ConnectionReadTimeout,
        "ConnectionTerminated" => HttpError::ConnectionTerminated,
        "HttpResponseTimeout" => HttpError::HttpResponseTimeout,
        "HttpRequestDenied" => HttpError::HttpRequestDenied,
        "HttpResponseBodySize" => HttpError::HttpResponseBodySize(None),
        "DnsTimeout" => HttpError::DnsTimeout,
        "DestinationNotFound" => HttpError::DestinationNotFound,
        other => HttpError::InternalError(Some(format!("recorded transport error {other}"))),
    }
}

#[async_trait::async_trait]
impl Cluster for ReplaySource {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        self.get_at(key, "").await
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        self.list_at(group, kind, namespace, labels).await
    }

    async fn get_at(&self, key: &ObjectKey, _api_version: &str) -> Result<Value, ClusterError> {
        let found = self.take(|a| matches!(a, HostAnswer::ClusterGet { key: k, .. } if k == key));
        match found {
            Some(HostAnswer::ClusterGet { result, .. }) => match result {
                Answer::Ok(v) => Ok(v.clone()),
                Answer::ClusterError(e) => Err(e.clone()),
                Answer::HttpError(e) => Err(ClusterError::Unavailable(e.clone())),
            },
            _ => {
                let seen = self
                    .seen()
                    .find(|v| ObjectKey::of(v).is_ok_and(|k| &k == key))
                    .cloned();
                self.diverged(format!(
                    "get {key}: the recording has no answer for it (answered {})",
                    if seen.is_some() {
                        "with the object a recorded list returned"
                    } else {
                        "not found"
                    }
                ));
                seen.ok_or_else(|| ClusterError::NotFound(key.to_string()))
            }
        }
    }

    async fn list_at(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        let found = self.take(|a| {
            matches!(a, HostAnswer::ClusterList { api_version: v, kind: k, namespace: n, labels: l, .. }
                if group_of(v) == group_of(api_version) && k == kind && n == namespace && l == labels)
        });
        match found {
            Some(HostAnswer::ClusterList { result, .. }) => match result {
                Answer::Ok(items) => Ok(items.clone()),
                Answer::ClusterError(e) => Err(e.clone()),
                Answer::HttpError(e) => Err(ClusterError::Unavailable(e.clone())),
            },
            _ => {
                let group = group_of(api_version);
                let mut items: Vec<Value> = Vec::new();
                for v in self.seen() {
                    let Ok(key) = ObjectKey::of(v) else { continue };
                    if key.group == group
                        && key.kind == kind
                        && key.namespace == namespace
                        && labels_match(v, labels)
                        && !items
                            .iter()
                            .any(|i| ObjectKey::of(i).is_ok_and(|k| k == key))
                    {
                        items.push(v.clone());
                    }
                }
                self.diverged(format!(
                    "list {kind} in {namespace:?}: the recording has no answer for it (answered with the {} matching object(s) it saw)",
                    items.len()
                ));
                Ok(items)
            }
        }
    }

    async fn apply(&self, _writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        // A replay never commits: its staged writes are compared, not applied.
        Err(ClusterError::Forbidden(
            "a replay writes nothing to any cluster".into(),
        ))
    }
}

/// The recorded wall-clock readings, in order; past the last, it advances
/// by a millisecond per reading.
pub(crate) struct ReplayWallClock(pub(crate) std::sync::Arc<ReplaySource>);

impl HostWallClock for ReplayWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let source = &self.0;
        let mut clocks = source.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let i = clocks.0;
        clocks.0 += 1;
        Duration::from_nanos(reading(&source.walls, i))
    }
}

/// The recorded monotonic readings, in order (see [`ReplayWallClock`]).
pub(crate) struct ReplayMonotonicClock(pub(crate) std::sync::Arc<ReplaySource>);

impl HostMonotonicClock for ReplayMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let source = &self.0;
        let mut clocks = source.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let i = clocks.1;
        clocks.1 += 1;
        reading(&source.monotonics, i)
    }
}

/// Reading `i` of `readings`, extrapolated a millisecond a reading past
/// the end (a build that reads the clock more often still sees time pass).
fn reading(readings: &[u64], i: usize) -> u64 {
    match readings.get(i) {
        Some(r) => *r,
        None => {
            let last = readings.last().copied().unwrap_or(0);
            let beyond = (i + 1).saturating_sub(readings.len()) as u64;
            last.saturating_add(beyond.saturating_mul(1_000_000))
        }
    }
}
