//! A controller running on a store inside the test process, with helpers to
//! apply manifests and wait for rollouts.

use crate::{cache_dir, plugin_wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, ObjectKey, manifests};
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
        config_namespace: "argo-rollouts".into(),
        settings: ControllerSettings {
            resync: Duration::from_secs(2),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..ControllerSettings::default()
        },
        runtime: RuntimeConfig {
            engine: EngineSettings::default(),
            cache_dir: Some(cache_dir()),
        },
    }
}

/// A running controller.
pub struct Harness {
    /// The store.
    pub cluster: Arc<dyn Cluster>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    readiness: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// Starts the real controller over `cluster`.
    pub async fn start(cluster: Arc<dyn Cluster>) -> Self {
        let assembled = assemble(cluster.clone(), config()).await.expect("assemble");
        Self::start_assembled(cluster, assembled, None).await
    }

    /// Starts the controller over `cluster` (an embedded store, with the
    /// stand-in for the ReplicaSet controller that makes pods ready),
    /// reconciling through `reconciler` when given.
    pub async fn start_assembled(
        cluster: Arc<dyn Cluster>,
        assembled: Assembled,
        reconciler: Option<Arc<dyn Reconcile>>,
    ) -> Self {
        Self::start_with(cluster, assembled, reconciler, true).await
    }

    /// Starts the controller over a Kubernetes API server (whose own, here
    /// simulated, controllers write ReplicaSets' status).
    pub async fn start_on_kubernetes(cluster: Arc<dyn Cluster>, assembled: Assembled) -> Self {
        Self::start_with(cluster, assembled, None, false).await
    }

    async fn start_with(
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
            cluster,
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
        self.apply(&rollout(name, "app:1", routing, steps)).await;
        let first = self
            .wait(name, 30, "first deploy", |s| {
                s.phase.as_deref() == Some("Healthy")
            })
            .await;
        self.apply(&rollout(name, "app:2", routing, steps)).await;
        first
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

/// Services and an Istio VirtualService for app `name` in namespace `shop`.
pub fn istio_objects(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}-stable, namespace: shop}}
spec: {{selector: {{app: {name}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}-canary, namespace: shop}}
spec: {{selector: {{app: {name}}}}}
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
"#
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
