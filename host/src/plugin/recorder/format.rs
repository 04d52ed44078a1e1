//! The recording format: one JSON document per recorded call, holding
//! everything a replay needs (the call, the registration, every host answer
//! in order) and what the call did (its outcome, staged writes, output).

use super::super::bindings::step::exports::weir::plugin::step::{StepContext, StepResult};
use super::super::bindings::types::{
    HeaderRoute, MirrorRoute, WeightDestination, WeightVerification,
};
use super::super::call::{Call, Reply};
use super::super::limits::{Grant, HttpPolicy, Limits};
use super::super::subject::Rollout;
use super::super::{AnalysisRun, Measurement, Metric};
use crate::cluster::{ClusterError, ObjectKey, Write};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `format` every recording carries; a replay refuses any other.
pub const RECORDING_FORMAT: &str = "weir-recording/1";

/// One recorded plugin call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recording {
    /// Always [`RECORDING_FORMAT`].
    pub format: String,
    /// The recording's id (also its file name, without `.json`).
    pub id: String,
    /// When the call ended (RFC 3339).
    pub recorded_at: String,
    /// Why it was kept: `fault` or `sample`.
    pub reason: String,
    /// The plugin that was called.
    pub plugin: RecordedPlugin,
    /// What the plugin was registered with (credentials redacted).
    pub registration: RecordedRegistration,
    /// The call and its arguments.
    pub call: OwnedCall,
    /// `namespace/name` of the rollout or analysis run served, if any.
    #[serde(default)]
    pub target: Option<String>,
    /// Every answer the host gave the guest, in order.
    pub answers: Vec<HostAnswer>,
    /// Whether answers past the tape's cap were left out (a replay then
    /// answers the rest as a live call with no cluster would).
    #[serde(default)]
    pub answers_truncated: bool,
    /// What the call returned, or why it failed.
    pub outcome: RecordedOutcome,
    /// The writes the call staged, in commit order: committed when it
    /// succeeded, dropped when it failed.
    pub staged_writes: Vec<Write>,
    /// The guest's log lines (`level: message`).
    #[serde(default)]
    pub logs: Vec<String>,
    /// What the guest printed to stdout and stderr.
    #[serde(default)]
    pub guest_output: String,
    /// How long the call took, in microseconds.
    pub elapsed_micros: u64,
    /// Which parts were redacted (e.g. `Secret default/creds: data`).
    #[serde(default)]
    pub redactions: Vec<String>,
}

/// The plugin a recording is of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedPlugin {
    /// Registered name.
    pub name: String,
    /// Where it was loaded from.
    pub location: String,
    /// sha256 of its component.
    pub sha256: String,
    /// Its world (`traffic-router`, `metric-provider`, `step-plugin`,
    /// `condition-evaluator`).
    pub kind: String,
}

/// The registration a call ran under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedRegistration {
    /// `args`, credentials redacted.
    pub args: Vec<String>,
    /// Cluster grant.
    pub grant: Grant,
    /// HTTP allow-list.
    pub http: HttpPolicy,
    /// Per-call limits.
    pub limits: Limits,
}

/// A call with its arguments, owned (the recorded form of [`Call`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)]
pub enum OwnedCall {
    RouterInit {
        args: Vec<String>,
    },
    UpdateHash {
        rollout: Rollout,
        canary_hash: String,
        stable_hash: String,
        additional: Vec<WeightDestination>,
    },
    SetWeight {
        rollout: Rollout,
        weight: i32,
        additional: Vec<WeightDestination>,
    },
    SetHeaderRoute {
        rollout: Rollout,
        route: HeaderRoute,
    },
    SetMirrorRoute {
        rollout: Rollout,
        route: MirrorRoute,
    },
    VerifyWeight {
        rollout: Rollout,
        weight: i32,
        additional: Vec<WeightDestination>,
    },
    RemoveManagedRoutes {
        rollout: Rollout,
    },
    ProviderInit {
        args: Vec<String>,
    },
    Run {
        run: AnalysisRun,
        metric: Metric,
    },
    Resume {
        run: AnalysisRun,
        metric: Metric,
        measurement: Measurement,
    },
    Terminate {
        run: AnalysisRun,
        metric: Metric,
        measurement: Measurement,
    },
    GarbageCollect {
        run: AnalysisRun,
        metric: Metric,
        limit: u32,
    },
    Metadata {
        metric: Metric,
    },
    Evaluate {
        condition: String,
        measured: String,
    },
    StepInit {
        args: Vec<String>,
    },
    StepRun {
        rollout: Rollout,
        context: StepContext,
    },
    StepTerminate {
        rollout: Rollout,
        context: StepContext,
    },
    StepAbort {
        rollout: Rollout,
        context: StepContext,
    },
}

