//! `weir demo`: load a plugin into the sandbox, drive it, and show each kind
//! of fault contained as a typed error while healthy calls keep working.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use weir::cluster::{Cluster, MemoryCluster, ObjectKey};
use weir::plugin::{
    FaultPolicy, Grant, GrantedKind, PluginRuntime, PluginSpec, Rollout, RuntimeConfig,
};

fn rollout(config: &str) -> Rollout {
    Rollout {
        namespace: "shop".into(),
        name: "checkout".into(),
        uid: "demo-uid".into(),
        stable_service: "checkout-stable".into(),
        canary_service: "checkout-canary".into(),
        config: config.into(),
        object: serde_json::json!({}).into(),
    }
}

/// Runs the demo against the components in `plugins`.
pub async fn run(plugins: &Path) -> Result<()> {
    let wasm = plugins.join("weir_plugin_faulty.wasm");
    anyhow::ensure!(
        wasm.exists(),
        "{} is missing: build the plugins first with scripts/build-plugins.sh",
        wasm.display()
    );
    let cluster = Arc::new(MemoryCluster::new());
    let runtime = PluginRuntime::new(RuntimeConfig::with_default_cache(), cluster.clone())?;
    let mut spec = PluginSpec::new("weir/faulty", wasm.display().to_string());
    spec.grant = Grant {
        read: vec![],
        write: vec![GrantedKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        }],
        namespaces: vec![],
        secrets: vec![],
    };
    spec.limits.timeout_ms = 500;
    spec.fault_policy = FaultPolicy {
        quarantine_after: 0,
        ..FaultPolicy::default()
    };
    let started = Instant::now();
    let router = runtime
        .load_router(spec)
        .await
        .context("loading the demo plugin")?;
    let info = router.info();
    println!(
        "loaded {} ({}) sha256 {} in {:?} [{:?}]",
        info.name,
        info.kind.label(),
        &info.sha256[..12],
        started.elapsed(),
        info.cache
    );

    println!("\n== a healthy canary: set-weight through the sandbox, one fresh instance per call");
    let healthy = rollout("{}");
    let weights = ObjectKey::new("v1", "ConfigMap", "shop", "checkout-weights");
    for weight in [0, 20, 50, 100] {
        let t = Instant::now();
        router.set_weight(&healthy, weight, &[]).await?;
        let stored = cluster.get(&weights).await?;
        println!(
            "  set-weight {weight:>3} -> ConfigMap data {} ({:?})",
            stored["data"],
            t.elapsed()
        );
    }

    println!("\n== faulty calls: each is stopped and reported, nothing it meant to write lands");
    let faults = [
        "panic",
        "loop",
        "memory-bomb",
        "stack-overflow",
        "invalid-output",
        "sleep",
        "other-namespace",
        "kind-not-granted",
        "write-then-trap",
        "read-file",
        "env-var",
    ];
    for fault in faults {
        let bad = rollout(&format!(r#"{{"fault":"{fault}"}}"#));
        let t = Instant::now();
        let result = if fault == "invalid-output" {
            router.verify_weight(&bad, 10, &[]).await.map(|_| ())
        } else {
            router.set_weight(&bad, 10, &[]).await
        };
        let elapsed = t.elapsed();
        match result {
            Ok(()) => println!("  {fault:<17} unexpectedly succeeded"),
            Err(e) => {
                let text = e.kind.to_string().replace('\n', " | ");
                let short: String = text.chars().take(150).collect();
                println!(
                    "  {fault:<17} {:<18} {elapsed:>8.1?}  {short}",
                    e.kind.name()
                );
            }
        }
    }
    let stored = cluster.get(&weights).await?;
    println!(
        "\n  the ConfigMap still says {} (the write-then-trap call wrote 99 and was rolled back)",
        stored["data"]
    );
    router.set_weight(&healthy, 30, &[]).await?;
    println!(
        "  and a healthy call still succeeds: {}",
        cluster.get(&weights).await?["data"]
    );
    let stats = router.stats();
    println!(
        "\n{} calls ok, {} faults contained; the controller is still running.",
        stats.count("ok"),
        stats.calls.values().map(|c| c.count).sum::<u64>() - stats.count("ok")
    );
    Ok(())
}
