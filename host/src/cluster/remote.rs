//! A cluster reached through a running `weir run` controller's API, for the
//! command line while the controller holds the embedded store (redb lets
//! one process open a database at a time).

use super::{Cluster, ClusterError, ObjectKey, Write};
use serde_json::Value;

/// The API client.
pub struct RemoteCluster {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

fn unavailable(base: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(format!("controller API at {base}: {e}"))
}

impl RemoteCluster {
    /// A client of the controller API at `base` (`http://127.0.0.1:9464`),
    /// sending `token` (what `weir run` wrote to `STORE.token`) as a bearer
    /// token.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        RemoteCluster {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            client: reqwest::Client::new(),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClusterError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(&self.base, e))?;
        let ok = response.status().is_success();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(&self.base, e))?;
        if ok {
            serde_json::from_slice(&body).map_err(|e| unavailable(&self.base, e))
        } else {
            Err(
                serde_json::from_slice::<ClusterError>(&body).unwrap_or_else(|_| {
                    unavailable(&self.base, String::from_utf8_lossy(&body).into_owned())
                }),
            )
        }
    }
}

impl RemoteCluster {
    /// The running controller's shadow report of plugin `name`.
    pub async fn shadow_report(
        &self,
        name: &str,
    ) -> Result<crate::plugin::ShadowReport, ClusterError> {
        let url = format!("{}/api/v1/plugins/shadow", self.base);
        self.send(self.client.get(url).query(&[("name", name)]))
            .await
    }
}

#[async_trait::async_trait]
impl Cluster for RemoteCluster {
    async fn get(&self, key: &ObjectKey) -> Result<Value, ClusterError> {
        let request = self
            .client
            .get(format!("{}/api/v1/get", self.base))
            .query(&[
                ("group", key.group.as_str()),
                ("kind", key.kind.as_str()),
                ("namespace", key.namespace.as_str()),
                ("name", key.name.as_str()),
            ]);
        self.send(request).await
    }

    async fn list(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        labels: &[(String, String)],
    ) -> Result<Vec<Value>, ClusterError> {
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let request = self
            .client
            .get(format!("{}/api/v1/list", self.base))
            .query(&[
                ("group", group),
                ("kind", kind),
                ("namespace", namespace),
                ("labelSelector", selector.as_str()),
            ]);
        self.send(request).await
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Option<Value>>, ClusterError> {
        let body = serde_json::to_vec(&writes)
            .map_err(|e| ClusterError::Invalid(format!("writes: {e}")))?;
        let request = self
            .client
            .post(format!("{}/api/v1/apply", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }
}
