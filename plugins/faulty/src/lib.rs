//! A traffic router that misbehaves on request, for the sandbox tests.
//!
//! The Rollout's plugin configuration picks the behaviour: `{"fault": "panic"}`.
//! With no fault (`{}` or `{"fault": "none"}`) it is a well-behaved router that
//! records the weights it is given in a ConfigMap named `<rollout>-weights`, so
//! the tests can see what landed. The registration argument `fail-init` makes
//! `init` fail.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// For `huge-output`: how many bytes to return; for the write and log
    /// bombs: how large each object, value or line is.
    #[serde(default)]
    size: Option<usize>,
    /// For the write and log bombs: how many operations (objects, lines).
    #[serde(default)]
    count: Option<usize>,
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

fn bomb_ref(rollout: &Rollout, name: &str) -> ObjectRef {
    ObjectRef {
        name: format!("{}-{name}", rollout.name),
        ..weights_ref(rollout)
    }
}

/// Creates `name` holding `data` (an object of any shape; the host does
/// not check a ConfigMap's schema) and returns its reference.
fn create_bomb(
    rollout: &Rollout,
    name: &str,
    data: serde_json::Value,
) -> Result<ObjectRef, PluginError> {
    let target = bomb_ref(rollout, name);
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": target.name, "namespace": target.namespace},
        "data": data,
    });
    cluster::create(&object.to_string())?;
    Ok(target)
}

/// `{"x": {"x": ... {} }}`, `depth` levels deep, as text (never as a
/// recursive value: the guest has a stack too).
fn nested_text(depth: usize) -> String {
    let mut text = String::with_capacity(depth * 6 + 2);
    for _ in 0..depth {
        text.push_str("{\"x\":");
    }
    text.push_str("{}");
    for _ in 0..depth {
        text.push('}');
    }
    text
}

