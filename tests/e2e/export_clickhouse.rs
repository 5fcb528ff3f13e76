//! The `clickhouse` exporter against a real ClickHouse server (Debian's package, loopback):
//! OpenTelemetry SDK → Ferry → ClickHouse, asserted with SQL; plus ClickHouse down at first,
//! and a refusal that is permanent (an unknown user).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::{Ferry, PREAMBLE, QUICK_RETRY, eventually, otel_send, reserve_port};
use crate::servers::ClickHouse;

fn ferry_to(port: u16, extra: &str) -> Ferry {
    Ferry::start(
        "clickhouse",
        &format!(
            r#"
            {PREAMBLE}
            [exporters.clickhouse]
            plugin = "clickhouse"
            {QUICK_RETRY}
            config = {{ endpoint = "http://127.0.0.1:{port}", compression = "gzip" {extra} }}
            "#
        ),
    )
}

async fn count(ch: &ClickHouse, table: &str, run: &str) -> u64 {
    let rows = ch
        .rows(&format!(
            "SELECT count() AS n FROM otel.{table} \
             WHERE ResourceAttributes.Value[indexOf(ResourceAttributes.Key, 'e2e.run')] = '{run}'"
        ))
        .await;
    rows[0]["n"]
        .as_str()
        .map_or_else(|| rows[0]["n"].as_u64().unwrap(), |s| s.parse().unwrap())
}

fn attr(row: &Value, column: &str, key: &str) -> Option<String> {
    let keys = row[format!("{column}.Key")].as_array()?;
    let i = keys.iter().position(|k| k == key)?;
    Some(row[format!("{column}.Value")][i].as_str()?.to_string())
}

