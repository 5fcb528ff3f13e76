//! OTLP metrics → remote-write series.
//!
//! - Gauges, and non-monotonic cumulative sums, become gauges; monotonic cumulative sums become
//!   counters (`_total`). Histograms become `_bucket{le}` (cumulative, with `+Inf`), `_sum` and
//!   `_count`; summaries `{quantile}`, `_sum` and `_count`.
//! - Delta temporality and exponential histograms have no remote-write 1.0 form without state
//!   or native histograms: their points are refused (counted and reported), never guessed.
//! - Labels: the point's attributes (names made valid, values of colliding names joined with
//!   `;`), `otel_scope_name`/`otel_scope_version`, `job` (`service.namespace/service.name`) and
//!   `instance` (`service.instance.id`); other resource attributes go to one `target_info`
//!   series per resource (or onto every series with `resource_to_telemetry_conversion`).
//! - A point flagged "no recorded value" becomes Prometheus' stale marker.

use std::collections::BTreeMap;

use ferry_sdk::otlp::value_text;
use ferry_sdk::proto::common::KeyValue;
use ferry_sdk::proto::metrics::{
    AggregationTemporality, DataPointFlags, HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
    metric, number_data_point,
};
use ferry_sdk::proto::metrics_service::ExportMetricsServiceRequest;

use crate::naming::{Kind, float_label, label_name, metric_name};
use crate::proto::{Label, Sample, TimeSeries, WriteRequest};

/// Prometheus' stale marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// How names and labels are built.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Prefix for every metric name.
    pub namespace: String,
    /// Copy every resource attribute onto every series.
    pub resource_to_telemetry_conversion: bool,
    /// Emit `target_info` per resource.
    pub target_info: bool,
}

/// The series of one batch, and the points that could not be expressed.
#[derive(Debug, Default)]
pub struct Converted {
    /// Ready to encode.
    pub request: WriteRequest,
    /// Data points refused.
    pub refused: u32,
    /// Why, one line per kind of refusal.
    pub reasons: Vec<String>,
}

/// Resource attributes that become `job` and `instance` rather than `target_info` labels.
const IDENTIFYING: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

#[derive(Default)]
struct Series(BTreeMap<Vec<Label>, Vec<Sample>>);

impl Series {
    fn add(&mut self, labels: Vec<Label>, value: f64, timestamp: i64) {
        self.0
            .entry(labels)
            .or_default()
            .push(Sample { value, timestamp });
    }

    fn into_request(self) -> WriteRequest {
        let timeseries = self
            .0
            .into_iter()
            .map(|(labels, mut samples)| {
                // Prometheus refuses out-of-order samples within a series; a batch can merge
                // requests, so sort, and keep the last value of a repeated timestamp.
                samples.sort_by_key(|s| s.timestamp);
                let mut deduped: Vec<Sample> = Vec::with_capacity(samples.len());
                for s in samples {
                    match deduped.last_mut() {
                        Some(last) if last.timestamp == s.timestamp => *last = s,
                        _ => deduped.push(s),
                    }
                }
                TimeSeries {
                    labels,
                    samples: deduped,
                }
            })
            .collect();
        WriteRequest { timeseries }
    }
}

/// Builds label sets: attribute keys made valid, colliding ones joined.
#[derive(Clone, Default)]
struct LabelSet(BTreeMap<String, Vec<(String, String)>>);

impl LabelSet {
    fn attrs(&mut self, kvs: &[KeyValue]) {
        for kv in kvs {
            self.put(&kv.key, value_text(&kv.value));
        }
    }

    fn put(&mut self, key: &str, value: String) {
        let values = self.0.entry(label_name(key)).or_default();
        values.retain(|(k, _)| k != key);
        values.push((key.to_string(), value));
    }

    /// Sets `name` outright (resource-derived labels win over point attributes).
    fn set(&mut self, name: &str, value: String) {
        self.0
            .insert(name.to_string(), vec![(name.to_string(), value)]);
    }

    /// The labels of series `name`, with one more label (`le`, `quantile`) if given.
    fn named(&self, name: &str, extra: Option<(&str, String)>) -> Vec<Label> {
        let mut all = vec![("__name__", name.to_string())];
        all.extend(extra);
        self.with(&all)
    }

