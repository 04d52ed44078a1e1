//! Where a plugin's machine code comes from: code compiled ahead of time
//! (bundled into the executable, or in the precompiled cache), or a
//! compile now. The two are separate steps because they cost different
//! things: reading ahead-of-time code is a mapping and a checksum, so
//! loads do it side by side; a compile takes a core and up to gigabytes,
//! so the runtime runs one at a time (its compile slot).

use super::bundle::Bundle;
use super::cache::{CacheOutcome, PrecompiledCache};
use super::engine::Compiler;
use super::error::{LoadErrorKind, error_chain};
use super::tiers::CodeTier;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

/// What a compile (or a read of ahead-of-time code) produced.
pub(crate) enum Compiled {
    /// Code that stays.
    Final(Component, CodeTier),
    /// Winch's code, and the wasm for the optimiser.
    Baseline(Component, Vec<u8>),
}

/// Everything a blocking thread needs to find or make a plugin's code.
#[derive(Clone)]
pub(crate) struct CodeSource {
    /// The Engine of optimised (Cranelift) code.
    pub(crate) engine: Engine,
    /// The Engine of Winch's code, unless Cranelift compiles alone.
    pub(crate) baseline: Option<Engine>,
    pub(crate) compiler: Compiler,
    pub(crate) cache: Option<PrecompiledCache>,
    pub(crate) bundle: Option<Arc<Bundle>>,
}

impl CodeSource {
    /// The code for the wasm with digest `sha256` compiled ahead of time:
    /// bundled, then cached optimised code (whatever the compiler), then
    /// cached Winch code when Winch alone compiles. `Err` carries what the
    /// cache had to say (a miss, or an entry to rebuild) for the compile
    /// that follows.
    pub(crate) fn ahead_of_time(
        &self,
        sha256: &str,
    ) -> Result<(Compiled, CacheOutcome), CacheOutcome> {
        match self.bundle.as_ref().map(|b| (b, b.compiled(sha256))) {
            // SAFETY: the code is what `Engine::precompile_component`
            // wrote, appended to our own executable (as trusted as our
            // code), and its checksum was checked on reading. wasmtime
            // refuses code from another version, configuration or CPU.
            Some((bundle, Some(Ok(code)))) => {
                match unsafe { Component::deserialize(&self.engine, &code) } {
                    Ok(component) => {
                        return Ok((
                            Compiled::Final(component, CodeTier::Optimized),
                            CacheOutcome::Bundled,
                        ));
                    }
                    Err(e) => tracing::warn!(
                        error = %error_chain(&e),
                        bundled_for = bundle.engine(),
                        this_engine = %super::bundle::engine_hash(&self.engine),
                        "bundled code does not suit this engine; compiling"
                    ),
                }
            }
            Some((_, Some(Err(e)))) => {
                tracing::warn!(error = %e, "bundled code unreadable; compiling")
            }
            Some((_, None)) | None => {}
        }
        let Some(cache) = &self.cache else {
            return Err(CacheOutcome::Disabled);
        };
        let cached = [
            Some((&self.engine, CodeTier::Optimized)),
            self.baseline
                .as_ref()
                .filter(|_| self.compiler == Compiler::Winch)
                .map(|b| (b, CodeTier::Baseline)),
        ];
        let mut outcome = CacheOutcome::Disabled;
        for (engine, tier) in cached.into_iter().flatten() {
            match cache.load(engine, sha256) {
                Ok(Some(component)) => {
                    return Ok((Compiled::Final(component, tier), CacheOutcome::Hit));
                }
                Ok(None) => outcome = CacheOutcome::Miss,
                Err(why) => {
                    tracing::warn!(entry = %cache.entry_path(engine, sha256).display(), %why, "rebuilding the precompiled cache entry");
                    outcome = CacheOutcome::Rebuilt;
                }
            }
        }
        Err(outcome)
    }

    /// Compiles `bytes` (digest `sha256`) with the configured compiler and
    /// caches code that stays. Under the tiered compiler the code is
    /// Winch's, for the optimiser to compile again.
    pub(crate) fn compile(&self, bytes: Vec<u8>, sha256: &str) -> Result<Compiled, LoadErrorKind> {
        let compiled = match (&self.baseline, self.compiler) {
            (Some(baseline), Compiler::Tiered) => match Component::new(baseline, &bytes) {
                Ok(component) => Ok(Compiled::Baseline(component, bytes)),
                // Winch lacks a few proposals (tail calls, exceptions,
                // GC): Cranelift compiles those at once.
                Err(e) => {
                    tracing::info!(error = %error_chain(&e), "Winch cannot compile this plugin; Cranelift does");
                    compile_final(&self.engine, &bytes, CodeTier::Optimized)
                }
            },
            (Some(baseline), Compiler::Winch) => {
                compile_final(baseline, &bytes, CodeTier::Baseline)
            }
            _ => compile_final(&self.engine, &bytes, CodeTier::Optimized),
        }?;
        if let (Some(cache), Compiled::Final(component, tier)) = (&self.cache, &compiled) {
            let engine = match tier {
                CodeTier::Optimized => &self.engine,
                CodeTier::Baseline => self.baseline.as_ref().unwrap_or(&self.engine),
            };
            if let Err(e) = cache.store(engine, sha256, component) {
                tracing::warn!(error = %e, "could not write the precompiled cache entry");
            }
        }
        Ok(compiled)
    }
}

/// Compiles `bytes` on `engine`, as code that stays.
fn compile_final(engine: &Engine, bytes: &[u8], tier: CodeTier) -> Result<Compiled, LoadErrorKind> {
    Component::new(engine, bytes)
        .map(|component| Compiled::Final(component, tier))
        .map_err(|e| LoadErrorKind::Compile(error_chain(&e)))
}
