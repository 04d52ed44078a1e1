//! `weir plugin shadow-report` and `weir plugin promote-shadow`: a running
//! controller's shadow counts, and switching a registration to its
//! candidate once the candidate has agreed often enough.

use crate::store::controller_api;
use anyhow::{Context, Result};
use std::path::Path;
use weir::cluster::{ObjectKey, RemoteCluster};
use weir::controller::registry::{PromoteError, promote_shadow};
use weir::plugin::ShadowReport;

/// The running controller's report for `name`.
async fn report(api: &RemoteCluster, name: &str) -> Result<ShadowReport> {
    api.shadow_report(name)
        .await
        .with_context(|| format!("shadow report of {name}"))
}

/// `weir plugin shadow-report NAME`: prints the report.
pub async fn show(store: &Path, name: &str) -> Result<()> {
    let api = controller_api(store)?;
    print!("{}", report(&api, name).await?.render());
    Ok(())
}

/// `weir plugin promote-shadow NAME`: refuses with the report unless the
/// candidate is promotable; otherwise switches the registration to it.
/// Returns whether it promoted.
pub async fn promote(store: &Path, name: &str, config_namespace: &str) -> Result<bool> {
    let api = controller_api(store)?;
    let report = report(&api, name).await?;
    let key = ObjectKey::new("v1", "ConfigMap", config_namespace, "argo-rollouts-config");
    match promote_shadow(&api, &key, name, &report).await {
        Ok(()) => {
            println!(
                "promoted {name}: {} (sha256 {}) after {} agreeing calls and no disagreement; the controller reloads it",
                report.candidate_location,
                report.candidate_sha256,
                report.totals().agreed
            );
            Ok(true)
        }
        Err(PromoteError::Refused(why)) => {
            print!("{}", report.render());
            eprintln!("refused: {why}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