impl OwnedCall {
    /// The contract's name of the call.
    pub fn method_name(&self) -> &'static str {
        self.as_call().method()
    }

    /// The owned form of `call`.
    pub(crate) fn of(call: &Call<'_>) -> Self {
        match call {
            Call::RouterInit(args) => OwnedCall::RouterInit {
                args: args.to_vec(),
            },
            Call::UpdateHash {
                rollout,
                canary_hash,
                stable_hash,
                additional,
            } => OwnedCall::UpdateHash {
                rollout: (*rollout).clone(),
                canary_hash: canary_hash.to_string(),
                stable_hash: stable_hash.to_string(),
                additional: additional.to_vec(),
            },
            Call::SetWeight {
                rollout,
                weight,
                additional,
            } => OwnedCall::SetWeight {
                rollout: (*rollout).clone(),
                weight: *weight,
                additional: additional.to_vec(),
            },
            Call::SetHeaderRoute { rollout, route } => OwnedCall::SetHeaderRoute {
                rollout: (*rollout).clone(),
                route: (*route).clone(),
            },
            Call::SetMirrorRoute { rollout, route } => OwnedCall::SetMirrorRoute {
                rollout: (*rollout).clone(),
                route: (*route).clone(),
            },
            Call::VerifyWeight {
                rollout,
                weight,
                additional,
            } => OwnedCall::VerifyWeight {
                rollout: (*rollout).clone(),
                weight: *weight,
                additional: additional.to_vec(),
            },
            Call::RemoveManagedRoutes { rollout } => OwnedCall::RemoveManagedRoutes {
                rollout: (*rollout).clone(),
            },
            Call::ProviderInit(args) => OwnedCall::ProviderInit {
                args: args.to_vec(),
            },
            Call::Run { run, metric } => OwnedCall::Run {
                run: (*run).clone(),
                metric: (*metric).clone(),
            },
            Call::Resume {
                run,
                metric,
                measurement,
            } => OwnedCall::Resume {
                run: (*run).clone(),
                metric: (*metric).clone(),
                measurement: (*measurement).clone(),
            },
            Call::Terminate {
                run,
                metric,
                measurement,
            } => OwnedCall::Terminate {
                run: (*run).clone(),
                metric: (*metric).clone(),
                measurement: (*measurement).clone(),
            },
            Call::GarbageCollect { run, metric, limit } => OwnedCall::GarbageCollect {
                run: (*run).clone(),
                metric: (*metric).clone(),
                limit: *limit,
            },
            Call::Metadata { metric } => OwnedCall::Metadata {
                metric: (*metric).clone(),
            },
            Call::Evaluate {
                condition,
                measured,
            } => OwnedCall::Evaluate {
                condition: condition.to_string(),
                measured: measured.to_string(),
            },
            Call::StepInit(args) => OwnedCall::StepInit {
                args: args.to_vec(),
            },
            Call::StepRun { rollout, context } => OwnedCall::StepRun {
                rollout: (*rollout).clone(),
                context: (*context).clone(),
            },
            Call::StepTerminate { rollout, context } => OwnedCall::StepTerminate {
                rollout: (*rollout).clone(),
                context: (*context).clone(),
            },
            Call::StepAbort { rollout, context } => OwnedCall::StepAbort {
                rollout: (*rollout).clone(),
                context: (*context).clone(),
            },
        }
    }

    /// The call to make again.
    pub(crate) fn as_call(&self) -> Call<'_> {
        match self {
            OwnedCall::RouterInit { args } => Call::RouterInit(args),
            OwnedCall::UpdateHash {
                rollout,
                canary_hash,
                stable_hash,
                additional,
            } => Call::UpdateHash {
                rollout,
                canary_hash,
                stable_hash,
                additional,
            },
            OwnedCall::SetWeight {
                rollout,
                weight,
                additional,
            } => Call::SetWeight {
                rollout,
                weight: *weight,
                additional,
            },
            OwnedCall::SetHeaderRoute { rollout, route } => Call::SetHeaderRoute { rollout, route },
            OwnedCall::SetMirrorRoute { rollout, route } => Call::SetMirrorRoute { rollout, route },
            OwnedCall::VerifyWeight {
                rollout,
                weight,
                additional,
            } => Call::VerifyWeight {
                rollout,
                weight: *weight,
                additional,
            },
            OwnedCall::RemoveManagedRoutes { rollout } => Call::RemoveManagedRoutes { rollout },
            OwnedCall::ProviderInit { args } => Call::ProviderInit(args),
            OwnedCall::Run { run, metric } => Call::Run { run, metric },
            OwnedCall::Resume {
                run,
                metric,
                measurement,
            } => Call::Resume {
                run,
                metric,
                measurement,
            },
            OwnedCall::Terminate {
                run,
                metric,
                measurement,
            } => Call::Terminate {
                run,
                metric,
                measurement,
            },
            OwnedCall::GarbageCollect { run, metric, limit } => Call::GarbageCollect {
                run,
                metric,
                limit: *limit,
            },
            OwnedCall::Metadata { metric } => Call::Metadata { metric },
            OwnedCall::Evaluate {
                condition,
                measured,
            } => Call::Evaluate {
                condition,
                measured,
            },
            OwnedCall::StepInit { args } => Call::StepInit(args),
            OwnedCall::StepRun { rollout, context } => Call::StepRun { rollout, context },
            OwnedCall::StepTerminate { rollout, context } => {
                Call::StepTerminate { rollout, context }
            }
            OwnedCall::StepAbort { rollout, context } => Call::StepAbort { rollout, context },
        }
    }
}

