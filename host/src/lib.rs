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

/// The allocator the `weir` binary runs on (mimalloc), for benchmarks that
/// measure the controller as the binary runs it:
/// `#[global_allocator] static GLOBAL: weir::Allocator = weir::Allocator;`.
/// The controller's work is mostly short-lived JSON trees, and glibc's
/// malloc spent a quarter of the fleet benchmark's samples in `malloc`,
/// `free` and its consolidation of freed chunks.
pub use mimalloc::MiMalloc as Allocator;
