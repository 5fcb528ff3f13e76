//! `ferry tap POINT`: what flows at a tap point of a running daemon, one JSON line per batch
//! (the request as OTLP/JSON), streamed from its admin endpoint's `/tap`.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Streams `point` (or, with `list`, names the points) from the daemon at `admin`.
pub async fn tap(
    admin: &str,
    token_file: Option<&Path>,
    point: Option<&str>,
    rate: f64,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let token = match token_file {
        Some(p) => Some(crate::admin::access::read_token(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let url = match point {
        None => format!("http://{admin}/tap/points"),
        Some(p) => {
            let mut u = format!("http://{admin}/tap?point={}&rate={rate}", encode(p));
            if let Some(n) = count {
                u.push_str(&format!("&count={n}"));
            }
            u
        }
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(&url);
    if let Some(t) = &token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Empty::new())?)
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await?.to_bytes();
        eprintln!("{url}: {status}: {}", String::from_utf8_lossy(&text).trim());
        return Ok(ExitCode::FAILURE);
    }
    // Lines as they come: a frame may hold several, or part of one.
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            // The first line says the tap listens: for the person, not for the output.
            if line.starts_with("{\"tapping\"") {
                eprint!("{line}");
                continue;
            }
            super::write_stdout(format_args!("{line}"));
        }
    }
    if !pending.is_empty() {
        super::write_stdout(format_args!("{}\n", String::from_utf8_lossy(&pending)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` for a URL query (point names are config keys: any text).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
