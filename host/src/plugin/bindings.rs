//! Host-side bindings generated from the contract: `wit/weir-plugin.wit`
//! (`weir:plugin@0.3.0`, the current version) and the frozen 0.2.0 and
//! 0.1.0 in `wit/v0.2/` and `wit/v0.1/`, which the host keeps serving.
//!
//! The host works with 0.3's types. 0.2 differs from them only in the
//! `rollout` record (it carries the whole object), so 0.2 gets its own
//! generated types and host interfaces, and `compat` carries values
//! across. 0.1's records are 0.2's, so the 0.1 bindings reuse 0.2's
//! `types`; its host interfaces are generated again only because the
//! linker registers each under its own versioned name.

/// The `traffic-router-plugin` world, and the shared `types`, `log` and
/// `cluster` interfaces.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/traffic-router-plugin@0.3.0",
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
        world: "weir:plugin/metric-provider-plugin@0.3.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Recordings (the flight recorder) store call arguments and replies.
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "weir:plugin/types@0.3.0": super::router::weir::plugin::types,
            "weir:plugin/log@0.3.0": super::router::weir::plugin::log,
            "weir:plugin/registration@0.3.0": super::router::weir::plugin::registration,
            "weir:plugin/cluster@0.3.0": super::router::weir::plugin::cluster,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `step-plugin` world; shares everything it imports with [`router`]
/// and [`provider`].
pub mod step {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:plugin/step-plugin@0.3.0",
        imports: { default: async | trappable },
        exports: { default: async },
        // Recordings (the flight recorder) store call arguments and replies.
        additional_derives: [serde::Serialize, serde::Deserialize],
        with: {
            "weir:plugin/types@0.3.0": super::router::weir::plugin::types,
            "weir:plugin/log@0.3.0": super::router::weir::plugin::log,
            "weir:plugin/registration@0.3.0": super::router::weir::plugin::registration,
            "weir:plugin/cluster@0.3.0": super::router::weir::plugin::cluster,
            "weir:plugin/rollout-object@0.3.0": super::router::weir::plugin::rollout_object,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The frozen contract 0.2.0: its three worlds, with their own types and
/// host interfaces (values are carried across by `compat`).
pub mod v0_2 {
    /// `weir:plugin/traffic-router-plugin@0.2.0`, and 0.2's `types`, `log`,
    /// `registration` and `cluster`.
    pub mod router {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "weir:plugin/traffic-router-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
            // `compat` carries records across through their serde form.
            additional_derives: [serde::Serialize, serde::Deserialize],
        });
    }

    /// `weir:plugin/metric-provider-plugin@0.2.0`.
    pub mod provider {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "weir:plugin/metric-provider-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
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

    /// `weir:plugin/step-plugin@0.2.0`.
    pub mod step {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "weir:plugin/step-plugin@0.2.0",
            imports: { default: async | trappable },
            exports: { default: async },
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
}

/// The frozen contract 0.1.0: its two worlds, on 0.2's `types`.
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
                "weir:plugin/types@0.1.0": crate::plugin::bindings::v0_2::router::weir::plugin::types,
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
                "weir:plugin/types@0.1.0": crate::plugin::bindings::v0_2::router::weir::plugin::types,
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

pub use router::weir::plugin::{cluster, log, registration, rollout_object, types};
