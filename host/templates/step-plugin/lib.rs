//! {{name}}: a Weir step plugin (a canary step: `steps: [{plugin: {name, config}}]`).
//!
//! An approval gate: the canary waits at this step until a ConfigMap key
//! says `approved` (the step succeeds) or `rejected` (the step fails, and
//! the Rollout aborts). The ConfigMap is `<rollout>-approval` unless the
//! step's configuration names one; the key is `decision`. Replace the body
//! of `run` with your own check.
//! The contract is `wit/weir-plugin.wit` in the Weir repository.

use serde::{Deserialize, Serialize};
use weir_plugin_sdk::objects;
use weir_plugin_sdk::step::exports::weir::plugin::step::{
    Guest, StepContext, StepPhase, StepResult,
};
use weir_plugin_sdk::types::{PluginError, Rollout};

/// The step's `plugin.config`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default)]
    config_map: Option<String>,
}

/// What this plugin keeps between calls (`status`).
#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
struct State {
    checks: u32,
}

/// How long to wait between checks, in milliseconds.
const RECHECK_MS: u64 = 10_000;

struct Plugin;

impl Guest for Plugin {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let config: Config = if context.config.trim() == "null" {
            Config::default()
        } else {
            weir_plugin_sdk::parse_config("{{name}} configuration", &context.config)?
        };
        let mut state: State = serde_json::from_str(&context.status).unwrap_or_default();
        state.checks += 1;
        let name = config
            .config_map
            .unwrap_or_else(|| format!("{}-approval", rollout.name));
        let target = objects::object_ref("v1", "ConfigMap", &rollout.namespace, &name);
        let decision = match weir_plugin_sdk::cluster::get(&target) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|o| o.pointer("/data/decision")?.as_str().map(str::to_string)),
            Err(PluginError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let (phase, message, requeue) = match decision.as_deref() {
            Some("approved") => (StepPhase::Successful, format!("approved in {name}"), None),
            Some("rejected") => (StepPhase::Failed, format!("rejected in {name}"), None),
            _ => (
                StepPhase::Running,
                format!("waiting for a decision in ConfigMap {name} (check {})", state.checks),
                Some(RECHECK_MS),
            ),
        };
        Ok(StepResult {
            phase,
            message,
            requeue_after_ms: requeue,
            status: serde_json::to_string(&state).map_err(|e| PluginError::Internal(e.to_string()))?,
        })
    }

    fn terminate(_rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        Ok(StepResult {
            phase: StepPhase::Successful,
            message: "stopped waiting".into(),
            requeue_after_ms: None,
            status: context.status,
        })
    }

    fn abort(_rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        Ok(StepResult {
            phase: StepPhase::Successful,
            message: "nothing to undo".into(),
            requeue_after_ms: None,
            status: context.status,
        })
    }
}

weir_plugin_sdk::export_step_plugin!(Plugin);
