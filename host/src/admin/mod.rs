//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use serde::{Deserialize, Serialize};

use crate::telemetry::Telemetry;

/// `[admin]`: self-metrics and health.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/metrics` and `/healthz`; `""` turns it off.
    #[serde(default = "default_admin")]
    pub listen: String,
}

fn default_admin() -> String {
    "127.0.0.1:8888".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin(),
        }
    }
}

impl AdminConfig {
    /// Adds what is wrong with `[admin]` to `errors`.
    pub fn check(&self, errors: &mut Vec<String>) {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            errors.push(format!(
                "admin.listen: {:?} is not an address like 127.0.0.1:8888",
                self.listen
            ));
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

/// The admin routes.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .with_state(telemetry)
}

/// Serves the admin endpoint on `listener`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<()> {
    axum::serve(listener, router(telemetry)).await?;
    Ok(())
}
