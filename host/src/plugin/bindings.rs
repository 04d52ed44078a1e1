//! Host-side bindings generated from the contract: `wit/weir-plugin.wit`
//! (`weir:plugin@0.2.0`, the current version) and the frozen 0.1.0 in
//! `wit/v0.1/weir-plugin.wit`, which the host keeps serving.
//!
//! The two versions' records are identical, so the 0.1 bindings reuse the
//! 0.2 `types` (the host works with one set of Rust types); only the host
//! interfaces (`log`, `cluster`) are generated twice, because the linker
//! registers each under its own versioned name.

/// The `traffic-router-plugin` world, and the shared `types`, `log` and
/// `cluster` interfaces.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/traffic-router-plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Recordings (the flight recorder) store call arguments and replies.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The `metric-provider-plugin` world; shares `types`, `log` and `cluster`
/// with [`router`] and takes `wasi:http` from wasmtime-wasi-http.
pub mod provider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/metric-provider-plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Recordings (the flight recorder) store call arguments and replies.
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "weir:plugin/types@0.2.0": super::router::weir::plugin::types,
            "weir:plugin/log@0.2.0": super::router::weir::plugin::log,
            "weir:plugin/registration@0.2.0": super::router::weir::plugin::registration,
            "weir:plugin/cluster@0.2.0": super::router::weir::plugin::cluster,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `step-plugin` world (new in 0.2.0); shares everything it imports
/// with [`router`] and [`provider`].
pub mod step {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/step-plugin@0.2.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Recordings (the flight recorder) store call arguments and replies.
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "weir:plugin/types@0.2.0": super::router::weir::plugin::types,
            "weir:plugin/log@0.2.0": super::router::weir::plugin::log,
            "weir:plugin/registration@0.2.0": super::router::weir::plugin::registration,
            "weir:plugin/cluster@0.2.0": super::router::weir::plugin::cluster,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The frozen contract 0.1.0: its two worlds, on the 0.2 `types`.
pub mod v0_1 {
    /// `weir:plugin/traffic-router-plugin@0.1.0`, with its own `log` and
    /// `cluster` host interfaces.
    pub mod router {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "weir:plugin/traffic-router-plugin@0.1.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "weir:plugin/types@0.1.0": crate::plugin::bindings::router::weir::plugin::types,
            },
        });
    }

    /// `weir:plugin/metric-provider-plugin@0.1.0`.
    pub mod provider {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "weir:plugin/metric-provider-plugin@0.1.0",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "weir:plugin/types@0.1.0": crate::plugin::bindings::router::weir::plugin::types,
                "weir:plugin/log@0.1.0": super::router::weir::plugin::log,
                "weir:plugin/cluster@0.1.0": super::router::weir::plugin::cluster,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    }
}

/// Weir's own condition evaluator (`wit/condition`): not a plugin contract,
/// but run in the same sandbox.
pub mod condition {
    wasmtime::component::bindgen!({
        path: "../wit/condition",
        world: "weir:condition/condition-evaluator",
        exports: { default: async },
    });
}

pub use router::weir::plugin::{cluster, log, registration, types};
