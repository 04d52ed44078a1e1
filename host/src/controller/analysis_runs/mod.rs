//! AnalysisRuns a Rollout (or an Experiment) starts: created once from its
//! templates under a deterministic name, so a restarted controller finds
//! the run it started instead of starting another, and advanced through the
//! analysis engine one reconcile at a time.

mod args;
mod secrets;

use super::context::{ChildError, Context};
use super::registry::PluginRegistry;
use super::spec::{RolloutView, TemplateRef};
use crate::analysis::AnalysisEngine;
use crate::analysis::condition::ConditionEvaluator;
use crate::analysis::engine::provider_of;
use crate::analysis::types::{
    AnalysisRun, AnalysisTemplate, Argument, DryRun, MeasurementRetention, Phase,
};
use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version};
pub use args::resolve_value_from;
use chrono::{DateTime, Utc};
use secrets::secret_args;
use serde_json::{Value, json};

/// Where a run came from, for its labels.
#[derive(Debug, Clone, Copy)]
pub enum RunKind {
    /// A rollout's analysis step.
    Step,
    /// A rollout's background analysis.
    Background,
    /// An experiment's analysis.
    Experiment,
    /// A blue-green rollout's analysis before the active Service switches.
    PrePromotion,
    /// A blue-green rollout's analysis after the switch.
    PostPromotion,
}

impl RunKind {
    fn label(self) -> &'static str {
        match self {
            RunKind::Step => "Step",
            RunKind::Background => "Background",
            RunKind::Experiment => "Experiment",
            RunKind::PrePromotion => "PrePromotion",
            RunKind::PostPromotion => "PostPromotion",
        }
    }
}

/// What the run needs besides its templates.
pub struct RunRequest<'a> {
    /// Name of the run.
    pub name: &'a str,
    /// The templates, merged into one run.
    pub templates: &'a [TemplateRef],
    /// Argument values from the step.
    pub args: &'a [Argument],
    /// The canary's hash (`podTemplateHashValue: Latest`).
    pub canary_hash: &'a str,
    /// The stable's hash (`podTemplateHashValue: Stable`).
    pub stable_hash: &'a str,
    /// Where it came from.
    pub kind: RunKind,
    /// The rollout's `dryRun` entries, added to the templates'.
    pub dry_run: &'a [DryRun],
    /// The rollout's `measurementRetention` entries, which take precedence
    /// over the templates' (the first entry naming a metric wins).
    pub measurement_retention: &'a [MeasurementRetention],
}

/// Resolves `valueFrom` sources Weir can see: `podTemplateHashValue` and
/// `fieldRef` into the Rollout.
fn resolve_args(
    args: &[Argument],
    view: &RolloutView,
    request: &RunRequest<'_>,
) -> Result<Vec<Argument>, String> {
    resolve_value_from(args, view, request.canary_hash, request.stable_hash)
}

async fn template(
    cluster: &dyn Cluster,
    namespace: &str,
    reference: &TemplateRef,
) -> Result<AnalysisTemplate, ChildError> {
    let (kind, ns) = if reference.cluster_scope {
        ("ClusterAnalysisTemplate", "")
    } else {
        ("AnalysisTemplate", namespace)
    };
    let key = ObjectKey::new("argoproj.io/v1alpha1", kind, ns, &reference.template_name);
    let object = cluster.get(&key).await.map_err(|e| match e {
        ClusterError::NotFound(_) => format!("{key} not found: create it, or fix templateName"),
        other => other.to_string(),
    })?;
    serde_json::from_value(object)
        .map_err(|e| ChildError::Invalid(format!("{key} is malformed: {e}")))
}

