use super::*;
use ferry_sdk::proto::common::{InstrumentationScope, KeyValue};
use ferry_sdk::proto::logs::{LogRecord, ResourceLogs, ScopeLogs};
use ferry_sdk::proto::logs_service::ExportLogsServiceRequest;
use ferry_sdk::proto::metrics::{Metric, ResourceMetrics, ScopeMetrics};
use ferry_sdk::proto::metrics_service::ExportMetricsServiceRequest;
use ferry_sdk::proto::prost::Message;
use ferry_sdk::proto::resource::Resource;
use ferry_sdk::proto::trace::{ResourceSpans, ScopeSpans, Span};
use ferry_sdk::proto::trace_service::ExportTraceServiceRequest;

fn span(trace: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![1; 8],
        name: name.into(),
        ..Default::default()
    }
}

fn service(name: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(ferry_sdk::proto::common::AnyValue {
                    value: Some(ferry_sdk::proto::common::any_value::Value::StringValue(
                        name.into(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: format!("{name}-lib"),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// (shard, service, scope, span name) of every span in the pieces.
fn placed(pieces: &[(u32, Vec<u8>)]) -> Vec<(u32, String, String, String)> {
    let mut out = Vec::new();
    for (shard, bytes) in pieces {
        let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        for rs in req.resource_spans {
            let svc = format!("{:?}", rs.resource.unwrap().attributes[0].value);
            for ss in rs.scope_spans {
                let scope = ss.scope.unwrap().name;
                for s in ss.spans {
                    out.push((*shard, svc.clone(), scope.clone(), s.name));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn spans_of_a_trace_share_a_shard_and_keep_their_resource_and_scope() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            service(
                "a",
                (0..40).map(|i| span(i % 8 + 1, &format!("a{i}"))).collect(),
            ),
            service(
                "b",
                (0..40).map(|i| span(i % 8 + 1, &format!("b{i}"))).collect(),
            ),
        ],
    };
    let bytes = req.encode_to_vec();
    let pieces = cut(&bytes, TRACES, 4, 1 << 20).unwrap();
    let placed = placed(&pieces);
    assert_eq!(placed.len(), 80, "every span, once");
    for (shard, svc, scope, name) in &placed {
        let trace = name[1..].parse::<u8>().unwrap() % 8 + 1;
        assert_eq!(u64::from(*shard), trace_key(&[trace; 16]) % 4, "{name}");
        assert!(
            svc.contains(&name[..1]) && scope.starts_with(&name[..1]),
            "{name}"
        );
    }
    assert!(
        pieces
            .iter()
            .map(|p| p.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    );
    // One shard, and the batch fits: it is sent as it is.
    assert_eq!(
        cut(&bytes, TRACES, 1, 1 << 20).unwrap(),
        [(0, bytes.clone())]
    );
    // The same batch is always cut the same way, with the same ids.
    assert_eq!(cut(&bytes, TRACES, 4, 1 << 20).unwrap(), pieces);
    let h = batch_hash(&bytes);
    let salted = [&[0x5a][..], &bytes].concat();
    assert_eq!(
        h,
        u128::from(fnv1a(&bytes)) << 64 | u128::from(fnv1a(&salted))
    );
    assert_eq!(h, batch_hash(&bytes.clone()));
    assert_ne!(h, batch_hash(&bytes[1..]));
    assert_eq!(message_id(h, 7, 2, 1), message_id(h, 7, 2, 1));
    assert_ne!(message_id(h, 7, 2, 1), message_id(h, 7, 2, 2));
    assert_ne!(message_id(h, 7, 2, 1), message_id(h, 8, 2, 1));
}

#[test]
fn a_batch_over_the_limit_is_cut_to_fit_and_an_item_that_cannot_fit_is_an_error() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![service(
            "a",
            (0..100).map(|i| span(1, &format!("a{i}"))).collect(),
        )],
    };
    let bytes = req.encode_to_vec();
    let pieces = cut(&bytes, TRACES, 1, bytes.len() / 3).unwrap();
    assert!(pieces.len() >= 3);
    assert!(pieces.iter().all(|(_, p)| p.len() <= bytes.len() / 3));
    assert_eq!(placed(&pieces).len(), 100);
    // Many requests in one batch: cut between them, undecoded.
    let batch = [bytes.clone(), bytes.clone(), bytes.clone()].concat();
    let pieces = cut(&batch, TRACES, 1, bytes.len() + 10).unwrap();
    assert_eq!(
        pieces,
        vec![(0, bytes.clone()), (0, bytes.clone()), (0, bytes.clone())]
    );
    // ... and an entry alone over the limit is decoded and cut further.
    let pieces = cut(&batch, TRACES, 1, bytes.len() / 2).unwrap();
    assert_eq!(placed(&pieces).len(), 300);
    assert!(pieces.iter().all(|(_, p)| p.len() <= bytes.len() / 2));
    assert!(cut(&batch[..batch.len() - 1], TRACES, 1, 100).is_err());
    let e = cut(&bytes, TRACES, 1, 20).unwrap_err();
    assert!(e.contains("over the server's message limit of 20"), "{e}");
}

fn resource(name: &str) -> Option<Resource> {
    service(name, Vec::new()).resource
}

#[test]
fn logs_follow_their_trace_and_metrics_their_resource() {
    let record = |trace: u8, body: &str| LogRecord {
        time_unix_nano: 7,
        severity_text: "INFO".into(),
        body: Some(ferry_sdk::proto::common::AnyValue {
            value: Some(ferry_sdk::proto::common::any_value::Value::StringValue(
                body.into(),
            )),
        }),
        trace_id: if trace == 0 {
            Vec::new()
        } else {
            vec![trace; 16]
        },
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: (0..6)
            .map(|r| ResourceLogs {
                resource: resource(&format!("svc{r}")),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..10).map(|t| record(t, &format!("{r}-{t}"))).collect(),
                    ..Default::default()
                }],
                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
            })
            .collect(),
    };
    let bytes = logs.encode_to_vec();
    let pieces = cut(&bytes, LOGS, 8, 1 << 20).unwrap();
    let mut seen = 0;
    let mut untraced_shard = std::collections::BTreeMap::new();
    for (shard, piece) in &pieces {
        let req = ExportLogsServiceRequest::decode(&piece[..]).unwrap();
        for rl in req.resource_logs {
            assert_eq!(rl.schema_url, "https://opentelemetry.io/schemas/1.30.0");
            let svc = format!("{:?}", rl.resource.clone().unwrap());
            for r in rl.scope_logs.into_iter().flat_map(|s| s.log_records) {
                seen += 1;
                assert_eq!((r.time_unix_nano, r.severity_text.as_str()), (7, "INFO"));
                match trace_id(&r.trace_id) {
                    Some(id) => assert_eq!(u64::from(*shard), trace_key(id) % 8),
                    None => {
                        let first = *untraced_shard.entry(svc.clone()).or_insert(*shard);
                        assert_eq!(first, *shard, "a resource's untraced logs stay together");
                    }
                }
            }
        }
    }
    assert_eq!(seen, 60);

    let metrics = ExportMetricsServiceRequest {
        resource_metrics: (0..12)
            .map(|r| ResourceMetrics {
                resource: resource(&format!("host{r}")),
                scope_metrics: vec![ScopeMetrics {
                    metrics: (0..3)
                        .map(|m| Metric {
                            name: format!("m{r}.{m}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    let bytes = metrics.encode_to_vec();
    let pieces = cut(&bytes, METRICS, 4, 1 << 20).unwrap();
    let mut by_host = std::collections::BTreeMap::new();
    for (shard, piece) in &pieces {
        let req = ExportMetricsServiceRequest::decode(&piece[..]).unwrap();
        for rm in req.resource_metrics {
            let names: Vec<String> = rm.scope_metrics[0]
                .metrics
                .iter()
                .map(|m| m.name.clone())
                .collect();
            let host = names[0].split('.').next().unwrap().to_string();
            assert!(
                by_host.insert(host, (*shard, names.len())).is_none(),
                "a resource in one piece"
            );
            let expect = resource_key(&rm.resource.unwrap().encode_to_vec()) % 4;
            assert_eq!(u64::from(*shard), expect);
        }
    }
    assert_eq!(by_host.len(), 12);
    assert!(by_host.values().all(|(_, n)| *n == 3));
    assert!(
        by_host
            .values()
            .map(|(s, _)| s)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1
    );
}

#[test]
fn varints_are_as_long_as_they_encode() {
    for v in [0, 1, 127, 128, 16_383, 16_384, 1 << 21, usize::MAX >> 1] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "{v}");
        assert_eq!(varint(&out, &mut 0).unwrap() as usize, v);
    }
}
