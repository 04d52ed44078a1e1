//! Figure 5 of docs/benchmarks.md: 1,000 Rollouts through a full 5-step
//! canary (setWeight 20, pause 0s, setWeight 50, pause 0s, setWeight 80,
//! then promotion) on the embedded store (redb, every batch fsync'd), each
//! through the real Istio router in the sandbox, with the share of the time
//! spent in plugin calls.
//!
//! Also times the first deploy of the fleet and prints resident memory
//! per rollout. `WEIR_FLEET_ROLLOUTS=10000` for the large fleet;
//! `WEIR_FLEET_WORKERS` for more or fewer reconciles in flight (8).
//!
//! Figure 8: API requests per steady-state reconcile on the Kubernetes
//! backend, counted by the simulated API server (a mock: no API server runs
//! here) for settled Istio canaries resynced every 200 ms.
//!
//! Run: `scripts/build-plugins.sh && cargo bench --bench fleet`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir::cluster::{Cluster, ClusterError, DurableCluster, MemoryCluster, ObjectKey, manifests};
use weir::controller::status::RolloutStatus;
use weir::controller::{ControllerSettings, Outcome, Reconcile, assemble};
use weir_e2e::controller::{config, istio_objects, istio_routing, rollout};

/// The allocator the `weir` binary runs on, so the figures are its.
#[global_allocator]
static GLOBAL: weir::Allocator = weir::Allocator;

