//! `clickhouse`: traces, logs and metrics into ClickHouse over its HTTP interface, one
//! `INSERT ... FORMAT JSONEachRow` per table per batch, creating the database and tables when
//! absent. Tables are in [`schema`], rows in [`rows`].

pub mod rows;
pub mod schema;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};

use ferry_sdk::http::{self, Compression, Request, Response};
use ferry_sdk::{Batch, BatchMeta, Encoding, ExportError, Exporter, Manifest, Signal};
use serde::Deserialize;

use schema::{MetricTable, Table};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The HTTP interface, e.g. `http://clickhouse:8123`.
    endpoint: String,
    #[serde(default = "default_database")]
    database: String,
    #[serde(default = "default_traces_table")]
    traces_table: String,
    #[serde(default = "default_logs_table")]
    logs_table: String,
    /// Prefix of the metrics tables (`_gauge`, `_sum`, `_histogram`, ... are appended).
    #[serde(default = "default_metrics_table")]
    metrics_table: String,
    /// Create the database and tables when they are missing.
    #[serde(default = "yes")]
    create_schema: bool,
    /// ClickHouse user (sent as `X-ClickHouse-User`); the password belongs in the exporter's
    /// `secret_headers` as `x-clickhouse-key`.
    user: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    compression: Compression,
}

fn default_database() -> String {
    "otel".into()
}
fn default_traces_table() -> String {
    "otel_traces".into()
}
fn default_logs_table() -> String {
    "otel_logs".into()
}
fn default_metrics_table() -> String {
    "otel_metrics".into()
}
fn yes() -> bool {
    true
}

fn identifier(key: &str, v: &str, errors: &mut Vec<String>) {
    let ok = !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        errors.push(format!(
            "{key}: {v:?} is not a plain identifier (letters, digits, `_`, not starting with a digit)"
        ));
    }
}

/// Exception codes worth retrying: overload, timeouts, a server that is starting or read-only
/// for a while. Any other code means the request itself is wrong and stays wrong.
const RETRYABLE_CODES: &[u32] = &[
    3, 159, 164, 202, 203, 209, 210, 236, 241, 242, 252, 285, 319, 394, 425, 439, 999,
];
const UNKNOWN_TABLE: u32 = 60;
const UNKNOWN_DATABASE: u32 = 81;
const TOO_MANY_PARTS: u32 = 252;

