//! Redaction: a recording leaves the process with no credential in it.
//!
//! Three sources are known to hold credentials: the data of Secrets the
//! call read (or wrote), HTTP request headers and query parameters whose
//! names say they carry one, and registration `args` whose names do. Each
//! value found there is replaced, and then scrubbed from every other
//! string of the recording too (a log line, a response body or a staged
//! write that echoes it).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use serde_json::Value;
use std::collections::BTreeSet;

/// What a redacted value is replaced with: plain letters, so a URL or a
/// header that held the value stays valid (a replay must still run).
pub const REDACTED: &str = "REDACTED";

/// Shortest value scrubbed everywhere (shorter ones would redact ordinary words).
const MIN_SCRUBBED: usize = 4;

/// Whether a header, query parameter or argument named `name` carries a credential.
pub fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "token",
        "secret",
        "password",
        "passwd",
        "credential",
        "key",
        "signature",
    ]
    .iter()
    .any(|w| name.contains(w))
}

/// Redacts `recording` (the JSON form of a `Recording`) in place, and
/// scrubs `known` (values the host knows are secret: a metric's
/// `secretKeyRef` arguments) wherever they appear; returns what was
/// redacted, by place. Fails (and the recording must then be dropped)
/// only when the values cannot be scrubbed.
pub fn redact(recording: &mut Value, known: &[String]) -> Result<Vec<String>, String> {
    let mut found = Found::default();
    for value in known {
        found.value(value);
    }
    if !known.is_empty() {
        found
            .places
            .insert("values of secretKeyRef arguments".into());
    }
    if let Some(answers) = recording.get_mut("answers").and_then(Value::as_array_mut) {
        for answer in answers {
            redact_answer(answer, &mut found);
        }
    }
    if let Some(writes) = recording
        .get_mut("stagedWrites")
        .and_then(Value::as_array_mut)
    {
        for write in writes {
            // An update's object is under `object`; a create's is the write
            // itself (tagged `op`).
            if write.get("object").is_some() {
                if let Some(object) = write.get_mut("object") {
                    redact_secret(object, "staged write", &mut found);
                }
            } else {
                redact_secret(write, "staged write", &mut found);
            }
        }
    }
    if let Some(args) = recording
        .pointer_mut("/registration/args")
        .and_then(Value::as_array_mut)
    {
        redact_args(args, &mut found);
    }
    let secrets: Vec<String> = found
        .values
        .into_iter()
        .filter(|v| v.len() >= MIN_SCRUBBED)
        .collect();
    if !secrets.is_empty() {
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&secrets)
            .map_err(|e| format!("cannot scrub {} secret values: {e}", secrets.len()))?;
        scrub(recording, &matcher, &vec![REDACTED; secrets.len()]);
    }
    Ok(found.places.into_iter().collect())
}

#[derive(Default)]
struct Found {
    values: BTreeSet<String>,
    places: BTreeSet<String>,
}

impl Found {
    fn value(&mut self, value: &str) {
        let value = value.trim();
        if !value.is_empty() && value != REDACTED {
            self.values.insert(value.to_string());
        }
    }
}

fn redact_answer(answer: &mut Value, found: &mut Found) {
    match answer.get("type").and_then(Value::as_str) {
        Some("cluster-get") => {
            if let Some(object) = answer.pointer_mut("/result/ok") {
                redact_secret(object, "read", found);
            }
        }
        Some("cluster-list") => {
            if let Some(items) = answer
                .pointer_mut("/result/ok")
                .and_then(Value::as_array_mut)
            {
                for item in items {
                    redact_secret(item, "read", found);
                }
            }
        }
        Some("http") => redact_http(answer, found),
        _ => {}
    }
}

/// Replaces a Secret's `data` (with base64 of [`REDACTED`], so a plugin
/// that decodes it still can) and `stringData` values.
fn redact_secret(object: &mut Value, how: &str, found: &mut Found) {
    let is_secret = object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1");
    if !is_secret {
        return;
    }
    let name = format!(
        "{}/{}",
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let placeholder = base64::engine::general_purpose::STANDARD.encode(REDACTED);
    for (field, encoded) in [("data", true), ("stringData", false)] {
        let Some(map) = object.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        for value in map.values_mut() {
            if let Some(text) = value.as_str() {
                found.value(text);
                if encoded
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text)
                    && let Ok(plain) = String::from_utf8(bytes)
                {
                    found.value(&plain);
                }
            }
            *value = Value::String(if encoded {
                placeholder.clone()
            } else {
                REDACTED.to_string()
            });
        }
        found
            .places
            .insert(format!("Secret {name} ({how}): {field}"));
    }
}

