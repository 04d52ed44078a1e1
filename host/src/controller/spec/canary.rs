//! `spec.strategy.canary`: its fields, its traffic routing, and the
//! checks Argo's validation makes.

use super::numbers::{int_or_percent, whole_number};
use super::steps::{BackgroundAnalysis, SetCanaryScale, Step};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// `spec.strategy.canary`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStrategy {
    /// The Service that selects canary pods.
    #[serde(default)]
    pub canary_service: String,
    /// The Service that selects stable pods.
    #[serde(default)]
    pub stable_service: String,
    /// The steps (read one by one, so an error names its index).
    #[serde(default, skip_deserializing)]
    pub steps: Vec<Step>,
    /// Traffic routers.
    #[serde(default)]
    pub traffic_routing: Option<TrafficRouting>,
    /// Background analysis.
    #[serde(default)]
    pub analysis: Option<BackgroundAnalysis>,
    /// `scaleDownDelaySeconds`: how long a ReplicaSet traffic has left
    /// keeps its pods (traffic routing only; see [`Self::scale_down_delay`]).
    #[serde(default)]
    pub scale_down_delay_seconds: Option<Value>,
    /// `scaleDownDelayRevisionLimit`: how many such ReplicaSets may wait at
    /// once; the oldest beyond it go at once.
    #[serde(default)]
    pub scale_down_delay_revision_limit: Option<Value>,
    /// `abortScaleDownDelaySeconds`: how long an aborted canary keeps its
    /// pods (see [`Self::abort_scale_down_delay`]).
    #[serde(default)]
    pub abort_scale_down_delay_seconds: Option<Value>,
    /// `maxUnavailable` (a count or a percentage of `spec.replicas`, 25 %
    /// by default): how many pods a restart may take down at once.
    #[serde(default)]
    pub max_unavailable: Option<Value>,
    /// `maxSurge` (a count or a percentage, 25 % by default).
    #[serde(default)]
    pub max_surge: Option<Value>,
    /// `minPodsPerReplicaSet`: with traffic routing, a canary scaled from a
    /// weight has at least this many pods (at most `spec.replicas`).
    #[serde(default)]
    pub min_pods_per_replica_set: Option<Value>,
    /// `dynamicStableScale`: with traffic routing, the stable ReplicaSet
    /// shrinks as traffic leaves it, and grows back before traffic returns
    /// (an abort shifts the weight back only as fast as the stable's pods
    /// become available).
    #[serde(default)]
    pub dynamic_stable_scale: bool,
}

/// Argo's canary fields Weir does not implement yet: refused by name
/// rather than silently ignored.
pub(super) const UNSUPPORTED_CANARY_FIELDS: [&str; 3] =
    ["antiAffinity", "canaryMetadata", "stableMetadata"];

/// Argo's default for `scaleDownDelaySeconds` and `abortScaleDownDelaySeconds`.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

/// `trafficRouting`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficRouting {
    /// Istio (served by the shipped `istio` plugin).
    #[serde(default)]
    pub istio: Option<Value>,
    /// NGINX (served by the shipped `nginx` plugin).
    #[serde(default)]
    pub nginx: Option<Value>,
    /// SMI (served by the shipped `smi` plugin).
    #[serde(default)]
    pub smi: Option<Value>,
    /// Registered plugins by `<namespace>/<name>`.
    #[serde(default)]
    pub plugins: Option<Map<String, Value>>,
    /// The weight that means "all traffic" (default 100).
    #[serde(default)]
    pub max_traffic_weight: Option<i32>,
    /// Routes the controller manages (header and mirror routes), in priority order.
    #[serde(default)]
    pub managed_routes: Option<Value>,
}

impl TrafficRouting {
    /// Whether the routers split traffic between a canary and a stable
    /// Service, so both must be named (Argo's `requireCanaryStableServices`):
    /// NGINX, SMI, and Istio host-level splitting. Istio subset-level
    /// splitting (a `destinationRule`) splits one host by subsets, and
    /// plugins decide for themselves.
    pub fn needs_services(&self) -> bool {
        let istio_by_host = self
            .istio
            .as_ref()
            .is_some_and(|i| i.get("destinationRule").is_none_or(Value::is_null));
        istio_by_host || self.nginx.is_some() || self.smi.is_some()
    }

    /// Every router as (plugin name, its configuration block).
    pub fn routers(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let builtin = [
            ("istio", &self.istio),
            ("nginx", &self.nginx),
            ("smi", &self.smi),
        ];
        for (name, config) in builtin {
            if let Some(config) = config {
                // managedRoutes and the steps reach the plugins in the
                // Rollout object itself, as Argo's plugins read them.
                out.push((name.to_string(), config.clone()));
            }
        }
        for (name, config) in self.plugins.iter().flatten() {
            out.push((name.clone(), config.clone()));
        }
        out
    }
}

