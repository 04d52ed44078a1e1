//! The vendor metric providers Argo builds in, shipped as sandboxed
//! components and run end to end: an AnalysisRun through the real
//! controller and sandbox, against a loopback server that speaks the
//! vendor's documented HTTP API (the requests it receives are asserted:
//! path, query, headers), and a host that is not on the provider's
//! allow-list refused. The vendors themselves are never reached.

use serde_json::Value;
use std::time::{Duration, Instant};
use weir_e2e::cloudwatch::CloudWatchServer;
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

/// A registration entry for a shipped vendor provider: it may reach
/// `port` on loopback and read Secrets in `weir-system`, where its
/// credentials Secret is (`secretNamespace`), with `args` besides.
fn vendor_entry(provider: &str, args: &[&str], port: u16) -> String {
    let mut all = vec!["secretNamespace=weir-system"];
    all.extend_from_slice(args);
    format!(
        r#"    - name: {provider}
      args: [{}]
      grant: {{read: [{{group: "", kind: Secret}}], namespaces: [weir-system]}}
      http: {{allowHosts: ["127.0.0.1:{port}"]}}"#,
        all.join(", ")
    )
}

/// The registration of the shipped vendor providers `entries`.
fn vendor_registration(entries: &[String]) -> String {
    plugin_registration(&[("metricProviderPlugins", &entries.join("\n"))])
}

fn datadog_registration(port: u16) -> String {
    vendor_registration(&[vendor_entry("datadog", &[], port)])
}

/// Secret `namespace/name` holding `pairs` (its `data` base64, as an API
/// server stores every Secret).
fn secret(namespace: &str, name: &str, pairs: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let data: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}: {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{{}}}\n",
        data.join(", ")
    )
}

/// A Secret with Datadog credentials pointing at `address`.
fn datadog_secret(namespace: &str, name: &str, address: &str) -> String {
    secret(
        namespace,
        name,
        &[
            ("api-key", "dd-api-key-1234"),
            ("app-key", "dd-app-key-5678"),
            ("address", address),
        ],
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

/// The message of a run's first measurement.
fn first_message(run: &Value) -> &str {
    first_measurement(run)["message"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_relic_nrql_through_nerdgraph_with_credentials_from_the_profile_secret() {
    let nerdgraph = ScriptedServer::start(vec![
        Answer::json(r#"{"data": {"actor": {"account": {"nrql": {"results": [{"successRate": 0.98}]}}}}}"#),
        Answer::json(
            r#"{"data": {"actor": {"account": {"nrql": {"results": [
                {"facet": "cart", "count": 3}, {"facet": "pay", "count": 5}]}}}}}"#,
        ),
        Answer::json(r#"{"data": {"actor": {"account": {"nrql": {"results": []}}}}}"#),
        Answer::json(
            r#"{"data": {"actor": {"account": null}}, "errors": [{"message": "NRQL Syntax Error: Error at line 1 position 6", "extensions": {"errorClass": "INVALID_INPUT"}}]}"#,
        ),
    ])
    .await;
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    let port = nerdgraph.addr.port();
    let url = format!("http://127.0.0.1:{port}/graphql");
    h.apply(&vendor_registration(&[vendor_entry("newRelic", &[], port)]))
        .await;
    let credentials = |account: &'static str| {
        vec![
            ("personal-api-key", "NRAK-weir-test"),
            ("account-id", account),
            ("region", "eu"),
            ("base-url-nerdgraph", url.as_str()),
        ]
    };
    // Argo's default profile, and a named one.
    h.apply(&secret("weir-system", "newrelic", &credentials("1234567")))
        .await;
    h.apply(&secret("weir-system", "team-nr", &credentials("7654321")))
        .await;

    h.apply(&run(
        "success-rate",
        "result.successRate >= 0.95",
        "        newRelic:\n          query: |\n            FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) as successRate where appName = 'cart'\n          timeout: 10\n",
    ))
    .await;
    let rate = verdict(&h, "success-rate").await;
    assert_eq!(rate["status"]["phase"], "Successful", "{rate}");
    assert_eq!(first_measurement(&rate)["value"], r#"{"successRate":0.98}"#);

    h.apply(&run(
        "facets",
        "result[1].count == 5 and all(result, {.count < 10})",
        "        newRelic:\n          profile: team-nr\n          query: FROM Transaction SELECT count(*) FACET appName\n",
    ))
    .await;
    let facets = verdict(&h, "facets").await;
    assert_eq!(facets["status"]["phase"], "Successful", "{facets}");

    h.apply(&run(
        "empty",
        "result.count > 0",
        "        newRelic:\n          query: FROM Nothing SELECT count(*)\n",
    ))
    .await;
    let empty = verdict(&h, "empty").await;
    assert_eq!(empty["status"]["phase"], "Error", "{empty}");
    assert!(
        first_message(&empty).contains("no results returned from NRQL query"),
        "{empty}"
    );

    h.apply(&run(
        "typo",
        "result.count > 0",
        "        newRelic:\n          query: FORM Transaction SELECT count(*)\n",
    ))
    .await;
    let typo = verdict(&h, "typo").await;
    assert_eq!(typo["status"]["phase"], "Error", "{typo}");
    assert!(first_message(&typo).contains("NRQL Syntax Error"), "{typo}");

    let requests = nerdgraph.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 4, "{requests:?}");
    let first = &requests[0];
    assert!(first.starts_with("POST /graphql "), "{first}");
    assert_eq!(header(first, "Api-Key"), Some("NRAK-weir-test"));
    let body: Value = serde_json::from_str(json_body(first)).expect("JSON body");
    assert_eq!(body["variables"]["accountId"], 1234567);
    assert_eq!(body["variables"]["timeout"], 10);
    assert!(
        body["variables"]["query"]
            .as_str()
            .unwrap_or("")
            .starts_with("FROM Transaction SELECT percentage"),
        "{body}"
    );
    let graphql = body["query"].as_str().unwrap_or("");
    assert!(
        graphql.contains("account(id: $accountId)") && graphql.contains("nrql(query: $query"),
        "the NRQL travels as a variable: {graphql}"
    );
    let second: Value = serde_json::from_str(json_body(&requests[1])).expect("JSON body");
    assert_eq!(
        second["variables"]["accountId"], 7654321,
        "the profile's account"
    );
    assert_eq!(second["variables"]["timeout"], 5, "Argo's default timeout");
    for run in [&rate, &facets, &empty, &typo] {
        assert!(!run.to_string().contains("NRAK-weir-test"), "{run}");
    }
    h.stop().await;
}

