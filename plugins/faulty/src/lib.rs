//! A traffic router that misbehaves on request, for the sandbox tests.
//!
//! The Rollout's plugin configuration picks the behaviour: `{"fault": "panic"}`.
//! With no fault (`{}` or `{"fault": "none"}`) it is a well-behaved router that
//! records the weights it is given in a ConfigMap named `<rollout>-weights`, so
//! the tests can see what landed. The registration argument `fail-init` makes
//! `init` fail.

use std::hint::black_box;
use weir_plugin_sdk::cluster::{self, ObjectRef, PatchType};
use weir_plugin_sdk::log::{self, Level};
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, Verification,
    WeightDestination, WeightVerification,
};

struct Faulty;

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    fault: Option<String>,
    /// For `huge-output`: how many bytes to return.
    #[serde(default)]
    size: Option<usize>,
}

fn config(rollout: &Rollout) -> Result<Config, PluginError> {
    if rollout.config.trim() == "null" {
        return Ok(Config::default());
    }
    weir_plugin_sdk::parse_config("faulty router configuration", &rollout.config)
}

fn weights_ref(rollout: &Rollout) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: rollout.namespace.clone(),
        name: format!("{}-weights", rollout.name),
    }
}

/// Writes `canary` into the weights ConfigMap, creating it when missing.
fn record_weight(rollout: &Rollout, canary: i32) -> Result<(), PluginError> {
    let target = weights_ref(rollout);
    match cluster::get(&target) {
        Ok(_) => {
            let patch = serde_json::json!({"data": {"canary": canary.to_string()}});
            cluster::patch(&target, PatchType::Merge, &patch.to_string())?;
        }
        Err(PluginError::NotFound(_)) => {
            let object = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": target.name, "namespace": target.namespace},
                "data": {"canary": canary.to_string()},
            });
            cluster::create(&object.to_string())?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Recursion that lives on the wasm stack (no shadow-stack frame): each level
/// keeps its result opaque so it cannot become a loop.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)) ^ depth
}

/// Misbehaves as asked. Returns `Ok(Some(weight))` when the fault leaves a
/// result for the caller, `Ok(None)` for normal behaviour.
fn misbehave(rollout: &Rollout) -> Result<Option<i32>, PluginError> {
    let cfg = config(rollout)?;
    match cfg.fault.as_deref().unwrap_or("none") {
        "none" => Ok(None),
        "panic" => panic!(
            "faulty plugin: deliberate panic for rollout {}",
            rollout.name
        ),
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![7u8; 1 << 20]);
                black_box(&hoard);
            }
        }
        "stack-overflow" => Ok(Some(recurse(0) as i32)),
        "huge-output" => {
            let size = cfg.size.unwrap_or(100 << 20);
            Err(PluginError::Internal("x".repeat(size)))
        }
        "invalid-output" => Ok(Some(250)),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(None)
        }
        "read-file" => match std::fs::read_to_string("/etc/hostname") {
            Ok(text) => Ok(Some(text.len() as i32)),
            Err(e) => Err(PluginError::Denied(format!("reading /etc/hostname: {e}"))),
        },
        "env-var" => {
            let vars: Vec<(String, String)> = std::env::vars().collect();
            match std::env::var("WEIR_TEST_SECRET") {
                Ok(v) => Err(PluginError::Internal(format!("leaked secret {v}"))),
                Err(_) if vars.is_empty() => Err(PluginError::Denied("no environment".into())),
                Err(_) => Err(PluginError::Internal(format!(
                    "saw {} env vars",
                    vars.len()
                ))),
            }
        }
        "socket" => {
            let addr = rollout
                .config
                .split("\"addr\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            let addr = addr.unwrap_or("127.0.0.1:9");
            match std::net::TcpStream::connect(addr) {
                Ok(_) => Err(PluginError::Internal(format!("connected to {addr}"))),
                Err(e) => Err(PluginError::Denied(format!("connect {addr}: {e}"))),
            }
        }
        "other-namespace" => {
            let target = ObjectRef {
                namespace: "kube-system".into(),
                ..weights_ref(rollout)
            };
            cluster::get(&target).map(|_| None)
        }
        "kind-not-granted" => {
            let target = ObjectRef {
                kind: "Secret".into(),
                name: "database-password".into(),
                ..weights_ref(rollout)
            };
            cluster::get(&target).map(|_| None)
        }
        "write-then-trap" => {
            record_weight(rollout, 99)?;
            panic!("faulty plugin: trapping after a write")
        }
        "log-flood" => {
            for i in 0..200_000 {
                log::log(Level::Info, &format!("flood line {i}"));
            }
            Ok(None)
        }
        "stdout-flood-then-panic" => {
            for i in 0..20_000 {
                println!("noise {i}");
            }
            panic!("faulty plugin: the real reason, after the noise")
        }
        other => Err(PluginError::InvalidConfig(format!(
            "unknown fault {other:?}"
        ))),
    }
}

impl Guest for Faulty {
    fn init(args: Vec<String>) -> Result<(), PluginError> {
        if args.iter().any(|a| a == "fail-init") {
            return Err(PluginError::InvalidConfig(
                "init refused: registration argument fail-init was given".into(),
            ));
        }
        Ok(())
    }

    fn update_hash(
        rollout: Rollout,
        _canary_hash: String,
        _stable_hash: String,
        _additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        misbehave(&rollout).map(|_| ())
    }

    fn set_weight(
        rollout: Rollout,
        desired_weight: i32,
        _additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        misbehave(&rollout)?;
        record_weight(&rollout, desired_weight)
    }

    fn set_header_route(rollout: Rollout, _route: HeaderRoute) -> Result<(), PluginError> {
        misbehave(&rollout).map(|_| ())
    }

    fn set_mirror_route(rollout: Rollout, _route: MirrorRoute) -> Result<(), PluginError> {
        misbehave(&rollout).map(|_| ())
    }

    fn verify_weight(
        rollout: Rollout,
        desired_weight: i32,
        _additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        let canary = match misbehave(&rollout)? {
            Some(forced) => forced,
            None => match cluster::get(&weights_ref(&rollout)) {
                Ok(text) => {
                    let object: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| PluginError::Internal(format!("weights ConfigMap: {e}")))?;
                    object["data"]["canary"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                }
                Err(PluginError::NotFound(_)) => 0,
                Err(e) => return Err(e),
            },
        };
        let verification = if canary == desired_weight {
            Verification::Verified
        } else {
            Verification::NotVerified
        };
        Ok(WeightVerification {
            verification,
            observed: Some(ObservedWeights {
                canary,
                stable: 100 - canary,
                additional: vec![],
            }),
        })
    }

    fn remove_managed_routes(rollout: Rollout) -> Result<(), PluginError> {
        misbehave(&rollout).map(|_| ())
    }
}

weir_plugin_sdk::export_traffic_router!(Faulty);
