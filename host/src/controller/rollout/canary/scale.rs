//! A canary's replica counts (its share, the stable's, an aborted
//! canary's scale-down) and the weights the status records.

use super::super::pass::{Pass, Stop};
use crate::controller::children::{Revision, ensure_revision, replica_set_name};
use crate::controller::status::{TrafficWeights, WeightDestination as Dest};
use crate::plugin::WeightDestination;
use serde_json::Value;

impl Pass<'_> {
    pub(super) fn max_weight(&self) -> i32 {
        self.view.canary.max_weight()
    }

    /// Whether any step manages header or mirror routes.
    pub(super) fn uses_managed_routes(&self) -> bool {
        self.view
            .canary
            .steps
            .iter()
            .any(|s| s.set_header_route.is_some() || s.set_mirror_route.is_some())
    }

    /// Sizes the stable ReplicaSet for the current step; returns it as read.
    pub(super) async fn ensure_stable(&mut self, stable: &str) -> Result<Option<Value>, Stop> {
        // Traffic routing keeps the stable at full size; a basic canary
        // shares the replicas between the two, until an abort gives the
        // stable all of them back.
        let replicas = if self.view.canary.dynamic_stable_scale {
            self.dynamic_stable_replicas()
        } else if self.view.canary.traffic_routing.is_some() || self.status.abort {
            self.view.replicas
        } else {
            let canary = self.canary_replicas(self.status.step_index());
            self.view.replicas.saturating_sub(canary).max(0)
        };
        self.size_stable(stable, replicas).await
    }

    /// An aborted canary's pods go as Argo has it: at once for a basic
    /// canary; with traffic routing `abortScaleDownDelaySeconds` after the
    /// stable is available at full size again (so it can take all the
    /// traffic), or not at all with 0 (until the next update). `holder` is
    /// the stable ReplicaSet as this pass read it.
    pub(super) async fn scale_down_aborted(
        &mut self,
        hash: &str,
        stable: &str,
        holder: Option<&Value>,
    ) -> Result<(), Stop> {
        let delay = match self.view.canary.abort_scale_down_delay() {
            None => return Ok(()),
            Some(d) if d.is_zero() || hash == stable => return self.scale_canary(hash, 0).await,
            Some(d) => d,
        };
        if self.aborted_due(hash, holder, delay).await?.is_some() {
            self.scale_canary(hash, 0).await?;
        }
        Ok(())
    }

    pub(super) fn canary_replicas(&self, index: usize) -> i32 {
        let replicas = self.view.replicas;
        let scaled = |percent: i64, of: i64| -> i32 {
            let total = i64::from(replicas).saturating_mul(percent);
            let value = if of <= 0 { 0 } else { (total + of - 1) / of };
            i32::try_from(value.clamp(0, i64::from(replicas))).unwrap_or(replicas)
        };
        let from_weight = scaled(
            i64::from(self.view.canary.weight_at(index)),
            i64::from(self.max_weight()),
        );
        let canary = &self.view.canary;
        match canary.canary_scale_at(index) {
            Some(scale) => match (scale.replicas, scale.weight) {
                // An explicit count is taken as it is, as Argo does.
                (Some(r), _) => r.clamp(0, replicas),
                (None, Some(w)) => canary.with_min_pods(scaled(i64::from(w), 100), replicas),
                (None, None) => canary.with_min_pods(from_weight, replicas),
            },
            None => canary.with_min_pods(from_weight, replicas),
        }
    }

    pub(super) async fn scale_canary(&mut self, hash: &str, replicas: i32) -> Result<(), Stop> {
        let name = replica_set_name(&self.view.name, hash);
        // A new revision's number follows the stable's.
        let stable = self.status.stable_rs.clone();
        let revision = match stable.as_deref() {
            Some(stable) if stable != hash => Revision::After(stable),
            _ => Revision::Unnumbered,
        };
        ensure_revision(
            self.ctx.cluster,
            self.view,
            &name,
            &self.view.template,
            hash,
            replicas,
            revision,
        )
        .await?;
        self.status.updated_replicas = replicas;
        let stable = if self.view.canary.traffic_routing.is_some() {
            self.view.replicas
        } else {
            self.view.replicas.saturating_sub(replicas).max(0)
        };
        self.status.ready_replicas = stable.saturating_add(replicas);
        self.status.available_replicas = self.status.ready_replicas;
        Ok(())
    }

    pub(super) fn record_weights(
        &mut self,
        weight: i32,
        canary: &str,
        stable: &str,
        additional: &[WeightDestination],
        verified: bool,
    ) {
        let c = &self.view.canary;
        let extra: i32 = additional.iter().map(|d| d.weight).sum();
        self.status.canary.weights = Some(TrafficWeights {
            canary: Dest {
                weight,
                service_name: c.canary_service.clone(),
                pod_template_hash: canary.into(),
            },
            stable: Dest {
                weight: self
                    .max_weight()
                    .saturating_sub(weight)
                    .saturating_sub(extra)
                    .max(0),
                service_name: c.stable_service.clone(),
                pod_template_hash: stable.into(),
            },
            additional: additional
                .iter()
                .map(|d| Dest {
                    weight: d.weight,
                    service_name: d.service_name.clone(),
                    pod_template_hash: d.pod_template_hash.clone(),
                })
                .collect(),
            verified: Some(verified),
        });
    }

    /// `dynamicStableScale` (Argo's `CalculateReplicaCountsForTrafficRoutedCanary`):
    /// the stable keeps the pods for the larger of the traffic it is to get
    /// at this step and the traffic the routers last gave it, so it shrinks
    /// only after traffic has left and grows before traffic returns (an
    /// abort wants it whole).
    fn dynamic_stable_replicas(&self) -> i32 {
        let max = self.max_weight();
        let replicas = self.view.replicas;
        let canary_weight = if self.status.abort {
            0
        } else {
            self.view.canary.weight_at(self.status.step_index())
        };
        let wanted = weight_to_replicas(replicas, max.saturating_sub(canary_weight), max);
        let serving = self.status.canary.weights.as_ref().map_or(replicas, |w| {
            weight_to_replicas(replicas, w.stable.weight, max)
        });
        self.view
            .canary
            .with_min_pods(wanted.max(serving), replicas)
    }

    /// During an abort with `dynamicStableScale`: the canary weight the
    /// stable's available pods allow (Argo's
    /// `calculateDesiredWeightOnAbortOrStableRollback`), never more than the
    /// canary has now; 0 once the stable is whole again.
    pub(super) fn weight_back_to_stable(&self, stable: Option<&Value>) -> i32 {
        let max = i64::from(self.max_weight());
        let replicas = i64::from(self.view.replicas);
        if replicas <= 0 {
            return 0;
        }
        let available = stable
            .and_then(|rs| rs.pointer("/status/availableReplicas"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .clamp(0, replicas);
        let expected = (max - max * available / replicas).max(0);
        let current = self
            .status
            .canary
            .weights
            .as_ref()
            .map_or(expected, |w| i64::from(w.canary.weight));
        i32::try_from(expected.min(current)).unwrap_or(0)
    }
}

/// The pods `weight` of `max` stands for, rounded up (Argo's
/// `trafficWeightToReplicas`).
fn weight_to_replicas(replicas: i32, weight: i32, max: i32) -> i32 {
    if max <= 0 {
        return 0;
    }
    let pods =
        (i64::from(weight.max(0)) * i64::from(replicas) + i64::from(max) - 1) / i64::from(max);
    i32::try_from(pods.clamp(0, i64::from(replicas))).unwrap_or(replicas)
}