fn redact_http(answer: &mut Value, found: &mut Found) {
    if let Some(headers) = answer
        .get_mut("requestHeaders")
        .and_then(Value::as_array_mut)
    {
        redact_pairs(headers, "request header", found);
    }
    if let Some(headers) = answer
        .pointer_mut("/result/ok/headers")
        .and_then(Value::as_array_mut)
    {
        redact_pairs(headers, "response header", found);
    }
    // Query parameters are not rewritten here (re-encoding the URL would
    // change it): their values join the scrubbed ones, so the URL, the
    // call's arguments and anything else that holds them change alike and
    // a replay still matches its requests.
    if let Some(query) = answer
        .get("uri")
        .and_then(Value::as_str)
        .and_then(|uri| uri.split_once('?'))
        .map(|(_, q)| q.split('#').next().unwrap_or_default().to_string())
    {
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_credential_name(name)
                && !value.is_empty()
            {
                found.value(value);
                if let Some((_, decoded)) = url::form_urlencoded::parse(pair.as_bytes()).next() {
                    found.value(&decoded);
                }
                found.places.insert(format!("HTTP query parameter {name}"));
            }
        }
    }
}

/// Redacts `[name, value]` pairs whose name says they carry a credential.
fn redact_pairs(pairs: &mut [Value], what: &str, found: &mut Found) {
    for pair in pairs {
        let Some([name, value]) = pair.as_array_mut().map(Vec::as_mut_slice) else {
            continue;
        };
        let Some(name) = name.as_str() else { continue };
        if !is_credential_name(name) {
            continue;
        }
        if let Some(text) = value.as_str() {
            found.value(text);
            // `Bearer <token>`, `Basic <b64>`: the credential alone too.
            if let Some((_, credential)) = text.split_once(' ') {
                found.value(credential);
            }
        }
        found
            .places
            .insert(format!("{what} {}", name.to_ascii_lowercase()));
        *value = Value::String(REDACTED.into());
    }
}

/// Redacts `name=value` arguments, and the argument after a bare
/// `--name`, whose name says they carry a credential.
fn redact_args(args: &mut [Value], found: &mut Found) {
    let mut next_is_credential = false;
    for arg in args {
        let Some(text) = arg.as_str() else { continue };
        if std::mem::take(&mut next_is_credential) {
            found.value(text);
            found.places.insert("registration argument".into());
            *arg = Value::String(REDACTED.into());
            continue;
        }
        match text.split_once(['=', ':']) {
            Some((name, value)) if is_credential_name(name) && !value.is_empty() => {
                found.value(value);
                found.places.insert(format!(
                    "registration argument {}",
                    name.trim_start_matches('-')
                ));
                *arg = Value::String(format!("{name}={REDACTED}"));
            }
            None if text.starts_with('-') && is_credential_name(text) => {
                next_is_credential = true;
            }
            _ => {}
        }
    }
}

/// Replaces every occurrence of every secret in every string of `value`,
/// in one pass per string whatever the number of secrets (Aho-Corasick;
/// the longest secret wins where two overlap).
fn scrub(value: &mut Value, secrets: &AhoCorasick, replacements: &[&str]) {
    match value {
        Value::String(s) if secrets.is_match(s.as_str()) => {
            *s = secrets.replace_all(s, replacements);
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| scrub(v, secrets, replacements)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| scrub(v, secrets, replacements)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_data_headers_and_args_are_redacted_and_scrubbed_everywhere() {
        let token = "s3cr3t-t0ken-value";
        let encoded = base64::engine::general_purpose::STANDARD.encode(token);
        let mut recording = json!({
            "registration": {"args": ["--address=http://prom:9090", "--api-key=abcd1234", "--token", "xyz98765"]},
            "answers": [
                {"type": "cluster-get", "result": {"ok": {
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"namespace": "shop", "name": "creds"},
                    "data": {"token": encoded}}}},
                {"type": "http", "method": "GET",
                 "uri": "http://prom:9090/api?query=up&api_key=qwerty12",
                 "requestHeaders": [["authorization", format!("Bearer {token}")], ["accept", "application/json"]],
                 "result": {"ok": {"status": 200, "headers": [], "body": format!("echo {token}")}}}
            ],
            "logs": [format!("info: using {token} and xyz98765")],
            "stagedWrites": [],
        });
        let places = redact(&mut recording, &[]).expect("scrubbed");
        let text = recording.to_string();
        for leaked in [token, encoded.as_str(), "abcd1234", "xyz98765", "qwerty12"] {
            assert!(!text.contains(leaked), "{leaked} leaked: {text}");
        }
        assert!(text.contains("http://prom:9090"), "ordinary args are kept");
        assert!(
            text.contains("application/json"),
            "ordinary headers are kept"
        );
        assert_eq!(
            recording.pointer("/answers/0/result/ok/data/token"),
            Some(&json!(
                base64::engine::general_purpose::STANDARD.encode(REDACTED)
            ))
        );
        assert!(places.iter().any(|p| p.contains("Secret shop/creds")));
        assert!(places.iter().any(|p| p.contains("authorization")));
    }
}