/// InfluxDB's annotated CSV for two tables of `_value`s.
const INFLUX_TABLES: &str =
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string\r
#group,false,false,true,true,false,false,true\r
#default,_result,,,,,,\r
,result,table,_start,_stop,_time,_value,destination_workload\r
,,0,2026-12-01T00:00:00Z,2026-12-01T00:15:00Z,2026-12-01T00:14:00Z,0.004,cart\r
,,1,2026-12-01T00:00:00Z,2026-12-01T00:15:00Z,2026-12-01T00:14:00Z,0.02,cart-canary\r
\r
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_flux_through_the_v2_query_api_with_credentials_from_the_profile_secret() {
    let influx = ScriptedServer::start(vec![
        Answer::json(INFLUX_TABLES),
        Answer::json(
            "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,\"error calling function \"\"filter\"\": missing required argument fn\",897\r\n\r\n",
        ),
        Answer {
            status: 401,
            body: r#"{"code": "unauthorized", "message": "unauthorized access"}"#.into(),
            delay: Duration::ZERO,
        },
    ])
    .await;
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    let port = influx.addr.port();
    let address = format!("http://127.0.0.1:{port}");
    h.apply(&vendor_registration(&[vendor_entry("influxdb", &[], port)]))
        .await;
    h.apply(&secret(
        "weir-system",
        "my-influxdb-secret",
        &[
            ("address", &address),
            ("authToken", "influx-token-42"),
            ("org", "shop & co"),
        ],
    ))
    .await;
    let flux = "        influxdb:\n          profile: my-influxdb-secret\n          query: |\n            from(bucket: \"app_istio\")\n              |> range(start: -15m)\n              |> filter(fn: (r) => r[\"destination_workload\"] =~ /cart/)\n";
    h.apply(&run("error-rate", "all(result, {# <= 0.01})", flux))
        .await;
    let rate = verdict(&h, "error-rate").await;
    assert_eq!(rate["status"]["phase"], "Failed", "{rate}");
    assert_eq!(
        first_measurement(&rate)["value"],
        "[0.004,0.02]",
        "every row of every table, as Argo reads them"
    );

    h.apply(&run("broken", "result[0] <= 0.01", flux)).await;
    let broken = verdict(&h, "broken").await;
    assert_eq!(broken["status"]["phase"], "Error", "{broken}");
    assert!(
        first_message(&broken).contains("missing required argument fn"),
        "{broken}"
    );

    h.apply(&run("refused", "result[0] <= 0.01", flux)).await;
    let refused = verdict(&h, "refused").await;
    assert_eq!(refused["status"]["phase"], "Error", "{refused}");
    assert!(
        first_message(&refused).contains("unauthorized access"),
        "{refused}"
    );

    let requests = influx.requests.lock().expect("requests").clone();
    let first = &requests[0];
    assert!(
        first.starts_with("POST /api/v2/query?org=shop%20%26%20co "),
        "{first}"
    );
    assert_eq!(
        header(first, "Authorization"),
        Some("Token influx-token-42")
    );
    let body: Value = serde_json::from_str(json_body(first)).expect("JSON body");
    assert_eq!(body["type"], "flux");
    assert_eq!(
        body["dialect"]["annotations"],
        serde_json::json!(["datatype", "group", "default"])
    );
    assert!(
        body["query"]
            .as_str()
            .unwrap_or("")
            .starts_with("from(bucket: \"app_istio\")\n  |> range(start: -15m)"),
        "{body}"
    );
    for run in [&rate, &broken, &refused] {
        assert!(!run.to_string().contains("influx-token-42"), "{run}");
    }
    h.stop().await;
}

