//! Builders of OTLP messages, shared by the receivers that translate foreign formats.

/// An OTLP attribute; shared by the receivers that translate foreign formats.
#[cfg(any(feature = "zipkin", feature = "jaeger", feature = "opencensus"))]
pub(crate) fn kv(
    key: impl Into<String>,
    value: ferry_proto::common::any_value::Value,
) -> ferry_proto::common::KeyValue {
    ferry_proto::common::KeyValue {
        key: key.into(),
        value: Some(ferry_proto::common::AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One `ResourceSpans` from resource attributes and spans grouped by instrumentation scope
/// `(name, version)`; shared by the receivers that translate foreign spans.
#[cfg(any(feature = "zipkin", feature = "jaeger"))]
pub(crate) fn resource_spans(
    attributes: Vec<ferry_proto::common::KeyValue>,
    scopes: std::collections::BTreeMap<(String, String), Vec<ferry_proto::trace::Span>>,
) -> ferry_proto::trace::ResourceSpans {
    use ferry_proto::common::InstrumentationScope;
    use ferry_proto::trace::{ResourceSpans, ScopeSpans};
    ResourceSpans {
        resource: Some(ferry_proto::resource::Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: scopes
            .into_iter()
            .map(|((name, version), spans)| ScopeSpans {
                scope: (!name.is_empty()).then(|| InstrumentationScope {
                    name,
                    version,
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Groups items as the Collector does for formats where an item may name its own resource
/// (Jaeger's per-span process, OpenCensus' per-span or per-metric resource): items without one
/// share the first group, under `shared`; each item with one gets a group to itself.
#[cfg(any(feature = "jaeger", feature = "opencensus"))]
pub(crate) fn group_by_own_resource<T, R>(
    items: impl IntoIterator<Item = (T, Option<R>)>,
    shared: R,
) -> Vec<(R, Vec<T>)> {
    let mut common = Vec::new();
    let mut own = Vec::new();
    for (item, resource) in items {
        match resource {
            None => common.push(item),
            Some(r) => own.push((r, vec![item])),
        }
    }
    let mut groups = Vec::with_capacity(own.len() + 1);
    if !common.is_empty() {
        groups.push((shared, common));
    }
    groups.extend(own);
    groups
}
