"""Sends spans to Ferry's Zipkin receiver with OpenTelemetry's Zipkin JSON exporter.

Usage: otel_zipkin_send.py --url http://127.0.0.1:PORT/api/v2/spans --run ID
Prints the spans the SDK recorded (in-memory exporter next to the Zipkin one) as JSON.
"""

import argparse
import json
import sys

from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


def usec(nsec):
    return (nsec + 500) // 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--run", required=True)
    args = p.parse_args()

    zipkin = ZipkinExporter(endpoint=args.url)
    results = []
    original = zipkin.export

    def checked(spans):
        r = original(spans)
        results.append(r)
        return r

    zipkin.export = checked
    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "otel-zipkin"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(SimpleSpanProcessor(zipkin))
    tracer = tp.get_tracer("ferry.e2e.zipkin", "2.0")

    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER,
                                      attributes={"e2e.run": args.run, "retry.count": 3,
                                                  "user.premium": True,
                                                  "items": ["apple", "pear"]}) as root:
        root.add_event("cache miss", {"cache.key": "cart:1", "cache.size": 3})
        with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT,
                                          attributes={"db.system": "postgresql"}):
            pass
        with tracer.start_as_current_span("charge") as charge:
            charge.set_status(Status(StatusCode.ERROR, "card declined"))
    tp.shutdown()

    if any(r != SpanExportResult.SUCCESS for r in results) or not results:
        sys.exit(f"Zipkin export failed: {results}")
    spans = []
    for s in memory.get_finished_spans():
        spans.append({
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
            "name": s.name,
            # Zipkin has no INTERNAL kind: the exporter omits it, so it arrives UNSPECIFIED.
            "kind": 0 if s.kind == SpanKind.INTERNAL else s.kind.value + 1,
            # As the exporter does: start and duration are each rounded to microseconds.
            "start_us": usec(s.start_time),
            "end_us": usec(s.start_time) + usec(s.end_time - s.start_time),
            "error": s.status.description if s.status.status_code == StatusCode.ERROR else None,
            "events": [{"name": e.name, "attributes": dict(e.attributes)} for e in s.events],
        })
    print(json.dumps({"spans": spans}))


if __name__ == "__main__":
    main()
