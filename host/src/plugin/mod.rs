//! The plugin runtime: loading WebAssembly components and running every
//! plugin call in its own sandbox.
//!
//! Data flows one way: [`PluginRuntime::load_router`] / [`PluginRuntime::load_provider`] /
//! [`PluginRuntime::load_step`] turn a [`PluginSpec`] into a typed handle
//! ([`TrafficRouter`], [`MetricProvider`], [`StepPlugin`]);
//! each handle method builds a fresh Store (`sandbox`), serves the guest's
//! imports from `state` (cluster, log) and `http_policy` (HTTP), checks the
//! output (`validate`), and commits the staged writes only on success.

mod admission;
pub(crate) mod bindings;
mod budget;
pub mod bundle;
pub(crate) mod cache;
mod call;
pub(crate) mod capture;
mod compat;
pub(crate) mod compile;
pub(crate) mod compiled;
pub(crate) mod condition;
pub(crate) mod digest_memo;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod http_policy;
pub(crate) mod insecure_tls;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod prescan;
pub(crate) mod provider;
pub(crate) mod quarantine;
pub mod recorder;
pub(crate) mod router;
pub(crate) mod runtime;
mod sandbox;
pub(crate) mod shadow;
pub mod source;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod step;
pub(crate) mod subject;
pub(crate) mod tiers;
pub(crate) mod validate;
pub(crate) mod world;

pub use bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};
pub use bindings::step::exports::weir::plugin::step::{StepContext, StepPhase, StepResult};
pub use bindings::types::{
    HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute, ObservedWeights,
    PluginError as ReportedError, StringMatch, Verification, WeightDestination, WeightVerification,
};
pub use bundle::Bundle;
pub use cache::{CacheOutcome, PrecompiledCache};
pub use condition::{ConditionFailure, ConditionPlugin};
pub use digest_memo::SETTLED as DIGEST_MEMO_SETTLED;
pub use engine::{Compiler, EngineSettings, KeepResident};
pub use error::{CallError, CallErrorKind, LoadError, LoadErrorKind};
pub use limits::{FaultPolicy, Grant, GrantedKind, HttpPolicy, Limit, Limits};
pub use provider::MetricProvider;
pub use router::TrafficRouter;
pub use runtime::{
    CallObserver, PluginInfo, PluginRuntime, PluginSpec, RuntimeConfig, RuntimeError,
};
pub use shadow::{Disagreement, MethodCounts, ShadowReport, ShadowSpec};
pub use step::StepPlugin;
pub use subject::Rollout;
pub use tiers::CodeTier;
pub use world::{Contract, PluginKind};