/// Gets the run, creating it from its templates when it does not exist.
pub async fn ensure_run(
    cluster: &dyn Cluster,
    view: &RolloutView,
    request: &RunRequest<'_>,
) -> Result<Value, ChildError> {
    let key = ObjectKey::new(
        "argoproj.io/v1alpha1",
        "AnalysisRun",
        &view.namespace,
        request.name,
    );
    match cluster.get(&key).await {
        Ok(run) => return Ok(run),
        Err(ClusterError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut merged: Option<AnalysisRun> = None;
    for reference in request.templates {
        let template = template(cluster, &view.namespace, reference).await?;
        let args = resolve_args(request.args, view, request)?;
        let run = AnalysisRun::from_template(&template, request.name, &view.namespace, "", &args);
        merged = Some(match merged {
            None => run,
            Some(mut acc) => {
                for metric in run.spec.metrics {
                    if acc.spec.metrics.iter().any(|m| m.name == metric.name) {
                        return Err(ChildError::Invalid(format!(
                            "templates {} define metric {:?} twice; rename one",
                            request
                                .templates
                                .iter()
                                .map(|t| t.template_name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            metric.name
                        )));
                    }
                    acc.spec.metrics.push(metric);
                }
                for arg in run.spec.args {
                    if !acc.spec.args.iter().any(|a| a.name == arg.name) {
                        acc.spec.args.push(arg);
                    }
                }
                acc.spec.dry_run.extend(run.spec.dry_run);
                acc.spec
                    .measurement_retention
                    .extend(run.spec.measurement_retention);
                acc
            }
        });
    }
    let mut run = merged.ok_or("an analysis needs at least one template")?;
    run.spec.dry_run.extend(request.dry_run.iter().cloned());
    let templates_retention = std::mem::take(&mut run.spec.measurement_retention);
    run.spec.measurement_retention = request
        .measurement_retention
        .iter()
        .cloned()
        .chain(templates_retention)
        .collect();
    let mut object = serde_json::to_value(&run).map_err(|e| e.to_string())?;
    object["metadata"] = json!({
        "name": request.name,
        "namespace": view.namespace,
        "labels": {
            super::children::HASH_LABEL: request.canary_hash,
            "rollout-type": request.kind.label(),
        },
        "ownerReferences": super::children::owner_reference(view),
    });
    let created = cluster.apply(vec![Write::Create(object)]).await?;
    created
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| "the store returned no object".into())
}

/// The outcome of advancing a run.
pub struct Advanced {
    /// Its phase after this reconcile.
    pub phase: Phase,
    /// Its message.
    pub message: String,
    /// When it wants to be looked at again.
    pub next: Option<DateTime<Utc>>,
    /// The run's resourceVersion after this reconcile's write (`None`:
    /// nothing was written), so its watch echo can be ignored.
    pub written_version: Option<String>,
}

/// An analysis engine with the providers `run`'s metrics name.
async fn engine_for(
    registry: &PluginRegistry,
    evaluator: &ConditionEvaluator,
    run: &AnalysisRun,
) -> AnalysisEngine {
    let providers: Vec<String> = run
        .spec
        .metrics
        .iter()
        .filter_map(|m| provider_of(m).ok().map(|(k, _)| k))
        .collect();
    registry
        .analysis_engine(&providers, evaluator.clone())
        .await
}

/// Creates the run if needed ([`ensure_run`]) and advances it ([`advance_run`]).
pub(crate) async fn ensure_and_advance(
    ctx: &Context<'_>,
    view: &RolloutView,
    request: &RunRequest<'_>,
) -> Result<Advanced, ChildError> {
    let stored = ensure_run(ctx.cluster, view, request).await?;
    advance_run(ctx, &stored).await
}

/// Takes the run's due measurements and stores the result.
pub(crate) async fn advance_run(ctx: &Context<'_>, stored: &Value) -> Result<Advanced, ChildError> {
    let Context {
        cluster,
        registry,
        evaluator,
        now,
    } = *ctx;
    let mut run: AnalysisRun = serde_json::from_value(stored.clone())
        .map_err(|e| format!("AnalysisRun {} is malformed: {e}", name_of(stored)))?;
    if run.status.phase.completed() {
        return Ok(Advanced {
            phase: run.status.phase,
            message: run.status.message.unwrap_or_default(),
            next: None,
            written_version: None,
        });
    }
    let secrets = secret_args(cluster, registry, &run).await;
    let next = engine_for(registry, evaluator, &run)
        .await
        .reconcile_with_secrets(&mut run, now, &secrets)
        .await;
    let written_version = write_back(cluster, stored, &run).await?;
    Ok(Advanced {
        phase: run.status.phase,
        message: run.status.message.unwrap_or_default(),
        next,
        written_version,
    })
}

/// Asks a running run to stop (it completes on its next reconcile).
pub(crate) async fn terminate_run(
    ctx: &Context<'_>,
    namespace: &str,
    name: &str,
) -> Result<(), ChildError> {
    let Context {
        cluster,
        registry,
        evaluator,
        now,
    } = *ctx;
    let key = ObjectKey::new("argoproj.io/v1alpha1", "AnalysisRun", namespace, name);
    let stored = match cluster.get(&key).await {
        Ok(s) => s,
        Err(ClusterError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Ok(mut run) = serde_json::from_value::<AnalysisRun>(stored.clone()) else {
        return Ok(());
    };
    if run.status.phase.completed() {
        return Ok(());
    }
    run.spec.terminate = true;
    engine_for(registry, evaluator, &run)
        .await
        .reconcile(&mut run, now)
        .await;
    write_back(cluster, &stored, &run).await.map(drop)
}

/// Writes `run` over `stored` unless nothing changed; returns the new
/// resourceVersion when it wrote.
async fn write_back(
    cluster: &dyn Cluster,
    stored: &Value,
    run: &AnalysisRun,
) -> Result<Option<String>, ChildError> {
    let mut object = serde_json::to_value(run).map_err(|e| e.to_string())?;
    // Keep metadata as stored (labels, owner, resourceVersion).
    object["metadata"] = stored.get("metadata").cloned().unwrap_or(Value::Null);
    if &object == stored {
        return Ok(None);
    }
    let written = cluster
        .apply(vec![Write::Update {
            expected_version: resource_version(stored).map(str::to_string),
            object,
        }])
        .await?;
    Ok(written
        .first()
        .and_then(Option::as_ref)
        .and_then(|o| resource_version(o))
        .map(str::to_string))
}

fn name_of(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
}
