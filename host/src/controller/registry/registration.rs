//! What a registration says: the shipped plugins and their grants, and the
//! plugin lists of Argo's `argo-rollouts-config` ConfigMap, read strictly.

use crate::plugin::{Grant, GrantedKind, PluginKind, PluginSpec};
use serde_json::Value;
use std::collections::BTreeMap;

/// A registered plugin in the shipped set: its name, its component's file
/// (`weir_plugin_<file>.wasm`), and the cluster kinds it may read and write.
pub(super) struct Shipped {
    pub(super) name: &'static str,
    pub(super) kind: PluginKind,
    file: &'static str,
    writes: &'static [(&'static str, &'static str)],
    reads: &'static [(&'static str, &'static str)],
}

pub(super) const SHIPPED: &[Shipped] = &[
    Shipped {
        name: "istio",
        file: "istio",
        reads: &[],
        kind: PluginKind::TrafficRouter,
        writes: &[
            ("networking.istio.io", "VirtualService"),
            ("networking.istio.io", "DestinationRule"),
        ],
    },
    Shipped {
        name: "nginx",
        file: "nginx",
        reads: &[],
        kind: PluginKind::TrafficRouter,
        writes: &[("networking.k8s.io", "Ingress")],
    },
    Shipped {
        name: "smi",
        file: "smi",
        reads: &[],
        kind: PluginKind::TrafficRouter,
        writes: &[("split.smi-spec.io", "TrafficSplit")],
    },
    Shipped {
        name: "prometheus",
        file: "prometheus",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "web",
        file: "web",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "job",
        file: "job",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[("batch", "Job")],
    },
    Shipped {
        // Reads its credentials Secret only once a registration grants
        // Secrets (and the namespace), as docs/analysis.md says.
        name: "datadog",
        file: "datadog",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        // Argo's provider key; its Secret is read as for datadog.
        name: "newRelic",
        file: "newrelic",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "influxdb",
        file: "influxdb",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "cloudWatch",
        file: "cloudwatch",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        name: "graphite",
        file: "graphite",
        reads: &[],
        kind: PluginKind::MetricProvider,
        writes: &[],
    },
    Shipped {
        // The argoproj-labs plugin's name, so Rollouts written for it work.
        name: "argoproj-labs/gatewayAPI",
        file: "gatewayapi",
        reads: &[("", "Service")],
        kind: PluginKind::TrafficRouter,
        writes: &[
            ("gateway.networking.k8s.io", "HTTPRoute"),
            ("gateway.networking.k8s.io", "GRPCRoute"),
            ("gateway.networking.k8s.io", "TCPRoute"),
            ("gateway.networking.k8s.io", "TLSRoute"),
        ],
    },
    Shipped {
        name: "http-gate",
        file: "http_gate",
        reads: &[],
        kind: PluginKind::StepPlugin,
        writes: &[],
    },
];

/// Reads the plugin lists of an `argo-rollouts-config` ConfigMap.
pub fn parse_config_map(
    object: &Value,
) -> Result<BTreeMap<(PluginKind, String), PluginSpec>, String> {
    let mut out = BTreeMap::new();
    for (field, kind) in [
        ("trafficRouterPlugins", PluginKind::TrafficRouter),
        ("metricProviderPlugins", PluginKind::MetricProvider),
        ("stepPlugins", PluginKind::StepPlugin),
    ] {
        let Some(text) = object.pointer(&format!("/data/{field}")) else {
            continue;
        };
        let text = text
            .as_str()
            .ok_or_else(|| format!("data.{field} must be a YAML string"))?;
        let specs: Vec<PluginSpec> = serde_yaml_ng::from_str::<Option<Vec<PluginSpec>>>(text)
            .map_err(|e| format!("data.{field}: {e}"))?
            .unwrap_or_default();
        for spec in specs {
            if spec.name.is_empty() {
                return Err(format!("data.{field}: an entry has no name"));
            }
            if spec.disabled && kind != PluginKind::StepPlugin {
                return Err(format!(
                    "data.{field}: plugin {:?}: `disabled` is only valid for stepPlugins (as in Argo); remove the entry to stop using it",
                    spec.name
                ));
            }
            let is_shipped = SHIPPED
                .iter()
                .any(|s| s.name == spec.name && s.kind == kind);
            if !is_shipped && !spec.name.contains('/') {
                return Err(format!(
                    "data.{field}: plugin name {:?} must be `<namespace>/<name>` (as Argo requires)",
                    spec.name
                ));
            }
            if !is_shipped && spec.location.is_empty() {
                return Err(format!(
                    "data.{field}: plugin {:?} has no location (file:// or https://)",
                    spec.name
                ));
            }
            if out
                .insert((kind, spec.name.clone()), spec.clone())
                .is_some()
            {
                return Err(format!(
                    "data.{field}: plugin {:?} is registered twice",
                    spec.name
                ));
            }
        }
    }
    Ok(out)
}

