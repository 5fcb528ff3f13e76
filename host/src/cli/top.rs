//! `ferry top`: the status page's figures in a terminal, refreshed in place, read from a
//! daemon's `/status.json`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Shows the daemon whose admin endpoint is at `admin` every `interval`, or once.
pub async fn top(
    admin: &str,
    token_file: Option<&Path>,
    interval: Duration,
    once: bool,
) -> anyhow::Result<ExitCode> {
    let token = match token_file {
        Some(p) => Some(crate::admin::access::read_token(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let url = format!("http://{admin}/status.json");
    let live = !once && std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let frame = match fetch(&url, token.as_deref()).await {
            Ok(status) => render(&status),
            Err(e) if once => anyhow::bail!("{url}: {e}"),
            Err(e) => format!("cannot read {url}: {e}\n(trying again every {interval:?})\n"),
        };
        if live {
            // Home and clear, then the frame: the figures stay in place.
            write!(std::io::stdout(), "\x1b[H\x1b[2J{frame}")?;
            std::io::Write::flush(&mut std::io::stdout())?;
        } else {
            super::write_stdout(format_args!("{frame}"));
        }
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        if !live {
            super::write_stdout(format_args!("\n"));
        }
        tokio::time::sleep(interval).await;
    }
}

async fn fetch(url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(url);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Empty::new())?),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 5s"))??;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("{status}: {}", clean(&String::from_utf8_lossy(&body)));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// `s` with control characters (escape sequences above all) shown, not obeyed.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => "-".into(),
        other => clean(&other.to_string()),
    }
}

fn total(v: &Value) -> u64 {
    v.as_object()
        .map_or(0, |o| o.values().filter_map(Value::as_u64).sum())
}

fn error(v: &Value) -> String {
    v.get("message").map_or_else(String::new, text)
}

/// One screen of figures.
pub fn render(st: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ferry {} · up {} s · {} · config {} · rates over {:.1} s",
        text(&st["version"]),
        text(&st["uptime_seconds"]),
        if st["ready"] == true {
            "ready"
        } else {
            "starting"
        },
        st["config_file"]
            .as_str()
            .map_or("(embedded default)".into(), clean),
        st["rate_window_seconds"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(
        out,
        "\n{:<16} {:>12} {:>12} {:>10} {:>10}  LAST ERROR",
        "RECEIVER", "ACCEPTED/S", "ACCEPTED", "REFUSED/S", "REFUSED"
    );
    for r in st["receivers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:>12} {:>12} {:>10} {:>10}  {}",
            text(&r["name"]),
            text(&r["accepted_per_second"]),
            total(&r["accepted_items"]),
            text(&r["refused_per_second"]),
            total(&r["refused_requests"]),
            error(&r["last_error"]),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>10} {:>12} {:>14}  EXPORTERS",
        "QUEUE", "MODE", "BYTES", "BUDGET"
    );
    for q in st["queues"].as_array().into_iter().flatten() {
        // Each exporter reading it, with the batches its cursor is behind.
        let exporters: Vec<String> = q["cursors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} ({} behind)",
                    text(&c["exporter"]),
                    text(&c["behind_records"])
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>12} {:>14}  {}",
            text(&q["signal"]),
            text(&q["mode"]),
            text(&q["bytes"]),
            text(&q["budget_bytes"]),
            exporters.join(", "),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<13} {:>10} {:>12} {:>8} {:>14}  LAST ERROR",
        "EXPORTER", "STATE", "SENT/S", "SENT", "DROPPED", "P50/P99 MS"
    );
    for e in st["exporters"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<13} {:>10} {:>12} {:>8} {:>14}  {}",
            text(&e["name"]),
            text(&e["state"]),
            text(&e["sent_per_second"]),
            text(&e["sent_items"]),
            total(&e["dropped_items"]),
            format!("{}/{}", text(&e["call_p50_ms"]), text(&e["call_p99_ms"])),
            error(&e["last_error"]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_shows_each_component_and_obeys_no_escape_sequence() {
        let st = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 7, "ready": true, "config_file": null,
            "rate_window_seconds": 5.0,
            "receivers": [{"name": "otlp_http", "accepted_per_second": 12.5,
                "accepted_items": {"traces": 40, "logs": 2}, "refused_per_second": 0.0,
                "refused_requests": {"invalid": 1}, "last_error": {"message": "bad \u{1b}[2J", "at_unix_ms": 1}}],
            "queues": [{"signal": "traces", "mode": "memory", "bytes": 10, "budget_bytes": 100,
                "cursors": [{"exporter": "a", "behind_records": 0}, {"exporter": "b", "behind_records": 3}]}],
            "exporters": [{"name": "a", "state": "retrying", "sent_per_second": 1.5,
                "sent_items": 30, "dropped_items": {"permanent": 2}, "call_p50_ms": 2.5,
                "call_p99_ms": null, "last_error": null}],
        });
        let frame = render(&st);
        assert!(
            frame.contains("up 7 s · ready · config (embedded default)"),
            "{frame}"
        );
        assert!(frame.contains("otlp_http"), "{frame}");
        assert!(frame.contains("12.5"), "{frame}");
        assert!(frame.contains("42"), "{frame}");
        assert!(frame.contains("bad \\u{1b}[2J"), "{frame}");
        assert!(!frame.contains('\u{1b}'));
        assert!(frame.contains("a (0 behind), b (3 behind)"), "{frame}");
        assert!(frame.contains("retrying"), "{frame}");
        assert!(frame.contains("2.5/-"), "{frame}");
    }
}
