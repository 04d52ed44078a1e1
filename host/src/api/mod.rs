//! The controller's HTTP endpoint: `/metrics` (Prometheus exposition),
//! `/healthz`, and, on the embedded store only, a small object API
//! (`/api/v1/get`, `list`, `apply`) through which `weir get`, `apply`,
//! `promote` and `abort` reach the store while the controller holds it.
//!
//! The object API writes with the controller's own authority, so it is
//! served only on loopback and only to requests carrying the bearer token
//! `weir run` wrote next to the store ([`token`]); a request without it gets
//! 401 and nothing is read or written. On Kubernetes it is not served at all:
//! the command line talks to the API server with the user's own credentials.

pub mod dashboard;
pub mod token;

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, parse_label_selector};
use crate::controller::Metrics;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Arc;

/// The largest request body accepted (an `apply` of many manifests).
const MAX_BODY: usize = 16 << 20;

/// Who may use the object API.
#[derive(Debug, Clone)]
pub enum ObjectApi {
    /// Not served (on Kubernetes): only `/metrics` and `/healthz`.
    Off,
    /// Served to requests with `Authorization: Bearer <token>`.
    Token(String),
}

/// What the endpoint serves.
pub struct ApiState {
    /// The store.
    pub cluster: Arc<dyn Cluster>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The object API, and who may use it.
    pub object_api: ObjectApi,
    /// The controller's plugins (for shadow reports), when one runs here.
    pub registry: Option<Arc<crate::controller::registry::PluginRegistry>>,
}

/// Serves connections from `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => cluster_error(ClusterError::Invalid(e.to_string())),
    }
}

