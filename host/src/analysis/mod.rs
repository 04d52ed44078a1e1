//! Analysis: AnalysisTemplates and AnalysisRuns with Argo Rollouts'
//! semantics, measured by metric-provider plugins and judged by the host.
//!
//! - [`types`]: the `argoproj.io/v1alpha1` shapes.
//! - [`args`]: `{{args.x}}` substitution.
//! - `condition`: success/failure conditions in expr-lang, hardened
//!   against hostile input.
//! - [`verdict`]: Argo's `EvaluateResult`.
//! - `engine`: due measurements, recording, assessment, requeue time.
//! - [`fit`]: keeping a run under its size.

pub mod args;
pub(crate) mod condition;
pub(crate) mod engine;
pub mod fit;
pub mod types;
pub mod verdict;

pub use condition::{ConditionError, ConditionEvaluator};
pub use engine::AnalysisEngine;
pub use types::{AnalysisRun, AnalysisTemplate, Measurement, MetricResult, MetricSpec, Phase};