/// The host-work bombs: documents, patches and writes that cost the host
/// far more than they cost the plugin.
fn host_bomb(rollout: &Rollout, fault: &str, cfg: &Config) -> Result<(), PluginError> {
    let count = cfg.count.unwrap_or(0);
    let size = cfg.size.unwrap_or(0);
    match fault {
        // Copies a subtree into its own deepest node: each operation
        // doubles the depth (50 levels to 3,200 in six operations).
        "patch-deep-copy" => {
            let data: serde_json::Value = serde_json::from_str(&nested_text(48))
                .map_err(|e| PluginError::Internal(e.to_string()))?;
            let target = create_bomb(rollout, "deep", data)?;
            let mut deepest = String::from("/data");
            for _ in 0..48 {
                deepest.push_str("/x");
            }
            let mut ops = Vec::new();
            for _ in 0..6 {
                ops.push(serde_json::json!({"op": "copy", "from": "/data", "path": format!("{deepest}/x")}));
                let tail = deepest.trim_start_matches("/data").to_string();
                deepest = format!("{deepest}/x{tail}");
            }
            cluster::patch(
                &target,
                PatchType::Json,
                &serde_json::Value::Array(ops).to_string(),
            )?;
            Ok(())
        }
        // Appends a copy of an array to itself: each operation doubles the
        // object (20 operations under 1 KB: a gigabyte).
        "patch-size-doubling" => {
            let target = create_bomb(
                rollout,
                "wide",
                serde_json::json!({"a": ["x".repeat(1000)]}),
            )?;
            let ops: Vec<serde_json::Value> = (0..count.max(1))
                .map(|_| serde_json::json!({"op": "copy", "from": "/data/a", "path": "/data/a/-"}))
                .collect();
            cluster::patch(
                &target,
                PatchType::Json,
                &serde_json::Value::Array(ops).to_string(),
            )?;
            Ok(())
        }
        // Inserts at the front of a large array, `count` times: each
        // insertion moves the whole array.
        "patch-many-adds" => {
            let items = vec![0u8; size.max(1)];
            let target = create_bomb(rollout, "long", serde_json::json!({"a": items}))?;
            let ops: Vec<serde_json::Value> = (0..count.max(1))
                .map(|i| serde_json::json!({"op": "add", "path": "/data/a/0", "value": i}))
                .collect();
            cluster::patch(
                &target,
                PatchType::Json,
                &serde_json::Value::Array(ops).to_string(),
            )?;
            Ok(())
        }
        // An object nested `size` levels deep, created as text.
        "deep-object" => {
            let target = bomb_ref(rollout, "deep");
            let object = format!(
                "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"{}\",\"namespace\":\"{}\"}},\"data\":{}}}",
                target.name,
                target.namespace,
                nested_text(size)
            );
            cluster::create(&object)?;
            Ok(())
        }
        // `count` objects of `size` bytes each.
        "many-creates" => {
            let filler = "x".repeat(size);
            for i in 0..count {
                create_bomb(rollout, &format!("n{i}"), serde_json::json!({"v": filler}))?;
            }
            Ok(())
        }
        // `count` reads of objects that are not there.
        "request-flood" => {
            for i in 0..count {
                match cluster::get(&bomb_ref(rollout, &format!("absent-{i}"))) {
                    Err(PluginError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
            Ok(())
        }
        // `count` log lines of `size` bytes each.
        "log-bomb" => {
            let line = "y".repeat(size);
            for _ in 0..count {
                log::log(Level::Info, &line);
            }
            Ok(())
        }
        other => Err(PluginError::InvalidConfig(format!(
            "unknown fault {other:?}"
        ))),
    }
}

/// Recursion that lives on the wasm stack (no shadow-stack frame): each level
/// keeps its result opaque so it cannot become a loop.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)) ^ depth
}

/// Calls this instance has served (a fresh instance has served none).
static CALLS: AtomicU32 = AtomicU32::new(0);
/// 3 MiB of zero-initialised memory: more than the pool keeps resident, so
/// both ways a slot is reset (rewritten in place, or handed back to the
/// kernel) are crossed.
static mut SCRATCH: [u8; SCRATCH_BYTES] = [0; SCRATCH_BYTES];
const SCRATCH_BYTES: usize = 3 << 20;

/// `remember`: fails if anything an earlier call left is visible (the call
/// counter, or marks in the scratch memory), then leaves both behind for
/// the next call to find.
fn remember() -> Result<(), PluginError> {
    let earlier = CALLS.fetch_add(1, Ordering::SeqCst);
    // Pages 0, a middle one and the last one of the scratch area.
    let offsets = [0, SCRATCH_BYTES / 2 + 4096, SCRATCH_BYTES - 1];
    // One thread, and the static is only touched here, byte by byte.
    let base = std::ptr::addr_of_mut!(SCRATCH).cast::<u8>();
    let mut marked = Vec::new();
    for offset in offsets {
        // SAFETY: `offset` is within the static.
        let byte = unsafe { std::ptr::read_volatile(base.add(offset)) };
        if byte != 0 {
            marked.push(offset);
        }
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(base.add(offset), 0xA5) };
    }
    if earlier > 0 || !marked.is_empty() {
        return Err(PluginError::Internal(format!(
            "state carried over: this instance served {earlier} calls before; marks found at {marked:?}"
        )));
    }
    Ok(())
}

/// The weight a previous call stored in the weights ConfigMap, if any.
/// This build trusts it to be a number (the bug the flight recorder's
/// tests replay); the `fixed` build treats anything else as no weight.
fn stored_weight(rollout: &Rollout) -> Result<Option<i32>, PluginError> {
    let text = match cluster::get(&weights_ref(rollout)) {
        Ok(text) => text,
        Err(PluginError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let object: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PluginError::Internal(format!("weights ConfigMap: {e}")))?;
    let stored = object["data"]["canary"].as_str().unwrap_or("0");
    #[cfg(not(feature = "fixed"))]
    let weight = Some(stored.parse::<i32>().unwrap());
    #[cfg(feature = "fixed")]
    let weight = stored.parse::<i32>().ok();
    Ok(weight)
}

/// Writes what the call was handed into `<rollout>-report`: the record's
/// typed fields, and the object's name as fetched through `rollout-object`
/// (contract 0.3 hands the object only on request).
fn report_rollout(rollout: &Rollout) -> Result<(), PluginError> {
    let object = weir_plugin_sdk::objects::rollout_object()?;
    let data = serde_json::json!({
        "maxTrafficWeight": rollout.max_traffic_weight.to_string(),
        "managedRoutes": rollout.managed_routes.join(","),
        "objectName": object["metadata"]["name"].as_str().unwrap_or(""),
    });
    create_bomb(rollout, "report", data).map(drop)
}

/// Misbehaves as asked. Returns `Ok(Some(weight))` when the fault leaves a
/// result for the caller, `Ok(None)` for normal behaviour.
fn misbehave(rollout: &Rollout) -> Result<Option<i32>, PluginError> {
    let cfg = config(rollout)?;
    match cfg.fault.as_deref().unwrap_or("none") {
        "none" => Ok(None),
        "remember" => remember().map(|_| None),
        "report-rollout" => report_rollout(rollout).map(|()| None),
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
        "trust-stored-weight" => stored_weight(rollout).map(|_| None),
        // A regression the `fixed` build brings (for the shadow tests): it
        // hangs where this build is healthy.
        "hang-in-fixed-build" => {
            if cfg!(feature = "fixed") {
                let mut x: u64 = 0;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            Ok(None)
        }
        "read-secret-then-panic" => {
            let secret = cluster::get(&ObjectRef {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: rollout.namespace.clone(),
                name: format!("{}-creds", rollout.name),
            })?;
            let secret: serde_json::Value = serde_json::from_str(&secret)
                .map_err(|e| PluginError::Internal(format!("secret: {e}")))?;
            let token = secret["stringData"]["token"].as_str().unwrap_or_default();
            log::log(Level::Info, &format!("calling the mesh with token {token}"));
            eprintln!("token in use: {token}");
            panic!("faulty plugin: the mesh refused token {token}")
        }
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
        other => host_bomb(rollout, other, &cfg).map(|()| None),
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
