//! A loopback server speaking CloudWatch's Query protocol far enough for
//! `GetMetricData`: it checks every request's AWS Signature Version 4 the
//! way AWS documents it (canonical request, string to sign, the derived
//! signing key), written here independently of the signer the plugin uses,
//! and answers `SignatureDoesNotMatch` (403) when it does not hold, as AWS
//! does. Otherwise it answers the scripted XML. A stand-in for AWS, which
//! these tests cannot reach.

use hmac::{Hmac, KeyInit, Mac};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: BTreeMap<String, String>,
    /// The whole body.
    pub body: String,
    /// What the signature check found: `Ok(access key id)` or why not.
    pub signature: Result<String, String>,
}

/// The server.
pub struct CloudWatchServer {
    /// `127.0.0.1:port`.
    pub addr: std::net::SocketAddr,
    /// Every request received.
    pub received: Arc<Mutex<Vec<Received>>>,
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a request's SigV4 `Authorization` against `secrets` (access key
/// id → secret key) for `service`.
fn check_signature(
    service_name: &str,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    secrets: &BTreeMap<String, String>,
) -> Result<String, String> {
    let authorization = headers
        .get("authorization")
        .ok_or("no Authorization header")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut parts = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or("malformed Authorization")?;
        parts.insert(k.to_string(), v.to_string());
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    let signed_headers = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let signature = parts.get("Signature").ok_or("no Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(format!("credential scope {credential:?}"));
    };
    if *service != service_name || *terminator != "aws4_request" {
        return Err(format!("credential scope {credential:?}"));
    }
    let amz_date = headers.get("x-amz-date").ok_or("no X-Amz-Date")?;
    if !amz_date.starts_with(date) {
        return Err("X-Amz-Date is not the credential's date".into());
    }
    for required in ["host", "x-amz-date"] {
        if !signed_headers.split(';').any(|h| h == required) {
            return Err(format!("{required} is not signed"));
        }
    }
    let secret = secrets
        .get(*key_id)
        .ok_or_else(|| format!("unknown access key {key_id}"))?;
    let (uri, query) = path.split_once('?').unwrap_or((path, ""));
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let value = headers
            .get(name)
            .ok_or_else(|| format!("signed header {name} not sent"))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let canonical_request = format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex(&Sha256::digest(body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    let expected = hex(&hmac(&k_signing, &string_to_sign));
    if &expected == signature {
        Ok(key_id.to_string())
    } else {
        Err("signature does not match".into())
    }
}

fn xml(status: u16, body: String) -> Response<http_body_util::Full<bytes::Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("response")
}

impl CloudWatchServer {
    /// Serves `answer` (a `GetMetricDataResponse`) to every correctly
    /// signed request by a key in `secrets` (access key id → secret key).
    pub async fn start(secrets: &[(&str, &str)], answer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let secrets: Arc<BTreeMap<String, String>> = Arc::new(
            secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let answer = Arc::new(answer.to_string());
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, secrets, answer) = (log.clone(), secrets.clone(), answer.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            let (log, secrets, answer) =
                                (log.clone(), secrets.clone(), answer.clone());
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let headers: BTreeMap<String, String> = parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect();
                                let method = parts.method.to_string();
                                let path = parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let signature = check_signature(
                                    "monitoring",
                                    &method,
                                    &path,
                                    &headers,
                                    &body,
                                    &secrets,
                                );
                                let response = match &signature {
                                    Ok(_) => xml(200, answer.to_string()),
                                    Err(why) => xml(
                                        403,
                                        format!(
                                            "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>{why}</Message></Error><RequestId>loopback</RequestId></ErrorResponse>"
                                        ),
                                    ),
                                };
                                log.lock().expect("log").push(Received {
                                    method,
                                    path,
                                    headers,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                    signature,
                                });
                                Ok::<_, Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CloudWatchServer { addr, received }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own published SigV4 test vector (`get-vanilla`, from the
    /// signature version 4 test suite): the checker must accept it, or it
    /// proves nothing; and refuse it once anything signed changes.
    #[test]
    fn the_checker_accepts_awss_published_vector_and_nothing_else() {
        let headers: BTreeMap<String, String> = [
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let secrets: BTreeMap<String, String> = [(
            "AKIDEXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        )]
        .into();
        assert_eq!(
            check_signature("service", "GET", "/", &headers, b"", &secrets),
            Ok("AKIDEXAMPLE".to_string())
        );
        assert!(check_signature("service", "GET", "/", &headers, b"x", &secrets).is_err());
        assert!(check_signature("service", "POST", "/", &headers, b"", &secrets).is_err());
        assert!(check_signature("monitoring", "GET", "/", &headers, b"", &secrets).is_err());
        let mut other_host = headers.clone();
        other_host.insert("host".into(), "example.amazonaws.com:443".into());
        assert!(check_signature("service", "GET", "/", &other_host, b"", &secrets).is_err());
    }
}
