//! OpenCensus metrics to OTLP.

use ferry_proto::common::KeyValue;
use ferry_proto::opencensus as oc;
use ferry_proto::{metrics, metrics_service, resource};

use crate::receiver::otlp_build::kv;

use super::translate_traces::by_resource;
use super::*;

pub(super) fn label_attributes(keys: &[oc::LabelKey], values: &[oc::LabelValue]) -> Vec<KeyValue> {
    keys.iter()
        .zip(values)
        .filter(|(_, v)| v.has_value)
        .map(|(k, v)| kv(&k.key, string(&v.value)))
        .collect()
}

/// The OTLP shape of an OpenCensus metric type.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    Gauge(bool),
    Sum(bool),
    Histogram,
    Summary,
}

pub(super) fn number_point(
    point: oc::Point,
    int: bool,
    start: u64,
    attributes: Vec<KeyValue>,
) -> Result<metrics::NumberDataPoint, String> {
    use metrics::number_data_point::Value as N;
    use oc::point::Value as P;
    let value = match (point.value, int) {
        (Some(P::Int64Value(i)), true) => N::AsInt(i),
        (Some(P::DoubleValue(d)), false) => N::AsDouble(d),
        (other, _) => {
            return Err(format!(
                "a point of an {} metric holds {}",
                if int { "integer" } else { "double" },
                point_kind(other.as_ref())
            ));
        }
    };
    Ok(metrics::NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: nanos(point.timestamp.as_ref()),
        value: Some(value),
        ..Default::default()
    })
}

pub(super) fn point_kind(v: Option<&oc::point::Value>) -> &'static str {
    match v {
        None => "no value",
        Some(oc::point::Value::Int64Value(_)) => "an integer",
        Some(oc::point::Value::DoubleValue(_)) => "a double",
        Some(oc::point::Value::DistributionValue(_)) => "a distribution",
        Some(oc::point::Value::SummaryValue(_)) => "a summary",
    }
}

pub(super) fn count(n: i64, what: &str) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("negative {what} {n}"))
}

pub(super) fn histogram_point(
    point: oc::Point,
    start: u64,
    attributes: Vec<KeyValue>,
) -> Result<metrics::HistogramDataPoint, String> {
    let Some(oc::point::Value::DistributionValue(d)) = point.value else {
        return Err(format!(
            "a point of a distribution metric holds {}",
            point_kind(point.value.as_ref())
        ));
    };
    let bounds = d
        .bucket_options
        .and_then(|o| o.explicit)
        .map(|e| e.bounds)
        .unwrap_or_default();
    if !d.buckets.is_empty() && d.buckets.len() != bounds.len() + 1 {
        return Err(format!(
            "a distribution has {} buckets for {} bounds (needs one more bucket than bounds)",
            d.buckets.len(),
            bounds.len()
        ));
    }
    let mut bucket_counts = Vec::with_capacity(d.buckets.len());
    let mut exemplars = Vec::new();
    for b in d.buckets {
        bucket_counts.push(count(b.count, "bucket count")?);
        if let Some(e) = b.exemplar {
            exemplars.push(metrics::Exemplar {
                filtered_attributes: e
                    .attachments
                    .into_iter()
                    .map(|(k, v)| kv(k, string(v)))
                    .collect(),
                time_unix_nano: nanos(e.timestamp.as_ref()),
                value: Some(metrics::exemplar::Value::AsDouble(e.value)),
                ..Default::default()
            });
        }
    }
    // Without buckets there is no histogram, and then OTLP wants no bounds either.
    let explicit_bounds = if bucket_counts.is_empty() {
        Vec::new()
    } else {
        bounds
    };
    Ok(metrics::HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: nanos(point.timestamp.as_ref()),
        count: count(d.count, "count")?,
        sum: Some(d.sum),
        bucket_counts,
        explicit_bounds,
        exemplars,
        ..Default::default()
    })
}

