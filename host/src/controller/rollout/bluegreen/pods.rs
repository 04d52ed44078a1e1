//! The blue-green pods' own settings: `activeMetadata` / `previewMetadata`
//! (labels and annotations that follow a ReplicaSet's role, on its pod
//! template and on its live pods, as Argo's ephemeral metadata) and
//! `antiAffinity` (the new pods kept off the stable's nodes).

use super::super::pass::{Pass, Stop};
use crate::cluster::{ObjectKey, Write};
use crate::controller::children::{HASH_LABEL, replica_set_of};
use crate::controller::spec::PodMetadata;
use serde_json::{Map, Value, json};

/// On a ReplicaSet: the metadata Weir put on its pods (JSON), so a role
/// change removes exactly that (Argo's annotation).
const EPHEMERAL_METADATA: &str = "rollout.argoproj.io/ephemeral-metadata";

/// The node label the anti-affinity rule spreads over (Argo's).
const TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// How many pods one pass relabels: the rest on the next pass.
const MAX_PODS_PER_PASS: usize = 256;

impl Pass<'_> {
    /// The pod template of a new ReplicaSet: the rollout's, with Argo's
    /// anti-affinity rule against the stable's pods when `antiAffinity`
    /// asks for it.
    pub(super) fn new_template(&self, stable: &str) -> Value {
        let mut template = self.view.template.clone();
        let Some(anti) = &self.view.blue_green.anti_affinity else {
            return template;
        };
        let term = json!({
            "labelSelector": {"matchExpressions": [
                {"key": HASH_LABEL, "operator": "In", "values": [stable]}]},
            "namespaces": [self.view.namespace],
            "topologyKey": TOPOLOGY_KEY,
        });
        let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
            return template;
        };
        let Some(pod_anti) =
            object_at(spec, "affinity").and_then(|a| object_at(a, "podAntiAffinity"))
        else {
            return template;
        };
        let (list, entry) = match &anti.preferred {
            Some(p) => (
                "preferredDuringSchedulingIgnoredDuringExecution",
                json!({"weight": p.weight, "podAffinityTerm": term}),
            ),
            None => ("requiredDuringSchedulingIgnoredDuringExecution", term),
        };
        let terms = pod_anti
            .entry(list)
            .or_insert_with(|| Value::Array(Vec::new()));
        if !terms.is_array() {
            *terms = Value::Array(Vec::new());
        }
        if let Some(terms) = terms.as_array_mut() {
            terms.push(entry);
        }
        template
    }

    /// Puts each ReplicaSet's role metadata on it: `hash` (the new one) the
    /// preview's until it is the stable, `stable` the active's. Nothing is
    /// read when neither field is set.
    pub(super) async fn pods_metadata(&mut self, hash: &str, stable: &str) -> Result<(), Stop> {
        let blue_green = &self.view.blue_green;
        if blue_green.active_metadata.is_none() && blue_green.preview_metadata.is_none() {
            return Ok(());
        }
        let active = blue_green.active_metadata.clone().unwrap_or_default();
        let preview = blue_green.preview_metadata.clone().unwrap_or_default();
        if hash == stable {
            return self.set_pod_metadata(hash, &active).await;
        }
        self.set_pod_metadata(stable, &active).await?;
        self.set_pod_metadata(hash, &preview).await
    }

    /// Sets `wanted` on the ReplicaSet of `hash` (its pod template, and its
    /// live pods), removing what an earlier role put there.
    async fn set_pod_metadata(&mut self, hash: &str, wanted: &PodMetadata) -> Result<(), Stop> {
        let Some(mut rs) = replica_set_of(self.ctx.cluster, self.view, hash).await? else {
            return Ok(());
        };
        let before = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(EPHEMERAL_METADATA))
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .map(|v| injected(&v))
            .unwrap_or_default();
        if before == *wanted {
            return Ok(());
        }
        if let Some(meta) = rs
            .pointer_mut("/spec/template")
            .and_then(Value::as_object_mut)
            .and_then(|t| object_at(t, "metadata"))
        {
            apply(meta, &before, wanted);
        }
        if let Some(annotations) = rs
            .as_object_mut()
            .and_then(|m| object_at(m, "metadata"))
            .and_then(|m| object_at(m, "annotations"))
        {
            let record = json!({"labels": wanted.labels, "annotations": wanted.annotations});
            annotations.insert(EPHEMERAL_METADATA.into(), json!(record.to_string()));
        }
        self.ctx
            .cluster
            .apply(vec![Write::update_as_read(rs)])
            .await?;
        let pods = self
            .ctx
            .cluster
            .list(
                "",
                "Pod",
                &self.view.namespace,
                &[(HASH_LABEL.to_string(), hash.to_string())],
            )
            .await?;
        for mut pod in pods.into_iter().take(MAX_PODS_PER_PASS) {
            let Some(meta) = pod.as_object_mut().and_then(|m| object_at(m, "metadata")) else {
                continue;
            };
            apply(meta, &before, wanted);
            let key = ObjectKey::of(&pod)?;
            match self
                .ctx
                .cluster
                .apply(vec![Write::update_as_read(pod)])
                .await
            {
                Ok(_) => {}
                // Gone, or changed since the list: its ReplicaSet's
                // template has the metadata; the next pass looks again.
                Err(e) => tracing::debug!(pod = %key, error = %e, "pod metadata not updated"),
            }
        }
        Ok(())
    }
}

/// The labels and annotations recorded as injected.
fn injected(record: &Value) -> PodMetadata {
    let map = |key: &str| {
        record
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    PodMetadata {
        labels: map("labels"),
        annotations: map("annotations"),
    }
}

/// Removes `before`'s keys from `metadata` and adds `wanted`'s. The
/// pod-template hash label is never touched (the ReplicaSet selects on it).
fn apply(metadata: &mut Map<String, Value>, before: &PodMetadata, wanted: &PodMetadata) {
    for (field, old, new) in [
        ("labels", &before.labels, &wanted.labels),
        ("annotations", &before.annotations, &wanted.annotations),
    ] {
        let Some(map) = object_at(metadata, field) else {
            continue;
        };
        for key in old.keys().filter(|k| k.as_str() != HASH_LABEL) {
            map.remove(key);
        }
        for (key, value) in new.iter().filter(|(k, _)| k.as_str() != HASH_LABEL) {
            map.insert(key.clone(), value.clone());
        }
    }
}

/// The object at `key` in `map`, made one if it is missing or not one.
fn object_at<'m>(map: &'m mut Map<String, Value>, key: &str) -> Option<&'m mut Map<String, Value>> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}
