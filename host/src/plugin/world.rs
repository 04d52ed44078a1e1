//! Which `weir:plugin` world a component implements, and whether everything
//! it imports is something Weir provides to that world.

use super::error::LoadErrorKind;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The three kinds of Weir plugin, and Weir's own condition evaluator (run
/// in the same sandbox, never registered by operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// Exports `weir:plugin/traffic-router`.
    TrafficRouter,
    /// Exports `weir:plugin/metric-provider`.
    MetricProvider,
    /// Exports `weir:condition/evaluator` (`plugins/condition`).
    ConditionEvaluator,
    /// Exports `weir:plugin/step` (contract 0.2 and later).
    StepPlugin,
}

/// The contract versions the host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contract {
    /// `weir:plugin@0.1.x` (frozen: `wit/v0.1/weir-plugin.wit`).
    V0_1,
    /// `weir:plugin@0.2.x` (frozen: `wit/v0.2/weir-plugin.wit`).
    V0_2,
    /// `weir:plugin@0.3.x` (`wit/weir-plugin.wit`).
    V0_3,
}

impl Contract {
    /// The version line, as operators see it (`0.1`, `0.2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1",
            Contract::V0_2 => "0.2",
            Contract::V0_3 => "0.3",
        }
    }
}

/// The exported interface of each kind, per contract line served (any
/// patch version of a line is accepted: the component model's semver).
const EXPORTS: &[(PluginKind, &str, Contract)] = &[
    (
        PluginKind::TrafficRouter,
        "weir:plugin/traffic-router@0.3.",
        Contract::V0_3,
    ),
    (
        PluginKind::TrafficRouter,
        "weir:plugin/traffic-router@0.2.",
        Contract::V0_2,
    ),
    (
        PluginKind::TrafficRouter,
        "weir:plugin/traffic-router@0.1.",
        Contract::V0_1,
    ),
    (
        PluginKind::MetricProvider,
        "weir:plugin/metric-provider@0.3.",
        Contract::V0_3,
    ),
    (
        PluginKind::MetricProvider,
        "weir:plugin/metric-provider@0.2.",
        Contract::V0_2,
    ),
    (
        PluginKind::MetricProvider,
        "weir:plugin/metric-provider@0.1.",
        Contract::V0_1,
    ),
    (
        PluginKind::StepPlugin,
        "weir:plugin/step@0.3.",
        Contract::V0_3,
    ),
    (
        PluginKind::StepPlugin,
        "weir:plugin/step@0.2.",
        Contract::V0_2,
    ),
    (
        PluginKind::ConditionEvaluator,
        "weir:condition/evaluator@0.1.",
        Contract::V0_1,
    ),
];

/// Imports every plugin may have: the contract's host interfaces and the
/// WASI p2 interfaces a language's standard library pulls in. Filesystem and
/// sockets are linked but empty: no preopens, every address denied.
const COMMON_IMPORTS: &[&str] = &[
    "weir:plugin/types@0.1.",
    "weir:plugin/log@0.1.",
    "weir:plugin/cluster@0.1.",
    "weir:plugin/types@0.2.",
    "weir:plugin/log@0.2.",
    "weir:plugin/registration@0.2.",
    "weir:plugin/cluster@0.2.",
    "weir:plugin/types@0.3.",
    "weir:plugin/log@0.3.",
    "weir:plugin/registration@0.3.",
    "weir:plugin/cluster@0.3.",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Imports only metric providers and step plugins may have.
const PROVIDER_IMPORTS: &[&str] = &["wasi:http/types@0.2.", "wasi:http/outgoing-handler@0.2."];

/// Imports only traffic routers and step plugins may have: what serves a
/// Rollout.
const ROLLOUT_IMPORTS: &[&str] = &["weir:plugin/rollout-object@0.3."];

impl PluginKind {
    /// The world's name in the contract.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "weir:plugin/traffic-router-plugin",
            PluginKind::MetricProvider => "weir:plugin/metric-provider-plugin",
            PluginKind::ConditionEvaluator => "weir:condition/condition-evaluator",
            PluginKind::StepPlugin => "weir:plugin/step-plugin",
        }
    }

    /// A short human name.
    pub fn label(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "traffic-router",
            PluginKind::MetricProvider => "metric-provider",
            PluginKind::ConditionEvaluator => "condition-evaluator",
            PluginKind::StepPlugin => "step-plugin",
        }
    }

    /// The exported interface (the current contract's spelling).
    pub fn export(self) -> &'static str {
        match self {
            PluginKind::TrafficRouter => "weir:plugin/traffic-router@0.3.0",
            PluginKind::MetricProvider => "weir:plugin/metric-provider@0.3.0",
            PluginKind::ConditionEvaluator => "weir:condition/evaluator@0.1.0",
            PluginKind::StepPlugin => "weir:plugin/step@0.3.0",
        }
    }

    /// Whether a plugin of this kind may import `name`.
    pub fn provides(self, name: &str) -> bool {
        let wasi_p2 = |n: &str| !n.starts_with("wasi:") || n.contains("@0.2.");
        COMMON_IMPORTS
            .iter()
            .any(|p| name.starts_with(p) && wasi_p2(name))
            || (matches!(self, PluginKind::MetricProvider | PluginKind::StepPlugin)
                && PROVIDER_IMPORTS.iter().any(|p| name.starts_with(p)))
            || (matches!(self, PluginKind::TrafficRouter | PluginKind::StepPlugin)
                && ROLLOUT_IMPORTS.iter().any(|p| name.starts_with(p)))
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
        self.implements().map(|(kind, _)| kind)
    }

    /// The Weir world this component implements and the contract line it
    /// was built against (the newest, should it export several).
    pub fn implements(&self) -> Option<(PluginKind, Contract)> {
        EXPORTS
            .iter()
            .find(|(_, prefix, _)| self.exports.iter().any(|e| e.starts_with(prefix)))
            .map(|(kind, _, contract)| (*kind, *contract))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_serves_a_rollout_may_import_the_rollout_object() {
        let import = "weir:plugin/rollout-object@0.3.0";
        assert!(PluginKind::TrafficRouter.provides(import));
        assert!(PluginKind::StepPlugin.provides(import));
        assert!(!PluginKind::MetricProvider.provides(import));
        assert!(!PluginKind::ConditionEvaluator.provides(import));
    }

    #[test]
    fn each_contract_line_is_recognised_by_its_export() {
        for (export, contract) in [
            ("weir:plugin/traffic-router@0.1.0", Contract::V0_1),
            ("weir:plugin/traffic-router@0.2.0", Contract::V0_2),
            ("weir:plugin/traffic-router@0.3.1", Contract::V0_3),
        ] {
            let surface = Surface {
                imports: vec![],
                exports: vec![export.to_string()],
            };
            assert_eq!(
                surface.implements(),
                Some((PluginKind::TrafficRouter, contract)),
                "{export}"
            );
        }
    }
}