    fn with(&self, extra: &[(&str, String)]) -> Vec<Label> {
        let mut set = self.clone();
        for (k, v) in extra {
            set.set(k, v.clone());
        }
        set.0
            .into_iter()
            .filter_map(|(name, mut values)| {
                values.sort();
                let value = values
                    .into_iter()
                    .map(|(_, v)| v)
                    .filter(|v| !v.is_empty())
                    .collect::<Vec<_>>()
                    .join(";");
                // An empty label value is the same as no label in Prometheus.
                (!value.is_empty()).then_some(Label { name, value })
            })
            .collect()
    }
}

fn millis(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

fn stale(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

fn number(p: &NumberDataPoint) -> f64 {
    if stale(p.flags) {
        return f64::from_bits(STALE_NAN);
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::from_bits(STALE_NAN),
    }
}

/// Converts one batch.
pub fn convert(req: &ExportMetricsServiceRequest, opts: &Options) -> Converted {
    let mut series = Series::default();
    let mut out = Converted::default();
    let refuse = |n: usize, why: &str, out: &mut Converted| {
        out.refused += n as u32;
        if !out.reasons.iter().any(|r| r == why) {
            out.reasons.push(why.to_string());
        }
    };
    for rm in &req.resource_metrics {
        let res_attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let find = |k: &str| {
            res_attrs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| value_text(&kv.value))
        };
        let job = match (find("service.namespace"), find("service.name")) {
            (Some(ns), Some(n)) if !ns.is_empty() => format!("{ns}/{n}"),
            (_, Some(n)) => n,
            _ => String::new(),
        };
        let instance = find("service.instance.id").unwrap_or_default();
        let others: Vec<KeyValue> = res_attrs
            .iter()
            .filter(|kv| !IDENTIFYING.contains(&kv.key.as_str()))
            .cloned()
            .collect();
        let mut latest = 0i64;
        for sm in &rm.scope_metrics {
            let mut base = LabelSet::default();
            if opts.resource_to_telemetry_conversion {
                base.attrs(&others);
            }
            let scope = sm.scope.as_ref();
            for m in &sm.metrics {
                // A point's labels: its attributes, then what the resource and scope say (which
                // win). Built once per point; each series of the point only adds its name.
                let point_set = |attrs: &[KeyValue]| {
                    let mut set = base.clone();
                    set.attrs(attrs);
                    set.set("job", job.clone());
                    set.set("instance", instance.clone());
                    set.set(
                        "otel_scope_name",
                        scope.map(|s| s.name.clone()).unwrap_or_default(),
                    );
                    set.set(
                        "otel_scope_version",
                        scope.map(|s| s.version.clone()).unwrap_or_default(),
                    );
                    set
                };
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        let name = metric_name(&m.name, &m.unit, Kind::Gauge, &opts.namespace);
                        for p in &g.data_points {
                            let ts = millis(p.time_unix_nano);
                            latest = latest.max(ts);
                            series.add(point_set(&p.attributes).named(&name, None), number(p), ts);
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        if s.aggregation_temporality == AggregationTemporality::Delta as i32 {
                            refuse(
                                s.data_points.len(),
                                "delta sums (configure the SDK for cumulative temporality)",
                                &mut out,
                            );
                            continue;
                        }
                        let kind = if s.is_monotonic {
                            Kind::Counter
                        } else {
                            Kind::UpDown
                        };
                        let name = metric_name(&m.name, &m.unit, kind, &opts.namespace);
                        for p in &s.data_points {
                            let ts = millis(p.time_unix_nano);
                            latest = latest.max(ts);
                            series.add(point_set(&p.attributes).named(&name, None), number(p), ts);
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        if h.aggregation_temporality == AggregationTemporality::Delta as i32 {
                            refuse(
                                h.data_points.len(),
                                "delta histograms (configure the SDK for cumulative temporality)",
                                &mut out,
                            );
                            continue;
                        }
                        let name =
                            metric_name(&m.name, &m.unit, Kind::Distribution, &opts.namespace);
                        for p in &h.data_points {
                            let ts = millis(p.time_unix_nano);
                            latest = latest.max(ts);
                            histogram(&mut series, p, &name, ts, &point_set(&p.attributes));
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        let name =
                            metric_name(&m.name, &m.unit, Kind::Distribution, &opts.namespace);
                        for p in &s.data_points {
                            let ts = millis(p.time_unix_nano);
                            latest = latest.max(ts);
                            summary(&mut series, p, &name, ts, &point_set(&p.attributes));
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(e)) => refuse(
                        e.data_points.len(),
                        "exponential histograms (remote write 1.0 has no form for them; use explicit buckets)",
                        &mut out,
                    ),
                    None => {}
                }
            }
        }
        if opts.target_info && !others.is_empty() && latest > 0 {
            let mut set = LabelSet::default();
            set.attrs(&others);
            let labels = set.with(&[
                (
                    "__name__",
                    format!("{}target_info", prefix(&opts.namespace)),
                ),
                ("job", job.clone()),
                ("instance", instance.clone()),
            ]);
            series.add(labels, 1.0, latest);
        }
    }
    out.request = series.into_request();
    out
}

fn prefix(namespace: &str) -> String {
    if namespace.is_empty() {
        String::new()
    } else {
        format!("{}_", label_name(namespace))
    }
}

fn histogram(series: &mut Series, p: &HistogramDataPoint, name: &str, ts: i64, labels: &LabelSet) {
    let stale = stale(p.flags);
    let v = |x: f64| if stale { f64::from_bits(STALE_NAN) } else { x };
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, count) in p.bucket_counts.iter().enumerate() {
        cumulative += count;
        let le = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
        let le = ("le", float_label(le));
        series.add(labels.named(&bucket, Some(le)), v(cumulative as f64), ts);
    }
    if p.bucket_counts.len() <= p.explicit_bounds.len() {
        // No overflow bucket was sent: `+Inf` is the total count.
        let le = ("le", "+Inf".to_string());
        series.add(labels.named(&bucket, Some(le)), v(p.count as f64), ts);
    }
    if let Some(sum) = p.sum {
        series.add(labels.named(&format!("{name}_sum"), None), v(sum), ts);
    }
    let count = labels.named(&format!("{name}_count"), None);
    series.add(count, v(p.count as f64), ts);
}

fn summary(series: &mut Series, p: &SummaryDataPoint, name: &str, ts: i64, labels: &LabelSet) {
    let stale = stale(p.flags);
    let v = |x: f64| if stale { f64::from_bits(STALE_NAN) } else { x };
    for q in &p.quantile_values {
        let quantile = ("quantile", float_label(q.quantile));
        series.add(labels.named(name, Some(quantile)), v(q.value), ts);
    }
    series.add(labels.named(&format!("{name}_sum"), None), v(p.sum), ts);
    let count = labels.named(&format!("{name}_count"), None);
    series.add(count, v(p.count as f64), ts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::proto::common::{AnyValue, InstrumentationScope, any_value};
    use ferry_sdk::proto::metrics::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, Metric,
        ResourceMetrics, ScopeMetrics, Sum, Summary, summary_data_point::ValueAtQuantile,
    };
    use ferry_sdk::proto::resource::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    const T: u64 = 1_700_000_000_000_000_000;

    fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn request() -> ExportMetricsServiceRequest {
        let cumulative = AggregationTemporality::Cumulative as i32;
        let int_point = |v: i64, attrs: Vec<KeyValue>| NumberDataPoint {
            attributes: attrs,
            time_unix_nano: T,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "shop"),
                        kv("service.namespace", "prod"),
                        kv("service.instance.id", "i-1"),
                        kv("host.name", "h1"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "2".into(),
                        ..Default::default()
                    }),
                    metrics: vec![
                        metric(
                            "http.requests",
                            "1",
                            metric::Data::Sum(Sum {
                                aggregation_temporality: cumulative,
                                is_monotonic: true,
                                // `a.b` and `a_b` collide after sanitising.
                                data_points: vec![int_point(
                                    5,
                                    vec![kv("a.b", "x"), kv("a_b", "y")],
                                )],
                            }),
                        ),
                        metric(
                            "queue.depth",
                            "",
                            metric::Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint {
                                    flags: DataPointFlags::NoRecordedValueMask as u32,
                                    ..int_point(0, vec![])
                                }],
                            }),
                        ),
                        metric(
                            "latency",
                            "ms",
                            metric::Data::Histogram(Histogram {
                                aggregation_temporality: cumulative,
                                data_points: vec![HistogramDataPoint {
                                    time_unix_nano: T,
                                    count: 6,
                                    sum: Some(42.0),
                                    bucket_counts: vec![1, 2, 3],
                                    explicit_bounds: vec![10.0, 100.0],
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "rpc",
                            "s",
                            metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    time_unix_nano: T,
                                    count: 4,
                                    sum: 2.0,
                                    quantile_values: vec![ValueAtQuantile {
                                        quantile: 0.99,
                                        value: 1.5,
                                    }],
                                    ..Default::default()
                                }],
                            }),
                        ),
                        metric(
                            "deltas",
                            "",
                            metric::Data::Sum(Sum {
                                aggregation_temporality: AggregationTemporality::Delta as i32,
                                is_monotonic: true,
                                data_points: vec![int_point(1, vec![]), int_point(2, vec![])],
                            }),
                        ),
                        metric(
                            "exp",
                            "",
                            metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint::default()],
                                ..Default::default()
                            }),
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn series(out: &Converted) -> BTreeMap<String, Vec<f64>> {
        out.request
            .timeseries
            .iter()
            .map(|ts| {
                let labels: Vec<String> = ts
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                (
                    labels.join(","),
                    ts.samples.iter().map(|s| s.value).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_becomes_the_prometheus_series_it_should() {
        let out = convert(
            &request(),
            &Options {
                target_info: true,
                ..Default::default()
            },
        );
        assert_eq!(
            out.refused, 3,
            "two delta points and one exponential histogram"
        );
        assert_eq!(out.reasons.len(), 2);
        let s = series(&out);
        let common = "instance=i-1,job=prod/shop,otel_scope_name=lib,otel_scope_version=2";
        let want = [
            (
                format!("__name__=http_requests_total,a_b=x;y,{common}"),
                5.0,
            ),
            (
                format!("__name__=latency_milliseconds_bucket,{common},le=10"),
                1.0,
            ),
            (
                format!("__name__=latency_milliseconds_bucket,{common},le=100"),
                3.0,
            ),
            (
                format!("__name__=latency_milliseconds_bucket,{common},le=+Inf"),
                6.0,
            ),
            (format!("__name__=latency_milliseconds_sum,{common}"), 42.0),
            (format!("__name__=latency_milliseconds_count,{common}"), 6.0),
            (format!("__name__=rpc_seconds,{common},quantile=0.99"), 1.5),
            (format!("__name__=rpc_seconds_sum,{common}"), 2.0),
            (format!("__name__=rpc_seconds_count,{common}"), 4.0),
            (
                "__name__=target_info,host_name=h1,instance=i-1,job=prod/shop".to_string(),
                1.0,
            ),
        ];
        // Written in any order above; the series keys are in label-name order.
        let key = |k: &str| {
            let mut parts: Vec<&str> = k.split(',').collect();
            parts.sort();
            parts.join(",")
        };
        for (labels, value) in &want {
            let labels = key(labels);
            assert_eq!(s.get(&labels), Some(&vec![*value]), "{labels} in {s:#?}");
        }
        let stale = &s[&key(&format!("__name__=queue_depth,{common}"))];
        assert_eq!(stale[0].to_bits(), STALE_NAN);
        assert_eq!(s.len(), want.len() + 1);
        for ts in &out.request.timeseries {
            assert!(
                ts.labels.windows(2).all(|w| w[0].name < w[1].name),
                "sorted labels"
            );
            assert_eq!(ts.samples[0].timestamp, (T / 1_000_000) as i64);
        }
    }

    #[test]
    fn repeated_series_are_merged_in_time_order() {
        let mut req = request();
        let mut later = req.resource_metrics[0].clone();
        if let Some(metric::Data::Sum(s)) = &mut later.scope_metrics[0].metrics[0].data {
            s.data_points[0].time_unix_nano = T - 5_000_000;
            s.data_points[0].value = Some(number_data_point::Value::AsInt(4));
        }
        req.resource_metrics.push(later);
        let out = convert(&req, &Options::default());
        let total = out
            .request
            .timeseries
            .iter()
            .find(|ts| ts.labels[0].value == "http_requests_total")
            .unwrap();
        let values: Vec<(i64, f64)> = total
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        let ms = (T / 1_000_000) as i64;
        assert_eq!(values, vec![(ms - 5, 4.0), (ms, 5.0)]);
        assert!(
            !out.request
                .timeseries
                .iter()
                .any(|ts| ts.labels[0].value == "target_info"),
            "target_info only when asked"
        );
    }
}
