//! The plugin's configuration, in the argoproj-labs Gateway API plugin's
//! shape (`trafficRouting.plugins["argoproj-labs/gatewayAPI"]`), resolved
//! into the list of routes a call edits.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::types::Rollout;

/// The label a route carries while a canary has traffic (the plugin's default).
pub const DEFAULT_IN_PROGRESS_KEY: &str = "rollouts.argoproj.io/gatewayapi-canary";
/// Its value.
pub const DEFAULT_IN_PROGRESS_VALUE: &str = "in-progress";

/// A route named in a list (`httpRoutes: [{name, useHeaderRoutes}]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteEntry {
    /// The route's name.
    pub name: String,
    /// Whether header routes (`setHeaderRoute`) go into this route.
    #[serde(default)]
    pub use_header_routes: bool,
}

/// A label selector (`httpRouteSelector`...): routes found by label.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Value>,
}

/// `trafficRouting.plugins["argoproj-labs/gatewayAPI"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    http_route: Option<String>,
    #[serde(default)]
    grpc_route: Option<String>,
    #[serde(default)]
    tcp_route: Option<String>,
    #[serde(default)]
    tls_route: Option<String>,
    #[serde(default)]
    http_routes: Vec<RouteEntry>,
    #[serde(default)]
    grpc_routes: Vec<RouteEntry>,
    #[serde(default)]
    tcp_routes: Vec<RouteEntry>,
    #[serde(default)]
    tls_routes: Vec<RouteEntry>,
    #[serde(default)]
    http_route_selector: Option<Selector>,
    #[serde(default)]
    grpc_route_selector: Option<Selector>,
    #[serde(default)]
    tcp_route_selector: Option<Selector>,
    #[serde(default)]
    tls_route_selector: Option<Selector>,
    /// Where the routes live (default: the Rollout's namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    disable_in_progress_label: bool,
    #[serde(default)]
    in_progress_label_key: Option<String>,
    #[serde(default)]
    in_progress_label_value: Option<String>,
    /// Accepted for the plugin's versions up to 0.12, which kept header
    /// routes' positions in this ConfigMap; like its later versions, Weir
    /// finds managed rules by name and needs none.
    #[serde(default)]
    #[allow(dead_code)]
    config_map: Option<String>,
}

/// The Gateway API route kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `HTTPRoute` (v1).
    Http,
    /// `GRPCRoute` (v1).
    Grpc,
    /// `TCPRoute` (v1alpha2, experimental channel).
    Tcp,
    /// `TLSRoute` (v1alpha2, experimental channel).
    Tls,
}

impl RouteKind {
    /// The object's kind.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    /// The apiVersion the plugin reads and writes it at.
    pub fn api_version(self) -> &'static str {
        match self {
            RouteKind::Http | RouteKind::Grpc => "gateway.networking.k8s.io/v1",
            RouteKind::Tcp | RouteKind::Tls => "gateway.networking.k8s.io/v1alpha2",
        }
    }

    /// Whether its rules carry matches, filters and header routes.
    pub fn has_matches(self) -> bool {
        matches!(self, RouteKind::Http | RouteKind::Grpc)
    }

    /// The name the configuration and errors use (`httpRoute`).
    pub fn field(self) -> &'static str {
        match self {
            RouteKind::Http => "httpRoute",
            RouteKind::Grpc => "grpcRoute",
            RouteKind::Tcp => "tcpRoute",
            RouteKind::Tls => "tlsRoute",
        }
    }
}

/// One route a call edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTarget {
    /// Its kind.
    pub kind: RouteKind,
    /// Its name.
    pub name: String,
    /// Whether header routes go into it.
    pub use_header_routes: bool,
}

/// A selector to list routes by (`a=b,c=d`), per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSelector {
    /// The kind listed.
    pub kind: RouteKind,
    /// `matchLabels` as a label selector.
    pub labels: String,
}

/// The configuration, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The routes named, in the order HTTP, gRPC, TCP, TLS.
    pub routes: Vec<RouteTarget>,
    /// Selectors whose matches are added at call time.
    pub selectors: Vec<RouteSelector>,
    /// The namespace of the routes.
    pub namespace: String,
    /// The in-progress label, unless disabled.
    pub in_progress_label: Option<(String, String)>,
}

fn selector(kind: RouteKind, s: &Selector) -> Result<RouteSelector, PluginError> {
    if !s.match_expressions.is_empty() {
        return Err(PluginError::InvalidConfig(format!(
            "gatewayAPI {}Selector.matchExpressions is not supported; select the routes with matchLabels",
            kind.field()
        )));
    }
    if s.match_labels.is_empty() {
        return Err(PluginError::InvalidConfig(format!(
            "gatewayAPI {}Selector needs matchLabels",
            kind.field()
        )));
    }
    let labels = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(RouteSelector { kind, labels })
}

/// Parses and resolves the configuration a call carries.
pub fn resolve(rollout: &Rollout) -> Result<Resolved, PluginError> {
    let config: GatewayConfig = weir_plugin_sdk::parse_config(
        "gatewayAPI configuration (trafficRouting.plugins[\"argoproj-labs/gatewayAPI\"])",
        &rollout.config,
    )?;
    let mut routes = Vec::new();
    let mut selectors = Vec::new();
    for (kind, single, list, select) in [
        (
            RouteKind::Http,
            &config.http_route,
            &config.http_routes,
            &config.http_route_selector,
        ),
        (
            RouteKind::Grpc,
            &config.grpc_route,
            &config.grpc_routes,
            &config.grpc_route_selector,
        ),
        (
            RouteKind::Tcp,
            &config.tcp_route,
            &config.tcp_routes,
            &config.tcp_route_selector,
        ),
        (
            RouteKind::Tls,
            &config.tls_route,
            &config.tls_routes,
            &config.tls_route_selector,
        ),
    ] {
        for (i, entry) in list.iter().enumerate() {
            if entry.name.trim().is_empty() {
                return Err(PluginError::InvalidConfig(format!(
                    "gatewayAPI {}s[{i}].name is empty",
                    kind.field()
                )));
            }
            push(&mut routes, kind, &entry.name, entry.use_header_routes);
        }
        // As the plugin: a single route always takes header routes.
        if let Some(name) = single.as_deref().filter(|n| !n.trim().is_empty()) {
            push(&mut routes, kind, name, true);
        }
        if let Some(s) = select {
            selectors.push(selector(kind, s)?);
        }
    }
    if routes.is_empty() && selectors.is_empty() {
        return Err(PluginError::InvalidConfig(
            "gatewayAPI: no routes configured; set at least one of httpRoute(s), grpcRoute(s), tcpRoute(s), tlsRoute(s) or a route selector".into(),
        ));
    }
    let in_progress_label = (!config.disable_in_progress_label).then(|| {
        let pick = |v: &Option<String>, default: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        (
            pick(&config.in_progress_label_key, DEFAULT_IN_PROGRESS_KEY),
            pick(&config.in_progress_label_value, DEFAULT_IN_PROGRESS_VALUE),
        )
    });
    Ok(Resolved {
        routes,
        selectors,
        namespace: config
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| rollout.namespace.clone()),
        in_progress_label,
    })
}

/// Adds a route once; named twice, it takes header routes if either says so.
fn push(routes: &mut Vec<RouteTarget>, kind: RouteKind, name: &str, use_header_routes: bool) {
    match routes.iter_mut().find(|r| r.kind == kind && r.name == name) {
        Some(existing) => existing.use_header_routes |= use_header_routes,
        None => routes.push(RouteTarget {
            kind,
            name: name.to_string(),
            use_header_routes,
        }),
    }
}
