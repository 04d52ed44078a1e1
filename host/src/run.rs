//! `weir run`: the controller on the embedded store, with its API and
//! `/metrics` on loopback.

use crate::progress::print_changes;
use crate::store::address_file;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use weir::api::{ApiState, ObjectApi, serve};
use weir::cluster::{Cluster, DurableCluster, KubeCluster, manifests};
use weir::controller::leader::LeaderElector;
use weir::controller::{Assembled, ControllerConfig, ControllerSettings, assemble};
use weir::plugin::RuntimeConfig;

/// `weir run`'s options.
pub struct RunOptions {
    /// The embedded store.
    pub store: PathBuf,
    /// Manifests to apply before starting.
    pub manifests: Option<PathBuf>,
    /// The shipped plugins.
    pub plugins: PathBuf,
    /// Where the API and `/metrics` listen.
    pub listen: String,
    /// Namespace of `argo-rollouts-config`.
    pub config_namespace: String,
    /// Reconciles in flight.
    pub workers: usize,
    /// Run against a Kubernetes API server instead of the embedded store.
    pub kubernetes: Option<KubeTarget>,
    /// Argo's controller instance id (see `ControllerSettings::instance_id`).
    pub instance_id: Option<String>,
    /// Namespace of the leader-election Lease (Kubernetes only).
    pub lease_namespace: String,
    /// This replica's identity in the election.
    pub identity: String,
    /// Largest AnalysisRun written (see `ControllerSettings::max_run_bytes`).
    pub max_run_bytes: usize,
    /// Serve only `/metrics` and `/healthz` (no object API, no token).
    pub no_object_api: bool,
    /// The flight recorder (none: record nothing).
    pub recorder: Option<weir::plugin::recorder::RecorderConfig>,
    /// Which compilers compile plugins with no compiled code on hand.
    pub compiler: weir::plugin::Compiler,
}

/// Where the Kubernetes API server is.
pub enum KubeTarget {
    /// A kubeconfig file.
    Kubeconfig(PathBuf),
    /// `KUBECONFIG`, `~/.kube/config`, or the in-cluster ServiceAccount.
    Infer,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Applies the manifests at `path` to `cluster` and reports what changed.
pub async fn apply_manifests(cluster: &dyn Cluster, path: &Path) -> Result<()> {
    let objects = manifests::read(path)?;
    let report = manifests::apply(cluster, objects).await?;
    for (key, created) in report {
        println!("{key} {}", if created { "created" } else { "configured" });
    }
    Ok(())
}

/// Connects to the API server `target` names (no watches).
pub async fn connect(target: &KubeTarget) -> Result<KubeCluster> {
    Ok(match target {
        KubeTarget::Kubeconfig(path) => KubeCluster::from_kubeconfig(path).await?,
        KubeTarget::Infer => KubeCluster::infer().await?,
    })
}

/// Opens the Kubernetes cluster and starts its watches.
async fn kubernetes(target: &KubeTarget, config_namespace: &str) -> Result<Arc<dyn Cluster>> {
    let cluster = Arc::new(connect(target).await?);
    cluster.start_controller_watches(config_namespace);
    Ok(cluster)
}

/// The controller's configuration from the command line.
fn controller_config(options: &RunOptions) -> ControllerConfig {
    ControllerConfig {
        plugins_dir: options.plugins.clone(),
        config_namespace: options.config_namespace.clone(),
        settings: ControllerSettings {
            workers: options.workers,
            instance_id: options.instance_id.clone(),
            max_run_bytes: options.max_run_bytes,
            ..ControllerSettings::default()
        },
        runtime: RuntimeConfig {
            recorder: options.recorder.clone(),
            engine: weir::plugin::EngineSettings {
                compiler: options.compiler,
                ..Default::default()
            },
            ..RuntimeConfig::with_default_cache()
        },
    }
}

async fn bind(address: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))
}

/// Resolves once `stop` says so.
fn stopped(
    stop: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.changed().await;
    }
}