/// How many rollouts (`WEIR_FLEET_ROLLOUTS`, default 1,000).
fn rollouts() -> usize {
    std::env::var("WEIR_FLEET_ROLLOUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}
/// Reconciles in flight at once (`WEIR_FLEET_WORKERS`, default 8). The
/// embedded store commits the batches that arrive during a commit together,
/// so more writers in flight share more of each fsync.
fn workers() -> usize {
    std::env::var("WEIR_FLEET_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}

const STEPS: &str = "        - setWeight: 20
        - pause: {duration: 0s}
        - setWeight: 50
        - pause: {duration: 0s}
        - setWeight: 80";

/// Times every reconcile.
struct Timed {
    inner: Arc<dyn Reconcile>,
    nanos: AtomicU64,
    count: AtomicU64,
}

#[async_trait::async_trait]
impl Reconcile for Timed {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Option<Outcome>, ClusterError> {
        let started = Instant::now();
        let result = self.inner.reconcile(key).await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        result
    }
}

fn objects(version: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("dir");
    let mut text = String::new();
    for i in 0..rollouts() {
        let name = format!("r{i}");
        if version == "1" {
            text.push_str(&istio_objects(&name));
            text.push_str("\n---\n");
        }
        text.push_str(&rollout(
            &name,
            &format!("app:{version}"),
            &istio_routing(&name),
            STEPS,
        ));
        text.push_str("\n---\n");
    }
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, text).expect("write");
    manifests::read(&path).expect("manifests")
}

/// The names of the rollouts not yet `done`.
async fn not_done(
    cluster: &dyn Cluster,
    done: &impl Fn(&RolloutStatus) -> bool,
) -> std::collections::HashSet<String> {
    let listed = cluster
        .list("argoproj.io", "Rollout", "shop", &[])
        .await
        .expect("list");
    assert_eq!(listed.len(), rollouts(), "every rollout was applied");
    listed
        .iter()
        .filter(|r| !done(&RolloutStatus::of(r)))
        .filter_map(|r| r.pointer("/metadata/name")?.as_str().map(str::to_string))
        .collect()
}

/// Waits until every rollout is `done`. The fleet is listed once; after
/// that a rollout is read again only when the store says it changed.
/// (Listing the whole fleet on a timer, as this bench did, cost as much as
/// the fleet is large each time: at 10,000 it took a share of the two
/// cores the controller is measured on.)
async fn wait_for_all(cluster: &dyn Cluster, done: impl Fn(&RolloutStatus) -> bool) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = cluster.watch().expect("the store has a watch");
    let mut pending = not_done(cluster, &done).await;
    while !pending.is_empty() {
        match events.recv().await {
            Ok(event) if event.key.kind == "Rollout" && pending.contains(&event.key.name) => {
                let rollout = cluster.get(&event.key).await.expect("get");
                if done(&RolloutStatus::of(&rollout)) {
                    pending.remove(&event.key.name);
                }
            }
            Ok(_) => {}
            // This bench fell behind the store: read the whole fleet again.
            Err(RecvError::Lagged(_)) => pending = not_done(cluster, &done).await,
            Err(RecvError::Closed) => panic!("the store's watch closed"),
        }
    }
}

/// Time spent in plugin calls so far, and how many succeeded.
async fn plugin_totals(registry: &weir::controller::PluginRegistry) -> (Duration, u64) {
    let loaded = registry.loaded().await;
    let time = loaded
        .iter()
        .flat_map(|(_, _, s)| s.calls.values().map(|c| c.total))
        .sum();
    let calls = loaded.iter().map(|(_, _, s)| s.count("ok")).sum();
    (time, calls)
}

/// A tokio runtime with a worker per core of the 2-core machine.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

fn fleet(_c: &mut Criterion) {
    let runtime = two_workers();
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("dir");
        // WEIR_FLEET_STORE=memory runs the same fleet on the in-memory store,
        // to split the store's cost from the controller's and the plugins'.
        let in_memory = std::env::var("WEIR_FLEET_STORE").as_deref() == Ok("memory");
        let cluster: Arc<dyn Cluster> = if in_memory {
            Arc::new(MemoryCluster::new())
        } else {
            Arc::new(DurableCluster::open(&dir.path().join("fleet.redb")).expect("store"))
        };
        let mut settings = config();
        settings.settings = ControllerSettings {
            workers: workers(),
            resync: Duration::from_secs(600),
            ..ControllerSettings::default()
        };
        let assembled = assemble(cluster.clone(), settings.clone()).await.expect("assemble");
        let registry = assembled.registry.clone();
        let timed = Arc::new(Timed {
            inner: assembled.reconciler.clone(),
            nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        });
        let controller = weir::controller::Controller::new(
            cluster.clone(),
            timed.clone(),
            assembled.metrics.clone(),
            settings.settings.clone(),
        );
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let mut readiness_stop = stopped.clone();
        let _readiness = tokio::spawn(weir::controller::readiness::run(cluster.clone(), async move {
            let _ = readiness_stop.changed().await;
        }));
        let task = tokio::spawn(controller.run(async move {
            let _ = stopped.changed().await;
        }));

        // The manifests are written and parsed before the clock starts: that
        // is the bench's own work (and a client's), not the controller's.
        let reading = Instant::now();
        let first = objects("1");
        let first_read = reading.elapsed();
        let reading = Instant::now();
        let second = objects("2");
        let second_read = reading.elapsed();
        let deploying = Instant::now();
        manifests::apply(cluster.as_ref(), first).await.expect("v1");
        let first_applied = deploying.elapsed();
        wait_for_all(cluster.as_ref(), |s| s.phase.as_deref() == Some("Healthy")).await;
        let first_deploy = deploying.elapsed();
        let first_reconciles = timed.count.load(Ordering::Relaxed);
        let first_reconcile_time = Duration::from_nanos(timed.nanos.load(Ordering::Relaxed));
        let (plugin_before, calls_before) = plugin_totals(&registry).await;
        timed.nanos.store(0, Ordering::Relaxed);
        timed.count.store(0, Ordering::Relaxed);

        let started = Instant::now();
        manifests::apply(cluster.as_ref(), second).await.expect("v2");
        let applied = started.elapsed();
        wait_for_all(cluster.as_ref(), |s| {
            s.observed_generation.as_deref() == Some("2")
                && s.phase.as_deref() == Some("Healthy")
                && s.current_pod_hash == s.stable_rs
                && s.step_index() == 5
        })
        .await;
        let wall = started.elapsed();
        let _ = stop.send(true);
        let _ = task.await;

        let (plugin_after, calls_after) = plugin_totals(&registry).await;
        let plugin = plugin_after.saturating_sub(plugin_before);
        let reconcile = Duration::from_nanos(timed.nanos.load(Ordering::Relaxed));
        let reconciles = timed.count.load(Ordering::Relaxed);
        let n = rollouts();
        println!(
            "[5] first deploy of {n} rollouts: {first_deploy:?} wall (target <= 20s for 10,000; the objects applied in {first_applied:?}; its manifests written and parsed beforehand in {first_read:?}, the new version's in {second_read:?}); {first_reconciles} reconciles, {first_reconcile_time:?} summed"
        );
        println!(
            "[5] resident memory after the fleet: {:.0} KiB per rollout ({:.1} MiB in all)",
            weir_e2e::rss_bytes() as f64 / 1024.0 / n as f64,
            weir_e2e::rss_bytes() as f64 / (1 << 20) as f64
        );
        println!(
            "[5] {n} rollouts through a 5-step canary on the {} store: {wall:?} wall on 2 cores \
             (target <= 20s for 10,000; apply of the new version {applied:?}); {reconciles} reconciles, {} plugin calls",
            if in_memory { "in-memory" } else { "embedded (redb)" },
            calls_after.saturating_sub(calls_before)
        );
        println!(
            "[5] time in plugin calls {plugin:?} of {reconcile:?} summed over reconciles: {:.0}%",
            100.0 * plugin.as_secs_f64() / reconcile.as_secs_f64().max(f64::EPSILON)
        );
    });
}

