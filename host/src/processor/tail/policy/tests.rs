use std::time::Duration;

use bytes::Bytes;
use ferry_proto::trace::{Span, Status};
use prost::Message;

use super::*;
use crate::processor::tail::tests::service_resource;

/// A span of `service` (as its resource and scope, encoded): `parent` 0 for a root,
/// `status` 2 for an error, lasting `ms` milliseconds.
fn span(service: &str, parent: u8, status: i32, ms: u64) -> (Msg, Msg, Msg) {
    let resource = service_resource(service);
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![parent + 1; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: format!("op-{parent}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
        status: Some(Status {
            code: status,
            ..Default::default()
        }),
        ..Default::default()
    };
    let msg = |b: Vec<u8>| Msg::new(Bytes::from(b));
    (
        msg(resource.encode_to_vec()),
        msg(Vec::new()),
        msg(span.encode_to_vec()),
    )
}

fn views(spans: &[(Msg, Msg, Msg)]) -> Vec<SpanView<'_>> {
    spans
        .iter()
        .map(|(resource, scope, span)| SpanView {
            at: At { resource, scope },
            span,
        })
        .collect()
}

fn policies(toml_text: &str) -> Result<Policies, Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Wrap {
        policies: Vec<PolicyConfig>,
    }
    let w: Wrap = toml::from_str(toml_text).unwrap();
    let mut errors = Vec::new();
    let p = Policies::compile(
        "processors.tail.policies",
        &w.policies,
        Decision::Drop,
        &mut errors,
    );
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(errors)
    }
}

fn label(p: &Policies, trace: &[(Msg, Msg, Msg)], id: &[u8]) -> (String, Decision) {
    let (i, d) = p.decide(id, &views(trace), Instant::now());
    (p.names().nth(i).unwrap().to_string(), d)
}

#[test]
fn the_first_policy_that_holds_decides_and_the_rest_get_the_default() {
    let p = policies(
        r#"
        policies = [
          { name = "health", decision = "drop", spans = { all = [{ name = "op-0" }, { service = "health" }] } },
          { name = "errors", spans = { any = [{ status = "error" }] } },
          { name = "slow", duration_at_least = "500ms" },
          { name = "big", min_spans = 3 },
          { name = "either", any = [{ spans = { any = [{ service = "pay" }] } }, { min_spans = 2, duration_at_least = "100ms" }] },
        ]
        "#,
    )
    .unwrap();
    let id = [7u8; 16];
    let health = [span("health", 0, 2, 900)];
    assert_eq!(
        label(&p, &health, &id),
        ("health".into(), Decision::Drop),
        "first match wins"
    );
    let error = [span("shop", 0, 1, 5), span("db", 1, 2, 1)];
    assert_eq!(label(&p, &error, &id), ("errors".into(), Decision::Keep));
    // The root's duration counts, not a child's.
    let slow_root = [span("shop", 0, 0, 600), span("db", 1, 0, 1)];
    assert_eq!(label(&p, &slow_root, &id).0, "slow");
    let slow_child = [span("db", 1, 0, 700)];
    assert_eq!(
        label(&p, &slow_child, &id).0,
        "slow",
        "no root: first start to last end"
    );
    let big = [span("a", 0, 0, 1), span("b", 1, 0, 1), span("c", 2, 0, 1)];
    assert_eq!(label(&p, &big, &id).0, "big");
    let pay = [span("pay", 0, 0, 1)];
    assert_eq!(label(&p, &pay, &id).0, "either");
    let two_slowish = [span("a", 0, 0, 150), span("b", 1, 0, 1)];
    assert_eq!(
        label(&p, &two_slowish, &id).0,
        "either",
        "all of a nested test's fields"
    );
    let quiet = [span("a", 0, 0, 1)];
    assert_eq!(label(&p, &quiet, &id), ("default".into(), Decision::Drop));
}

#[test]
fn probability_follows_the_trace_ids_randomness_like_the_sample_processor() {
    let p = policies(r#"policies = [{ name = "tenth", percentage = 10 }]"#).unwrap();
    let trace = [span("a", 0, 0, 1)];
    let mut kept = 0;
    for n in 1..=20_000u64 {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        let (_, d) = p.decide(&id, &views(&trace), Instant::now());
        let r = sample::randomness(&id).unwrap();
        assert_eq!(d == Decision::Keep, r >= sample::threshold(0.1, 14));
        kept += usize::from(d == Decision::Keep);
    }
    assert!(
        (1_700..2_300).contains(&kept),
        "{kept} of 20000 kept at 10 %"
    );
    let (_, d) = p.decide(&[0; 16], &views(&trace), Instant::now());
    assert_eq!(d, Decision::Drop, "an all-zero id is in no sample");
}

#[test]
fn a_rate_limit_holds_per_service_and_refills_with_time() {
    let p = policies(r#"policies = [{ name = "capped", spans_per_second = 4 }]"#).unwrap();
    let id = [7u8; 16];
    let t0 = Instant::now();
    let two = [span("a", 0, 0, 1), span("a", 1, 0, 1)];
    let at = |t: Instant, trace: &[(Msg, Msg, Msg)]| p.decide(&id, &views(trace), t).0;
    assert_eq!(at(t0, &two), 0);
    assert_eq!(at(t0, &two), 0);
    assert_eq!(
        at(t0, &two),
        1,
        "the bucket of 4 is empty: the default decides"
    );
    let other = [span("b", 0, 0, 1)];
    assert_eq!(at(t0, &other), 0, "another service has its own bucket");
    assert_eq!(
        at(t0 + Duration::from_millis(500), &two),
        0,
        "half a second refills 2"
    );
    assert_eq!(at(t0 + Duration::from_millis(500), &two), 1);
}

#[test]
fn every_problem_is_named_with_its_key_path() {
    let errors = policies(
        r#"
        policies = [
          { decision = "keep" },
          { name = "a", percentage = 120, duration_at_least = "soon" },
          { name = "a", spans_per_second = 0 },
          { name = "default" },
          { name = "n", any = [{ name = "inner", spans_per_second = 3, spans = { any = [{ severity_below = "info" }] } }] },
        ]
        "#,
    )
    .err()
    .unwrap()
    .join("\n");
    for needle in [
        "processors.tail.policies[0].name: every policy needs a name",
        "processors.tail.policies[1].percentage: must be between 0 and 100, not 120",
        "processors.tail.policies[1].duration_at_least: invalid duration",
        "processors.tail.policies[2].name: \"a\" is taken by processors.tail.policies[1]",
        "processors.tail.policies[2].spans_per_second: must be above 0",
        "processors.tail.policies[3].name: \"default\" names the default",
        "processors.tail.policies[4].any[0].name: only a top-level policy has one",
        "processors.tail.policies[4].any[0].spans_per_second: only a top-level policy has one",
        "processors.tail.policies[4].any[0].spans.any[0]",
    ] {
        assert!(errors.contains(needle), "{needle} missing from\n{errors}");
    }
}
