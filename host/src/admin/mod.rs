//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`, the status page
//! (`/status`, drawn from [`status`]'s `/status.json`), behind [`access`].

pub mod access;
pub mod graph;
pub mod layout;
pub mod status;
pub mod tap;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use serde::{Deserialize, Serialize};

use crate::telemetry::Telemetry;

/// `[admin]`: self-metrics, health and status.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/metrics` and `/healthz`; `""` turns it off.
    #[serde(default = "default_admin")]
    pub listen: String,
    /// A file holding the token that every path but `open` requires; needed when `listen` is
    /// not a loopback address.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Paths served without the token.
    #[serde(default = "default_open")]
    pub open: Vec<String>,
}

fn default_admin() -> String {
    "127.0.0.1:8888".into()
}

fn default_open() -> Vec<String> {
    ["/metrics", "/healthz", "/readyz"]
        .map(String::from)
        .to_vec()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin(),
            token_file: None,
            open: default_open(),
        }
    }
}

impl AdminConfig {
    /// Adds what is wrong with `[admin]` to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if !self.listen.is_empty() {
            match self.listen.parse::<std::net::SocketAddr>() {
                Err(_) => errors.push(format!(
                    "admin.listen: {:?} is not an address like 127.0.0.1:8888",
                    self.listen
                )),
                Ok(a) if !a.ip().is_loopback() && self.token_file.is_none() => {
                    errors.push(format!(
                        "admin.token_file: required when admin.listen ({}) is not a loopback \
                         address: /status and taps show what flows through the daemon",
                        self.listen
                    ))
                }
                Ok(_) => {}
            }
        }
        for (i, p) in self.open.iter().enumerate() {
            if !access::PATHS.contains(&p.as_str()) {
                errors.push(format!(
                    "admin.open[{i}]: {p:?} is not an admin path (expected one of {})",
                    access::PATHS.join(", ")
                ));
            }
        }
    }

    /// Who may read the endpoint: reads the token file, if any.
    pub fn access(&self) -> anyhow::Result<access::Access> {
        match &self.token_file {
            None => Ok(access::Access::open()),
            Some(path) => access::read_token(path)
                .map(|t| access::Access::with_token(t, self.open.clone()))
                .map_err(|e| anyhow::anyhow!("admin.token_file: {e}")),
        }
    }
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.render(),
    )
}

async fn status_json(State(s): State<status::StatusSource>) -> impl IntoResponse {
    axum::Json(s.status())
}

/// `/healthz`: 503 while starting; then 200 `ok`, or `degraded: ...` with each problem on a
/// line (200, since the daemon still works and restarting it would not help; 503 with
/// `?strict`, for probes that should alert).
async fn healthz(
    State(s): State<status::StatusSource>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> impl IntoResponse {
    let (ready, problems) = s.health();
    let strict = query.is_some_and(|q| q.split('&').any(|kv| kv == "strict" || kv == "strict=1"));
    if !ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: loading plugins\n".to_string(),
        );
    }
    if problems.is_empty() {
        return (StatusCode::OK, "ok\n".to_string());
    }
    let code = if strict {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, format!("degraded:\n{}\n", problems.join("\n")))
}

/// `/readyz`: 503 until the daemon is started.
async fn readyz(State(s): State<status::StatusSource>) -> impl IntoResponse {
    if s.layout.borrow().ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: loading plugins\n",
        )
    }
}

async fn status_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("status.html"),
    )
}

/// The admin routes, behind `access`.
pub fn router(
    telemetry: Arc<Telemetry>,
    status: status::StatusSource,
    access: access::Access,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/tap", get(tap::tap))
        .route("/tap/points", get(tap::points))
        .with_state(telemetry)
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/status.json", get(status_json))
                .route("/status", get(status_page))
                .with_state(status),
        )
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// Serves the admin endpoint on `listener`, the pipeline laid out as `layout` says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    layout: tokio::sync::watch::Receiver<layout::Layout>,
    access: access::Access,
) -> anyhow::Result<()> {
    let window = status::Window::new(telemetry.clone());
    let source = status::StatusSource {
        window: window.clone(),
        layout,
    };
    tokio::select! {
        served = axum::serve(listener, router(telemetry, source, access)) => served?,
        () = window.run() => {}
    }
    Ok(())
}
