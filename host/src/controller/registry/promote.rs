//! Promoting a registration's shadow candidate: the registration is
//! rewritten to the candidate (its location, pinned to the digest that was
//! shadowed) and its `shadow` block dropped; the registry reloads the
//! plugin when the ConfigMap changes.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write};
use crate::plugin::ShadowReport;
use serde_yaml_ng::Value as Yaml;

/// The registration lists of `argo-rollouts-config`.
const LISTS: [&str; 3] = [
    "trafficRouterPlugins",
    "metricProviderPlugins",
    "stepPlugins",
];

/// Why a promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The candidate has not earned it (the report says why).
    #[error("refused: {0}")]
    Refused(String),
    /// The registration could not be found or rewritten.
    #[error("{0}")]
    Registration(String),
    /// The store refused the write.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Promotes plugin `name`'s candidate in the ConfigMap `config` when
/// `report` (the running controller's) says it is promotable. The write is
/// conditional on the version read.
pub async fn promote_shadow(
    cluster: &dyn Cluster,
    config: &ObjectKey,
    name: &str,
    report: &ShadowReport,
) -> Result<(), PromoteError> {
    report.promotable().map_err(PromoteError::Refused)?;
    let mut object = cluster.get(config).await?;
    let mut promoted = false;
    for list in LISTS {
        let Some(text) = object
            .pointer(&format!("/data/{list}"))
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        let mut entries: Yaml = serde_yaml_ng::from_str(text)
            .map_err(|e| PromoteError::Registration(format!("{config}: data.{list}: {e}")))?;
        for item in entries.as_sequence_mut().into_iter().flatten() {
            let Some(map) = item.as_mapping_mut() else {
                continue;
            };
            if map.get("name").and_then(Yaml::as_str) != Some(name) || map.get("shadow").is_none() {
                continue;
            }
            map.remove("shadow");
            map.insert("location".into(), report.candidate_location.clone().into());
            map.insert("sha256".into(), report.candidate_sha256.clone().into());
            promoted = true;
        }
        if promoted {
            let text = serde_yaml_ng::to_string(&entries)
                .map_err(|e| PromoteError::Registration(e.to_string()))?;
            if let Some(data) = object.get_mut("data").and_then(|d| d.as_object_mut()) {
                data.insert(list.into(), serde_json::Value::String(text));
            }
            break;
        }
    }
    if !promoted {
        return Err(PromoteError::Registration(format!(
            "{config} has no registration named {name:?} with a `shadow` block"
        )));
    }
    cluster.apply(vec![Write::update_as_read(object)]).await?;
    Ok(())
}
