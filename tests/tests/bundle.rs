//! `weir plugin bundle`: one executable carrying the shipped plugins with
//! their code compiled ahead of time. The real `weir` binary is bundled,
//! moved to a directory with no plugin files, and run: the rollout goes
//! through the bundled Istio router and nothing is compiled (the
//! precompiled cache it is given stays empty). A damaged bundle falls back
//! to compiling; a weir without one says how to make one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use weir_e2e::controller::{self, istio_objects, istio_routing, plugins_dir};
use weir_e2e::weir_binary;

/// A bundled weir in its own directory, and an empty cache directory.
struct Bundled {
    dir: tempfile::TempDir,
    exe: PathBuf,
    cache: PathBuf,
}

fn bundled() -> Bundled {
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("weir");
    let out = Command::new(weir_binary())
        .args(["plugin", "bundle", "--plugins"])
        .arg(plugins_dir())
        .arg("--out")
        .arg(&exe)
        .output()
        .expect("run weir plugin bundle");
    assert!(out.status.success(), "{}", text(&out));
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).expect("cache dir");
    Bundled { dir, exe, cache }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `exe ARGS` in `cwd` with the precompiled cache in `cache`.
fn weir_in(exe: &Path, cwd: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .env("WEIR_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .output()
        .expect("run weir")
}

/// `weir plugin inspect LOCATION` run by `exe` in the bundle's directory:
/// whether it succeeded, and what it printed.
fn inspect(exe: &Path, bundle: &Bundled, location: &str) -> (bool, String) {
    let out = weir_in(
        exe,
        bundle.dir.path(),
        &bundle.cache,
        &["plugin", "inspect", location],
    );
    (out.status.success(), text(&out))
}

/// Compiled entries in the cache (not the digest memo beside them).
fn cache_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `text` without terminal colour sequences.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The canary's steps: one weight, then a short pause.
const STEPS: &str = "        - setWeight: 50
        - pause: {duration: 1s}";

/// Rollout `shop/checkout` running `image` through the shipped Istio router.
fn rollout(image: &str) -> String {
    controller::rollout("checkout", image, &istio_routing("checkout"), STEPS)
}

/// Waits for `weir status` to report the rollout settled and Healthy, with
/// a report other than `before`.
fn settled(bundle: &Bundled, cwd: &Path, before: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = weir_in(
            &bundle.exe,
            cwd,
            &bundle.cache,
            &[
                "status",
                "checkout",
                "-n",
                "shop",
                "--timeout",
                "20s",
                "--store",
                "s.redb",
            ],
        );
        if out.status.success() && text(&out).contains("Healthy") && text(&out) != before {
            return text(&out);
        }
        assert!(Instant::now() < deadline, "never Healthy: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bundled_weir_rolls_out_through_its_own_istio_router_and_compiles_nothing() {
    let bundle = bundled();
    // A directory with no plugin files: only the bundle can serve them.
    let cwd = bundle.dir.path().join("elsewhere");
    std::fs::create_dir(&cwd).expect("cwd");
    std::fs::write(
        cwd.join("m.yaml"),
        format!("{}---\n{}", istio_objects("checkout"), rollout("app:1")),
    )
    .expect("manifests");
    let log = std::fs::File::create(cwd.join("weir.log")).expect("log");
    let mut controller = Command::new(&bundle.exe)
        .args([
            "run",
            "--store",
            "s.redb",
            "--manifests",
            "m.yaml",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(&cwd)
        .env("WEIR_CACHE_DIR", &bundle.cache)
        .env("RUST_LOG", "weir=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the bundled weir");
    // Until `weir run` has written its API address, another weir would open
    // the store itself (and hold it).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cwd.join("s.redb.addr").exists() {
        if let Ok(Some(status)) = controller.try_wait() {
            panic!("the bundled weir exited ({status})");
        }
        assert!(Instant::now() < deadline, "weir run never started serving");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = settled(&bundle, &cwd, "");
    // A new revision: the canary step sets weights through the router.
    std::fs::write(cwd.join("v2.yaml"), rollout("app:2")).expect("v2");
    let applied = weir_in(
        &bundle.exe,
        &cwd,
        &bundle.cache,
        &["apply", "-f", "v2.yaml", "--store", "s.redb"],
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let status = settled(&bundle, &cwd, &first);
    let _ = controller.kill();
    let _ = controller.wait();
    let log = without_colours(&std::fs::read_to_string(cwd.join("weir.log")).expect("log"));
    assert!(status.contains("fully promoted"), "{status}");
    let loaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin loaded"))
        .collect();
    assert!(
        loaded.iter().any(|l| l.contains("plugin=istio")),
        "the router was not loaded: {log}"
    );
    assert!(
        loaded.iter().all(|l| l.contains("cache=Bundled")),
        "{loaded:#?}"
    );
    assert_eq!(
        cache_entries(&bundle.cache),
        Vec::<String>::new(),
        "something was compiled"
    );
}

#[test]
fn every_shipped_component_is_bundled_and_loads_without_compiling() {
    let bundle = bundled();
    for file in weir::controller::shipped_component_files() {
        let (ok, report) = inspect(&bundle.exe, &bundle, &format!("bundled:{file}"));
        assert!(ok, "{file}: {report}");
        assert!(
            report.contains("compiled: compiled ahead of time, bundled into this weir"),
            "{file}: {report}"
        );
    }
    assert_eq!(cache_entries(&bundle.cache), Vec::<String>::new());
}

#[test]
fn a_damaged_bundle_is_compiled_instead_and_an_unbundled_weir_says_how_to_bundle() {
    let bundle = bundled();
    // The last blob is the last component's compiled code: damage it.
    let mut bytes = std::fs::read(&bundle.exe).expect("read");
    let at = bytes.len() - 24 - 100;
    if let Some(byte) = bytes.get_mut(at) {
        *byte ^= 0xff;
    }
    std::fs::write(&bundle.exe, &bytes).expect("write");
    let last = weir::controller::shipped_component_files()
        .pop()
        .expect("a component");
    let (ok, report) = inspect(&bundle.exe, &bundle, &format!("bundled:{last}"));
    assert!(ok, "{report}");
    assert!(report.contains("checksum"), "no warning: {report}");
    assert!(report.contains("compiled: compiled now"), "{report}");

    let (ok, report) = inspect(&weir_binary(), &bundle, "bundled:weir_plugin_istio.wasm");
    assert!(!ok, "{report}");
    assert!(
        report.contains("this weir has no plugin bundle") && report.contains("weir plugin bundle"),
        "{report}"
    );
}
