//! Which `weir:plugin` world a component implements, and whether everything
//! it imports is something Weir provides to that world.

use super::error::LoadErrorKind;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The two kinds of Weir plugin, and Weir's own condition evaluator (run
/// in the same sandbox, never registered by operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// Exports `weir:plugin/traffic-router`.
    TrafficRouter,
    /// Exports `weir:plugin/metric-provider`.
    MetricProvider,
    /// Exports `weir:condition/evaluator` (`plugins/condition`).
    ConditionEvaluator,
}

/// Interface prefixes of the contract (any 0.1.x).
const ROUTER_EXPORT: &str = "weir:plugin/traffic-router@0.1.";
const PROVIDER_EXPORT: &str = "weir:plugin/metric-provider@0.1.";
const CONDITION_EXPORT: &str = "weir:condition/evaluator@0.1.";

/// Imports every plugin may have: the contract's host interfaces and the
/// WASI p2 interfaces a language's standard library pulls in. Filesystem and
/// sockets are linked but empty: no preopens, every address denied.
const COMMON_IMPORTS: &[&str] = &[
    "weir:plugin/types@0.1.",
    "weir:plugin/log@0.1.",
    "weir:plugin/cluster@0.1.",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Imports only metric providers may have.
const PROVIDER_IMPORTS: &[&str] = &["wasi:http/types@0.2.", "wasi:http/outgoing-handler@0.2."];

impl PluginKind {
    /// The world's name in the contract.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "weir:plugin/traffic-router-plugin",
            PluginKind::MetricProvider => "weir:plugin/metric-provider-plugin",
            PluginKind::ConditionEvaluator => "weir:condition/condition-evaluator",
        }
    }

    /// A short human name.
    pub fn label(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "traffic-router",
            PluginKind::MetricProvider => "metric-provider",
            PluginKind::ConditionEvaluator => "condition-evaluator",
        }
    }

    /// The exported interface (0.1.0 spelling).
    pub fn export(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "weir:plugin/traffic-router@0.1.0",
            PluginKind::MetricProvider => "weir:plugin/metric-provider@0.1.0",
            PluginKind::ConditionEvaluator => "weir:condition/evaluator@0.1.0",
        }
    }

    fn export_prefix(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => ROUTER_EXPORT,
            PluginKind::MetricProvider => PROVIDER_EXPORT,
            PluginKind::ConditionEvaluator => CONDITION_EXPORT,
        }
    }

    /// Whether a plugin of this kind may import `name`.
    pub fn provides(self, name: &str) -> bool {
        let wasi_p2 = |n: &str| !n.starts_with("wasi:") || n.contains("@0.2.");
        COMMON_IMPORTS
            .iter()
            .any(|p| name.starts_with(p) && wasi_p2(name))
            || (self == PluginKind::MetricProvider
                && PROVIDER_IMPORTS.iter().any(|p| name.starts_with(p)))
    }
}

/// A component's import and export names.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    /// Import names, in order.
    pub imports: Vec<String>,
    /// Export names, in order.
    pub exports: Vec<String>,
}

impl Surface {
    /// Reads the names off a compiled component.
    pub fn of(component: &Component, engine: &Engine) -> Self {
        let ty = component.component_type();
        Surface {
            imports: ty
                .imports(engine)
                .map(|(name, _)| name.to_string())
                .collect(),
            exports: ty
                .exports(engine)
                .map(|(name, _)| name.to_string())
                .collect(),
        }
    }

    /// The Weir world this component implements, if any.
    pub fn kind(&self) -> Option<PluginKind> {
        [
            PluginKind::TrafficRouter,
            PluginKind::MetricProvider,
            PluginKind::ConditionEvaluator,
        ]
        .into_iter()
        .find(|k| {
            self.exports
                .iter()
                .any(|e| e.starts_with(k.export_prefix()))
        })
    }

    /// Checks the component against `expected`: the right export, and only
    /// imports Weir provides to that world.
    pub fn check(&self, expected: PluginKind) -> Result<(), LoadErrorKind> {
        match self.kind() {
            Some(found) if found != expected => {
                return Err(LoadErrorKind::WrongWorld {
                    expected: expected.label(),
                    found: found.label(),
                });
            }
            None => {
                let exports = if self.exports.is_empty() {
                    "nothing".to_string()
                } else {
                    self.exports.join(", ")
                };
                return Err(LoadErrorKind::MissingExport {
                    expected: expected.export(),
                    world: expected.world(),
                    exports,
                });
            }
            Some(_) => {}
        }
        if let Some(import) = self.imports.iter().find(|i| !expected.provides(i)) {
            return Err(LoadErrorKind::UnsupportedImport {
                import: import.clone(),
                world: expected.label(),
            });
        }
        Ok(())
    }
}
