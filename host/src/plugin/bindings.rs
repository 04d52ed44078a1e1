//! Host-side bindings generated from `wit/weir-plugin.wit`.

/// The `traffic-router-plugin` world, and the shared `types`, `log` and
/// `cluster` interfaces.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/traffic-router-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `metric-provider-plugin` world; shares `types`, `log` and `cluster`
/// with [`router`] and takes `wasi:http` from wasmtime-wasi-http.
pub mod provider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/metric-provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "weir:plugin/types": super::router::weir::plugin::types,
            "weir:plugin/log": super::router::weir::plugin::log,
            "weir:plugin/cluster": super::router::weir::plugin::cluster,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
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

pub use router::weir::plugin::{cluster, log, types};
