//! `weir/http-gate`: a step plugin that holds the canary at its step until
//! an HTTP endpoint answers with an expected status (any 2xx unless told),
//! and fails the step (which aborts the Rollout) when it has not within
//! `timeout`. A release gate, a change-freeze check, a smoke test's
//! verdict: anything that can answer over HTTP.
//!
//! ```yaml
//! steps:
//! - plugin:
//!     name: weir/http-gate
//!     config:
//!       url: http://release-gate.ops.svc/checkout/ready
//!       method: GET             # default GET
//!       headers: {X-Team: checkout}
//!       expectedStatus: [200]   # default: any 2xx
//!       interval: 10s           # between attempts (Go duration, default 10s)
//!       timeout: 5m             # fail the step after this (default: never)
//! ```
//!
//! Requests go through `wasi:http`: only to hosts on the registration's
//! `http.allowedHosts`, within the call's deadline. A host that is not on
//! the list is refused, and the step reports the refusal as an error (the
//! registration must change; retrying alone will not help). The state it
//! keeps between calls (`status`): when it first tried, how many attempts,
//! and the last answer. `terminate` and `abort` have nothing to undo.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::duration::parse_go_duration;
use weir_plugin_sdk::http::{self, HttpError, Request};
use weir_plugin_sdk::step::exports::weir::plugin::step::{
    Guest, StepContext, StepPhase, StepResult,
};
use weir_plugin_sdk::types::Rollout;

/// Time between attempts unless `interval` says otherwise.
const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Longest a single request may take (the call's deadline caps it too).
const REQUEST_TIMEOUT_MS: u64 = 5_000;

struct HttpGate;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    expected_status: Vec<u16>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct State {
    /// Unix time of the first attempt, in milliseconds.
    first_attempt_ms: u64,
    attempts: u64,
    /// The last status code received, if any.
    last_status: Option<u16>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(what: &str, text: Option<&str>) -> Result<Option<u64>, PluginError> {
    text.map(|t| {
        parse_go_duration(t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| PluginError::InvalidConfig(format!("http-gate {what}: {e}")))
    })
    .transpose()
}

impl Config {
    fn parse(context: &StepContext) -> Result<Config, PluginError> {
        let config: Config =
            weir_plugin_sdk::parse_config("http-gate configuration", &context.config)?;
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(PluginError::InvalidConfig(format!(
                "http-gate url {:?} must start with http:// or https://",
                config.url
            )));
        }
        Ok(config)
    }

    fn accepts(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }
}

fn result(
    phase: StepPhase,
    message: String,
    requeue: Option<u64>,
    state: &State,
) -> Result<StepResult, PluginError> {
    Ok(StepResult {
        phase,
        message,
        requeue_after_ms: requeue,
        status: serde_json::to_string(state).map_err(|e| PluginError::Internal(e.to_string()))?,
    })
}

impl Guest for HttpGate {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn run(_rollout: Rollout, context: StepContext) -> Result<StepResult, PluginError> {
        let config = Config::parse(&context)?;
        let interval =
            millis("interval", config.interval.as_deref())?.unwrap_or(DEFAULT_INTERVAL_MS);
        let timeout = millis("timeout", config.timeout.as_deref())?;
        let mut state: State = serde_json::from_str(&context.status).unwrap_or_default();
        let now = now_ms();
        if state.attempts == 0 {
            state.first_attempt_ms = now;
        }
        state.attempts += 1;
        let method = config.method.clone().unwrap_or_else(|| "GET".into());
        let request = Request {
            method: method.clone(),
            url: config.url.clone(),
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: None,
            timeout_ms: Some(REQUEST_TIMEOUT_MS),
            insecure: false,
        };
        let answer = match http::send(&request) {
            Ok(response) => {
                state.last_status = Some(response.status);
                if config.accepts(response.status) {
                    return result(
                        StepPhase::Successful,
                        format!(
                            "{method} {} answered {} after {} attempt(s)",
                            config.url, response.status, state.attempts
                        ),
                        None,
                        &state,
                    );
                }
                format!("answered {}", response.status)
            }
            // The registration must change: report it, do not keep waiting.
            Err(HttpError::Denied(why)) => return Err(PluginError::Denied(why)),
            Err(other) => other.to_string(),
        };
        let waited = now.saturating_sub(state.first_attempt_ms);
        if let Some(limit) = timeout
            && waited >= limit
        {
            return result(
                StepPhase::Failed,
                format!(
                    "{method} {} has not answered as expected within {} s ({answer})",
                    config.url,
                    limit / 1000
                ),
                None,
                &state,
            );
        }
        result(
            StepPhase::Running,
            format!(
                "waiting for {method} {}: attempt {} {answer}",
                config.url, state.attempts
            ),
            Some(interval),
            &state,
        )
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

weir_plugin_sdk::export_step_plugin!(HttpGate);
