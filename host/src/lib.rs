//! Weir: a progressive-delivery controller whose traffic routers and metric
//! providers are WebAssembly components, each call run in its own sandbox.
//!
//! - [`cluster`]: the `Cluster` abstraction and its in-memory backend.
//! - [`plugin`]: loading plugins and running their calls in sandboxes.

pub mod analysis;
pub mod api;
pub mod cluster;
pub mod controller;
pub mod fixture;
#[doc(hidden)]
pub mod fuzzing;
pub mod plugin;
