"""Sends traces, metrics and logs to Ferry with the real OpenTelemetry Python SDK.

Usage: otel_send.py --protocol grpc|http --endpoint http://127.0.0.1:PORT --run RUN_ID
       [--traces N]

Prints, as JSON on stdout, what the SDK created (recorded by an in-memory span exporter next
to the OTLP one), so the test can compare it field by field with what arrived downstream.
Exits non-zero if any OTLP export failed.
"""

import argparse
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, MetricExportResult
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        return (OTLPSpanExporter(endpoint=endpoint, insecure=True),
                OTLPMetricExporter(endpoint=endpoint, insecure=True),
                OTLPLogExporter(endpoint=endpoint, insecure=True))
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    gz = Compression.Gzip
    return (OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", compression=gz),
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", compression=gz),
            OTLPLogExporter(endpoint=f"{endpoint}/v1/logs", compression=gz))


class Checked:
    """Wraps an exporter and remembers whether any export failed."""

    def __init__(self, inner, ok):
        self.inner, self.ok, self.failures = inner, ok, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def export(self, *args, **kwargs):
        result = self.inner.export(*args, **kwargs)
        if result != self.ok:
            self.failures += 1
        return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", required=True, choices=["grpc", "http"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--traces", type=int, default=2)
    args = p.parse_args()

    resource = Resource.create({"service.name": f"ferry-e2e-{args.protocol}", "e2e.run": args.run})
    span_exp, metric_exp, log_exp = exporters(args.protocol, args.endpoint)
    span_exp = Checked(span_exp, SpanExportResult.SUCCESS)

    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    tracer = tp.get_tracer("ferry.e2e", "1.0")

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    log = logging.getLogger(f"ferry.e2e.{args.protocol}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))

    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("ferry.e2e", "1.0")

    sent_logs = []
    for t in range(args.traces):
        with tracer.start_as_current_span(
            f"checkout-{t}", kind=SpanKind.SERVER,
            attributes={"http.route": "/checkout", "retry.count": t, "cart.total": 12.5 + t,
                        "user.premium": t % 2 == 0, "items": ["apple", "pear"],
                        "user.email": f"user{t}@example.com"},
        ) as root:
            root.add_event("cache miss", {"cache.key": f"cart:{t}", "cache.size": 3})
            with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "postgresql"}):
                pass
            with tracer.start_as_current_span("charge", kind=SpanKind.INTERNAL) as charge:
                charge.set_status(Status(StatusCode.ERROR, "card declined"))
                card = "4111 1111 1111 1111"
                log.warning("payment failed for order %d", t,
                            extra={"order.id": t, "payment.provider": "acme", "payment.card": card})
                ctx = charge.get_span_context()
                sent_logs.append({"body": f"payment failed for order {t}", "severity": "WARN",
                                  "attributes": {"order.id": t, "payment.provider": "acme", "payment.card": card},
                                  "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"})
    log.info("e2e run %s finished", args.run, extra={"e2e.phase": "done"})
    sent_logs.append({"body": f"e2e run {args.run} finished", "severity": "INFO",
                      "attributes": {"e2e.phase": "done"}, "trace_id": "", "span_id": ""})

    requests = meter.create_counter("e2e.requests", unit="1", description="requests served")
    requests.add(5, {"route": "/a"})
    requests.add(7, {"route": "/b"})
    requests.add(1, {"route": "/a"})
    latency = meter.create_histogram("e2e.latency", unit="s", description="request latency")
    latency.record(0.1, {"route": "/a"})
    latency.record(0.3, {"route": "/a"})
    inflight = meter.create_up_down_counter("e2e.inflight")
    inflight.add(3)

    tp.shutdown()
    lp.shutdown()
    mp.shutdown()

    spans = []
    for s in memory.get_finished_spans():
        spans.append({
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
            "name": s.name,
            "kind": s.kind.value + 1,  # OTLP numbering starts at UNSPECIFIED = 0
            "start": s.start_time,
            "end": s.end_time,
            "status_code": {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}[s.status.status_code],
            "status_message": s.status.description or "",
            "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()},
            "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events],
        })
    out = {
        "service": f"ferry-e2e-{args.protocol}",
        "spans": spans,
        "logs": sent_logs,
        "metrics": {
            "e2e.requests": {"/a": 6, "/b": 7},
            "e2e.latency": {"count": 2, "sum": 0.4},
            "e2e.inflight": 3,
        },
        "span_export_failures": span_exp.failures,
    }
    json.dump(out, sys.stdout)
    sys.stdout.flush()
    if span_exp.failures:
        sys.exit(3)


if __name__ == "__main__":
    main()
