//! A controller running on a store inside the test process, with helpers to
//! apply manifests and wait for rollouts.

use crate::fake_apiserver::FakeApiServer;
use crate::{cache_dir, plugin_wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, KubeCluster, ObjectKey, manifests};
use weir::controller::actions::rollout_key;
use weir::controller::status::RolloutStatus;
use weir::controller::{
    Assembled, ControllerConfig, ControllerSettings, Metrics, Reconcile, assemble,
};
use weir::plugin::{EngineSettings, RuntimeConfig};

/// The directory of the built plugin components.
pub fn plugins_dir() -> std::path::PathBuf {
    plugin_wasm("weir-plugin-istio")
        .parent()
        .map(|p| p.to_path_buf())
        .expect("plugin directory")
}

/// The controller's configuration for tests.
pub fn config() -> ControllerConfig {
    ControllerConfig {
        plugins_dir: plugins_dir(),
        config_namespace: "weir-system".into(),
        settings: ControllerSettings {
            resync: Duration::from_secs(2),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..ControllerSettings::default()
        },
        runtime: RuntimeConfig {
            engine: EngineSettings::default(),
            cache_dir: Some(cache_dir()),
            bundle: None,
            recorder: None,
        },
    }
}

/// Where a controller test runs: the embedded store (redb, with the
/// ReplicaSet-controller stand-in), or the simulated Kubernetes API server
/// through kube-rs (the controller as Weir's ServiceAccount under
/// `deploy/weir.yaml`'s RBAC, the test's own set-up as a cluster admin).
/// Chosen by [`BACKEND_VAR`], so one suite runs on both.
pub enum Backend {
    /// redb in a temporary directory.
    Embedded {
        /// Kept for the store's lifetime.
        _dir: tempfile::TempDir,
        /// The store.
        cluster: Arc<dyn Cluster>,
    },
    /// The simulated API server.
    Simulated {
        /// The server, for the test to look into.
        server: FakeApiServer,
        /// A cluster admin's view, for set-up and checks.
        admin: Arc<dyn Cluster>,
    },
}

/// `WEIR_E2E_BACKEND`: `redb` (the default), `kubernetes`, or
/// `kubernetes-argo-crds` (the simulation with Argo Rollouts' own CRDs).
pub const BACKEND_VAR: &str = "WEIR_E2E_BACKEND";

impl Backend {
    /// The backend [`BACKEND_VAR`] names.
    pub fn from_env() -> Backend {
        match std::env::var(BACKEND_VAR).as_deref() {
            Ok("kubernetes") => Backend::simulated(),
            Ok("kubernetes-argo-crds") => {
                Backend::simulated_on(FakeApiServer::new().with_argo_crds())
            }
            Ok("redb") | Err(_) => Backend::embedded(),
            Ok(other) => {
                panic!("{BACKEND_VAR}={other}: use redb, kubernetes or kubernetes-argo-crds")
            }
        }
    }

    /// A fresh embedded store.
    pub fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("dir");
        let cluster =
            weir::cluster::DurableCluster::open(&dir.path().join("store.redb")).expect("store");
        Backend::Embedded {
            _dir: dir,
            cluster: Arc::new(cluster),
        }
    }

    /// A fresh simulated API server with Weir's CRDs.
    pub fn simulated() -> Backend {
        Self::simulated_on(FakeApiServer::new())
    }

    /// The simulated API server `server`.
    pub fn simulated_on(server: FakeApiServer) -> Backend {
        let admin: Arc<dyn Cluster> = Arc::new(KubeCluster::new(server.admin_client()));
        Backend::Simulated { server, admin }
    }

    /// Extends Weir's ClusterRole as an operator does for a third-party
    /// plugin's grant (the embedded store has no RBAC: the registration's
    /// grant is the only check there).
    pub fn grant(&self, group: &str, resources: &[&str], verbs: &[&str]) {
        if let Backend::Simulated { server, .. } = self {
            server.grant(group, resources, verbs);
        }
    }

    /// The test's view: the store, or a cluster admin on the API server.
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        match self {
            Backend::Embedded { cluster, .. } => cluster.clone(),
            Backend::Simulated { admin, .. } => admin.clone(),
        }
    }

    /// What the controller runs on: the store, or a client with Weir's
    /// ServiceAccount watching what `weir run --kubernetes` watches.
    pub fn controller_cluster(&self) -> Arc<dyn Cluster> {
        match self {
            Backend::Embedded { cluster, .. } => cluster.clone(),
            Backend::Simulated { server, .. } => {
                let cluster = Arc::new(KubeCluster::new(server.client()));
                cluster.start_controller_watches("weir-system");
                cluster
            }
        }
    }
}