/// Reads and checks `spec.strategy.canary`; the error names the field and
/// the fix.
pub(super) fn parse_canary(canary_json: &Value) -> Result<CanaryStrategy, String> {
    for field in UNSUPPORTED_CANARY_FIELDS {
        let set = canary_json
            .get(field)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false));
        if set {
            return Err(format!(
                "spec.strategy.canary.{field} is not supported by Weir yet; remove it (docs/controller.md lists every difference from Argo)"
            ));
        }
    }
    let mut canary: CanaryStrategy = serde_json::from_value(canary_json.clone())
        .map_err(|e| format!("spec.strategy.canary: {e}"))?;
    canary.steps = match canary_json.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(steps)) => steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                serde_json::from_value(step.clone())
                    .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "spec.strategy.canary.steps must be a list, not {other}"
            ));
        }
    };
    for (i, step) in canary.steps.iter().enumerate() {
        step.kind()
            .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))?;
        if let Some(w) = step.set_weight {
            let max = canary.max_weight();
            if !(0..=max).contains(&w) {
                return Err(format!(
                    "spec.strategy.canary.steps[{i}].setWeight {w} must be within 0..={max}"
                ));
            }
        }
        if let Some(p) = &step.pause {
            p.duration()
                .map_err(|e| format!("spec.strategy.canary.steps[{i}]: {e}"))?;
        }
        if let Some(a) = &step.analysis
            && a.templates.is_empty()
        {
            return Err(format!(
                "spec.strategy.canary.steps[{i}].analysis needs at least one template"
            ));
        }
    }
    canary.check_scale_down_fields()?;
    if let Some(routing) = &canary.traffic_routing {
        if routing.needs_services()
            && (canary.canary_service.is_empty() || canary.stable_service.is_empty())
        {
            return Err(
                "trafficRouting with nginx, smi, or istio without a destinationRule needs spec.strategy.canary.canaryService and stableService"
                    .into(),
            );
        }
        if routing.routers().is_empty() {
            return Err("trafficRouting names no router: set istio, nginx, smi or plugins".into());
        }
        if let Some(max) = routing.max_traffic_weight
            && max <= 0
        {
            return Err(format!("trafficRouting.maxTrafficWeight {max} must be > 0"));
        }
        // Istio's route weights must total 100 (Argo refuses it too);
        // NGINX (canary-weight-total), SMI (relative weights) and
        // plugins take any total.
        if let Some(max) = routing.max_traffic_weight
            && max != 100
            && routing.istio.is_some()
        {
            return Err(format!(
                "trafficRouting.maxTrafficWeight {max} cannot be used with istio: Istio's route weights must total 100; remove maxTrafficWeight, or route with nginx, smi or a plugin"
            ));
        }
    }
    Ok(canary)
}

