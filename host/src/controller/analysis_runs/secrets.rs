//! A run's `valueFrom.secretKeyRef` arguments, read at each measurement
//! from the Secrets its providers are granted; never stored or logged.

use crate::analysis::args::SecretArgs;
use crate::analysis::engine::provider_of;
use crate::analysis::types::AnalysisRun;
use crate::cluster::{Cluster, ObjectKey};
use crate::controller::registry::PluginRegistry;
use serde_json::Value;

/// Reads the run's `valueFrom.secretKeyRef` arguments: each Secret must be
/// in the run's namespace and granted (`grant.secrets`) to the provider of
/// every metric that uses the argument; otherwise the argument's entry
/// says why, naming the setting. Values are never logged.
pub(super) async fn secret_args(
    cluster: &dyn Cluster,
    registry: &PluginRegistry,
    run: &AnalysisRun,
) -> SecretArgs {
    let mut out = SecretArgs::new();
    for arg in &run.spec.args {
        if arg.value.is_some() {
            continue;
        }
        let Some(reference) = arg.value_from.as_ref().and_then(|f| f.get("secretKeyRef")) else {
            continue;
        };
        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
        let key = reference.get("key").and_then(Value::as_str).unwrap_or("");
        let value = read_secret_arg(cluster, registry, run, &arg.name, name, key).await;
        out.insert(arg.name.clone(), value);
    }
    out
}

async fn read_secret_arg(
    cluster: &dyn Cluster,
    registry: &PluginRegistry,
    run: &AnalysisRun,
    arg: &str,
    name: &str,
    key: &str,
) -> Result<String, String> {
    if name.is_empty() || key.is_empty() {
        return Err(format!(
            "args.{arg}: valueFrom.secretKeyRef needs a name and a key"
        ));
    }
    let pattern = format!("args.{arg}");
    for metric in &run.spec.metrics {
        let uses = serde_json::to_string(metric).is_ok_and(|m| m.contains(&pattern));
        let Ok((provider, _)) = provider_of(metric) else {
            continue;
        };
        if uses
            && !registry
                .granted_secrets(&provider)
                .await
                .iter()
                .any(|s| s == name)
        {
            return Err(format!(
                "args.{arg}: Secret {name} is not granted to metric provider {provider:?}; add {name:?} to grant.secrets in its registration (argo-rollouts-config, metricProviderPlugins)"
            ));
        }
    }
    let namespace = run.namespace();
    let secret = cluster
        .get(&ObjectKey::new("v1", "Secret", namespace, name))
        .await
        .map_err(|e| format!("args.{arg}: reading Secret {namespace}/{name}: {e}"))?;
    if let Some(encoded) = secret
        .pointer("/data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
    {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                format!("args.{arg}: Secret {namespace}/{name} key {key:?} is not base64")
            })?;
        return String::from_utf8(bytes).map_err(|_| {
            format!("args.{arg}: Secret {namespace}/{name} key {key:?} is not UTF-8 text")
        });
    }
    // The embedded store keeps a manifest's stringData as written.
    secret
        .pointer("/stringData")
        .and_then(|d| d.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("args.{arg}: Secret {namespace}/{name} has no key {key:?}"))
}