pub(super) fn summary_point(
    point: oc::Point,
    start: u64,
    attributes: Vec<KeyValue>,
) -> Result<metrics::SummaryDataPoint, String> {
    let Some(oc::point::Value::SummaryValue(s)) = point.value else {
        return Err(format!(
            "a point of a summary metric holds {}",
            point_kind(point.value.as_ref())
        ));
    };
    Ok(metrics::SummaryDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: nanos(point.timestamp.as_ref()),
        count: count(s.count.map_or(0, |c| c.value), "count")?,
        sum: s.sum.map_or(0.0, |v| v.value),
        quantile_values: s
            .snapshot
            .map(|snap| {
                snap.percentile_values
                    .into_iter()
                    .map(|p| metrics::summary_data_point::ValueAtQuantile {
                        quantile: p.percentile / 100.0,
                        value: p.value,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// Translates one metric; points that cannot be carried over are counted in `dropped`.
pub(super) fn metric(m: oc::Metric, dropped: &mut Dropped) -> Option<metrics::Metric> {
    use metrics::metric::Data;
    let points: usize = m.timeseries.iter().map(|t| t.points.len()).sum();
    let Some(desc) = m.metric_descriptor else {
        dropped.add(points, || "a metric has no descriptor".into());
        return None;
    };
    use oc::MetricType as T;
    let shape = match T::try_from(desc.r#type) {
        Ok(T::GaugeInt64) => Shape::Gauge(true),
        Ok(T::GaugeDouble) => Shape::Gauge(false),
        Ok(T::CumulativeInt64) => Shape::Sum(true),
        Ok(T::CumulativeDouble) => Shape::Sum(false),
        Ok(T::CumulativeDistribution) => Shape::Histogram,
        Ok(T::Summary) => Shape::Summary,
        other => {
            let name = desc.name.clone();
            dropped.add(points, || match other {
                Ok(T::GaugeDistribution) => {
                    format!("metric {name:?}: GAUGE_DISTRIBUTION has no OTLP equivalent")
                }
                _ => format!("metric {name:?}: unknown type {}", desc.r#type),
            });
            return None;
        }
    };
    let mut numbers = Vec::new();
    let mut histograms = Vec::new();
    let mut summaries = Vec::new();
    for series in m.timeseries {
        let start = nanos(series.start_timestamp.as_ref());
        for point in series.points {
            let attrs = label_attributes(&desc.label_keys, &series.label_values);
            let result = match shape {
                Shape::Gauge(int) | Shape::Sum(int) => {
                    number_point(point, int, start, attrs).map(|p| numbers.push(p))
                }
                Shape::Histogram => {
                    histogram_point(point, start, attrs).map(|p| histograms.push(p))
                }
                Shape::Summary => summary_point(point, start, attrs).map(|p| summaries.push(p)),
            };
            if let Err(why) = result {
                dropped.add(1, || format!("metric {:?}: {why}", desc.name));
            }
        }
    }
    let cumulative = metrics::AggregationTemporality::Cumulative as i32;
    let data = match shape {
        Shape::Gauge(_) => Data::Gauge(metrics::Gauge {
            data_points: numbers,
        }),
        Shape::Sum(_) => Data::Sum(metrics::Sum {
            data_points: numbers,
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        Shape::Histogram => Data::Histogram(metrics::Histogram {
            data_points: histograms,
            aggregation_temporality: cumulative,
        }),
        Shape::Summary => Data::Summary(metrics::Summary {
            data_points: summaries,
        }),
    };
    Some(metrics::Metric {
        name: desc.name,
        description: desc.description,
        unit: desc.unit,
        data: Some(data),
        ..Default::default()
    })
}

pub(super) fn resource_metrics(
    resource: resource::Resource,
    metrics: Vec<metrics::Metric>,
) -> metrics::ResourceMetrics {
    metrics::ResourceMetrics {
        resource: Some(resource),
        scope_metrics: vec![metrics::ScopeMetrics {
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Translates the metrics of one message, sent by `state`'s node.
pub fn metrics_to_otlp(
    state: &StreamState,
    list: Vec<oc::Metric>,
    dropped: &mut Dropped,
) -> metrics_service::ExportMetricsServiceRequest {
    metrics_service::ExportMetricsServiceRequest {
        resource_metrics: by_resource(
            state,
            list,
            |m| m.resource.clone(),
            |m| metric(m, dropped),
            resource_metrics,
        ),
    }
}
