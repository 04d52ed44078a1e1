// The step plugin against `weir:plugin@0.2.0` (`step-0-2`): included by
// lib.rs. `run` counts its calls in the step's status and succeeds on the
// second; its message names the Rollout read from the whole object the 0.2
// record carries.

wit_bindgen::generate!({
    path: "../../wit/v0.2",
    world: "weir:plugin/step-plugin@0.2.0",
    generate_all,
});

use exports::weir::plugin::step::{Guest, StepContext, StepPhase, StepResult};
use weir::plugin::types::{PluginError, Rollout};

struct CompatStep;

/// The name in the Rollout object the record carries.
fn object_name(rollout: &Rollout) -> String {
    serde_json::from_str::<serde_json::Value>(&rollout.object)
        .ok()
        .and_then(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn done(phase: StepPhase, rollout: &Rollout, what: &str) -> StepResult {
    StepResult {
        phase,
        message: format!("{what} by a step built against 0.2.0 for Rollout {}", object_name(rollout)),
        requeue_after_ms: None,
        status: "null".into(),
    }
}

impl Guest for CompatStep {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let runs = serde_json::from_str::<serde_json::Value>(&context.status)
            .ok()
            .and_then(|s| s["runs"].as_u64())
            .unwrap_or(0)
            + 1;
        let phase = if runs >= 2 {
            StepPhase::Successful
        } else {
            StepPhase::Running
        };
        Ok(StepResult {
            phase,
            message: format!(
                "run {runs} of a step built against 0.2.0 for Rollout {}",
                object_name(&rollout)
            ),
            requeue_after_ms: Some(1_000),
            status: serde_json::json!({ "runs": runs }).to_string(),
        })
    }

    fn terminate(rollout: Rollout, _context: StepContext) -> Result<StepResult, PluginError> {
        Ok(done(StepPhase::Successful, &rollout, "terminated"))
    }

    fn abort(rollout: Rollout, _context: StepContext) -> Result<StepResult, PluginError> {
        Ok(done(StepPhase::Successful, &rollout, "aborted"))
    }
}

export!(CompatStep);
