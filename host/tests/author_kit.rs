//! The plugin author's path, end to end through the real `weir` binary:
//! package the SDK as it would be published and unpack it outside the
//! repository, scaffold a plugin of each kind (router, provider, step
//! plugin) against it, build it for wasm32-wasip2, run its
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

/// Packages `weir-plugin-sdk` as it would be published (`cargo package`,
/// its WIT inside) and unpacks it under `root`, outside the repository;
/// returns the unpacked crate.
fn packaged_sdk(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(&cargo)
        .args([
            "package",
            "-p",
            "weir-plugin-sdk",
            "--allow-dirty",
            "--no-verify",
        ])
        .arg("--target-dir")
        .arg(scaffold_target())
        .current_dir(&repo)
        .status()
        .expect("run cargo package");
    assert!(status.success(), "cargo package -p weir-plugin-sdk");
    let archive = std::fs::read_dir(scaffold_target().join("package"))
        .expect("package directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("weir-plugin-sdk-") && n.ends_with(".crate"))
        })
        .expect("the packaged .crate");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(root)
        .status()
        .expect("run tar");
    assert!(status.success(), "unpack {}", archive.display());
    let unpacked = root.join(
        archive
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("crate file name"),
    );
    assert!(
        unpacked.join("wit").join("weir-plugin.wit").is_file(),
        "the contract ships inside the package"
    );
    unpacked
}

fn scaffold_and_build(kind: &str, name: &str, root: &Path, sdk: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    let out = weir(&[
        "plugin",
        "new",
        "--kind",
        kind,
        name,
        "--dir",
        dir.to_str().expect("utf-8 path"),
        "--sdk",
        sdk.to_str().expect("utf-8 path"),
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
    let sdk = packaged_sdk(root.path());
    for (kind, name, world) in [
        ("traffic-router", "acme-router", "traffic-router-plugin"),
        ("metric-provider", "acme-provider", "metric-provider-plugin"),
        ("step-plugin", "acme-gate", "step-plugin"),
    ] {
        let (dir, wasm) = scaffold_and_build(kind, name, root.path(), &sdk);
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
fn a_scaffold_depends_on_the_sdk_by_version_unless_given_a_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("by-version");
    let out = weir(&[
        "plugin",
        "new",
        "--kind",
        "metric-provider",
        "acme",
        "--dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("read");
    // The SDK's own version line (major.minor), which follows the contract.
    let sdk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/Cargo.toml"),
    )
    .expect("the SDK's manifest");
    let line = sdk
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.rsplit_once('.'))
        .map(|(line, _patch)| line.to_string())
        .expect("the SDK's version");
    assert!(
        manifest.contains(&format!("weir-plugin-sdk = \"{line}\"")),
        "no path into a build tree, or not the SDK's line {line}: {manifest}"
    );

    let missing = root.path().join("nowhere");
    let out = weir(&[
        "plugin",
        "new",
        "--kind",
        "metric-provider",
        "acme",
        "--dir",
        root.path().join("other").to_str().expect("utf-8"),
        "--sdk",
        missing.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--sdk"), "{}", text(&out));
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
