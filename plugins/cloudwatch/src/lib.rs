//! The CloudWatch metric provider, with Argo Rollouts' `cloudWatch` block
//! (`metricproviders/cloudwatch`): `interval` (the window ending now,
//! default `5m`) and `metricDataQueries` (`id`, `expression`, `label`,
//! `metricStat {metric {namespace, metricName, dimensions}, period, stat,
//! unit}`, `period`, `returnData`), sent as one `GetMetricData` call.
//!
//! The value is the list of `MetricDataResult`s with the field names Argo's
//! conditions use (`result[0].Values`, `.Timestamps`, `.Id`, `.Label`,
//! `.StatusCode`, `.Messages`); the call's own messages are the
//! measurement's `messages` metadata.
//!
//! Credentials: Argo takes the AWS SDK's ambient chain (environment,
//! files, instance roles), which a sandbox does not have. Weir reads the
//! Secret Argo's documentation puts those variables in, as the registration
//! names it: `args: [secretNamespace=<ns>, secretName=<name>]` (default
//! name `cloudwatch-secret`), with `grant.read` of Secrets in that
//! namespace. Keys: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
//! `AWS_SESSION_TOKEN`, `AWS_REGION` (or `args: [region=<region>]`), and
//! optional `AWS_ENDPOINT_URL_CLOUDWATCH` / `AWS_ENDPOINT_URL` (the AWS
//! SDKs' endpoint overrides; default `https://monitoring.<region>.amazonaws.com`).
//!
//! Requests use CloudWatch's Query protocol (`POST /`, form-encoded, XML
//! answers), signed with AWS Signature Version 4 (service `monitoring`) by
//! the `aws-sigv4` crate. They go through `wasi:http` to hosts on
//! `http.allowHosts` only. Tested against a loopback server that checks
//! the signature the way AWS documents it
//! (`tests/tests/vendor_providers.rs`); AWS itself was not reached.

mod query;
mod response;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::date_time::{DateTime, Format};
use serde_json::Value;
use std::time::{Duration, SystemTime};
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::duration::parse_go_duration;
use weir_plugin_sdk::http;
use weir_plugin_sdk::provider::exports::weir::plugin::metric_provider::{
    AnalysisRun, Measurement, Metric,
};
use weir_plugin_sdk::secrets::Secret;

const DEFAULT_SECRET: &str = "cloudwatch-secret";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
const TIMEOUT_MS: u64 = 10_000;

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(format!("cloudWatch provider: {}", message.into()))
}

/// What signing and sending need from the credentials Secret.
struct Account {
    identity: Identity,
    region: String,
    endpoint: String,
}

fn account() -> Result<Account, PluginError> {
    let name = weir_plugin_sdk::registration_arg("secretName")
        .unwrap_or_else(|| DEFAULT_SECRET.to_string());
    let secret = Secret::read_from_registration("cloudWatch provider", &name)?;
    let region = match weir_plugin_sdk::registration_arg("region") {
        Some(region) => region,
        None => secret.get("AWS_REGION")?.ok_or_else(|| {
            invalid(format!(
                "no region: set AWS_REGION in Secret {} or `args: [region=<region>]` in the registration",
                secret.describe()
            ))
        })?,
    };
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(format!("region {region:?} is not an AWS region")));
    }
    let endpoint = match secret.get("AWS_ENDPOINT_URL_CLOUDWATCH")? {
        Some(url) => url,
        None => secret
            .get("AWS_ENDPOINT_URL")?
            .unwrap_or_else(|| format!("https://monitoring.{region}.amazonaws.com")),
    };
    let credentials = Credentials::new(
        secret.require("AWS_ACCESS_KEY_ID")?,
        secret.require("AWS_SECRET_ACCESS_KEY")?,
        secret.get("AWS_SESSION_TOKEN")?,
        None,
        "weir-cloudwatch-secret",
    );
    Ok(Account {
        identity: credentials.into(),
        region,
        endpoint: format!("{}/", endpoint.trim_end_matches('/')),
    })
}