fn cluster_error(error: ClusterError) -> Response<Full<Bytes>> {
    let status = match &error {
        ClusterError::NotFound(_) => StatusCode::NOT_FOUND,
        ClusterError::AlreadyExists(_) | ClusterError::Conflict { .. } => StatusCode::CONFLICT,
        ClusterError::Invalid(_) => StatusCode::BAD_REQUEST,
        ClusterError::Forbidden(_) => StatusCode::FORBIDDEN,
        ClusterError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        ClusterError::Unavailable(_) | ClusterError::PartiallyApplied { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let body = serde_json::to_vec(&error).unwrap_or_default();
    respond(status, "application/json", body)
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The refusal of `request` when it may not use the object API.
fn refusal(state: &ApiState, request: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    match &state.object_api {
        ObjectApi::Off => Some(respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the object API is not served here (on Kubernetes, use the API server: kubectl, or weir with --kubeconfig)\n",
        )),
        ObjectApi::Token(expected) => {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // The dashboard's browser holds the token in its cookie.
            let cookie = dashboard::cookie_token(request.headers()).unwrap_or_default();
            if token::matches(expected, given) || token::matches(expected, &cookie) {
                None
            } else {
                let error = ClusterError::Forbidden(
                    "the controller's object API needs the bearer token `weir run` wrote next to the store (STORE.token, mode 0600); run weir as the user that runs the controller".into(),
                );
                Some(respond(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    serde_json::to_vec(&error).unwrap_or_default(),
                ))
            }
        }
    }
}

/// `/dashboard` and its assets: the page only to a browser with the token
/// (in the query once, then in the cookie), the script and style to anyone
/// (they hold no data).
fn dashboard_page(state: &ApiState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let Some((content_type, body)) = dashboard::asset(path) else {
        return respond(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    };
    if path.ends_with(".js") || path.ends_with(".css") {
        return respond(StatusCode::OK, content_type, body);
    }
    let ObjectApi::Token(expected) = &state.object_api else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the dashboard is served with the object API only (weir run on the embedded store)\n",
        );
    };
    let signed_in = |token: &str| token::matches(expected, token);
    if let Some(given) = query(request).get("token") {
        if !signed_in(given) {
            return respond(
                StatusCode::UNAUTHORIZED,
                "text/html; charset=utf-8",
                dashboard::SIGN_IN_PAGE,
            );
        }
        // Into an HttpOnly, same-site cookie, and out of the address bar.
        let mut response = respond(StatusCode::SEE_OTHER, "text/plain", "signed in\n");
        let cookie = format!(
            "{}={given}; HttpOnly; SameSite=Strict; Path=/",
            dashboard::COOKIE
        );
        if let (Ok(cookie), Ok(location)) = (
            http::HeaderValue::from_str(&cookie),
            http::HeaderValue::from_str("/dashboard"),
        ) {
            response
                .headers_mut()
                .insert(http::header::SET_COOKIE, cookie);
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
        }
        return response;
    }
    match dashboard::cookie_token(request.headers()) {
        Some(cookie) if signed_in(&cookie) => respond(StatusCode::OK, content_type, body),
        _ => respond(
            StatusCode::UNAUTHORIZED,
            "text/html; charset=utf-8",
            dashboard::SIGN_IN_PAGE,
        ),
    }
}

async fn handle(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path().starts_with("/dashboard") {
        return dashboard_page(state, &request);
    }
    if request.uri().path().starts_with("/api/")
        && let Some(refused) = refusal(state, &request)
    {
        return refused;
    }
    let params = query(&request);
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    match (request.method().clone(), request.uri().path()) {
        (Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        (Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, "/api/v1/get") => {
            let key = ObjectKey {
                group: param("group"),
                kind: param("kind"),
                namespace: param("namespace"),
                name: param("name"),
            };
            match state.cluster.get(&key).await {
                Ok(object) => json(&object),
                Err(e) => cluster_error(e),
            }
        }
        (Method::GET, "/api/v1/list") => {
            let labels = match parse_label_selector(&param("labelSelector")) {
                Ok(l) => l,
                Err(e) => return cluster_error(e),
            };
            match state
                .cluster
                .list(
                    &param("group"),
                    &param("kind"),
                    &param("namespace"),
                    &labels,
                )
                .await
            {
                Ok(list) => json(&list),
                Err(e) => cluster_error(e),
            }
        }
        (Method::POST, "/api/v1/apply") => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return cluster_error(ClusterError::Invalid(format!(
                        "request body unreadable or over {MAX_BODY} bytes: {e}"
                    )));
                }
            };
            let writes: Vec<Write> = match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => return cluster_error(ClusterError::Invalid(format!("writes: {e}"))),
            };
            match state.cluster.apply(writes).await {
                Ok(results) => json(&results),
                Err(e) => cluster_error(e),
            }
        }
        (Method::GET, "/api/v1/dashboard/state") => {
            match dashboard::state(state.cluster.as_ref(), state.registry.as_deref()).await {
                Ok(value) => json(&value),
                Err(e) => cluster_error(e),
            }
        }
        (Method::POST, "/api/v1/dashboard/action") => {
            if !request.headers().contains_key(dashboard::ACTION_HEADER) {
                return cluster_error(ClusterError::Forbidden(format!(
                    "dashboard actions need the {} header (sent by the dashboard's own page)",
                    dashboard::ACTION_HEADER
                )));
            }
            match dashboard::run_action(
                state.cluster.as_ref(),
                &param("namespace"),
                &param("name"),
                &param("action"),
            )
            .await
            {
                Ok(message) => json(&message),
                Err(e) => cluster_error(e),
            }
        }
        (Method::GET, "/api/v1/plugins/shadow") => {
            let name = param("name");
            let report = match &state.registry {
                Some(registry) => registry.shadow_report(&name).await,
                None => None,
            };
            match report {
                Some(report) => json(&report),
                None => cluster_error(ClusterError::NotFound(format!(
                    "shadow report of plugin {name:?} (no loaded plugin of that name has a `shadow` candidate)"
                ))),
            }
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /dashboard or /api/v1/{get,list,apply,plugins/shadow,dashboard/state}\n",
        ),
    }
}