/// One answer the host gave the guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HostAnswer {
    /// A cluster read of one object.
    #[serde(rename_all = "camelCase")]
    ClusterGet {
        /// The object.
        key: ObjectKey,
        /// The version it was read as.
        api_version: String,
        /// The object, or why not.
        result: Answer<Value>,
    },
    /// A cluster list.
    #[serde(rename_all = "camelCase")]
    ClusterList {
        /// The version listed.
        api_version: String,
        /// The kind.
        kind: String,
        /// The namespace.
        namespace: String,
        /// The label selector, as pairs.
        labels: Vec<(String, String)>,
        /// The objects, or why not.
        result: Answer<Vec<Value>>,
    },
    /// An outgoing HTTP request and its response.
    #[serde(rename_all = "camelCase")]
    Http {
        /// The method.
        method: String,
        /// The URL (credential query parameters redacted).
        uri: String,
        /// The request headers (credential headers redacted).
        request_headers: Vec<(String, String)>,
        /// The response, or the transport error.
        result: Answer<HttpResponse>,
    },
    /// A wall-clock reading (nanoseconds since the Unix epoch).
    WallClock {
        /// The reading.
        nanos: u64,
    },
    /// A monotonic-clock reading (nanoseconds).
    MonotonicClock {
        /// The reading.
        nanos: u64,
    },
}

/// A recorded result: a value, or an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer<T> {
    /// The value.
    Ok(T),
    /// A cluster error.
    ClusterError(ClusterError),
    /// An HTTP transport error (its wasi:http name, e.g. `ConnectionRefused`).
    HttpError(String),
}

/// A recorded HTTP response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body as the guest read it (UTF-8, lossily; binary bodies in
    /// `bodyBase64`).
    #[serde(default)]
    pub body: String,
    /// A body that is not UTF-8, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The transport error that ended the body, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
}

/// What a recorded call returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedOutcome {
    /// `ok`, or the error kind (`trap`, `timeout`, `reported`, ...).
    pub kind: String,
    /// Whether it was a sandbox fault.
    pub fault: bool,
    /// The reply, for `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
    /// The error's message, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The JSON form of a reply.
pub(crate) fn reply_value(reply: &Reply) -> Value {
    fn json<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }
    match reply {
        Reply::Unit => Value::Null,
        Reply::Verification(v) => json::<WeightVerification>(v),
        Reply::Measurement(m) => json::<Measurement>(m),
        Reply::Metadata(pairs) => json(pairs),
        Reply::Verdict(Ok(b)) => Value::Bool(*b),
        Reply::Verdict(Err(e)) => Value::String(format!("{e:?}")),
        Reply::Step(s) => json::<StepResult>(s),
    }
}