/// A running controller.
pub struct Harness {
    /// The test's view of the store (see [`Backend::cluster`]).
    pub cluster: Arc<dyn Cluster>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    readiness: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Starts the real controller over `cluster` (an embedded store).
    pub async fn start(cluster: Arc<dyn Cluster>) -> Self {
        let assembled = assemble(cluster.clone(), config()).await.expect("assemble");
        Self::start_assembled(cluster, assembled, None).await
    }

    /// Starts the real controller on `backend`.
    pub async fn on(backend: &Backend) -> Self {
        let cluster = backend.controller_cluster();
        let assembled = assemble(cluster.clone(), config()).await.expect("assemble");
        Self::on_assembled(backend, cluster, assembled, None).await
    }

    /// Starts the controller assembled over `cluster` (from
    /// [`Backend::controller_cluster`]) on `backend`, reconciling through
    /// `reconciler` when given.
    pub async fn on_assembled(
        backend: &Backend,
        cluster: Arc<dyn Cluster>,
        assembled: Assembled,
        reconciler: Option<Arc<dyn Reconcile>>,
    ) -> Self {
        let embedded = matches!(backend, Backend::Embedded { .. });
        Self::start_with(backend.cluster(), cluster, assembled, reconciler, embedded).await
    }

    /// Starts the controller over `cluster` (an embedded store, with the
    /// stand-in for the ReplicaSet controller that makes pods ready),
    /// reconciling through `reconciler` when given.
    pub async fn start_assembled(
        cluster: Arc<dyn Cluster>,
        assembled: Assembled,
        reconciler: Option<Arc<dyn Reconcile>>,
    ) -> Self {
        Self::start_with(cluster.clone(), cluster, assembled, reconciler, true).await
    }

    /// Starts the controller over a Kubernetes API server (whose own, here
    /// simulated, controllers write ReplicaSets' status).
    pub async fn start_on_kubernetes(cluster: Arc<dyn Cluster>, assembled: Assembled) -> Self {
        Self::start_with(cluster.clone(), cluster, assembled, None, false).await
    }

    async fn start_with(
        view: Arc<dyn Cluster>,
        cluster: Arc<dyn Cluster>,
        assembled: Assembled,
        reconciler: Option<Arc<dyn Reconcile>>,
        simulate_readiness: bool,
    ) -> Self {
        let metrics = assembled.metrics.clone();
        let controller = match reconciler {
            Some(r) => weir::controller::Controller::new(
                cluster.clone(),
                r,
                metrics.clone(),
                config().settings,
            ),
            None => assembled.controller,
        };
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let readiness = simulate_readiness.then(|| {
            let mut rx = rx.clone();
            tokio::spawn(weir::controller::readiness::run(
                cluster.clone(),
                async move {
                    let _ = rx.changed().await;
                },
            ))
        });
        let task = tokio::spawn(controller.run(async move {
            let _ = rx.changed().await;
        }));
        Harness {
            cluster: view,
            metrics,
            stop,
            task,
            readiness,
        }
    }

