//! `weir plugin inspect`: what a .wasm file is and whether it is a Weir
//! plugin. The verdict comes from [`super::PluginRuntime::inspect`], which
//! runs the load path itself, so it says what a load would say.

use super::cache::CacheOutcome;
use super::prescan::Footprint;
use super::source::sha256_hex;
use super::tiers::CodeTier;
use super::world::{PluginKind, Surface};

/// What inspection found.
#[derive(Debug)]
pub struct Inspection {
    /// sha256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// Functions and code bytes (what bounds its compile), when readable.
    pub footprint: Option<Footprint>,
    /// Import and export names (empty when it did not compile).
    pub surface: Surface,
    /// The Weir world it implements, if any.
    pub kind: Option<PluginKind>,
    /// Where its compiled code came from, when it compiled.
    pub code: Option<CacheOutcome>,
    /// The code its calls run on once loaded (optimised, unless Winch
    /// alone compiles).
    pub tier: Option<CodeTier>,
    /// `Ok` when it loads and instantiates under its limits; otherwise why not.
    pub verdict: Result<(), String>,
}

impl Inspection {
    /// The facts of `bytes` alone, with no verdict yet.
    pub(crate) fn of_bytes(bytes: &[u8]) -> Self {
        Inspection {
            sha256: sha256_hex(bytes),
            size: bytes.len(),
            footprint: Footprint::of(bytes).ok(),
            surface: Surface::default(),
            kind: None,
            code: None,
            tier: None,
            verdict: Err("not inspected".into()),
        }
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sha256:  {}", self.sha256)?;
        writeln!(f, "size:    {} bytes", self.size)?;
        if let Some(footprint) = &self.footprint {
            writeln!(
                f,
                "code:    {} functions, {} bytes of function bodies",
                footprint.functions, footprint.code_bytes
            )?;
        }
        match (self.kind, self.surface.implements()) {
            (Some(k), Some((_, contract))) if k != PluginKind::ConditionEvaluator => writeln!(
                f,
                "world:   {} (contract weir:plugin {})",
                k.world(),
                contract.as_str()
            )?,
            (Some(k), _) => writeln!(f, "world:   {}", k.world())?,
            (None, _) => writeln!(f, "world:   (none)")?,
        }
        if let Some(code) = self.code {
            let from = match code {
                CacheOutcome::Bundled => "compiled ahead of time, bundled into this weir",
                CacheOutcome::Hit => "from the precompiled cache",
                CacheOutcome::Shared => "shared with an earlier load",
                CacheOutcome::Miss | CacheOutcome::Rebuilt => "compiled now (and cached)",
                CacheOutcome::Disabled => "compiled now",
            };
            writeln!(f, "compiled: {from}")?;
        }
        if let Some(tier) = self.tier {
            writeln!(f, "code:    {}", tier.label())?;
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
            Ok(()) => write!(
                f,
                "verdict: OK, a valid weir:plugin component that loads under its limits"
            ),
            Err(why) => write!(f, "verdict: NOT a usable weir:plugin component: {why}"),
        }
    }
}
