//! The dashboard in a real browser: Debian's Chromium driven through
//! ChromeDriver (installed by `scripts/setup-chromium.sh`) with
//! fantoccini, against the real controller on the embedded store and the
//! real API server. The page loads, a rollout's progress appears live as
//! the controller advances it, the promote button advances a paused
//! rollout, and a browser without the token is refused. Screenshots go to
//! `target/dashboard-screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_e2e::controller::{
    Backend, Served, analysis_template, config, istio_objects, istio_routing,
};

/// ChromeDriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is missing: run scripts/setup-chromium.sh (scripts/test.sh does)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

/// A headless Chromium session, with its ChromeDriver and fresh profile.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

async fn browser() -> Browser {
    let driver = start_driver();
    let profile = tempfile::tempdir().expect("profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1366,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    Browser {
        client,
        _driver: driver,
        _profile: profile,
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits (up to 30 s) until the page's text for `selector` satisfies `done`.
async fn wait_text(
    client: &Client,
    selector: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(element) = client.find(Locator::Css(selector)).await
            && let Ok(text) = element.text().await
            && done(&text)
        {
            return text;
        }
        if Instant::now() > deadline {
            let page = client.find(Locator::Css("body")).await.ok();
            let body = match page {
                Some(p) => p.text().await.unwrap_or_default(),
                None => String::new(),
            };
            panic!("timed out waiting for {what} in {selector}; the page says:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_progress_live_promotes_and_refuses_strangers() {
    let backend = Backend::embedded();
    let served = Served::start(&backend, config(), "t0ken-for-the-browser-test").await;
    let (h, base, token) = (&served.h, served.base.clone(), served.token.clone());
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 30\n        - pause: {}\n        - setWeight: 60";
    h.deploy("checkout", &istio_routing("checkout"), steps)
        .await;

    let browser = browser().await;
    let client = &browser.client;

    // A browser without the token is refused: the page and the data.
    client
        .goto(&format!("{base}/dashboard"))
        .await
        .expect("goto");
    let refused = wait_text(client, "body", "the sign-in refusal", |t| {
        t.contains("Not signed in")
    })
    .await;
    assert!(!refused.contains("checkout"), "{refused}");
    screenshot(client, "1-refused").await;
    client
        .goto(&format!("{base}/api/v1/dashboard/state"))
        .await
        .expect("goto");
    let data = wait_text(client, "body", "the API's refusal", |t| !t.is_empty()).await;
    assert!(
        data.contains("forbidden") && !data.contains("checkout"),
        "{data}"
    );
    client
        .goto(&format!("{base}/dashboard?token=wrong"))
        .await
        .expect("goto");
    wait_text(client, "body", "a wrong token refused", |t| {
        t.contains("Not signed in")
    })
    .await;

    // Signed in with the address `weir run` prints.
    client
        .goto(&format!("{base}/dashboard?token={token}"))
        .await
        .expect("goto");
    let url = client.current_url().await.expect("url");
    assert!(
        !url.as_str().contains("token"),
        "the token leaves the address bar: {url}"
    );
    let row = "tr[data-rollout='shop/checkout']";
    wait_text(client, &format!("{row} .phase"), "checkout Healthy", |t| {
        t.contains("Healthy")
    })
    .await;
    screenshot(client, "2-healthy").await;

    // A new revision: the page follows the controller to the pause, live.
    h.apply(&weir_e2e::controller::rollout(
        "checkout",
        "app:2",
        &istio_routing("checkout"),
        steps,
    ))
    .await;
    wait_text(client, &format!("{row} .phase"), "checkout Paused", |t| {
        t.contains("Paused")
    })
    .await;
    let step = wait_text(client, &format!("{row} .step"), "step 1 of 3", |t| {
        t.contains("1 / 3")
    })
    .await;
    assert_eq!(step.trim(), "1 / 3");
    let weight = wait_text(client, &format!("{row} .weight"), "weight 30", |t| {
        t.starts_with("30")
    })
    .await;
    println!("paused at weight {weight}");
    screenshot(client, "3-paused").await;

    // The promote button (reached by keyboard too: it is a real button).
    let promote = client
        .find(Locator::Css(&format!(
            "{row} button[data-action='promote']"
        )))
        .await
        .expect("promote button");
    promote.click().await.expect("click promote");
    wait_text(client, "#action-result", "the action's answer", |t| {
        t.contains("checkout")
    })
    .await;
    wait_text(
        client,
        &format!("{row} .phase"),
        "checkout Healthy after promote",
        |t| t.contains("Healthy"),
    )
    .await;
    screenshot(client, "4-promoted").await;
    let status = h.status("checkout").await;
    assert_eq!(status.phase.as_deref(), Some("Healthy"));
    assert_eq!(status.current_pod_hash, status.stable_rs, "fully promoted");

    // The plugins table shows the router the rollout used.
    let plugins = wait_text(client, "#plugins tbody", "the router's calls", |t| {
        t.contains("istio")
    })
    .await;
    println!("plugins: {plugins}");

    browser.client.close().await.expect("close");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysis_runs_measurements_are_plotted_against_its_condition() {
    use weir_e2e::{Answer, ScriptedServer};
    let server = ScriptedServer::start(vec![
        Answer::json(r#"{"rate": 0.97}"#),
        Answer::json(r#"{"rate": 0.99}"#),
    ])
    .await;
    let backend = Backend::embedded();
    let served = Served::start(&backend, config(), "another-t0ken").await;
    let (h, base, token) = (&served.h, served.base.clone(), served.token.clone());
    let port = server.addr.port();
    h.apply(&format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: argo-rollouts-config, namespace: weir-system}}
data:
  metricProviderPlugins: |
    - name: web
      http: {{allowHosts: ["127.0.0.1:{port}"]}}
"#
    ))
    .await;
    h.apply(&analysis_template(port)).await;
    h.apply(&istio_objects("checkout")).await;
    let steps = "        - setWeight: 30\n        - analysis: {templates: [{templateName: success-rate}]}\n        - pause: {}";
    h.deploy("checkout", &istio_routing("checkout"), steps)
        .await;
    h.apply(&weir_e2e::controller::rollout(
        "checkout",
        "app:2",
        &istio_routing("checkout"),
        steps,
    ))
    .await;
    h.wait_phase("checkout", "Paused").await;

    let browser = browser().await;
    let client = &browser.client;
    client
        .goto(&format!("{base}/dashboard?token={token}"))
        .await
        .expect("goto");
    let run = wait_text(client, "#runs .run", "the analysis run", |t| {
        t.contains("success-rate") && t.contains("2 measurement(s)")
    })
    .await;
    println!("run: {run}");
    assert!(run.contains("Successful"), "{run}");
    assert!(run.contains("success: result >= 0.95"), "{run}");
    assert!(run.contains("last 0.99"), "{run}");
    let points = client
        .find_all(Locator::Css("#runs .run svg circle"))
        .await
        .expect("points");
    assert_eq!(points.len(), 2, "one point per measurement");
    let threshold = client
        .find_all(Locator::Css("#runs .run svg line"))
        .await
        .expect("threshold");
    assert_eq!(threshold.len(), 1, "the condition's threshold");
    let label = client
        .find(Locator::Css("#runs .run svg"))
        .await
        .expect("chart")
        .attr("aria-label")
        .await
        .expect("label");
    assert_eq!(
        label.as_deref(),
        Some("success-rate: 2 measurements, last 0.99")
    );
    screenshot(client, "5-analysis").await;
    browser.client.close().await.expect("close");
    served.stop().await;
}
