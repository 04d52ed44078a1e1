//! A step plugin that returns what its step's configuration asks for, or
//! misbehaves on request: the step-plugin rows of the fault matrix, and
//! the controller's step-plugin tests (the shape of Argo's own
//! `step-plugin-e2e` test plugin).
//!
//! Configuration (the step's `plugin.config`):
//! - `return`: the phase `run` returns, `Successful` (default), `Running`,
//!   `Failed` or `Error`; `requeue`: a Go duration, for `Running`.
//! - `runningFor`: return `Running` for this many calls, then `return`.
//! - `abort`, `terminate`: the phase those calls return (`Successful`).
//! - `fault`: `panic`, `loop`, `hoard` (allocate without bound),
//!   `bad-status` (status that is not JSON), `deep-status` (nested far
//!   past the host's bound), `huge-message`, `report` (a plugin error).
//!   A fault strikes after the call has staged its write, so a test can
//!   check that nothing the failed call meant to write landed.
//! - `marker`: the key this step writes under (default `step`).
//!
//! Every call records itself in a ConfigMap named `<rollout>-step-log`:
//! key `<operation>-<marker>` holds how many times that operation ran.
//! The status it keeps is `{"count": n}`, the number of `run` calls.

use std::hint::black_box;
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::cluster::{self, ObjectRef, PatchType};
use weir_plugin_sdk::step::exports::weir::plugin::step::{
    Guest, StepContext, StepPhase, StepResult,
};
use weir_plugin_sdk::types::Rollout;

struct FaultyStep;

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Config {
    #[serde(rename = "return")]
    returns: Option<String>,
    requeue: Option<String>,
    running_for: Option<u64>,
    abort: Option<String>,
    terminate: Option<String>,
    fault: Option<String>,
    marker: Option<String>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(default)]
struct State {
    count: u64,
}

fn config(context: &StepContext) -> Result<Config, PluginError> {
    if context.config.trim() == "null" {
        return Ok(Config::default());
    }
    weir_plugin_sdk::parse_config("faulty step configuration", &context.config)
}

fn phase(name: Option<&str>) -> Result<StepPhase, PluginError> {
    match name.unwrap_or("Successful") {
        "Successful" => Ok(StepPhase::Successful),
        "Running" => Ok(StepPhase::Running),
        "Failed" => Ok(StepPhase::Failed),
        "Error" => Ok(StepPhase::Error),
        other => Err(PluginError::InvalidConfig(format!(
            "phase {other:?} is not valid: use Successful, Running, Failed or Error"
        ))),
    }
}

/// Counts one `operation` under the step's marker in `<rollout>-step-log`.
fn record(rollout: &Rollout, operation: &str, marker: &str) -> Result<(), PluginError> {
    let target = ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: rollout.namespace.clone(),
        name: format!("{}-step-log", rollout.name),
    };
    let key = format!("{operation}-{marker}");
    match cluster::get(&target) {
        Ok(text) => {
            let object: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| PluginError::Internal(format!("bad JSON from the host: {e}")))?;
            let count: u64 = object
                .pointer(&format!("/data/{key}"))
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let patch = serde_json::json!({"data": {key: (count + 1).to_string()}});
            cluster::patch(&target, PatchType::Merge, &patch.to_string())?;
        }
        Err(PluginError::NotFound(_)) => {
            let object = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": target.name, "namespace": target.namespace},
                "data": {key: "1"},
            });
            cluster::create(&object.to_string())?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Misbehaves as `fault` says, or returns `result` unchanged.
fn strike(fault: Option<&str>, result: StepResult) -> Result<StepResult, PluginError> {
    match fault {
        None | Some("none") => Ok(result),
        Some("panic") => panic!("faulty step plugin: panic on request"),
        Some("loop") => loop {
            black_box(());
        },
        Some("hoard") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        Some("bad-status") => Ok(StepResult {
            status: "{not json".into(),
            ..result
        }),
        Some("deep-status") => Ok(StepResult {
            status: "[".repeat(20_000) + &"]".repeat(20_000),
            ..result
        }),
        Some("huge-message") => Ok(StepResult {
            message: "x".repeat(1 << 20),
            ..result
        }),
        Some("report") => Err(PluginError::Transient(
            "faulty step plugin: error reported on request".into(),
        )),
        Some(other) => Err(PluginError::InvalidConfig(format!(
            "unknown fault {other:?}"
        ))),
    }
}

fn requeue_ms(config: &Config) -> Result<Option<u64>, PluginError> {
    config
        .requeue
        .as_deref()
        .map(|r| {
            weir_plugin_sdk::duration::parse_go_duration(r)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|e| PluginError::InvalidConfig(format!("requeue: {e}")))
        })
        .transpose()
}

impl Guest for FaultyStep {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let config = config(&context)?;
        let marker = config.marker.as_deref().unwrap_or("step");
        let mut state: State = serde_json::from_str(&context.status).unwrap_or_default();
        state.count += 1;
        record(&rollout, "run", marker)?;
        let still_running = config.running_for.is_some_and(|n| state.count <= n);
        let phase = if still_running {
            StepPhase::Running
        } else {
            phase(config.returns.as_deref())?
        };
        let result = StepResult {
            phase,
            message: format!("run {} of {marker}", state.count),
            requeue_after_ms: requeue_ms(&config)?,
            status: serde_json::to_string(&state)
                .map_err(|e| PluginError::Internal(e.to_string()))?,
        };
        strike(config.fault.as_deref(), result)
    }

    fn terminate(rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let config = config(&context)?;
        let marker = config.marker.as_deref().unwrap_or("step");
        record(&rollout, "terminate", marker)?;
        Ok(StepResult {
            phase: phase(config.terminate.as_deref())?,
            message: format!("terminated {marker}"),
            requeue_after_ms: None,
            status: context.status,
        })
    }

    fn abort(rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let config = config(&context)?;
        let marker = config.marker.as_deref().unwrap_or("step");
        record(&rollout, "abort", marker)?;
        Ok(StepResult {
            phase: phase(config.abort.as_deref())?,
            message: format!("aborted {marker}"),
            requeue_after_ms: None,
            status: context.status,
        })
    }
}

weir_plugin_sdk::export_step_plugin!(FaultyStep);
