//! The `weir` command line.

mod demo;
mod progress;
mod run;
mod sandbox_demo;
mod scaffold;
mod shadow_cli;
mod store;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use weir::controller::actions::{Action, act};

/// Weir: progressive delivery with sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The main demo: two canary rollouts on the embedded store, one through
    /// Istio with a web analysis on loopback, one whose router plugin is faulty.
    Demo {
        /// Directory holding the built plugin components.
        #[arg(long, default_value = "target/wasm32-wasip2/plugin")]
        plugins: PathBuf,
        /// Instead, exercise one plugin through the sandbox, faults included.
        #[arg(long)]
        sandbox: bool,
        /// After the demo, keep the controller and its dashboard running
        /// until Ctrl-C.
        #[arg(long, conflicts_with = "sandbox")]
        hold: bool,
    },
    /// Run the controller on the embedded store, with its API and /metrics on loopback.
    Run {
        /// The embedded store (a redb file).
        #[arg(long, default_value = DEFAULT_STORE)]
        store: PathBuf,
        /// Manifests (a file or a directory of .yaml/.json) to apply first.
        #[arg(long)]
        manifests: Option<PathBuf>,
        /// Directory holding the shipped plugin components (default: those
        /// bundled into this weir by `weir plugin bundle`, else
        /// target/wasm32-wasip2/plugin).
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Address of the API and /metrics (loopback by default).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        /// Namespace of the argo-rollouts-config ConfigMap.
        #[arg(long, default_value = "argo-rollouts")]
        config_namespace: String,
        /// Reconciles in flight at once (Argo Rollouts' `--rollout-threads`).
        #[arg(long, default_value_t = weir::controller::DEFAULT_WORKERS)]
        workers: usize,
        /// Run against the Kubernetes cluster of this kubeconfig instead of the embedded store.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Run against Kubernetes with the default configuration (KUBECONFIG, ~/.kube/config, or in-cluster).
        #[arg(long, conflicts_with = "kubeconfig")]
        kubernetes: bool,
        /// Argo's controller instance id: reconcile only Rollouts labelled
        /// argo-rollouts.argoproj.io/controller-instance-id=ID (without it: only unlabelled ones).
        #[arg(long)]
        instance_id: Option<String>,
        /// Namespace of the leader-election Lease (Kubernetes).
        #[arg(long, default_value = "argo-rollouts")]
        lease_namespace: String,
        /// This replica's identity in the election (default: $POD_NAME or the host name).
        #[arg(long)]
        identity: Option<String>,
        /// Largest AnalysisRun the controller writes, in bytes: longer values
        /// and messages are cut, the oldest measurements dropped (visibly).
        #[arg(long, default_value_t = weir::analysis::fit::DEFAULT_MAX_RUN_BYTES)]
        max_run_bytes: usize,
        /// Serve only /metrics and /healthz: no object API (then --listen may
        /// be a non-loopback address). On Kubernetes it is never served.
        #[arg(long)]
        no_object_api: bool,
        /// Where the flight recorder keeps recordings of faulted (and
        /// sampled) plugin calls (default: weir/recordings under the user's
        /// state directory).
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Also record one in this many healthy plugin calls (0: faults only).
        #[arg(long, default_value_t = 0)]
        record_sample: u64,
        /// Which compilers compile a plugin with no compiled code on hand
        /// (neither bundled nor cached): tiered (Winch at once, then
        /// Cranelift in the background), cranelift, or winch.
        #[arg(long, default_value = "tiered")]
        compiler: weir::plugin::Compiler,
        /// Record nothing.
        #[arg(long, conflicts_with_all = ["record_dir", "record_sample"])]
        no_record: bool,
    },
    /// Create or update objects from manifests (a file or a directory).
    Apply {
        /// The manifests.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Print the manifests that run Weir on Kubernetes (deploy/weir.yaml).
    Manifests {
        /// The controller's image (built by deploy/Containerfile; see
        /// docs/kubernetes.md), instead of the one deploy/weir.yaml names.
        #[arg(long)]
        image: Option<String>,
    },
    /// Print the argoproj.io CustomResourceDefinitions Weir uses (deploy/crds.yaml).
    Crd,
    /// Show objects.
    Get {
        #[command(subcommand)]
        command: GetCommand,
    },
    /// Promote a rollout: end its pause, or skip its current step (--full: all steps).
    Promote {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Skip every remaining step.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Abort a rollout: all traffic back to stable, the canary scaled down.
    Abort {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// Check manifests offline (a file or a directory): each Rollout and
    /// AnalysisTemplate as the controller would read it; exit 1 on any error.
    Lint {
        /// The manifests.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Roll a rollout's template back to an earlier revision (default: the previous one).
    Undo {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The revision to go back to (its ReplicaSet's rollout.argoproj.io/revision).
        #[arg(long)]
        to_revision: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Pause a rollout where it is (spec.paused), until `weir promote`.
    Pause {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// Change a rollout's pod template.
    Set {
        #[command(subcommand)]
        command: SetCommand,
    },
    /// Watch a rollout until it is Healthy (exit 0) or Degraded (exit 1),
    /// or the timeout passes (exit 1): for CI pipelines.
    Status {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// How long to watch (e.g. 60s, 5m); 0 watches until it settles.
        #[arg(short, long, default_value = "0s")]
        timeout: String,
        #[command(flatten)]
        target: Target,
    },
    /// List objects.
    List {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Restart a rollout's pods: those created before now (or now plus
    /// --in) are evicted a few at a time, as `kubectl argo rollouts restart`.
    Restart {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Restart this long from now (e.g. 30s, 5m) instead of now.
        #[arg(long = "in", default_value = "0s")]
        delay: String,
        #[command(flatten)]
        target: Target,
    },
    /// Stop an AnalysisRun: it ends with what it has measured.
    Terminate {
        #[command(subcommand)]
        command: TerminateCommand,
    },
    /// Retry an aborted rollout: its update runs again from the first step.
    Retry {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the embedded store lives unless told otherwise.
const DEFAULT_STORE: &str = ".weir/store.redb";

/// What a command works on: the embedded store (directly, or through the
/// controller running on it), or a Kubernetes cluster through its API
/// server with the user's own credentials.
#[derive(Args)]
struct Target {
    /// The embedded store.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Work on the Kubernetes cluster of this kubeconfig instead.
    #[arg(long, conflicts_with = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// Work on Kubernetes with the default configuration (KUBECONFIG,
    /// ~/.kube/config, or in-cluster).
    #[arg(long)]
    kubernetes: bool,
}

impl Target {
    /// Opens what the command works on.
    async fn open(&self) -> Result<std::sync::Arc<dyn weir::cluster::Cluster>> {
        let kube = match (&self.kubeconfig, self.kubernetes) {
            (Some(path), _) => run::KubeTarget::Kubeconfig(path.clone()),
            (None, true) => run::KubeTarget::Infer,
            (None, false) => return store::open(&self.store),
        };
        Ok(std::sync::Arc::new(run::connect(&kube).await?))
    }
}

#[derive(Subcommand)]
enum GetCommand {
    /// An AnalysisRun: its phase, and each metric's counts and latest value.
    #[command(name = "analysisrun", alias = "ar")]
    AnalysisRun {
        /// The AnalysisRun.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// An Experiment: its phase, its templates' ReplicaSets and its analyses.
    #[command(name = "experiment", alias = "exp")]
    Experiment {
        /// The Experiment.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// A rollout at a glance: steps, weights, analysis, errors.
    Rollout {
        /// The Rollout.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Keep watching: redraw in place whenever it changes.
        #[arg(short, long)]
        watch: bool,
        /// With --watch, stop after this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout_seconds: u64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum TerminateCommand {
    /// An Experiment (`spec.terminate`, as `kubectl argo rollouts terminate experiment`).
    #[command(name = "experiment", alias = "exp")]
    Experiment {
        /// The Experiment.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
    /// An AnalysisRun (`spec.terminate`, as `kubectl argo rollouts terminate analysisrun`).
    #[command(name = "analysisrun", alias = "ar")]
    AnalysisRun {
        /// The AnalysisRun.
        name: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum SetCommand {
    /// Set a container's image (CONTAINER=IMAGE): a new revision.
    Image {
        /// The Rollout.
        name: String,
        /// CONTAINER=IMAGE.
        assignment: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// The rollouts of a namespace: status, step, weight, replicas.
    Rollouts {
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a component's world, imports, exports, sha256 and size, and whether it is a valid Weir plugin.
    Inspect {
        /// The .wasm file.
        file: PathBuf,
        /// The registration's `limits:` block to inspect under, as JSON or
        /// YAML (default: the default limits).
        #[arg(long)]
        limits: Option<String>,
    },
    /// Run a plugin against fixtures in the sandbox the controller uses.
    /// Exit code 0: all passed; 1: a case failed; 2: the fixtures could not be read.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// A directory of fixture files (*.yaml), one case each.
        fixtures: PathBuf,
    },
    /// Run a recorded call again, offline, against the recorded build or
    /// another (--plugin), and show the difference in outcome and staged
    /// writes. Nothing is written and no request leaves the process.
    /// Exit code 0: the same as recorded; 1: different; 2: could not replay.
    Replay {
        /// The recording (a JSON file the flight recorder wrote).
        recording: PathBuf,
        /// Replay against this component instead of the recorded one.
        #[arg(long)]
        plugin: Option<PathBuf>,
    },
    /// A running controller's shadow report for plugin NAME: its
    /// candidate's runs, agreements and disagreements per method.
    ShadowReport {
        /// The plugin's registered name.
        name: String,
        /// The embedded store the controller (`weir run`) runs on.
        #[arg(long, default_value = DEFAULT_STORE)]
        store: PathBuf,
    },
    /// Switch plugin NAME's registration to its shadow candidate (pinned
    /// to the digest that was shadowed) once it has agreed on
    /// `shadow.promoteAfter` calls with no disagreement; otherwise refuse
    /// with the disagreements. Exit code 0: promoted; 1: refused.
    PromoteShadow {
        /// The plugin's registered name.
        name: String,
        /// The embedded store the controller (`weir run`) runs on.
        #[arg(long, default_value = DEFAULT_STORE)]
        store: PathBuf,
        /// Namespace of the argo-rollouts-config ConfigMap.
        #[arg(long, default_value = "argo-rollouts")]
        config_namespace: String,
    },
    /// Write a copy of this weir with the shipped plugins bundled into it,
    /// compiled ahead of time for this machine's CPU: one file that runs the
    /// controller and compiles nothing on its first start.
    Bundle {
        /// Directory holding the built shipped components.
        #[arg(long, default_value = "target/wasm32-wasip2/plugin")]
        plugins: PathBuf,
        /// Where to write the bundled executable.
        #[arg(long)]
        out: PathBuf,
    },
    /// Scaffold a new plugin crate that builds for wasm32-wasip2 and passes its own fixtures.
    New {
        /// `traffic-router`, `metric-provider` or `step-plugin`.
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// The plugin's name (becomes the crate and directory name).
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on the weir-plugin-sdk crate at this path (default: version 0.2 from crates.io).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[global_allocator]
static GLOBAL: weir::Allocator = weir::Allocator;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Plugin {
            command: PluginCommand::Inspect { file, limits },
        } => {
            let limits: weir::plugin::Limits = match limits {
                Some(text) => serde_yaml_ng::from_str(&text).context("--limits")?,
                None => weir::plugin::Limits::default(),
            };
            // The load path's own engine, cache, limits and checks.
            let runtime = weir::plugin::PluginRuntime::new(
                weir::plugin::RuntimeConfig::with_default_cache(),
                std::sync::Arc::new(weir::cluster::MemoryCluster::new()),
            )?;
            let report = runtime.inspect(&file.display().to_string(), limits).await;
            println!("file:    {}", file.display());
            println!("{report}");
            if report.verdict.is_err() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Test { plugin, fixtures },
        } => {
            let code = test_plugin(&plugin, &fixtures).await;
            std::process::exit(code);
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    kind,
                    name,
                    dir,
                    sdk,
                },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let created = scaffold::create(kind, &name, &dir, sdk.as_deref())?;
            println!("created {} ({})", created.display(), kind.label());
            println!(
                "next:\n  cd {}\n  cargo build --release --target wasm32-wasip2\n  weir plugin test target/wasm32-wasip2/release/{}.wasm fixtures",
                created.display(),
                scaffold::crate_name(&name).replace('-', "_")
            );
            Ok(())
        }
        Command::Plugin {
            command: PluginCommand::Replay { recording, plugin },
        } => {
            let code = replay_recording(&recording, plugin.as_deref()).await;
            std::process::exit(code);
        }
        Command::Plugin {
            command: PluginCommand::ShadowReport { name, store },
        } => shadow_cli::show(&store, &name).await,
        Command::Plugin {
            command:
                PluginCommand::PromoteShadow {
                    name,
                    store,
                    config_namespace,
                },
        } => {
            let promoted = shadow_cli::promote(&store, &name, &config_namespace).await?;
            std::process::exit(if promoted { 0 } else { 1 });
        }
        Command::Plugin {
            command: PluginCommand::Bundle { plugins, out },
        } => bundle(&plugins, &out),
        Command::Demo {
            plugins,
            sandbox,
            hold,
        } => {
            if sandbox {
                sandbox_demo::run(&plugins).await
            } else {
                demo::run(&plugins, hold).await
            }
        }
        Command::Run {
            store,
            manifests,
            plugins,
            listen,
            config_namespace,
            workers,
            kubeconfig,
            kubernetes,
            instance_id,
            lease_namespace,
            identity,
            max_run_bytes,
            no_object_api,
            record_dir,
            record_sample,
            compiler,
            no_record,
        } => {
            let recorder = (!no_record).then(|| {
                let mut config = weir::plugin::recorder::RecorderConfig::new(
                    record_dir.unwrap_or_else(weir::plugin::recorder::RecorderConfig::default_dir),
                );
                config.sample_every = record_sample;
                config
            });
            let kubernetes = match (kubeconfig, kubernetes) {
                (Some(path), _) => Some(run::KubeTarget::Kubeconfig(path)),
                (None, true) => Some(run::KubeTarget::Infer),
                (None, false) => None,
            };
            let identity = identity
                .or_else(|| std::env::var("POD_NAME").ok())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("weir-{}", std::process::id()));
            let plugins = plugins.unwrap_or_else(|| {
                if weir::plugin::Bundle::of_current_exe().is_some() {
                    PathBuf::new()
                } else {
                    PathBuf::from("target/wasm32-wasip2/plugin")
                }
            });
            run::run(run::RunOptions {
                recorder,
                store,
                manifests,
                plugins,
                listen,
                config_namespace,
                workers,
                kubernetes,
                instance_id,
                lease_namespace,
                identity,
                max_run_bytes,
                no_object_api,
                compiler,
            })
            .await
        }
        Command::Manifests { image } => {
            let manifests = include_str!("../../deploy/weir.yaml");
            match image {
                Some(image) => print!("{}", with_image(manifests, &image)?),
                None => print!("{manifests}"),
            }
            Ok(())
        }
        Command::Crd => {
            print!("{}", include_str!("../../deploy/crds.yaml"));
            Ok(())
        }
        Command::Apply { file, target } => {
            let cluster = target.open().await?;
            run::apply_manifests(cluster.as_ref(), &file).await
        }
        Command::Get {
            command:
                GetCommand::Rollout {
                    name,
                    namespace,
                    watch,
                    timeout_seconds,
                    target,
                },
        } => {
            let cluster = target.open().await?;
            if watch {
                return watch_rollout(
                    cluster.as_ref(),
                    &namespace,
                    &name,
                    std::time::Duration::from_secs(timeout_seconds),
                )
                .await;
            }
            print!(
                "{}",
                get_rollout(cluster.as_ref(), &namespace, &name).await?
            );
            Ok(())
        }
        Command::Get {
            command:
                GetCommand::AnalysisRun {
                    name,
                    namespace,
                    target,
                },
        } => {
            let cluster = target.open().await?;
            let run = cluster
                .get(&weir::cluster::ObjectKey::new(
                    "argoproj.io/v1alpha1",
                    "AnalysisRun",
                    &namespace,
                    &name,
                ))
                .await
                .with_context(|| format!("analysisrun {namespace}/{name}"))?;
            print!("{}", weir::controller::view::render_run(&run));
            Ok(())
        }
        Command::Get {
            command:
                GetCommand::Experiment {
                    name,
                    namespace,
                    target,
                },
        } => {
            let cluster = target.open().await?;
            let key = weir::cluster::ObjectKey::new(
                "argoproj.io/v1alpha1",
                "Experiment",
                &namespace,
                &name,
            );
            let experiment = cluster
                .get(&key)
                .await
                .with_context(|| format!("experiment {namespace}/{name}"))?;
            let owned = |o: &serde_json::Value| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(|owners| {
                        owners.iter().any(|r| {
                            r.get("kind").and_then(serde_json::Value::as_str) == Some("Experiment")
                                && r.get("name").and_then(serde_json::Value::as_str)
                                    == Some(name.as_str())
                        })
                    })
            };
            let mut replica_sets = cluster.list("apps", "ReplicaSet", &namespace, &[]).await?;
            replica_sets.retain(|rs| {
                owned(rs)
                    || rs
                        .pointer("/metadata/name")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|n| n.starts_with(&format!("{name}-")))
            });
            let mut runs = cluster
                .list("argoproj.io", "AnalysisRun", &namespace, &[])
                .await?;
            runs.retain(|r| {
                owned(r)
                    || r.pointer("/metadata/name")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|n| n.starts_with(&format!("{name}-")))
            });
            print!(
                "{}",
                weir::controller::view::render_experiment(&experiment, &replica_sets, &runs)
            );
            Ok(())
        }
        Command::Terminate {
            command:
                TerminateCommand::Experiment {
                    name,
                    namespace,
                    target,
                },
        } => {
            let cluster = target.open().await?;
            let result = weir::controller::actions::terminate_experiment(
                cluster.as_ref(),
                &namespace,
                &name,
            )
            .await;
            report("experiment", &namespace, &name, "terminating", result)
        }
        Command::Terminate {
            command:
                TerminateCommand::AnalysisRun {
                    name,
                    namespace,
                    target,
                },
        } => {
            let cluster = target.open().await?;
            let result = weir::controller::actions::terminate_analysis_run(
                cluster.as_ref(),
                &namespace,
                &name,
            )
            .await;
            report("analysisrun", &namespace, &name, "terminating", result)
        }
        Command::Restart {
            name,
            namespace,
            delay,
            target,
        } => {
            let delay = weir::analysis::types::parse_duration(&delay)
                .map_err(|e| anyhow::anyhow!("--in {delay:?}: {e}"))?;
            let at = chrono::Utc::now()
                + chrono::Duration::from_std(delay).context("--in is too long")?;
            let cluster = target.open().await?;
            let result =
                weir::controller::actions::restart(cluster.as_ref(), &namespace, &name, at).await;
            report("rollout", &namespace, &name, "restarting", result)
        }
        Command::Promote {
            name,
            namespace,
            full,
            target,
        } => {
            let cluster = target.open().await?;
            let action = if full {
                Action::PromoteFull
            } else {
                Action::Promote
            };
            let result = act(cluster.as_ref(), &namespace, &name, action).await;
            report("rollout", &namespace, &name, "promoting", result)
        }
        Command::Abort {
            name,
            namespace,
            target,
        } => {
            let cluster = target.open().await?;
            let result = act(cluster.as_ref(), &namespace, &name, Action::Abort).await;
            report("rollout", &namespace, &name, "aborting", result)
        }
        Command::Lint { file } => {
            let objects = weir::cluster::manifests::read(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let findings = weir::controller::lint::lint(&objects);
            let mut errors = 0;
            for f in &findings {
                match (&f.error, f.checked) {
                    (Some(error), _) => {
                        errors += 1;
                        println!("✖ {}: {error}", f.object);
                    }
                    (None, true) => println!("✔ {}", f.object),
                    (None, false) => println!("- {} (not checked)", f.object),
                }
            }
            if errors > 0 {
                anyhow::bail!("{errors} of {} objects have errors", findings.len());
            }
            Ok(())
        }
        Command::Undo {
            name,
            namespace,
            to_revision,
            target,
        } => {
            let cluster = target.open().await?;
            let result =
                weir::controller::actions::undo(cluster.as_ref(), &namespace, &name, to_revision)
                    .await;
            report("rollout", &namespace, &name, "undoing", result)
        }
        Command::Pause {
            name,
            namespace,
            target,
        } => {
            let cluster = target.open().await?;
            let result = act(cluster.as_ref(), &namespace, &name, Action::Pause).await;
            report("rollout", &namespace, &name, "pausing", result)
        }
        Command::Set {
            command:
                SetCommand::Image {
                    name,
                    assignment,
                    namespace,
                    target,
                },
        } => {
            let (container, image) = assignment
                .split_once('=')
                .filter(|(c, i)| !c.is_empty() && !i.is_empty())
                .with_context(|| format!("{assignment:?}: write CONTAINER=IMAGE"))?;
            let cluster = target.open().await?;
            let result = weir::controller::actions::set_image(
                cluster.as_ref(),
                &namespace,
                &name,
                container,
                image,
            )
            .await;
            report("rollout", &namespace, &name, "setting the image of", result)
        }
        Command::Status {
            name,
            namespace,
            timeout,
            target,
        } => {
            let timeout = weir::analysis::types::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout {timeout:?}: {e}"))?;
            let cluster = target.open().await?;
            watch_status(cluster.as_ref(), &namespace, &name, timeout).await
        }
        Command::List {
            command: ListCommand::Rollouts { namespace, target },
        } => {
            let cluster = target.open().await?;
            let mut rollouts = cluster
                .list("argoproj.io", "Rollout", &namespace, &[])
                .await
                .with_context(|| format!("listing rollouts in {namespace}"))?;
            rollouts.sort_by_key(|r| {
                r.pointer("/metadata/name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_string()
            });
            print!("{}", weir::controller::view::list(&rollouts));
            Ok(())
        }
        Command::Retry {
            name,
            namespace,
            target,
        } => {
            let cluster = target.open().await?;
            let result = act(cluster.as_ref(), &namespace, &name, Action::Retry).await;
            report("rollout", &namespace, &name, "retrying", result)
        }
    }
}

/// Prints what a verb did to `kind namespace/name` (`rollout shop/checkout
/// promoted: ...`), or fails saying what was being done.
fn report(
    kind: &str,
    namespace: &str,
    name: &str,
    doing: &str,
    result: Result<String, weir::cluster::ClusterError>,
) -> Result<()> {
    let done = result.with_context(|| format!("{doing} {kind} {namespace}/{name}"))?;
    println!("{kind} {namespace}/{name} {done}");
    Ok(())
}

/// `weir get rollout`: the Rollout with its ReplicaSets and AnalysisRuns.
pub async fn get_rollout(
    cluster: &dyn weir::cluster::Cluster,
    namespace: &str,
    name: &str,
) -> Result<String> {
    let rollout = cluster
        .get(&weir::controller::actions::rollout_key(namespace, name))
        .await
        .with_context(|| format!("rollout {namespace}/{name}"))?;
    let view = weir::controller::spec::RolloutView::parse(&rollout).ok();
    let owned = |object: &serde_json::Value| {
        view.as_ref()
            .is_some_and(|v| weir::controller::children::owned_by(object, v))
    };
    let replica_sets: Vec<_> = cluster
        .list("apps", "ReplicaSet", namespace, &[])
        .await?
        .into_iter()
        .filter(|o| owned(o))
        .collect();
    let runs: Vec<_> = cluster
        .list("argoproj.io", "AnalysisRun", namespace, &[])
        .await?
        .into_iter()
        .filter(|o| owned(o))
        .collect();
    Ok(weir::controller::view::render(
        &rollout,
        &replica_sets,
        &runs,
    ))
}

/// Clears the terminal and moves to its top left, so a frame is drawn in place.
const REDRAW: &str = "\x1b[H\x1b[2J";

/// `weir get rollout --watch`: draws the rollout, then redraws it in place
/// each time it changes, until interrupted or `timeout` (zero: none)
/// passes. A rollout that cannot be read is shown as such and watched on.
async fn watch_rollout(
    cluster: &dyn weir::cluster::Cluster,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    use std::io::Write as _;
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let frame = match get_rollout(cluster, namespace, name).await {
            Ok(frame) => frame,
            Err(e) => format!("{e:#}\n"),
        };
        if frame != last {
            let mut out = std::io::stdout().lock();
            write!(out, "{REDRAW}{frame}")?;
            out.flush()?;
            last = frame;
        }
        if !timeout.is_zero() && started.elapsed() >= timeout {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `weir plugin test`: runs every fixture and prints a readable report.
async fn test_plugin(plugin: &std::path::Path, fixtures: &std::path::Path) -> i32 {
    let config = weir::plugin::RuntimeConfig::with_default_cache();
    let reports = match weir::fixture::run_dir(plugin, fixtures, &config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut failed = 0;
    for report in &reports {
        let name = report
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let about = if report.description.is_empty() {
            String::new()
        } else {
            format!(" - {}", report.description)
        };
        if report.passed() {
            println!("PASS {name}{about}");
        } else {
            failed += 1;
            println!("FAIL {name}{about}");
            for failure in &report.failures {
                for line in failure.lines() {
                    println!("    {line}");
                }
            }
        }
    }
    println!("{} passed, {} failed", reports.len() - failed, failed);
    if failed > 0 { 1 } else { 0 }
}

/// `weir plugin replay`: exit code 0 when the replay did what the
/// recording says, 1 when it did not, 2 when it could not run.
async fn replay_recording(recording: &std::path::Path, plugin: Option<&std::path::Path>) -> i32 {
    let config = weir::plugin::RuntimeConfig::with_default_cache();
    let loaded = match weir::plugin::recorder::load_recording(recording) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let plugin = plugin.map(|p| p.display().to_string());
    match weir::plugin::recorder::replay(&config, &loaded, plugin.as_deref()).await {
        Ok(report) => {
            print!("{}", report.render());
            if report.same() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// `weir status`: prints each change of the rollout's phase and message
/// until it is Healthy (Ok) or Degraded, or `timeout` (zero: none) passes
/// (errors, so the exit status is 1).
async fn watch_status(
    cluster: &dyn weir::cluster::Cluster,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    let key = weir::controller::actions::rollout_key(namespace, name);
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let object = cluster
            .get(&key)
            .await
            .with_context(|| format!("reading rollout {namespace}/{name}"))?;
        let status = weir::controller::status::RolloutStatus::of(&object);
        let line = match status.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) => format!(
                "{} - {message}",
                status.phase.as_deref().unwrap_or("Unknown")
            ),
            None => status.phase.clone().unwrap_or_else(|| "Unknown".into()),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        match weir::controller::view::settled(&object) {
            Some(true) => return Ok(()),
            Some(false) => anyhow::bail!("rollout {namespace}/{name} is Degraded"),
            None => {}
        }
        if !timeout.is_zero() && started.elapsed() >= timeout {
            anyhow::bail!(
                "rollout {namespace}/{name}: status watch exceeded the {timeout:?} timeout"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `weir plugin bundle`: this executable plus the shipped components in
/// `plugins`, compiled ahead of time, written to `out`.
fn bundle(plugins: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let mut components = Vec::new();
    for file in weir::controller::shipped_component_files() {
        let path = plugins.join(&file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: build the plugins first (scripts/build-plugins.sh)",
                path.display()
            )
        })?;
        components.push((file, bytes));
    }
    let started = std::time::Instant::now();
    let count = components.len();
    let exe = std::env::current_exe().context("finding this executable")?;
    weir::plugin::bundle::write(
        &exe,
        out,
        &weir::plugin::EngineSettings::default(),
        components,
    )?;
    println!(
        "{}: weir with {count} components bundled, compiled in {:.1?}",
        out.display(),
        started.elapsed()
    );
    Ok(())
}

/// The image deploy/weir.yaml names for the controller.
const SHIPPED_IMAGE: &str = "ghcr.io/weir-rollouts/weir:0.1.0";

/// `manifests` with the controller's image replaced by `image`, which must
/// be an image reference (registry/name[:tag][@digest]): nothing that could
/// change the YAML around it.
fn with_image(manifests: &str, image: &str) -> Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "./:@_-".contains(c);
    if image.is_empty() || image.len() > 512 || !image.chars().all(allowed) {
        anyhow::bail!(
            "--image {image:?}: not an image reference (letters, digits and . / : @ _ - only, up to 512 characters), e.g. registry.example/weir:0.1.0"
        );
    }
    let line = format!("image: {SHIPPED_IMAGE}");
    if manifests.matches(&line).count() != 1 {
        anyhow::bail!("deploy/weir.yaml no longer names the image {SHIPPED_IMAGE} once");
    }
    Ok(manifests.replacen(&line, &format!("image: {image}"), 1))
}