/// A `GetMetricDataResponse` with one returned query.
const CLOUDWATCH_ANSWER: &str = r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <GetMetricDataResult>
    <MetricDataResults>
      <member>
        <Id>rate</Id>
        <Label>rate</Label>
        <StatusCode>Complete</StatusCode>
        <Timestamps><member>2026-12-01T00:10:00Z</member><member>2026-12-01T00:05:00Z</member><member>2026-12-01T00:00:00Z</member></Timestamps>
        <Values><member>0.002</member><member>0.004</member><member>0.001</member></Values>
      </member>
    </MetricDataResults>
    <Messages/>
  </GetMetricDataResult>
  <ResponseMetadata><RequestId>4f3c1a2e-loopback</RequestId></ResponseMetadata>
</GetMetricDataResponse>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_get_metric_data_signed_with_sigv4_from_the_secret() {
    let aws = CloudWatchServer::start(
        &[("AKIDWEIRTEST", "wJalrXUtnFEMI/K7MDENG+weirSECRET")],
        CLOUDWATCH_ANSWER,
    )
    .await;
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    let port = aws.addr.port();
    let endpoint = format!("http://127.0.0.1:{port}");
    h.apply(&vendor_registration(&[vendor_entry(
        "cloudWatch",
        &[],
        port,
    )]))
    .await;
    let credentials = |secret_key: &'static str| {
        vec![
            ("AWS_ACCESS_KEY_ID", "AKIDWEIRTEST"),
            ("AWS_SECRET_ACCESS_KEY", secret_key),
            ("AWS_SESSION_TOKEN", "session-token-xyz"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ]
    };
    h.apply(&secret(
        "weir-system",
        "cloudwatch-secret",
        &credentials("wJalrXUtnFEMI/K7MDENG+weirSECRET"),
    ))
    .await;
    // Argo's documentation example.
    let block = "        cloudWatch:\n          interval: 30m\n          metricDataQueries:\n          - {id: rate, expression: errors / requests}\n          - {id: errors, metricStat: {metric: {namespace: app, metricName: errors, dimensions: [{name: Service, value: cart}]}, period: 300, stat: Sum, unit: Count}, returnData: false}\n          - {id: requests, metricStat: {metric: {namespace: app, metricName: requests}, period: 300, stat: Sum, unit: Count}, returnData: false}\n";
    h.apply(&run(
        "success-rate",
        "len(result[0].Values) >= 3 and all(result[0].Values, {# <= 0.01})",
        block,
    ))
    .await;
    let rate = verdict(&h, "success-rate").await;
    assert_eq!(rate["status"]["phase"], "Successful", "{rate}");
    let value: Value =
        serde_json::from_str(first_measurement(&rate)["value"].as_str().unwrap_or("null"))
            .expect("value");
    assert_eq!(value[0]["Id"], "rate");
    assert_eq!(value[0]["StatusCode"], "Complete");
    assert_eq!(value[0]["Values"], serde_json::json!([0.002, 0.004, 0.001]));

    let received = aws.received.lock().expect("received").clone();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(
        request.signature,
        Ok("AKIDWEIRTEST".to_string()),
        "{request:?}"
    );
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/")
    );
    let authorization = request
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    assert!(
        authorization.contains("/eu-west-1/monitoring/aws4_request"),
        "{authorization}"
    );
    assert_eq!(
        request
            .headers
            .get("x-amz-security-token")
            .map(String::as_str),
        Some("session-token-xyz")
    );
    let form: std::collections::BTreeMap<String, String> =
        url::form_urlencoded::parse(request.body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form.get("Action").map(String::as_str),
        Some("GetMetricData")
    );
    assert_eq!(form.get("Version").map(String::as_str), Some("2010-08-01"));
    assert_eq!(
        form.get("MetricDataQueries.member.1.Expression")
            .map(String::as_str),
        Some("errors / requests")
    );
    assert_eq!(
        form.get("MetricDataQueries.member.2.MetricStat.Metric.Dimensions.member.1.Value")
            .map(String::as_str),
        Some("cart")
    );
    assert_eq!(
        form.get("MetricDataQueries.member.3.ReturnData")
            .map(String::as_str),
        Some("false")
    );
    let start = chrono::DateTime::parse_from_rfc3339(
        form.get("StartTime").map(String::as_str).unwrap_or(""),
    )
    .expect("StartTime");
    let end =
        chrono::DateTime::parse_from_rfc3339(form.get("EndTime").map(String::as_str).unwrap_or(""))
            .expect("EndTime");
    assert_eq!((end - start).num_seconds(), 1800, "interval 30m");

    // A wrong secret key: the loopback AWS refuses the signature, and the
    // measurement says so.
    h.apply(&secret(
        "weir-system",
        "cloudwatch-secret",
        &credentials("not-the-secret-key"),
    ))
    .await;
    h.apply(&run("forged", "len(result) > 0", block)).await;
    let forged = verdict(&h, "forged").await;
    assert_eq!(forged["status"]["phase"], "Error", "{forged}");
    assert!(
        first_message(&forged).contains("SignatureDoesNotMatch"),
        "{forged}"
    );
    for run in [&rate, &forged] {
        assert!(!run.to_string().contains("weirSECRET"), "{run}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_vendors_off_their_allow_lists_or_without_their_secrets_are_error_measurements() {
    let backend = Backend::from_env();
    backend.grant("", &["secrets"], &["get"]);
    let h = Harness::on(&backend).await;
    // Allowed: loopback port 1 only; every Secret points at port 9.
    h.apply(&vendor_registration(&[
        vendor_entry("newRelic", &[], 1),
        vendor_entry("influxdb", &[], 1),
        vendor_entry("cloudWatch", &["region=us-east-1"], 1),
    ]))
    .await;
    let elsewhere = "http://127.0.0.1:9";
    let nerdgraph = format!("{elsewhere}/graphql");
    h.apply(&secret(
        "weir-system",
        "newrelic",
        &[
            ("personal-api-key", "k"),
            ("account-id", "1"),
            ("base-url-nerdgraph", &nerdgraph),
        ],
    ))
    .await;
    h.apply(&secret(
        "weir-system",
        "influxdb",
        &[("address", elsewhere), ("authToken", "t"), ("org", "o")],
    ))
    .await;
    h.apply(&secret(
        "weir-system",
        "cloudwatch-secret",
        &[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_URL", elsewhere),
        ],
    ))
    .await;
    let blocks = [
        (
            "nr",
            "        newRelic:\n          query: FROM T SELECT count(*)\n",
        ),
        (
            "influx",
            "        influxdb:\n          query: 'from(bucket: \"b\")'\n",
        ),
        (
            "cw",
            "        cloudWatch:\n          metricDataQueries: [{id: q, expression: \"SELECT 1\"}]\n",
        ),
        (
            "nr-missing",
            "        newRelic:\n          profile: nowhere\n          query: FROM T SELECT count(*)\n",
        ),
    ];
    for (name, block) in blocks {
        h.apply(&run(name, "true", block)).await;
    }
    for name in ["nr", "influx", "cw"] {
        let run = verdict(&h, name).await;
        assert_eq!(run["status"]["phase"], "Error", "{run}");
        assert!(first_message(&run).contains("allowHosts"), "{name}: {run}");
    }
    let missing = verdict(&h, "nr-missing").await;
    assert_eq!(missing["status"]["phase"], "Error", "{missing}");
    assert!(
        first_message(&missing).contains("weir-system/nowhere"),
        "{missing}"
    );
    h.stop().await;
}