impl CanaryStrategy {
    /// How many of `replicas` pods may be unavailable at once, as Argo's
    /// `MaxUnavailable` resolves `maxSurge` (rounded up) and
    /// `maxUnavailable` (rounded down), 25 % each by default; both zero
    /// means one.
    pub fn max_unavailable(&self, replicas: i32) -> i32 {
        if replicas <= 0 {
            return 0;
        }
        let quarter = Value::String("25%".into());
        let surge = int_or_percent(
            "maxSurge",
            Some(self.max_surge.as_ref().unwrap_or(&quarter)),
            replicas,
            true,
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        let unavailable = int_or_percent(
            "maxUnavailable",
            Some(self.max_unavailable.as_ref().unwrap_or(&quarter)),
            replicas,
            false,
        )
        .ok()
        .flatten()
        .unwrap_or(0);
        let unavailable = if surge == 0 && unavailable == 0 {
            1
        } else {
            unavailable
        };
        unavailable.min(replicas)
    }

    /// Argo's `CheckMinPodsPerReplicaSet`: a non-zero canary count raised
    /// to `minPodsPerReplicaSet` (capped at `replicas`), with traffic
    /// routing only.
    pub fn with_min_pods(&self, count: i32, replicas: i32) -> i32 {
        let min = whole_number(
            "minPodsPerReplicaSet",
            self.min_pods_per_replica_set.as_ref(),
        )
        .ok()
        .flatten()
        .and_then(|n| i32::try_from(n).ok());
        match min {
            Some(min) if count > 0 && self.traffic_routing.is_some() => {
                count.max(min.min(replicas))
            }
            _ => count,
        }
    }

    /// Checks the scale-down fields as Argo's validation does.
    fn check_scale_down_fields(&self) -> Result<(), String> {
        whole_number(
            "minPodsPerReplicaSet",
            self.min_pods_per_replica_set.as_ref(),
        )?;
        int_or_percent("maxUnavailable", self.max_unavailable.as_ref(), 100, false)?;
        int_or_percent("maxSurge", self.max_surge.as_ref(), 100, true)?;
        whole_number(
            "scaleDownDelaySeconds",
            self.scale_down_delay_seconds.as_ref(),
        )?;
        whole_number(
            "scaleDownDelayRevisionLimit",
            self.scale_down_delay_revision_limit.as_ref(),
        )?;
        whole_number(
            "abortScaleDownDelaySeconds",
            self.abort_scale_down_delay_seconds.as_ref(),
        )?;
        if self.traffic_routing.is_none()
            && self
                .scale_down_delay_seconds
                .as_ref()
                .is_some_and(|v| !v.is_null())
        {
            return Err("spec.strategy.canary.scaleDownDelaySeconds can only be used with trafficRouting: a basic canary's old pods serve traffic until they are gone; remove the field".into());
        }
        if self.dynamic_stable_scale && self.traffic_routing.is_none() {
            return Err("spec.strategy.canary.dynamicStableScale can only be used with trafficRouting: a basic canary's replicas are its split already; remove the field".into());
        }
        if self.dynamic_stable_scale
            && self
                .scale_down_delay_seconds
                .as_ref()
                .is_some_and(|v| !v.is_null())
        {
            return Err("spec.strategy.canary.dynamicStableScale cannot be used with scaleDownDelaySeconds (the old stable has no traffic left to drain when it goes); remove one".into());
        }
        Ok(())
    }

    /// How long a ReplicaSet traffic has left keeps its pods, so routers
    /// and proxies stop sending to them first: `scaleDownDelaySeconds`,
    /// 30 s by default with traffic routing, zero without (a basic
    /// canary's pods are its traffic split). Zero scales down at once.
    pub fn scale_down_delay(&self) -> Duration {
        // With dynamicStableScale a ReplicaSet has no pods left for the
        // traffic it no longer gets: nothing to wait for (Argo's rule).
        if self.traffic_routing.is_none() || self.dynamic_stable_scale {
            return Duration::ZERO;
        }
        whole_number(
            "scaleDownDelaySeconds",
            self.scale_down_delay_seconds.as_ref(),
        )
        .ok()
        .flatten()
        .map_or(DEFAULT_SCALE_DOWN_DELAY, Duration::from_secs)
    }

    /// `scaleDownDelayRevisionLimit`: how many ReplicaSets may wait out
    /// their delay at once (no limit by default).
    pub fn scale_down_delay_revision_limit(&self) -> Option<usize> {
        whole_number(
            "scaleDownDelayRevisionLimit",
            self.scale_down_delay_revision_limit.as_ref(),
        )
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
    }

    /// How long an aborted canary keeps its pods, as Argo has it: with
    /// traffic routing `abortScaleDownDelaySeconds` (30 s by default;
    /// `None` for 0, which keeps them until the next update); a basic
    /// canary scales down at once (zero).
    pub fn abort_scale_down_delay(&self) -> Option<Duration> {
        if self.traffic_routing.is_none() {
            return Some(Duration::ZERO);
        }
        match whole_number(
            "abortScaleDownDelaySeconds",
            self.abort_scale_down_delay_seconds.as_ref(),
        )
        .ok()
        .flatten()
        {
            None => Some(DEFAULT_SCALE_DOWN_DELAY),
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        }
    }

    /// `trafficRouting.maxTrafficWeight`, default 100.
    pub fn max_weight(&self) -> i32 {
        self.traffic_routing
            .as_ref()
            .and_then(|t| t.max_traffic_weight)
            .unwrap_or(100)
    }

    /// The weight in force at step `index`: the last setWeight before it
    /// (0 before any).
    pub fn weight_at(&self, index: usize) -> i32 {
        self.steps
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| s.set_weight)
            .next_back()
            .unwrap_or(0)
    }

    /// The setCanaryScale in force at step `index`, if any.
    pub fn canary_scale_at(&self, index: usize) -> Option<&SetCanaryScale> {
        self.steps
            .iter()
            .take(index.saturating_add(1))
            .filter_map(|s| s.set_canary_scale.as_ref())
            .next_back()
            .filter(|s| !s.match_traffic_weight)
    }
}