/// The exception code of a ClickHouse error answer: the `X-ClickHouse-Exception-Code` header
/// of newer servers, or `Code: N` at the start of the body.
fn exception_code(resp: &Response) -> Option<u32> {
    if let Some(c) = resp.header("x-clickhouse-exception-code") {
        return c.trim().parse().ok();
    }
    let text = String::from_utf8_lossy(&resp.body);
    let rest = text.trim_start().strip_prefix("Code:")?;
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

struct ClickHouse {
    endpoint: String,
    database: String,
    traces: Table,
    logs: Table,
    metrics: BTreeMap<MetricTable, Table>,
    create_schema: bool,
    headers: Vec<(String, String)>,
    compression: Compression,
    /// Tables known to exist.
    ensured: HashSet<String>,
    /// The batch being retried and the tables it already reached, so a retry after a partly
    /// successful multi-table insert does not write those rows twice.
    progress: Option<(u64, BTreeSet<MetricTable>)>,
}

enum Failure {
    Missing(String),
    Other(ExportError),
}

impl ClickHouse {
    fn post(&self, query: &str, body: Vec<u8>) -> Result<(), Failure> {
        let url = format!(
            "{}/?query={}",
            self.endpoint,
            ferry_sdk::proto::percent::encode(query)
        );
        let mut headers = self.headers.clone();
        let body = if body.is_empty() {
            body
        } else {
            if self.compression == Compression::Gzip {
                headers.push(("content-encoding".into(), "gzip".into()));
            }
            self.compression.apply(body).map_err(Failure::Other)?
        };
        let req = Request {
            method: "POST".into(),
            url,
            headers,
            body: body.into(),
        };
        let resp =
            http::send(&req).map_err(|e| Failure::Other(e.into_export_error(&self.endpoint)))?;
        if (200..300).contains(&resp.status) {
            return Ok(());
        }
        let code = exception_code(&resp);
        let what = format!(
            "ClickHouse HTTP {}: {}",
            resp.status,
            resp.body_text().trim()
        );
        Err(match code {
            Some(UNKNOWN_TABLE | UNKNOWN_DATABASE) if self.create_schema => Failure::Missing(what),
            Some(TOO_MANY_PARTS) => Failure::Other(ExportError::Throttled(1000)),
            Some(c) if RETRYABLE_CODES.contains(&c) => Failure::Other(ExportError::Retryable(what)),
            Some(_) => Failure::Other(ExportError::Permanent(what)),
            // Not an exception from ClickHouse itself (a proxy, auth in front, ...).
            None => Failure::Other(
                resp.check_status()
                    .err()
                    .unwrap_or(ExportError::Retryable(what)),
            ),
        })
    }

    fn ensure(&mut self, table: &Table) -> Result<(), ExportError> {
        if !self.create_schema || self.ensured.contains(&table.name) {
            return Ok(());
        }
        if self.ensured.is_empty() {
            let db = format!("CREATE DATABASE IF NOT EXISTS {}", self.database);
            let r = self.post(&db, Vec::new());
            self.settle(r)?;
        }
        let r = self.post(&table.create(), Vec::new());
        self.settle(r)?;
        self.ensured.insert(table.name.clone());
        Ok(())
    }

    /// The outcome of a request; a missing database or table (dropped behind our back) is
    /// created again on the retry.
    fn settle(&mut self, r: Result<(), Failure>) -> Result<(), ExportError> {
        match r {
            Ok(()) => Ok(()),
            Err(Failure::Missing(what)) => {
                self.ensured.clear();
                Err(ExportError::Retryable(what))
            }
            Err(Failure::Other(e)) => Err(e),
        }
    }

    fn insert(&mut self, table: &Table, rows: &[serde_json::Value]) -> Result<(), ExportError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.ensure(table)?;
        let mut body = Vec::new();
        for r in rows {
            serde_json::to_writer(&mut body, r)
                .map_err(|e| ExportError::Permanent(format!("encoding rows: {e}")))?;
            body.push(b'\n');
        }
        let query = format!("INSERT INTO {} FORMAT JSONEachRow", table.name);
        let r = self.post(&query, body);
        self.settle(r)
    }
}

impl Exporter for ClickHouse {
    fn manifest() -> Manifest {
        Manifest::new(
            "clickhouse",
            env!("CARGO_PKG_VERSION"),
            &[Signal::Traces, Signal::Metrics, Signal::Logs],
            Encoding::OtlpProtobuf,
        )
    }

    fn init(config: &str) -> Result<Self, String> {
        let c: Config = ferry_sdk::parse_config(config)?;
        let mut errors = Vec::new();
        let endpoint = c.endpoint.trim_end_matches('/').to_string();
        match endpoint.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() && !rest.contains(['/', '?']) => {}
            _ => errors.push(format!(
                "endpoint: expected http://host:port of ClickHouse's HTTP interface (no path), got {:?}",
                c.endpoint
            )),
        }
        identifier("database", &c.database, &mut errors);
        identifier("traces_table", &c.traces_table, &mut errors);
        identifier("logs_table", &c.logs_table, &mut errors);
        identifier("metrics_table", &c.metrics_table, &mut errors);
        let mut headers: Vec<(String, String)> = c.headers.into_iter().collect();
        if let Some(user) = &c.user {
            if user.is_empty() {
                errors.push("user: must not be empty (leave it out for `default`)".into());
            }
            headers.push(("x-clickhouse-user".into(), user.clone()));
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let metrics = MetricTable::ALL
            .iter()
            .map(|k| (*k, k.table(&c.database, &c.metrics_table)))
            .collect();
        Ok(ClickHouse {
            endpoint,
            traces: schema::traces(&c.database, &c.traces_table),
            logs: schema::logs(&c.database, &c.logs_table),
            database: c.database,
            metrics,
            create_schema: c.create_schema,
            headers,
            compression: c.compression,
            ensured: HashSet::new(),
            progress: None,
        })
    }

