//! Argo's `trafficRouting.istio` configuration.

use serde::Deserialize;
use weir_plugin_sdk::PluginError;

/// `trafficRouting.istio`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioConfig {
    /// One VirtualService.
    #[serde(default)]
    pub virtual_service: Option<VsRef>,
    /// Several VirtualServices.
    #[serde(default)]
    pub virtual_services: Option<Vec<VsRef>>,
    /// Subset-level splitting.
    #[serde(default)]
    pub destination_rule: Option<DrRef>,
}

/// One VirtualService and the routes of it the rollout drives.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VsRef {
    /// `name` or `name.namespace`.
    pub name: String,
    /// Names of HTTP routes; empty: the only (or first unnamed) route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// TLS routes by port and SNI hosts.
    #[serde(default)]
    pub tls_routes: Vec<TlsRoute>,
    /// TCP routes by port.
    #[serde(default)]
    pub tcp_routes: Vec<TcpRoute>,
}

/// A TLS route selector.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// The match port.
    #[serde(default)]
    pub port: i64,
    /// The match's SNI hosts, all of them.
    #[serde(default)]
    pub sni_hosts: Vec<String>,
}

/// A TCP route selector.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// The match port.
    #[serde(default)]
    pub port: i64,
}

/// `destinationRule`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrRef {
    /// Name of the DestinationRule (in the rollout's namespace).
    pub name: String,
    /// Subset that selects canary pods.
    pub canary_subset_name: String,
    /// Subset that selects stable pods.
    pub stable_subset_name: String,
    /// Subsets whose weights are left alone and taken out of stable's share.
    #[serde(default)]
    pub additional_subset_names: Vec<String>,
}

/// Parses the configuration with errors that point at the field.
pub fn parse(text: &str) -> Result<IstioConfig, PluginError> {
    weir_plugin_sdk::parse_config("istio configuration (trafficRouting.istio)", text)
}

impl IstioConfig {
    /// The VirtualServices to drive: `virtualServices`, else `virtualService`.
    pub fn virtual_services(&self) -> Result<Vec<&VsRef>, PluginError> {
        match (&self.virtual_service, &self.virtual_services) {
            (Some(_), Some(_)) => Err(PluginError::InvalidConfig(
                "istio configuration: set either `virtualService` or `virtualServices`, not both"
                    .into(),
            )),
            (Some(one), None) => Ok(vec![one]),
            (None, Some(many)) if !many.is_empty() => Ok(many.iter().collect()),
            _ => Err(PluginError::InvalidConfig(
                "istio configuration: `virtualService` or `virtualServices` is required".into(),
            )),
        }
    }
}

/// Splits `name.namespace` (and `name.namespace.svc.cluster.local`-style
/// suffixes ending in `.cluster.local`) the way Argo does: the last segment
/// is the namespace, everything before it the name.
pub fn split_name(full: &str) -> (&str, Option<&str>) {
    let trimmed = full.strip_suffix(".cluster.local").unwrap_or(full);
    match trimmed.rsplit_once('.') {
        Some((name, namespace)) => (name, Some(namespace)),
        None => (trimmed, None),
    }
}
