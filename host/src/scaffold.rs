//! `weir plugin new`: a plugin crate that builds for wasm32-wasip2 and passes
//! its own fixtures out of the box.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The kind of plugin to scaffold.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Exports `weir:plugin/traffic-router`.
    TrafficRouter,
    /// Exports `weir:plugin/metric-provider`.
    MetricProvider,
    /// Exports `weir:plugin/step` (a canary `plugin` step).
    StepPlugin,
}

impl Kind {
    /// The kind's name in the contract.
    pub fn label(self) -> &'static str {
        match self {
            Kind::TrafficRouter => "traffic-router",
            Kind::MetricProvider => "metric-provider",
            Kind::StepPlugin => "step-plugin",
        }
    }

    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::TrafficRouter => &[
                (
                    "src/lib.rs",
                    include_str!("../templates/traffic-router/lib.rs"),
                ),
                (
                    "fixtures/set-weight.yaml",
                    include_str!("../templates/traffic-router/fixtures/set-weight.yaml"),
                ),
                (
                    "fixtures/bad-config.yaml",
                    include_str!("../templates/traffic-router/fixtures/bad-config.yaml"),
                ),
            ],
            Kind::MetricProvider => &[
                (
                    "src/lib.rs",
                    include_str!("../templates/metric-provider/lib.rs"),
                ),
                (
                    "fixtures/run.yaml",
                    include_str!("../templates/metric-provider/fixtures/run.yaml"),
                ),
                (
                    "fixtures/missing.yaml",
                    include_str!("../templates/metric-provider/fixtures/missing.yaml"),
                ),
            ],
            Kind::StepPlugin => &[
                (
                    "src/lib.rs",
                    include_str!("../templates/step-plugin/lib.rs"),
                ),
                (
                    "fixtures/approval.yaml",
                    include_str!("../templates/step-plugin/fixtures/approval.yaml"),
                ),
                (
                    "fixtures/decided.yaml",
                    include_str!("../templates/step-plugin/fixtures/decided.yaml"),
                ),
            ],
        }
    }
}

/// The crate name for a plugin name: lower-case, `-` for anything else.
pub fn crate_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The SDK version a scaffold depends on: the line of the contract this
/// binary serves (`weir-plugin-sdk` is versioned with the contract).
pub const SDK_VERSION: &str = "0.3";

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Creates the crate in `dir`; refuses to overwrite anything.
pub fn create(kind: Kind, name: &str, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf> {
    let crate_name = crate_name(name);
    if crate_name.is_empty() || !crate_name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        bail!("plugin name {name:?} must start with a letter");
    }
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    // By version (crates.io) unless a path is given, for development
    // against an unpublished SDK (`plugins/sdk`, or an unpacked package).
    let sdk = match sdk {
        None => format!("\"{SDK_VERSION}\""),
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk {}: no such directory", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: not a crate (no Cargo.toml); point it at weir-plugin-sdk",
                    path.display()
                );
            }
            let text = path.display().to_string();
            format!("{{ path = {} }}", toml_string(&text))
        }
    };
    let fill = |text: &str| {
        text.replace("{{crate}}", &crate_name)
            .replace("{{name}}", name)
            .replace("{{kind}}", kind.label())
            .replace("{{sdk}}", &sdk)
    };
    let mut files: Vec<(&str, String)> = vec![(
        "Cargo.toml",
        fill(include_str!("../templates/Cargo.toml.tmpl")),
    )];
    files.extend(kind.files().iter().map(|(path, text)| (*path, fill(text))));
    files.push((".gitignore", "target/\n".to_string()));
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(dir.to_path_buf())
}