/// Everything `otel_send.py` recorded for run `run`, checked with SQL.
async fn assert_run_in_clickhouse(ch: &ClickHouse, sent: &Value, run: &str) {
    let spans = sent["spans"].as_array().unwrap();
    eventually("every span, log and metric is in ClickHouse", async || {
        let tables = ch
            .rows(
                "SELECT name FROM system.tables WHERE database = 'otel' AND name IN \
                 ('otel_traces', 'otel_logs', 'otel_metrics_sum', 'otel_metrics_histogram')",
            )
            .await;
        tables.len() == 4
            && count(ch, "otel_traces", run).await >= spans.len() as u64
            && count(ch, "otel_logs", run).await >= 3
            && count(ch, "otel_metrics_sum", run).await >= 3
            && count(ch, "otel_metrics_histogram", run).await >= 1
    })
    .await;
    let filter = format!(
        "WHERE ResourceAttributes.Value[indexOf(ResourceAttributes.Key, 'e2e.run')] = '{run}'"
    );
    let rows = ch
        .rows(&format!(
            "SELECT TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ScopeName, \
             TimestampNanos, Duration, StatusCode, StatusMessage, SpanAttributes.Key, \
             SpanAttributes.Value, Events.Name, Events.Attributes, toUnixTimestamp(Timestamp) AS Secs \
             FROM otel.otel_traces {filter}"
        ))
        .await;
    assert_eq!(rows.len(), spans.len(), "one row per span");
    let by_id: BTreeMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["SpanId"].as_str().unwrap(), r))
        .collect();
    let kinds = [
        "Unspecified",
        "Internal",
        "Server",
        "Client",
        "Producer",
        "Consumer",
    ];
    let statuses = ["Unset", "Ok", "Error"];
    let num = |v: &Value| {
        v.as_str()
            .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
    };
    for s in spans {
        let r = by_id[s["span_id"].as_str().unwrap()];
        let name = s["name"].as_str().unwrap();
        assert_eq!(r["SpanName"], s["name"]);
        assert_eq!(r["TraceId"], s["trace_id"]);
        assert_eq!(r["ParentSpanId"], s["parent_span_id"]);
        assert_eq!(
            r["SpanKind"],
            json!(kinds[s["kind"].as_u64().unwrap() as usize]),
            "{name}"
        );
        assert_eq!(r["ServiceName"], sent["service"]);
        assert_eq!(r["ScopeName"], json!("ferry.e2e"));
        let start = s["start"].as_u64().unwrap();
        assert_eq!(num(&r["TimestampNanos"]), start, "nanoseconds kept");
        assert_eq!(num(&r["Secs"]), start / 1_000_000_000);
        assert_eq!(num(&r["Duration"]), s["end"].as_u64().unwrap() - start);
        assert_eq!(
            r["StatusCode"],
            json!(statuses[s["status_code"].as_u64().unwrap() as usize])
        );
        assert_eq!(r["StatusMessage"], s["status_message"]);
        for (k, v) in s["attributes"].as_object().unwrap() {
            let want = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            assert_eq!(attr(r, "SpanAttributes", k), Some(want), "{name}.{k}");
        }
        let events: Vec<Value> = r["Events.Name"]
            .as_array()
            .unwrap()
            .iter()
            .zip(r["Events.Attributes"].as_array().unwrap())
            .map(|(n, a)| json!({"name": n, "attributes": serde_json::from_str::<Value>(a.as_str().unwrap()).unwrap()}))
            .collect();
        assert_eq!(Value::Array(events), s["events"], "events of {name}");
    }

    let logs = ch
        .rows(&format!(
            "SELECT Body, SeverityText, TraceId, SpanId, LogAttributes.Key, LogAttributes.Value \
             FROM otel.otel_logs {filter}"
        ))
        .await;
    let want_logs = sent["logs"].as_array().unwrap();
    assert_eq!(logs.len(), want_logs.len());
    for w in want_logs {
        let r = logs
            .iter()
            .find(|r| r["Body"] == w["body"])
            .unwrap_or_else(|| panic!("log {} missing", w["body"]));
        assert_eq!(r["SeverityText"], w["severity"]);
        assert_eq!(r["TraceId"], w["trace_id"]);
        assert_eq!(r["SpanId"], w["span_id"]);
        for (k, v) in w["attributes"].as_object().unwrap() {
            let want = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            assert_eq!(attr(r, "LogAttributes", k), Some(want), "log attribute {k}");
        }
    }

    let sums = ch
        .rows(&format!(
            "SELECT MetricName, Attributes.Key, Attributes.Value, Value, IsMonotonic, \
             AggregationTemporality FROM otel.otel_metrics_sum {filter}"
        ))
        .await;
    let mut requests = BTreeMap::new();
    for r in &sums {
        match r["MetricName"].as_str().unwrap() {
            "e2e.requests" => {
                assert_eq!(r["IsMonotonic"], json!(1));
                assert_eq!(r["AggregationTemporality"], json!(2), "cumulative");
                requests.insert(
                    attr(r, "Attributes", "route").unwrap(),
                    r["Value"].as_f64().unwrap(),
                );
            }
            "e2e.inflight" => {
                assert_eq!(r["IsMonotonic"], json!(0));
                assert_eq!(r["Value"].as_f64(), Some(3.0));
            }
            other => panic!("unexpected sum {other}"),
        }
    }
    assert_eq!(
        requests,
        BTreeMap::from([("/a".to_string(), 6.0), ("/b".to_string(), 7.0)])
    );
    let hist = ch
        .rows(&format!(
            "SELECT MetricName, MetricUnit, Count, Sum, BucketCounts, ExplicitBounds, Min, Max \
             FROM otel.otel_metrics_histogram {filter}"
        ))
        .await;
    assert_eq!(hist.len(), 1);
    let h = &hist[0];
    assert_eq!(h["MetricName"], json!("e2e.latency"));
    assert_eq!(h["MetricUnit"], json!("s"));
    assert_eq!(num(&h["Count"]), 2);
    assert!((h["Sum"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    assert_eq!(h["Min"].as_f64(), Some(0.1));
    assert_eq!(h["Max"].as_f64(), Some(0.3));
    let buckets: u64 = h["BucketCounts"].as_array().unwrap().iter().map(num).sum();
    assert_eq!(buckets, 2);
    assert_eq!(
        h["BucketCounts"].as_array().unwrap().len(),
        h["ExplicitBounds"].as_array().unwrap().len() + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_telemetry_lands_in_clickhouse_tables_it_creates() {
    let reserved = reserve_port();
    let port = reserved.port();
    let Some(ch) = ClickHouse::start(port).await else {
        return;
    };
    let ferry = ferry_to(port, "");
    let sent = otel_send("grpc", &format!("http://{}", ferry.grpc.unwrap()), "ch-run");
    assert_run_in_clickhouse(&ch, &sent, "ch-run").await;
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_at_first_gets_everything_once_it_is_up() {
    let reserved = reserve_port();
    let port = reserved.port();
    let ferry = ferry_to(port, "");
    let sent = otel_send("http", &ferry.http_url(), "ch-down");
    eventually("the exporter retries the unreachable server", async || {
        ferry
            .metric(
                "ferry_exporter_retries_total",
                &["exporter=\"clickhouse\"", "signal=\"traces\""],
            )
            .await
            >= 2
    })
    .await;
    let Some(ch) = ClickHouse::start(port).await else {
        return;
    };
    assert_run_in_clickhouse(&ch, &sent, "ch-down").await;
    assert_eq!(
        ferry
            .metric("ferry_exporter_dropped_items_total", &[])
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_refusal_from_clickhouse_is_dropped_and_counted() {
    let reserved = reserve_port();
    let port = reserved.port();
    let Some(ch) = ClickHouse::start(port).await else {
        return;
    };
    // ClickHouse answers an unknown user with 401 and exception 192: retrying cannot help.
    let ferry = ferry_to(port, r#", user = "nobody""#);
    otel_send(
        "grpc",
        &format!("http://{}", ferry.grpc.unwrap()),
        "ch-perm",
    );
    eventually("every item is dropped as permanent", async || {
        ferry.dropped_permanent("clickhouse", "traces").await == 6
            && ferry.dropped_permanent("clickhouse", "metrics").await == 4
            && ferry.dropped_permanent("clickhouse", "logs").await == 3
    })
    .await;
    assert!(
        ferry.logs().contains("Unknown user nobody"),
        "ClickHouse's answer is logged"
    );
    assert_eq!(
        ferry
            .metric("ferry_exporter_retries_total", &["exporter=\"clickhouse\""])
            .await,
        0
    );
    let dbs = ch
        .rows("SELECT name FROM system.databases WHERE name = 'otel'")
        .await;
    assert!(dbs.is_empty(), "nothing was created as the unknown user");
}
