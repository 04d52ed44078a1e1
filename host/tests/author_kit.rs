//! The plugin author's path, end to end through the real `weir` binary:
//! scaffold a plugin of each kind (router, provider, step plugin), build it for wasm32-wasip2, run its
//! generated fixtures with `weir plugin test`; and see a wrong fixture
//! caught with a readable diff and a CI-friendly exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A target directory shared by the scaffolded crates of this test run.
fn scaffold_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("scaffold-test")
}

fn build(dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", scaffold_target())
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "the scaffolded crate in {} must build",
        dir.display()
    );
}

fn scaffold_and_build(kind: &str, name: &str, root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    let out = weir(&[
        "plugin",
        "new",
        "--kind",
        kind,
        name,
        "--dir",
        dir.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    build(&dir);
    let wasm = scaffold_target()
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(wasm.exists(), "{} was built", wasm.display());
    (dir, wasm)
}

#[test]
fn scaffolded_plugins_build_and_pass_their_fixtures_and_a_wrong_fixture_is_caught() {
    let root = tempfile::tempdir().expect("temp dir");
    for (kind, name, world) in [
        ("traffic-router", "acme-router", "traffic-router-plugin"),
        ("metric-provider", "acme-provider", "metric-provider-plugin"),
        ("step-plugin", "acme-gate", "step-plugin"),
    ] {
        let (dir, wasm) = scaffold_and_build(kind, name, root.path());
        let out = weir(&[
            "plugin",
            "test",
            wasm.to_str().expect("utf-8"),
            dir.join("fixtures").to_str().expect("utf-8"),
        ]);
        let report = text(&out);
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(report.contains("2 passed, 0 failed"), "{report}");

        let inspect = weir(&["plugin", "inspect", wasm.to_str().expect("utf-8")]);
        assert!(
            text(&inspect).contains(&format!("weir:plugin/{world}")),
            "{}",
            text(&inspect)
        );
    }

    // A fixture that expects the wrong weight.
    let router_dir = root.path().join("acme-router");
    let wasm = scaffold_target()
        .join("wasm32-wasip2")
        .join("release")
        .join("acme_router.wasm");
    let wrong = root.path().join("wrong-fixtures");
    std::fs::create_dir_all(&wrong).expect("mkdir");
    let fixture =
        std::fs::read_to_string(router_dir.join("fixtures").join("set-weight.yaml")).expect("read");
    std::fs::write(
        wrong.join("set-weight.yaml"),
        fixture.replace("checkout-canary=20", "checkout-canary=30"),
    )
    .expect("write");
    let out = weir(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        wrong.to_str().expect("utf-8"),
    ]);
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing case exits 1: {report}"
    );
    assert!(report.contains("FAIL set-weight.yaml"), "{report}");
    assert!(
        report.contains("ConfigMap shop/checkout-traffic differs (- expected, + actual)"),
        "{report}"
    );
    assert!(report.contains("-  canary: checkout-canary=30"), "{report}");
    assert!(report.contains("+  canary: checkout-canary=20"), "{report}");
    assert!(report.contains("0 passed, 1 failed"), "{report}");

    // A fixture that is not in the format at all.
    std::fs::write(
        wrong.join("set-weight.yaml"),
        "kind: traffic-router\ncals: []\n",
    )
    .expect("write");
    let out = weir(&[
        "plugin",
        "test",
        wasm.to_str().expect("utf-8"),
        wrong.to_str().expect("utf-8"),
    ]);
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unreadable fixture exits 2: {report}"
    );
    assert!(report.contains("unknown field `cals`"), "{report}");
}

#[test]
fn scaffolding_refuses_to_overwrite() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::write(root.path().join("keep.txt"), "mine").expect("write");
    let out = weir(&[
        "plugin",
        "new",
        "--kind",
        "traffic-router",
        "x",
        "--dir",
        root.path().to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.path().join("keep.txt")).expect("read"),
        "mine"
    );
}
