//! `GET /tap?point=P&rate=N&count=N`: what flows at a tap point, as lines of JSON (one per
//! batch, the request as OTLP/JSON), at most `rate` a second (default 1; the batches between
//! are passed over, and each line says how many were), ending after `count` lines if given.
//! The first line, `{"tapping": POINT, ...}`, says the tap is listening. `GET /tap/points`
//! lists the points.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::telemetry::Telemetry;
use crate::telemetry::tap::{Tapped, json_line};

/// The query of `/tap`.
#[derive(Debug, Default)]
struct TapQuery {
    /// The point: `receiver:NAME`, `processors`, `exporter:NAME` or `dropped:NAME`.
    point: Option<String>,
    /// Lines a second at most.
    rate: Option<f64>,
    /// Lines in all, then the answer ends.
    count: Option<u64>,
}

impl TapQuery {
    fn parse(query: Option<&str>) -> Result<TapQuery, String> {
        let mut q = TapQuery::default();
        for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = super::access::percent_decode(v);
            match k {
                "point" => q.point = Some(v),
                "rate" => {
                    q.rate = Some(
                        v.parse()
                            .map_err(|_| format!("rate {v:?} is not a number"))?,
                    )
                }
                "count" => {
                    q.count = Some(
                        v.parse()
                            .map_err(|_| format!("count {v:?} is not a whole number"))?,
                    )
                }
                "token" => {}
                other => return Err(format!("unknown parameter {other:?} (point, rate, count)")),
            }
        }
        Ok(q)
    }
}

/// `/tap/points`.
pub async fn points(State(t): State<Arc<Telemetry>>) -> impl IntoResponse {
    axum::Json(t.taps().names())
}

/// `/tap`.
pub async fn tap(State(t): State<Arc<Telemetry>>, RawQuery(query): RawQuery) -> Response {
    let q = match TapQuery::parse(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let rate = q.rate.unwrap_or(1.0);
    let problem = match (&q.point, rate) {
        (None, _) => Some("point is missing (e.g. /tap?point=exporter:NAME)".to_string()),
        (_, r) if !(r > 0.0 && r.is_finite()) => Some(format!("rate {r} must be above 0")),
        _ => None,
    };
    if let Some(p) = problem {
        return (StatusCode::BAD_REQUEST, format!("{p}\n")).into_response();
    }
    let point = q.point.expect("checked");
    let Some(rx) = t.taps().subscribe(&point, rate) else {
        let names = t.taps().names().join(", ");
        return (
            StatusCode::NOT_FOUND,
            format!("no tap point {point:?} (there are: {names})\n"),
        )
            .into_response();
    };
    struct Reader {
        rx: tokio::sync::mpsc::Receiver<(Tapped, u64)>,
        point: String,
        left: Option<u64>,
    }
    let reader = Reader {
        rx,
        point,
        left: q.count,
    };
    // The first line says the tap is listening: what comes from now on is seen.
    // Written by hand: `tapping` first, which is how a reader tells this line.
    let header = format!(
        "{{\"tapping\":{},\"rate\":{rate},\"count\":{}}}",
        serde_json::Value::from(reader.point.as_str()),
        q.count.map_or("null".to_string(), |n| n.to_string())
    );
    let header =
        futures::stream::once(
            async move { Ok::<_, Infallible>(Bytes::from(format!("{header}\n"))) },
        );
    let lines = futures::stream::unfold(reader, |mut r| async move {
        if r.left == Some(0) {
            return None;
        }
        let (t, skipped) = r.rx.recv().await?;
        // Decoding and printing a batch is work for a blocking thread, not a receiving one.
        let point = r.point.clone();
        let mut line = tokio::task::spawn_blocking(move || json_line(&point, &t))
            .await
            .ok()?;
        // `json_line` ends with `}`: the skipped count goes in as the last field.
        line.pop();
        line.push_str(&format!(",\"skipped\":{skipped}}}\n"));
        r.left = r.left.map(|n| n - 1);
        Some((Ok::<_, Infallible>(Bytes::from(line)), r))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(futures::StreamExt::chain(header, lines)),
    )
        .into_response()
}
