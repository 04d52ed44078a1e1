//! Plugins built against a frozen contract, with bindings generated
//! straight from that WIT rather than through the SDK (which follows the
//! current contract): what a plugin built in that line's day looks like.
//! The host must keep loading and serving them unchanged. One world per
//! component, so the feature picks what is built (scripts/build-plugins.sh
//! builds each under its own name):
//!
//! - no feature: a traffic router against `weir:plugin@0.1.0`
//!   (`wit/v0.1`), `weir_plugin_compat_v01.wasm`;
//! - `contract-0-2`: the same router against `weir:plugin@0.2.0`
//!   (`wit/v0.2`), `weir_plugin_compat_v02.wasm`;
//! - `step-0-2`: a step plugin against 0.2.0,
//!   `weir_plugin_compat_step_v02.wasm`;
//! - `provider-0-2`: a metric provider against 0.2.0,
//!   `weir_plugin_compat_provider_v02.wasm`.
//!
//! The router records each weight it is given in a ConfigMap named
//! `<rollout>-compat` (`<rollout>-compat-v02` for the 0.2 build): `canary`,
//! the `contract` it was built against, and the `objectName` read from the
//! whole object its record carries; `verify-weight` reads it back. The
//! other calls succeed and do nothing.

#[cfg(not(any(feature = "step-0-2", feature = "provider-0-2")))]
include!("router.rs");
#[cfg(feature = "step-0-2")]
include!("step_v02.rs");
#[cfg(feature = "provider-0-2")]
include!("provider_v02.rs");
