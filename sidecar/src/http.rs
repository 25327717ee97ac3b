//! HTTP: `/metrics` and the health endpoints.

use crate::sync::Recover as _;
use std::sync::{Arc, RwLock};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::{
    catalog,
    kernel::modules::Module,
    metrics::{self, Filter},
    status::Status,
    store::Store,
};

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<RwLock<Store>>,
    pub status: Arc<Status>,
    /// When set, /metrics requires it (the health endpoints never do).
    pub token: Option<crate::auth::BearerToken>,
    /// The unfiltered exposition, rendered once per drain (`run` refreshes it).
    pub exposition: Arc<metrics::ExpositionCache>,
}

pub fn router(state: HttpState) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(metrics_handler))
        .route_layer(axum::middleware::from_fn_with_state(
            state.token.clone(),
            require_token,
        ));
    Router::new()
        .merge(metrics)
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/startup", get(startup))
        .with_state(state)
}

async fn require_token(
    State(token): State<Option<crate::auth::BearerToken>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &token {
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(axum::http::HeaderValue::as_bytes);
        if !token.accepts(presented) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token (Authorization: Bearer <token>)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Default)]
struct MetricsQuery {
    module: Vec<String>,
    workload: Vec<String>,
}

/// Query strings repeat keys (`?module=a&module=b`): pairs are read one by one
/// (form_urlencoded, which also decodes `%XX` and `+`) rather than through a form decoder's
/// sequence support.
fn parse_query(raw: Option<&str>) -> MetricsQuery {
    let mut query = MetricsQuery::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "module" => query.module.push(value.into_owned()),
            "workload" => query.workload.push(value.into_owned()),
            _ => {}
        }
    }
    query
}

/// Content negotiation (RFC 9110, section 12.5.1): OpenMetrics when the client gives it a
/// non-zero quality no lower than that of the text format (or of `*/*`, `text/*`). Media
/// types and parameter names are case-insensitive.
fn prefers_openmetrics<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    let (mut openmetrics, mut text) = (0.0f64, 0.0f64);
    for range in accept.flat_map(|value| value.split(',')) {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

async fn metrics_handler(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = parse_query(uri.query());
    if let Some(unknown) = query
        .module
        .iter()
        .find(|m| !catalog::module_names().any(|known| known == m.as_str()))
    {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown module {unknown:?}: expected one of {}\n",
                catalog::module_names().collect::<Vec<_>>().join(", ")
            ),
        )
            .into_response();
    }
    // One behaviour with gRPC's INVALID_ARGUMENT: a workload the configuration does not name
    // is a mistake, not an empty answer.
    {
        let store = crate::store::snapshot(&state.store);
        if let Some(unknown) = query
            .workload
            .iter()
            .find(|w| store.names().id(w).is_none())
        {
            return (
                StatusCode::BAD_REQUEST,
                format!("unknown workload {unknown:?}\n"),
            )
                .into_response();
        }
    }
    let wants_openmetrics = prefers_openmetrics(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let filter = Filter {
        modules: query.module,
        workloads: query.workload,
    };
    let unfiltered = filter.modules.is_empty() && filter.workloads.is_empty();
    let encoded = if unfiltered {
        state
            .exposition
            .scrape(&state.store, &state.status, wants_openmetrics)
    } else {
        metrics::encode(&state.store, &state.status, &filter, wants_openmetrics)
    };
    let body = match encoded {
        Ok(text) => text,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding metrics failed\n",
            )
                .into_response();
        }
    };
    let content_type = if wants_openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

async fn live() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize)]
struct ModuleHealth {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// What the module's programs attach to on this kernel (`Kernel::hooks`).
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<String>,
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    startup_done: bool,
    drains: u64,
    modules: std::collections::BTreeMap<&'static str, ModuleHealth>,
    /// Renames (exec, PR_SET_NAME) followed for classification; not needed for readiness.
    process_tracking: ModuleHealth,
}

fn health(state: &HttpState) -> (bool, Health) {
    let drains = state.store.read().recover().drains();
    let modules = state.status.modules();
    let attached = state.status.attached_modules();
    let ready = drains > 0 && attached > 0;
    let modules = Module::ALL
        .into_iter()
        .map(|module| {
            let health = match modules.as_ref().and_then(|m| m.get(&module)) {
                Some(module_state) => ModuleHealth {
                    state: module_state.label(),
                    error: module_state.error().map(str::to_owned),
                    hook: state.status.hook(module),
                },
                None => ModuleHealth {
                    state: "starting",
                    error: None,
                    hook: None,
                },
            };
            (module.name(), health)
        })
        .collect();
    let process_tracking = match state.status.process_tracking() {
        Some(tracking) => ModuleHealth {
            state: tracking.label(),
            error: tracking.error().map(str::to_owned),
            hook: tracking.is_usable().then(|| "tracepoint".to_owned()),
        },
        None => ModuleHealth {
            state: "starting",
            error: None,
            hook: None,
        },
    };
    let body = Health {
        status: if ready { "ready" } else { "not ready" },
        startup_done: state.status.startup_done(),
        drains,
        modules,
        process_tracking,
    };
    (ready, body)
}

async fn ready(State(state): State<HttpState>) -> Response {
    let (ready, body) = health(&state);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn startup(State(state): State<HttpState>) -> Response {
    let (_, body) = health(&state);
    let code = if state.status.startup_done() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_by_quality_and_case_insensitively() {
        let negotiate = |accept: &str| prefers_openmetrics(std::iter::once(accept));
        // What Prometheus 3 sends.
        assert!(negotiate(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ));
        assert!(negotiate("Application/OpenMetrics-Text; version=1.0.0"));
        assert!(!negotiate("application/openmetrics-text;q=0"));
        assert!(!negotiate("application/openmetrics-text;Q=0, text/plain"));
        assert!(!negotiate(
            "text/plain;q=0.9, application/openmetrics-text;q=0.5"
        ));
        assert!(!negotiate("*/*"));
        assert!(!negotiate(""));
    }

    #[test]
    fn query_strings_repeat_and_decode() {
        let query = parse_query(Some(
            "module=fadvise&module=page_cache&workload=job%2Dworker&x=1",
        ));
        assert_eq!(query.module, vec!["fadvise", "page_cache"]);
        assert_eq!(query.workload, vec!["job-worker"]);
        let decoded = |value: &str| parse_query(Some(&format!("workload={value}"))).workload;
        assert_eq!(decoded("a%2"), vec!["a%2"]);
        assert_eq!(decoded("100%"), vec!["100%"]);
    }
}