/// Serves `/metrics`, `/healthz` and (with a token) the object API until `stop`.
fn spawn_api(
    listener: tokio::net::TcpListener,
    cluster: &Arc<dyn Cluster>,
    assembled: &Assembled,
    object_api: ObjectApi,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let state = Arc::new(ApiState {
        cluster: cluster.clone(),
        metrics: assembled.metrics.clone(),
        object_api,
        registry: Some(assembled.registry.clone()),
    });
    tokio::spawn(serve(listener, state, stopped(stop)))
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<()> {
    if let Some(target) = &options.kubernetes {
        return run_on_kubernetes(&options, target).await;
    }
    if let Some(parent) = options.store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let cluster: Arc<dyn Cluster> =
        Arc::new(DurableCluster::open(&options.store).with_context(|| {
            format!(
                "opening {} (is another `weir run` using it?)",
                options.store.display()
            )
        })?);
    if let Some(path) = &options.manifests {
        apply_manifests(cluster.as_ref(), path).await?;
    }
    let listener = bind(&options.listen).await?;
    let address = listener.local_addr()?;
    // The object API writes with the controller's authority: loopback only,
    // and only with the token written next to the store (mode 0600).
    let object_api = if options.no_object_api {
        ObjectApi::Off
    } else {
        if !address.ip().is_loopback() {
            bail!(
                "--listen {}: the object API is served on loopback only; listen on 127.0.0.1 (the default), or add --no-object-api to serve only /metrics and /healthz there",
                options.listen
            );
        }
        let token = weir::api::token::generate().context("generating the API token")?;
        let token_path = weir::api::token::token_file(&options.store);
        weir::api::token::write(&token_path, &token)
            .with_context(|| format!("writing {}", token_path.display()))?;
        ObjectApi::Token(token)
    };
    let address_path = address_file(&options.store);
    std::fs::write(&address_path, address.to_string())
        .with_context(|| format!("writing {}", address_path.display()))?;
    let assembled = assemble(cluster.clone(), controller_config(&options)).await?;
    println!(
        "weir controller on {} — API and /metrics at http://{address}",
        options.store.display()
    );
    if let ObjectApi::Token(token) = &object_api {
        // The token is the one in STORE.token (mode 0600): this terminal's user can read it anyway.
        println!("dashboard: http://{address}/dashboard?token={token}");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = spawn_api(listener, &cluster, &assembled, object_api, &stop_rx);
    let printer = tokio::spawn(print_changes(cluster.clone(), Instant::now()));
    // No pods run on the embedded store: a stand-in for the ReplicaSet
    // controller writes their readiness, as a cluster's would.
    let readiness = tokio::spawn(weir::controller::readiness::run(
        cluster.clone(),
        stopped(&stop_rx),
    ));
    let controller = tokio::spawn(assembled.controller.run(stopped(&stop_rx)));
    shutdown_signal().await;
    println!("shutting down: finishing in-flight reconciles");
    let _ = stop_tx.send(true);
    let _ = controller.await;
    let _ = readiness.await;
    let _ = api.await;
    printer.abort();
    let _ = std::fs::remove_file(&address_path);
    let _ = std::fs::remove_file(weir::api::token::token_file(&options.store));
    Ok(())
}

/// On Kubernetes: every replica loads and compiles its plugins; only the
/// leader of the Lease reconciles; a follower takes over when the leader's
/// lease expires or is released.
async fn run_on_kubernetes(options: &RunOptions, target: &KubeTarget) -> Result<()> {
    let cluster = kubernetes(target, &options.config_namespace).await?;
    if let Some(path) = &options.manifests {
        apply_manifests(cluster.as_ref(), path).await?;
    }
    let listener = bind(&options.listen).await?;
    let address = listener.local_addr()?;
    let assembled = assemble(cluster.clone(), controller_config(options)).await?;
    // /healthz answers while plugins are still compiling (a slow first
    // start must not be killed by the liveness probe).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // On Kubernetes the object API is never served: the command line uses
    // the API server with the user's own credentials.
    let api = spawn_api(listener, &cluster, &assembled, ObjectApi::Off, &stop_rx);
    // Warm: every replica compiles its plugins up front, so a standby
    // takes over in seconds.
    let (loaded, failures) = assembled.registry.preload().await;
    for (name, error) in &failures {
        tracing::error!(plugin = %name, %error, "plugin failed to load; rollouts using it will report it");
    }
    println!(
        "weir controller {} on Kubernetes (instance id {:?}), {loaded} plugins ready — /metrics at http://{address}",
        options.identity, options.instance_id
    );
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let elector = LeaderElector::new(
        cluster.clone(),
        &options.lease_namespace,
        "weir-controller",
        options.identity.clone(),
        std::time::Duration::from_secs(15),
    );
    let election = tokio::spawn(elector.run(leading_tx, stopped(&stop_rx)));
    let terms = async {
        loop {
            // Follow until elected.
            while !*leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    return;
                }
            }
            println!("{} leads: reconciling", options.identity);
            let mut lost = leading.clone();
            assembled
                .new_controller()
                .cancel_in_flight_on_stop()
                .run(async move {
                    while *lost.borrow_and_update() {
                        if lost.changed().await.is_err() {
                            return;
                        }
                    }
                })
                .await;
            println!("{} no longer leads: stopped reconciling", options.identity);
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = terms => {}
    }
    println!("shutting down: releasing the lease");
    let _ = stop_tx.send(true);
    let _ = election.await;
    let _ = api.await;
    Ok(())
}