    /// Stops the loop after its in-flight reconciles.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(readiness) = self.readiness {
            let _ = readiness.await;
        }
    }

    /// Applies YAML manifests.
    pub async fn apply(&self, yaml: &str) {
        apply(self.cluster.as_ref(), yaml).await;
    }

    /// The status of Rollout `shop/name`.
    pub async fn status(&self, name: &str) -> RolloutStatus {
        status(self.cluster.as_ref(), name).await
    }

    /// Waits (up to `secs`) until `done` holds for Rollout `shop/name`.
    pub async fn wait(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&RolloutStatus) -> bool,
    ) -> RolloutStatus {
        wait(self.cluster.as_ref(), name, secs, what, done).await
    }

    /// Deploys Rollout `shop/name` with image `app:1` and waits for it to
    /// be Healthy (its first deploy), then applies `app:2`: the canary
    /// starts. Returns the status after the first deploy.
    pub async fn deploy_then_update(
        &self,
        name: &str,
        routing: &str,
        steps: &str,
    ) -> RolloutStatus {
        let first = self.deploy(name, routing, steps).await;
        self.apply(&rollout(name, "app:2", routing, steps)).await;
        first
    }

    /// Deploys Rollout `shop/name` with image `app:1` and waits for it to
    /// be Healthy (its first deploy); returns that status.
    pub async fn deploy(&self, name: &str, routing: &str, steps: &str) -> RolloutStatus {
        self.apply(&rollout(name, "app:1", routing, steps)).await;
        self.wait(name, 30, "first deploy", |s| {
            s.phase.as_deref() == Some("Healthy")
        })
        .await
    }

    /// Waits (up to 30 s) until Rollout `shop/name` is in `phase`.
    pub async fn wait_phase(&self, name: &str, phase: &str) -> RolloutStatus {
        self.wait(name, 30, phase, |s| s.phase.as_deref() == Some(phase))
            .await
    }

    /// Waits (up to 30 s) until Rollout `shop/name` is aborted (Degraded).
    pub async fn wait_aborted(&self, name: &str) -> RolloutStatus {
        self.wait(name, 30, "aborted", |s| {
            s.abort && s.phase.as_deref() == Some("Degraded")
        })
        .await
    }

    /// Waits (up to 30 s) until `done` holds for object `shop/name`.
    pub async fn wait_for(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let object = self.get(api_version, kind, name).await;
            if done(&object) {
                return object;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {name}: timed out waiting for {what}; last: {object}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 30 s) until object `shop/name` exists.
    pub async fn wait_exists(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let key = ObjectKey::new(api_version, kind, "shop", name);
        loop {
            match self.cluster.get(&key).await {
                Ok(object) => return object,
                Err(e) => assert!(Instant::now() < deadline, "{kind} {name}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An object from the store.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> serde_json::Value {
        self.cluster
            .get(&ObjectKey::new(api_version, kind, "shop", name))
            .await
            .unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
    }
}

/// Applies YAML manifests to `cluster`.
pub async fn apply(cluster: &dyn Cluster, yaml: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, yaml).expect("write");
    let objects = manifests::read(&path).expect("manifests");
    manifests::apply(cluster, objects).await.expect("apply");
}

/// The status of Rollout `shop/name`.
pub async fn status(cluster: &dyn Cluster, name: &str) -> RolloutStatus {
    cluster
        .get(&rollout_key("shop", name))
        .await
        .map(|o| RolloutStatus::of(&o))
        .unwrap_or_default()
}

/// Waits (up to `secs`) until `done` holds for Rollout `shop/name`; panics
/// with the last status otherwise.
pub async fn wait(
    cluster: &dyn Cluster,
    name: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(cluster, name).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name}: {what}; last status: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stable and canary Services of app `name` in namespace `shop`
/// (`<name>-stable`, `<name>-canary`, port 80), as YAML documents.
pub fn services(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}-stable, namespace: shop}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}-canary, namespace: shop}}
spec: {{selector: {{app: {name}}}, ports: [{{port: 80, targetPort: 8080}}]}}
"#
    )
}

/// The registration ConfigMap (`weir-system/argo-rollouts-config`) with
/// each plugin list given: its key (`stepPlugins`...) and its YAML items,
/// indented four spaces.
pub fn plugin_registration(lists: &[(&str, &str)]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argo-rollouts-config, namespace: weir-system}\ndata:\n",
    );
    for (key, items) in lists {
        yaml.push_str(&format!("  {key}: |\n{}\n", items.trim_end()));
    }
    yaml
}

/// Services and an Istio VirtualService for app `name` in namespace `shop`.
pub fn istio_objects(name: &str) -> String {
    format!(
        r#"{}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}]
  http:
    - name: primary
      route:
        - destination: {{host: {name}-stable}}
          weight: 100
        - destination: {{host: {name}-canary}}
          weight: 0
"#,
        services(name)
    )
}

/// A canary Rollout `shop/name` running `image`, with `routing` (the YAML of
/// `trafficRouting`'s contents, indented for it) and `steps` (YAML list items).
pub fn rollout(name: &str, image: &str, routing: &str, steps: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
  strategy:
    canary:
      canaryService: {name}-canary
      stableService: {name}-stable
      trafficRouting:
{routing}
      steps:
{steps}
"#
    )
}

