//! The `weir` command line.

mod demo;

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
        Command::Demo { plugins } => demo::run(&plugins).await,
    }
}
