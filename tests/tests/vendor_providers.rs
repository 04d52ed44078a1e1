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

/// The registration of the shipped datadog provider: it may reach `port`
/// on loopback, read Secrets, and in `weir-system` too, where its
/// credentials Secret is (`secretNamespace`).
fn datadog_registration(port: u16) -> String {
    plugin_registration(&[(
        "metricProviderPlugins",
        &format!(
            r#"    - name: datadog
      args: [secretNamespace=weir-system]
      grant: {{read: [{{group: "", kind: Secret}}], namespaces: [weir-system]}}
      http: {{allowHosts: ["127.0.0.1:{port}"]}}"#
        ),
    )])
}

/// A Secret with Datadog credentials pointing at `address` (its `data`
/// base64, as an API server stores every Secret).
fn datadog_secret(namespace: &str, name: &str, address: &str) -> String {
    use base64::Engine as _;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{api-key: {}, app-key: {}, address: {}}}\n",
        encode("dd-api-key-1234"),
        encode("dd-app-key-5678"),
        encode(address)
    )
}

/// The JSON document in a raw request's body (sent chunked or not).
fn json_body(request: &str) -> &str {
    let body = request.split("\r\n\r\n").nth(1).unwrap_or("");
    match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) if start <= end => body.get(start..=end).unwrap_or(""),
        _ => "",
    }
}

/// The header `name` of a raw request (case-insensitive), if present.
fn header<'r>(request: &'r str, name: &str) -> Option<&'r str> {
    request.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_v2_formulas_and_v1_queries_with_credentials_from_secrets() {
    let datadog = ScriptedServer::start(vec![
        Answer::json(
            r#"{"data": {"type": "scalar_response", "attributes": {"columns": [
                {"name": "a / b", "type": "number", "values": [0.02], "meta": {"unit": null}}]}}}"#,
        ),
        Answer::json(r#"{"series": [{"pointlist": [[1700000000000, 0.5], [1700000060000, 0.01]]}]}"#),
        Answer::json(
            r#"{"data": {"type": "scalar_response", "attributes": {"columns": [
                {"name": "service", "type": "group", "values": [["service:cart"], ["service:pay"], ["service:ship"]]},
                {"name": "query", "type": "number", "values": [0.01, null, 0.03]}]}}}"#,
        ),
    ])
    .await;
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    let port = datadog.addr.port();
    let address = format!("http://127.0.0.1:{port}");
    h.apply(&datadog_registration(port)).await;
    // Argo's default: Secret `datadog` in the controller's namespace.
    h.apply(&datadog_secret("weir-system", "datadog", &address))
        .await;
    // secretRef.namespaced: a Secret in the AnalysisRun's namespace.
    h.apply(&datadog_secret("shop", "team-dd", &address)).await;

    h.apply(&run(
        "errors",
        "result < 0.05",
        "        datadog:\n          apiVersion: v2\n          interval: 5m\n          aggregator: sum\n          queries:\n            a: sum:requests.errors{service:cart}.as_count()\n            b: sum:requests{service:cart}.as_count()\n          formula: \"a / b\"\n",
    ))
    .await;
    let errors = verdict(&h, "errors").await;
    assert_eq!(errors["status"]["phase"], "Successful", "{errors}");
    assert_eq!(first_measurement(&errors)["value"], "0.02");

    h.apply(&run(
        "legacy",
        "result < 0.05",
        "        datadog:\n          query: avg:errors{service:cart}\n          secretRef: {name: team-dd, namespaced: true}\n",
    ))
    .await;
    let legacy = verdict(&h, "legacy").await;
    assert_eq!(legacy["status"]["phase"], "Successful", "{legacy}");
    assert_eq!(
        first_measurement(&legacy)["value"],
        "0.01",
        "the last point"
    );

    h.apply(&run(
        "grouped",
        "all(result, # < 0.05)",
        "        datadog:\n          apiVersion: v2\n          query: avg:errors{*} by {service}\n",
    ))
    .await;
    let grouped = verdict(&h, "grouped").await;
    assert_eq!(grouped["status"]["phase"], "Successful", "{grouped}");
    let measurement = first_measurement(&grouped);
    assert_eq!(measurement["value"], "[0.01,0.03]", "nulls skipped");
    let groups: Value =
        serde_json::from_str(measurement["metadata"]["groups"].as_str().unwrap_or("null"))
            .expect("groups metadata");
    assert_eq!(
        groups,
        serde_json::json!([{"name": "service:cart", "value": 0.01}, {"name": "service:ship", "value": 0.03}])
    );

    let requests = datadog.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let v2 = &requests[0];
    assert!(v2.starts_with("POST /api/v2/query/scalar "), "{v2}");
    assert_eq!(header(v2, "DD-API-KEY"), Some("dd-api-key-1234"));
    assert_eq!(header(v2, "DD-APPLICATION-KEY"), Some("dd-app-key-5678"));
    let body: Value = serde_json::from_str(json_body(v2)).expect("JSON body");
    let attributes = &body["data"]["attributes"];
    assert_eq!(body["data"]["type"], "scalar_request");
    assert_eq!(
        attributes["queries"],
        serde_json::json!([
            {"aggregator": "sum", "data_source": "metrics", "name": "a", "query": "sum:requests.errors{service:cart}.as_count()"},
            {"aggregator": "sum", "data_source": "metrics", "name": "b", "query": "sum:requests{service:cart}.as_count()"}
        ])
    );
    assert_eq!(
        attributes["formulas"],
        serde_json::json!([{"formula": "a / b"}])
    );
    let window = attributes["to"].as_u64().unwrap_or(0) - attributes["from"].as_u64().unwrap_or(0);
    assert_eq!(window, 300_000, "interval 5m, in milliseconds");
    let v1 = &requests[1];
    assert!(
        v1.starts_with("GET /api/v1/query?from=")
            && v1.contains("&query=avg%3Aerrors%7Bservice%3Acart%7D&to="),
        "{v1}"
    );
    assert_eq!(header(v1, "DD-API-KEY"), Some("dd-api-key-1234"));
    // The keys never reach the run's status.
    for run in [&errors, &legacy, &grouped] {
        assert!(!run.to_string().contains("dd-api-key-1234"), "{run}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_off_its_allow_list_or_without_its_secret_is_an_error_measurement() {
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    h.apply(&datadog_registration(1)).await;
    h.apply(&datadog_secret(
        "weir-system",
        "datadog",
        "http://127.0.0.1:9",
    ))
    .await;
    h.apply(&run(
        "blocked",
        "result < 0.05",
        "        datadog:\n          apiVersion: v2\n          query: sum:errors{*}\n",
    ))
    .await;
    h.apply(&run(
        "missing",
        "result < 0.05",
        "        datadog:\n          apiVersion: v2\n          query: sum:errors{*}\n          secretRef: {name: nowhere, namespaced: true}\n",
    ))
    .await;
    let blocked = verdict(&h, "blocked").await;
    assert_eq!(blocked["status"]["phase"], "Error", "{blocked}");
    let message = first_measurement(&blocked)["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("allowHosts"), "{message}");
    let missing = verdict(&h, "missing").await;
    assert_eq!(missing["status"]["phase"], "Error", "{missing}");
    let message = first_measurement(&missing)["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("shop/nowhere"), "{message}");
    h.stop().await;
}