/// `trafficRouting` for the shipped Istio router over [`istio_objects`].
pub fn istio_routing(name: &str) -> String {
    format!("        istio:\n          virtualService: {{name: {name}, routes: [primary]}}")
}

/// The weights of the `primary` route: (stable, canary).
pub fn primary_weights(vs: &serde_json::Value) -> (i64, i64) {
    let route = &vs["spec"]["http"][0]["route"];
    (
        route[0]["weight"].as_i64().unwrap_or(-1),
        route[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// The registration ConfigMap: the shipped web provider may reach `port`
/// on loopback; `extra` is more YAML list items for metricProviderPlugins.
pub fn web_registration(port: u16, extra: &str) -> String {
    plugin_registration(&[(
        "metricProviderPlugins",
        &format!("    - name: web\n      http: {{allowHosts: [\"127.0.0.1:{port}\"]}}\n{extra}"),
    )])
}

/// AnalysisTemplate `shop/name`: metric `name`, `count` measurements of
/// `{"rate": ...}` from `port` on loopback 200 ms apart, passing at 0.95.
pub fn rate_template(name: &str, port: u16, count: u32) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: {name}, namespace: shop}}
spec:
  metrics:
    - name: {name}
      interval: 200ms
      count: {count}
      successCondition: result >= 0.95
      failureLimit: 0
      provider:
        web:
          url: "http://127.0.0.1:{port}/rate"
          jsonPath: "{{$.rate}}"
"#
    )
}

/// Reconciles finished so far, whatever their outcome
/// (`weir_reconciles_total`).
pub fn reconciles(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|line| line.starts_with("weir_reconciles_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What a controller sent to `server` while `window` passed: the reconciles
/// it finished and its requests, except watches (long-lived, per kind, not
/// per reconcile) and Lease renewals (per process).
pub async fn requests_during(
    server: &FakeApiServer,
    metrics: &Metrics,
    window: Duration,
) -> (u64, Vec<String>) {
    let (sent_before, reconciled_before) = (server.requests().len(), reconciles(metrics));
    tokio::time::sleep(window).await;
    let requests = server
        .requests()
        .into_iter()
        .skip(sent_before)
        .filter(|r| !r.contains("watch=true") && !r.contains("/leases"))
        .collect();
    (reconciles(metrics) - reconciled_before, requests)
}

/// The real controller on a backend with its HTTP endpoint (object API,
/// shadow reports, dashboard) served on loopback under a bearer token, as
/// `weir run` serves it.
pub struct Served {
    /// The controller.
    pub h: Harness,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The token the endpoint accepts.
    pub token: String,
    /// The controller's plugins.
    pub registry: Arc<weir::controller::registry::PluginRegistry>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    /// Starts the controller on `backend` with `config` and serves its endpoint.
    pub async fn start(backend: &Backend, config: ControllerConfig, token: &str) -> Self {
        let cluster = backend.controller_cluster();
        let assembled = assemble(cluster.clone(), config).await.expect("assemble");
        let registry = assembled.registry.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(weir::api::serve(
            listener,
            Arc::new(weir::api::ApiState {
                cluster: cluster.clone(),
                metrics: assembled.metrics.clone(),
                object_api: weir::api::ObjectApi::Token(token.to_string()),
                registry: Some(registry.clone()),
            }),
            async move {
                let _ = stopped.await;
            },
        ));
        let h = Harness::on_assembled(backend, cluster, assembled, None).await;
        Served {
            h,
            base,
            token: token.to_string(),
            registry,
            stop,
        }
    }

    /// Stops the endpoint and the controller.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.h.stop().await;
    }
}

/// AnalysisTemplate `shop/success-rate`: the web provider reads `$.rate`
/// from a loopback server on `port` twice, 200 ms apart, and succeeds at
/// 0.95 or more.
pub fn analysis_template(port: u16) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate, namespace: shop}}
spec:
  metrics:
    - name: success-rate
      interval: 200ms
      count: 2
      successCondition: result >= 0.95
      failureLimit: 0
      provider:
        web:
          url: "http://127.0.0.1:{port}/rate"
          jsonPath: "{{$.rate}}"
"#
    )
}