/// Rollouts in the Kubernetes figure.
const KUBE_ROLLOUTS: usize = 20;

fn kubernetes_steady_state(_c: &mut Criterion) {
    use weir::cluster::KubeCluster;
    use weir_e2e::fake_apiserver::FakeApiServer;
    let runtime = two_workers();
    runtime.block_on(async {
        let server = FakeApiServer::new();
        let admin = KubeCluster::new(server.admin_client());
        let mut text = String::new();
        for i in 0..KUBE_ROLLOUTS {
            let name = format!("k{i}");
            text.push_str(&istio_objects(&name));
            text.push_str("\n---\n");
            text.push_str(&rollout(&name, "app:1", &istio_routing(&name), STEPS));
            text.push_str("\n---\n");
        }
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k.yaml");
        std::fs::write(&path, text).expect("write");
        manifests::apply(&admin, manifests::read(&path).expect("manifests"))
            .await
            .expect("apply");
        let cluster = Arc::new(KubeCluster::new(server.client()));
        cluster.start_controller_watches("weir-system");
        let mut settings = config();
        settings.settings = ControllerSettings {
            resync: Duration::from_millis(200),
            ..ControllerSettings::default()
        };
        let assembled = assemble(cluster.clone(), settings).await.expect("assemble");
        let metrics = assembled.metrics.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(assembled.controller.run(async move {
            let _ = stopped.changed().await;
        }));
        let healthy = |r: &serde_json::Value| {
            RolloutStatus::of(r).phase.as_deref() == Some("Healthy")
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = admin
                .list("argoproj.io", "Rollout", "shop", &[])
                .await
                .expect("list");
            if listed.len() == KUBE_ROLLOUTS && listed.iter().all(healthy) {
                break;
            }
            assert!(Instant::now() < deadline, "the rollouts did not settle");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (reconciles, requests) =
            weir_e2e::controller::requests_during(&server, &metrics, Duration::from_secs(5)).await;
        let _ = stop.send(true);
        let _ = task.await;
        let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
        for request in &requests {
            let path = request.split('?').next().unwrap_or(request);
            let method = path.split(' ').next().unwrap_or("");
            let segments: Vec<&str> = path.split('/').collect();
            let plural = segments
                .iter()
                .position(|s| *s == "namespaces")
                .and_then(|i| segments.get(i + 2))
                .copied()
                .unwrap_or("other");
            *by_kind.entry(format!("{method} {plural}")).or_default() += 1;
        }
        println!(
            "[8] Kubernetes backend, steady state: {:.2} API requests per reconcile \
             ({} requests over {reconciles} reconciles of {KUBE_ROLLOUTS} settled Istio canaries; \
             watches and Lease renewals not counted; target <= 1; before the watch cache: one GET per object read) {by_kind:?}",
            requests.len() as f64 / reconciles.max(1) as f64,
            requests.len()
        );
    });
}

criterion_group!(benches, fleet, kubernetes_steady_state);
criterion_main!(benches);
