//! The controller's metrics in Prometheus exposition format: plugin calls by
//! plugin, method and outcome, their latency, sandbox faults by kind,
//! quarantines, and reconciles.

use crate::plugin::CallObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    plugin: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    plugin: String,
    method: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 25 µs .. ~3.3 s: a healthy call is tens of microseconds, a timeout seconds.
    prometheus_client::metrics::histogram::exponential_buckets(25e-6, 2.0, 18)
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    faults: Family<FaultLabels, Counter>,
    quarantines: Family<PluginLabels, Counter>,
    reconciles: Family<OutcomeLabels, Counter>,
    reconcile_latency: Histogram,
    shadow_calls: Family<ShadowLabels, Counter>,
    shadow_latency: Family<MethodLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `weir` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let faults = Family::<FaultLabels, Counter>::default();
        let quarantines = Family::<PluginLabels, Counter>::default();
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let reconcile_latency = Histogram::new(latency_buckets());
        let shadow_calls = Family::<ShadowLabels, Counter>::default();
        let shadow_latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "shadow_calls",
            "Shadow runs of a registration's candidate build on live calls, by plugin, method and result (agree, disagree, dropped)",
            shadow_calls.clone(),
        );
        registry.register(
            "shadow_call_duration_seconds",
            "Candidate build latency on shadowed calls",
            shadow_latency.clone(),
        );
        registry.register(
            "plugin_calls",
            "Plugin calls by plugin, method and outcome (ok or the error kind)",
            calls.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin call latency, sandbox set-up included",
            latency.clone(),
        );
        registry.register(
            "plugin_faults",
            "Sandbox faults (trap, timeout, memory-limit, ...) by plugin and kind",
            faults.clone(),
        );
        registry.register(
            "plugin_quarantines",
            "Times a plugin was quarantined after repeated faults",
            quarantines.clone(),
        );
        registry.register(
            "reconciles",
            "Rollout reconciles by outcome (ok, failed, panic)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Rollout reconcile latency",
            reconcile_latency.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            faults,
            quarantines,
            reconciles,
            reconcile_latency,
            shadow_calls,
            shadow_latency,
        }
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, outcome: &str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.reconcile_latency.observe(elapsed.as_secs_f64());
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.push_str("# error encoding metrics\n");
        }
        out
    }
}

impl CallObserver for Metrics {
    fn call_finished(
        &self,
        plugin: &str,
        method: &str,
        outcome: &str,
        fault: bool,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                plugin: plugin.into(),
                method: method.into(),
                outcome: outcome.into(),
            })
            .inc();
        if outcome != "quarantined" {
            self.latency
                .get_or_create(&MethodLabels {
                    plugin: plugin.into(),
                    method: method.into(),
                })
                .observe(elapsed.as_secs_f64());
        }
        if fault {
            self.faults
                .get_or_create(&FaultLabels {
                    plugin: plugin.into(),
                    kind: outcome.into(),
                })
                .inc();
        }
    }

    fn quarantined(&self, plugin: &str) {
        self.quarantines
            .get_or_create(&PluginLabels {
                plugin: plugin.into(),
            })
            .inc();
    }

    fn shadow_finished(&self, plugin: &str, method: &str, result: &str, elapsed: Duration) {
        self.shadow_calls
            .get_or_create(&ShadowLabels {
                plugin: plugin.into(),
                method: method.into(),
                result: result.into(),
            })
            .inc();
        if result != "dropped" {
            self.shadow_latency
                .get_or_create(&MethodLabels {
                    plugin: plugin.into(),
                    method: method.into(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_faults_and_reconciles_are_exposed() {
        let m = Metrics::new();
        m.call_finished(
            "istio",
            "set-weight",
            "ok",
            false,
            Duration::from_micros(90),
        );
        m.call_finished(
            "acme/bad",
            "set-weight",
            "trap",
            true,
            Duration::from_millis(1),
        );
        m.quarantined("acme/bad");
        m.reconciled("ok", Duration::from_millis(2));
        let text = m.render();
        assert!(
            text.contains(
                r#"weir_plugin_calls_total{plugin="istio",method="set-weight",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_plugin_faults_total{plugin="acme/bad",kind="trap"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_plugin_quarantines_total{plugin="acme/bad"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weir_reconciles_total{outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_call_duration_seconds_bucket"),
            "{text}"
        );
    }
}
