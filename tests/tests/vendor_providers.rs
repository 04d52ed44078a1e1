//! The vendor metric providers Argo builds in, shipped as sandboxed
//! components and run end to end: an AnalysisRun through the real
//! controller and sandbox, against a loopback server that speaks the
//! vendor's documented HTTP API (the requests it receives are asserted:
//! path, query, headers), and a host that is not on the provider's
//! allow-list refused. The vendors themselves are never reached.

use serde_json::Value;
use std::time::{Duration, Instant};
use weir_e2e::controller::{Backend, Harness, plugin_registration};
use weir_e2e::{Answer, ScriptedServer};

/// Waits (up to 30 s) for AnalysisRun `shop/name` to reach a verdict.
async fn verdict(h: &Harness, name: &str) -> Value {
    let started = Instant::now();
    loop {
        let run = h.get("argoproj.io/v1alpha1", "AnalysisRun", name).await;
        let phase = run["status"]["phase"].as_str().unwrap_or("");
        if matches!(phase, "Successful" | "Failed" | "Error") {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} has no verdict after 30 s: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The registration: `provider` may reach `port` on loopback.
fn registration(provider: &str, port: u16) -> String {
    plugin_registration(&[(
        "metricProviderPlugins",
        &format!("    - name: {provider}\n      http: {{allowHosts: [\"127.0.0.1:{port}\"]}}"),
    )])
}

/// A one-measurement AnalysisRun `shop/name` with `condition` and the
/// provider block `provider` (YAML, indented eight spaces).
fn run(name: &str, condition: &str, provider: &str) -> String {
    format!(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}, namespace: shop}}
spec:
  metrics:
    - name: {name}
      count: 1
      successCondition: "{condition}"
      failureLimit: 0
      consecutiveErrorLimit: 0
      provider:
{provider}
"#
    )
}

fn first_measurement(run: &Value) -> &Value {
    &run["status"]["metricResults"][0]["measurements"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphite_measures_the_first_target_through_the_render_api() {
    let graphite = ScriptedServer::start(vec![Answer::json(
        r#"[{"target": "success-rate", "datapoints": [[95.5, 1700000000], [null, 1700000060], [97.25, 1700000120]]},
            {"target": "ignored", "datapoints": [[1, 1700000000]]}]"#,
    )])
    .await;
    let backend = Backend::from_env();
    let h = Harness::on(&backend).await;
    let port = graphite.addr.port();
    h.apply(&registration("graphite", port)).await;
    let block = |port: u16| {
        format!(
            "        graphite:\n          address: http://127.0.0.1:{port}\n          query: |\n            target=summarize(\n              asPercent(sumSeries(app.ok.count), sumSeries(app.all.count)),\n              '5min', 'avg')\n            &from=-5min\n"
        )
    };
    h.apply(&run(
        "rate",
        "result[0] >= 90 && all(result, # > 90)",
        &block(port),
    ))
    .await;
    let closed = port.checked_add(1).unwrap_or(1);
    h.apply(&run("blocked", "result[0] >= 90", &block(closed)))
        .await;

    let rate = verdict(&h, "rate").await;
    assert_eq!(rate["status"]["phase"], "Successful", "{rate}");
    assert_eq!(first_measurement(&rate)["value"], "[95.5,97.25]", "{rate}");
    let requests = graphite.requests.lock().expect("requests").clone();
    let request = requests.first().expect("one request");
    let line = request.lines().next().unwrap_or("");
    // Whitespace gone, format=json first, each parameter re-encoded.
    assert!(
        line.starts_with("GET /render?format=json&target=summarize%28asPercent%28sumSeries%28app.ok.count%29%2CsumSeries%28app.all.count%29%29%2C%275min%27%2C%27avg%27%29&from=-5min "),
        "{line}"
    );

    let blocked = verdict(&h, "blocked").await;
    assert_eq!(blocked["status"]["phase"], "Error", "{blocked}");
    let message = first_measurement(&blocked)["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("allow"), "{message}");
    h.stop().await;
}
