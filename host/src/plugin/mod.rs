//! The plugin runtime: loading WebAssembly components and running every
//! plugin call in its own sandbox.
//!
//! Data flows one way: [`PluginRuntime::load_router`] / [`PluginRuntime::load_provider`]
//! turn a [`PluginSpec`] into a typed handle ([`TrafficRouter`], [`MetricProvider`]);
//! each handle method builds a fresh Store ([`sandbox`]), serves the guest's
//! imports from [`state`] (cluster, log) and [`http_policy`] (HTTP), checks the
//! output ([`validate`]), and commits the staged writes only on success.

mod admission;
pub mod bindings;
mod budget;
pub mod cache;
pub mod capture;
pub mod condition;
pub mod engine;
pub mod error;
pub mod http_policy;
pub mod insecure_tls;
pub mod inspect;
pub mod limits;
pub mod prescan;
pub mod provider;
pub mod quarantine;
pub mod router;
pub mod runtime;
mod sandbox;
pub mod source;
pub mod state;
pub mod stats;
pub(crate) mod validate;
pub mod world;

pub use bindings::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, MeasurementPhase, Metric,
};
pub use bindings::types::{
    HeaderMatch, HeaderRoute, MirrorMatch, MirrorRoute, ObservedWeights,
    PluginError as ReportedError, Rollout, StringMatch, Verification, WeightDestination,
    WeightVerification,
};
pub use cache::{CacheOutcome, PrecompiledCache};
pub use condition::{ConditionFailure, ConditionPlugin};
pub use engine::EngineSettings;
pub use error::{CallError, CallErrorKind, LoadError, LoadErrorKind};
pub use limits::{FaultPolicy, Grant, GrantedKind, HttpPolicy, Limit, Limits};
pub use provider::MetricProvider;
pub use router::TrafficRouter;
pub use runtime::{
    CallObserver, PluginInfo, PluginRuntime, PluginSpec, RuntimeConfig, RuntimeError,
};
pub use world::PluginKind;