/// The spec to load `name` with: a registration (with a shipped plugin's
/// location and grant filled in when it names one), or the shipped plugin's defaults.
pub(super) fn spec_for(
    shipped_dir: &std::path::Path,
    kind: PluginKind,
    name: &str,
    registered: Option<PluginSpec>,
) -> Option<PluginSpec> {
    let shipped = SHIPPED.iter().find(|s| s.name == name && s.kind == kind);
    match (registered, shipped) {
        (Some(mut spec), Some(shipped)) => {
            if spec.location.is_empty() {
                spec.location = shipped_location(shipped_dir, shipped);
            }
            // A registration that names no kinds keeps the shipped ones
            // (and may add namespaces).
            if spec.grant.read.is_empty() && spec.grant.write.is_empty() {
                let namespaces = std::mem::take(&mut spec.grant.namespaces);
                let secrets = std::mem::take(&mut spec.grant.secrets);
                spec.grant = shipped_grant(shipped);
                spec.grant.namespaces = namespaces;
                spec.grant.secrets = secrets;
            }
            Some(spec)
        }
        (Some(spec), None) => Some(spec),
        (None, Some(shipped)) => {
            let mut spec = PluginSpec::new(shipped.name, shipped_location(shipped_dir, shipped));
            spec.grant = shipped_grant(shipped);
            Some(spec)
        }
        (None, None) => None,
    }
}

fn shipped_location(dir: &std::path::Path, shipped: &Shipped) -> String {
    crate::plugin::bundle::shipped_location(dir, &shipped.component_file())
}

impl Shipped {
    /// Its component's file name.
    pub(super) fn component_file(&self) -> String {
        format!("weir_plugin_{}.wasm", self.file)
    }
}

fn shipped_grant(shipped: &Shipped) -> Grant {
    let kinds = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(group, kind)| GrantedKind {
                group: group.to_string(),
                kind: kind.to_string(),
            })
            .collect()
    };
    Grant {
        read: kinds(shipped.reads),
        write: kinds(shipped.writes),
        namespaces: vec![],
        secrets: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_argo_plugin_lists_with_weir_fields() {
        let cm = json!({"data": {
            "trafficRouterPlugins": "- name: acme/mesh\n  location: file:///p/mesh.wasm\n  sha256: abc\n  limits: {timeoutMs: 300}\n",
            "metricProviderPlugins": "- name: web\n  http: {allowHosts: ['127.0.0.1']}\n"}});
        let parsed = parse_config_map(&cm).expect("valid");
        let mesh = &parsed[&(PluginKind::TrafficRouter, "acme/mesh".to_string())];
        assert_eq!(mesh.limits.timeout_ms, 300);
        assert_eq!(mesh.sha256.as_deref(), Some("abc"));
        let web = &parsed[&(PluginKind::MetricProvider, "web".to_string())];
        assert_eq!(web.http.allow_hosts, vec!["127.0.0.1".to_string()]);
    }

    #[test]
    fn a_shipped_router_granted_a_namespace_keeps_its_kinds() {
        let cm = json!({"data": {
            "trafficRouterPlugins": "- name: istio\n  grant: {namespaces: [istio-ingress]}\n"}});
        let parsed = parse_config_map(&cm).expect("valid");
        let registered = parsed
            .get(&(PluginKind::TrafficRouter, "istio".to_string()))
            .cloned();
        let spec = spec_for(
            std::path::Path::new("/p"),
            PluginKind::TrafficRouter,
            "istio",
            registered,
        )
        .expect("spec");
        assert_eq!(spec.grant.namespaces, vec!["istio-ingress".to_string()]);
        assert!(
            spec.grant
                .may_write("networking.istio.io", "VirtualService")
        );
    }

    #[test]
    fn bad_registrations_name_the_field_and_fix() {
        let unknown = json!({"data": {"trafficRouterPlugins": "- name: a/b\n  location: file:///x\n  limitz: {}\n"}});
        let err = parse_config_map(&unknown).expect_err("unknown field");
        assert!(
            err.contains("limitz") && err.contains("trafficRouterPlugins"),
            "{err}"
        );
        let unqualified =
            json!({"data": {"trafficRouterPlugins": "- name: mesh\n  location: file:///x\n"}});
        let err = parse_config_map(&unqualified).expect_err("bad name");
        assert!(err.contains("<namespace>/<name>"), "{err}");
        let no_location = json!({"data": {"metricProviderPlugins": "- name: a/b\n"}});
        assert!(
            parse_config_map(&no_location)
                .expect_err("no location")
                .contains("location")
        );
    }
}