fn iso8601(time: SystemTime) -> Result<String, PluginError> {
    DateTime::from(time)
        .fmt(Format::DateTime)
        .map_err(|e| PluginError::Internal(format!("formatting {time:?}: {e}")))
}

/// The signed `GetMetricData` request for `body`.
fn signed_request(
    account: &Account,
    body: String,
    now: SystemTime,
) -> Result<http::Request, PluginError> {
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let headers = [("content-type", content_type)];
    let signable = SignableRequest::new(
        "POST",
        account.endpoint.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| invalid(format!("endpoint {:?}: {e}", account.endpoint)))?;
    let params = v4::SigningParams::builder()
        .identity(&account.identity)
        .region(&account.region)
        .name("monitoring")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| PluginError::Internal(format!("SigV4 parameters: {e}")))?
        .into();
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| PluginError::Internal(format!("SigV4 signing: {e}")))?
        .into_parts();
    let mut all_headers = vec![("Content-Type".to_string(), content_type.to_string())];
    all_headers.extend(
        instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    Ok(http::Request {
        method: "POST".into(),
        url: account.endpoint.clone(),
        headers: all_headers,
        body: Some(body.into_bytes()),
        timeout_ms: Some(TIMEOUT_MS),
        insecure: false,
    })
}

/// CloudWatch's error answer as a plugin error: a credential or signature
/// problem is `denied`, a parameter `invalid-config`, the rest `transient`.
fn answer_error(status: u16, body: &str) -> PluginError {
    let Some(error) = response::aws_error(body) else {
        let text = http::excerpt(body.as_bytes());
        return PluginError::Transient(format!("CloudWatch answered {status}: {text}"));
    };
    let message = http::excerpt(format!("CloudWatch {}: {}", error.code, error.message).as_bytes());
    match error.code.as_str() {
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "AccessDenied"
        | "AccessDeniedException"
        | "ExpiredToken"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "UnrecognizedClientException" => PluginError::Denied(message),
        code if code.starts_with("InvalidParameter")
            || code.starts_with("MissingParameter")
            || code == "ValidationError" =>
        {
            PluginError::InvalidConfig(message)
        }
        _ => PluginError::Transient(message),
    }
}

fn measure(_run: &AnalysisRun, metric: &Metric) -> Result<Measurement, PluginError> {
    let config: query::Config =
        weir_plugin_sdk::parse_config("cloudWatch provider", &metric.config)?;
    query::check(&config).map_err(invalid)?;
    let interval = match &config.interval {
        None => DEFAULT_INTERVAL,
        Some(text) => parse_go_duration(text).map_err(|e| invalid(format!("interval: {e}")))?,
    };
    let account = account()?;
    let now = SystemTime::now();
    let start = now.checked_sub(interval).unwrap_or(SystemTime::UNIX_EPOCH);
    let body = query::form_body(&config, &iso8601(start)?, &iso8601(now)?).map_err(invalid)?;
    let request = signed_request(&account, body, now)?;
    let response = http::send(&request).map_err(|e| e.into_plugin_error(&account.endpoint))?;
    let text = String::from_utf8_lossy(&response.body);
    if !(200..300).contains(&response.status) {
        return Err(answer_error(response.status, &text));
    }
    let data = response::metric_data(&text).map_err(|e| {
        PluginError::Internal(format!(
            "CloudWatch's answer is not a GetMetricData answer: {e}"
        ))
    })?;
    let mut metadata = vec![];
    if !data.messages.is_empty() {
        metadata.push(("messages".to_string(), data.messages.join("; ")));
    }
    if data.next_token {
        // Argo reads one page too; say so rather than drop it silently.
        metadata.push((
            "nextToken".to_string(),
            "more results were not read".to_string(),
        ));
    }
    Ok(weir_plugin_sdk::measured(
        Value::from(data.results).to_string(),
        metadata,
    ))
}

struct CloudWatch;

weir_plugin_sdk::export_instant_metric_provider!(CloudWatch, measure);
