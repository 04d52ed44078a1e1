//! The README's main job, `weir demo`, run as a user runs it: it must end
//! with the Istio canary Healthy on the new version and the faulty-router
//! rollout Degraded with its typed error, and exit 0.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_demo_completes_one_canary_and_contains_the_faulty_router() {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin");
    assert!(
        plugins.join("weir_plugin_istio.wasm").exists(),
        "build the plugins first with scripts/build-plugins.sh"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("demo")
        .arg("--plugins")
        .arg(&plugins)
        .output()
        .expect("run weir demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "weir demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Step by step, with the VirtualService weights.
    for weights in [
        "checkout-stable=80 checkout-canary=20",
        "checkout-stable=50 checkout-canary=50",
        "checkout-stable=100 checkout-canary=0",
    ] {
        assert!(stdout.contains(weights), "no {weights} in:\n{stdout}");
    }
    assert!(stdout.contains("Step analysis:   checkout-"), "{stdout}");
    // The faulty router's typed error: the trap itself, or (when the
    // controller retried it five times before the demo looked, which
    // depends on the machine's speed) the quarantine it led to, which
    // names the trap.
    let contained = stdout.lines().any(|line| {
        (line.contains("PluginFailed (Trap) [plugin weir/faulty, call update-hash]")
            || line.contains("PluginFailed (Quarantined) [plugin weir/faulty, call update-hash]"))
            && line.contains("trapped (wasm trap")
    });
    assert!(contained, "{stdout}");
    assert!(stdout.contains("checkout: Healthy on 2.0"), "{stdout}");
}
