//! The `weir` command line.

mod demo;
mod scaffold;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    /// Exercise the shipped plugins through the sandbox, faults included.
    Demo {
        /// Directory holding the built plugin components.
        #[arg(long, default_value = "target/wasm32-wasip2/plugin")]
        plugins: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a component's world, imports, exports, sha256 and size, and whether it is a valid Weir plugin.
    Inspect {
        /// The .wasm file.
        file: PathBuf,
    },
    /// Run a plugin against fixtures in the sandbox the controller uses.
    /// Exit code 0: all passed; 1: a case failed; 2: the fixtures could not be read.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// A directory of fixture files (*.yaml), one case each.
        fixtures: PathBuf,
    },
    /// Scaffold a new plugin crate that builds for wasm32-wasip2 and passes its own fixtures.
    New {
        /// `traffic-router` or `metric-provider`.
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// The plugin's name (becomes the crate and directory name).
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to the weir-plugin-sdk crate (default: the one this weir was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

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
            command: PluginCommand::Inspect { file },
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let engine = wasmtime::Engine::default();
            let report = weir::plugin::inspect::inspect(&bytes, &engine);
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
        Command::Demo { plugins } => demo::run(&plugins).await,
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
