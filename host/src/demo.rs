//! `weir demo`, the README's main job: on the embedded store, a canary of a
//! sample app through the Istio plugin with an analysis by the web metric
//! plugin making real HTTP requests on loopback, shown step by step with the
//! VirtualService weights; beside it a rollout whose router plugin panics,
//! which ends Degraded with a typed error while the first completes.

use crate::progress::print_changes;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, DurableCluster, manifests};
use weir::controller::actions::rollout_key;
use weir::controller::status::RolloutStatus;
use weir::controller::{ControllerConfig, ControllerSettings, assemble};
use weir::plugin::RuntimeConfig;
use weir::plugin::recorder::{RecorderConfig, load_recording, replay};

const BASE: &str = include_str!("../demo/base.yaml");
const ROLLOUTS: &str = include_str!("../demo/rollouts.yaml");

/// A loopback HTTP server answering the analysis's success-rate query.
async fn start_metrics_server() -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let body = if request.uri().path() == "/api/success-rate" {
                            r#"{"rate": 0.99}"#
                        } else {
                            r#"{"error": "not found"}"#
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((address, task))
}

async fn apply_text(cluster: &dyn Cluster, dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    let objects = manifests::read(&path)?;
    manifests::apply(cluster, objects).await?;
    Ok(())
}

async fn status_of(cluster: &dyn Cluster, name: &str) -> RolloutStatus {
    match cluster.get(&rollout_key("shop", name)).await {
        Ok(o) => RolloutStatus::of(&o),
        Err(_) => RolloutStatus::default(),
    }
}

