//! `weir plugin inspect`: what a .wasm file is and whether it is a Weir plugin.

use super::error::LoadErrorKind;
use super::source::{WasmKind, classify, sha256_hex};
use super::world::{PluginKind, Surface};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What inspection found.
#[derive(Debug)]
pub struct Inspection {
    /// sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// Import and export names (empty when it is not a component).
    pub surface: Surface,
    /// The Weir world it implements, if any.
    pub kind: Option<PluginKind>,
    /// `Ok` when it satisfies that world; otherwise why not.
    pub verdict: Result<(), String>,
}

/// Inspects `bytes` on `engine`.
pub fn inspect(bytes: &[u8], engine: &Engine) -> Inspection {
    let sha256 = sha256_hex(bytes);
    let size = bytes.len();
    let failed = |e: LoadErrorKind| Inspection {
        sha256: sha256.clone(),
        size,
        surface: Surface::default(),
        kind: None,
        verdict: Err(e.to_string()),
    };
    match classify(bytes) {
        Ok(WasmKind::Component) => {}
        Ok(WasmKind::CoreModule) => return failed(LoadErrorKind::CoreModule),
        Err(e) => return failed(e),
    }
    let component = match Component::new(engine, bytes) {
        Ok(c) => c,
        Err(e) => return failed(LoadErrorKind::Compile(e.to_string())),
    };
    let surface = Surface::of(&component, engine);
    let kind = surface.kind();
    let verdict = match kind {
        Some(k) => surface.check(k).map_err(|e| e.to_string()),
        None => Err(
            "it exports neither weir:plugin/traffic-router nor weir:plugin/metric-provider".into(),
        ),
    };
    Inspection {
        sha256,
        size,
        surface,
        kind,
        verdict,
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sha256:  {}", self.sha256)?;
        writeln!(f, "size:    {} bytes", self.size)?;
        match self.kind {
            Some(k) => writeln!(f, "world:   {}", k.world())?,
            None => writeln!(f, "world:   (none)")?,
        }
        writeln!(f, "imports:")?;
        for i in &self.surface.imports {
            writeln!(f, "  {i}")?;
        }
        writeln!(f, "exports:")?;
        for e in &self.surface.exports {
            writeln!(f, "  {e}")?;
        }
        match &self.verdict {
            Ok(()) => write!(f, "verdict: OK, a valid weir:plugin component"),
            Err(why) => write!(f, "verdict: NOT a usable weir:plugin component: {why}"),
        }
    }
}