    fn export(&mut self, meta: BatchMeta, batch: Batch<'_>) -> Result<(), ExportError> {
        let payload = batch.to_vec();
        let bad = |e: ferry_sdk::otlp::DecodeError| {
            ExportError::Permanent(format!("undecodable batch: {e}"))
        };
        match meta.signal {
            Signal::Traces => {
                let rows = rows::spans(&ferry_sdk::otlp::decode_traces(&payload).map_err(bad)?);
                let table = self.traces.clone();
                self.insert(&table, &rows)
            }
            Signal::Logs => {
                let rows = rows::logs(&ferry_sdk::otlp::decode_logs(&payload).map_err(bad)?);
                let table = self.logs.clone();
                self.insert(&table, &rows)
            }
            Signal::Metrics => {
                let by_table =
                    rows::metrics(&ferry_sdk::otlp::decode_metrics(&payload).map_err(bad)?);
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                payload.hash(&mut hasher);
                let fingerprint = hasher.finish();
                let mut done = match self.progress.take() {
                    Some((fp, done)) if fp == fingerprint && meta.attempt > 0 => done,
                    _ => BTreeSet::new(),
                };
                for (kind, rows) in &by_table {
                    if done.contains(kind) {
                        continue;
                    }
                    let table = self.metrics[kind].clone();
                    if let Err(e) = self.insert(&table, rows) {
                        self.progress = Some((fingerprint, done));
                        return Err(e);
                    }
                    done.insert(*kind);
                }
                Ok(())
            }
        }
    }
}

ferry_sdk::export!(ClickHouse);

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            trailers: vec![],
        }
    }

    #[test]
    fn exception_codes_are_read_from_the_body_or_header() {
        let old = answer(
            500,
            "Code: 117, e.displayText() = DB::Exception: Unknown field",
        );
        assert_eq!(exception_code(&old), Some(117));
        let new = Response {
            headers: vec![("X-ClickHouse-Exception-Code".into(), "241".into())],
            ..answer(500, "whatever")
        };
        assert_eq!(exception_code(&new), Some(241));
        assert_eq!(
            exception_code(&answer(502, "<html>bad gateway</html>")),
            None
        );
    }

    #[test]
    fn config_errors_are_reported_together() {
        let err = ClickHouse::init(
            r#"{"endpoint": "clickhouse:8123", "database": "my-db", "traces_table": "1x"}"#,
        )
        .err()
        .unwrap();
        assert!(err.contains("endpoint:"), "{err}");
        assert!(err.contains("database:"), "{err}");
        assert!(err.contains("traces_table:"), "{err}");
        assert!(ClickHouse::init(r#"{"endpoint": "http://127.0.0.1:8123/"}"#).is_ok());
        assert!(
            ClickHouse::init(r#"{"endpoint": "http://x:1", "tables": 1}"#)
                .err()
                .unwrap()
                .contains("unknown field")
        );
    }

    #[test]
    fn tables_follow_the_configured_names() {
        let t = MetricTable::Summary.table("db", "m");
        assert_eq!(t.name, "db.m_summary");
        assert!(
            t.create()
                .starts_with("CREATE TABLE IF NOT EXISTS db.m_summary (")
        );
        assert!(
            t.create()
                .contains("ValueAtQuantiles Nested(Quantile Float64, Value Float64)")
        );
    }
}