/// Waits (up to 90 s) until `done` holds for (checkout, payments).
async fn wait_for(
    cluster: &dyn Cluster,
    what: &str,
    done: impl Fn(&RolloutStatus, &RolloutStatus) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let checkout = status_of(cluster, "checkout").await;
        let payments = status_of(cluster, "payments").await;
        if done(&checkout, &payments) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the demo with the components in `plugins`.
pub async fn run(plugins: &Path, hold: bool) -> Result<()> {
    for name in ["istio", "web", "faulty"] {
        let wasm = plugins.join(format!("weir_plugin_{name}.wasm"));
        if !wasm.exists() {
            bail!(
                "{} is missing: build the plugins first with scripts/build-plugins.sh (scripts/demo.sh does it)",
                wasm.display()
            );
        }
    }
    let plugins = std::fs::canonicalize(plugins)?;
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&plugins, &dir, hold).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(plugins: &Path, dir: &Path, hold: bool) -> Result<()> {
    let started = Instant::now();
    let (address, server) = start_metrics_server().await?;
    println!("metrics backend for the analysis: http://{address}/api/success-rate");
    let store = dir.join("store.redb");
    let cluster: Arc<dyn Cluster> = Arc::new(DurableCluster::open(&store)?);
    println!("embedded store: {}", store.display());
    let fill = |text: &str, version: &str| {
        text.replace("{{PORT}}", &address.port().to_string())
            .replace("{{PLUGINS}}", &plugins.display().to_string())
            .replace("{{VERSION}}", version)
    };
    apply_text(cluster.as_ref(), dir, "base.yaml", &fill(BASE, "1.0")).await?;
    apply_text(
        cluster.as_ref(),
        dir,
        "rollouts.yaml",
        &fill(ROLLOUTS, "1.0"),
    )
    .await?;

    let assembled = assemble(
        cluster.clone(),
        ControllerConfig {
            plugins_dir: plugins.to_path_buf(),
            config_namespace: "argo-rollouts".into(),
            settings: ControllerSettings {
                resync: Duration::from_secs(5),
                ..ControllerSettings::default()
            },
            runtime: RuntimeConfig {
                recorder: Some(RecorderConfig::new(recordings_dir())),
                ..RuntimeConfig::with_default_cache()
            },
        },
    )
    .await?;
    let metrics = assembled.metrics.clone();
    // The dashboard, as `weir run` serves it (loopback, with a token).
    let token = weir::api::token::generate()?;
    let dashboard = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dashboard_address = dashboard.local_addr()?;
    let (dashboard_stop, dashboard_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(weir::api::serve(
        dashboard,
        Arc::new(weir::api::ApiState {
            cluster: cluster.clone(),
            metrics: assembled.metrics.clone(),
            object_api: weir::api::ObjectApi::Token(token.clone()),
            registry: Some(assembled.registry.clone()),
        }),
        async move {
            let _ = dashboard_stopped.await;
        },
    ));
    println!("dashboard: http://{dashboard_address}/dashboard?token={token}");
    if !hold {
        println!("  (the demo ends in seconds: add --hold to keep it and the controller running)");
    }
    let printer = tokio::spawn(print_changes(cluster.clone(), started));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut readiness_stop = stop_rx.clone();
    let _readiness = tokio::spawn(weir::controller::readiness::run(
        cluster.clone(),
        async move {
            let _ = readiness_stop.changed().await;
        },
    ));
    let controller = tokio::spawn(assembled.controller.run(async move {
        let _ = stop_rx.changed().await;
    }));

    println!("\n== version 1.0: first deploy ==");
    wait_for(cluster.as_ref(), "checkout 1.0 to be Healthy", |c, _| {
        c.phase.as_deref() == Some("Healthy")
    })
    .await?;
    let first = status_of(cluster.as_ref(), "checkout").await.stable_rs;

    println!("\n== version 2.0: canary ==");
    apply_text(
        cluster.as_ref(),
        dir,
        "rollouts.yaml",
        &fill(ROLLOUTS, "2.0"),
    )
    .await?;
    let outcome = wait_for(
        cluster.as_ref(),
        "checkout 2.0 to complete and payments to degrade",
        |c, p| {
            c.phase.as_deref() == Some("Healthy")
                && c.stable_rs.is_some()
                && c.stable_rs != first
                && c.current_pod_hash == c.stable_rs
                && p.phase.as_deref() == Some("Degraded")
        },
    )
    .await;
    if hold {
        println!(
            "\nholding: the controller runs on; dashboard at http://{dashboard_address}/dashboard?token={token} (Ctrl-C to end)"
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = dashboard_stop.send(());
    let _ = stop_tx.send(true);
    let _ = controller.await;
    printer.abort();
    server.abort();

    println!();
    for name in ["checkout", "payments"] {
        println!("$ weir get rollout {name} -n shop");
        println!(
            "{}",
            crate::get_rollout(cluster.as_ref(), "shop", name).await?
        );
    }
    println!("$ curl /metrics (excerpt)");
    for line in metrics.render().lines().filter(|l| {
        (l.starts_with("weir_plugin_calls_total")
            || l.starts_with("weir_plugin_faults_total")
            || l.starts_with("weir_reconciles_total"))
            && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    outcome?;
    let checkout = status_of(cluster.as_ref(), "checkout").await;
    let payments = status_of(cluster.as_ref(), "payments").await;
    if checkout.stable_rs == first {
        bail!("checkout did not move to version 2.0");
    }
    let fault = payments
        .condition("PluginFailed")
        .context("payments has no PluginFailed condition")?;
    println!(
        "\ncheckout: Healthy on 2.0 after {:.1}s; payments: Degraded — {} in plugin {} ({}), contained to that rollout.",
        started.elapsed().as_secs_f64(),
        fault.reason,
        fault.plugin.as_deref().unwrap_or("?"),
        fault.call.as_deref().unwrap_or("?"),
    );
    match &fault.recording {
        Some(path) => show_recording(path).await?,
        // The recorder drops a recording rather than hold up a call.
        None => println!("\n(the flight recorder kept no recording of that fault)"),
    }
    Ok(())
}

/// Where the demo's flight recorder writes (kept after the demo, so the
/// printed `weir plugin replay` command works).
fn recordings_dir() -> PathBuf {
    std::env::temp_dir().join("weir-demo-recordings")
}

/// The flight recorder's part of the demo: the recording behind the
/// PluginFailed condition, replayed offline.
async fn show_recording(path: &str) -> Result<()> {
    println!(
        "
== the flight recorder =="
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(path).exists() {
        if Instant::now() > deadline {
            bail!("the recording {path} was never written");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recording = load_recording(Path::new(path))?;
    println!(
        "recorded {} {} on {}: {} host answer(s), outcome {}, {} staged write(s) dropped",
        recording.plugin.name,
        recording.call.method_name(),
        recording.target.as_deref().unwrap_or("-"),
        recording.answers.len(),
        recording.outcome.kind,
        recording.staged_writes.len(),
    );
    println!("$ weir plugin replay {path}");
    let report = replay(&RuntimeConfig::with_default_cache(), &recording, None).await?;
    print!("{}", report.render());
    println!(
        "(docs/operating.md: replay against a fixed build with --plugin, or put the recording in a fixture directory for `weir plugin test`)"
    );
    Ok(())
}
