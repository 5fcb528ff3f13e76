"""Traces that cross two services, each service sending to its own agent, with the real
OpenTelemetry Python SDK: service `front` (to --front) calls service `back` (to --back), so
every trace has spans entering through two different agents.

Usage: otel_two_services.py --front http://127.0.0.1:P1 --back http://127.0.0.1:P2 --traces N
       --run RUN_ID

Prints, as JSON, every span created: trace id, span id, name and service. Exits non-zero if an
export failed.
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


class Counting(OTLPSpanExporter):
    failures = 0

    def export(self, spans):
        result = super().export(spans)
        if result != SpanExportResult.SUCCESS:
            Counting.failures += 1
        return result


def provider(service, endpoint, memory):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(Counting(endpoint=endpoint, insecure=True)))
    p.add_span_processor(SimpleSpanProcessor(memory))
    return p


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--front", required=True)
    a.add_argument("--back", required=True)
    a.add_argument("--traces", type=int, default=20)
    a.add_argument("--run", required=True)
    args = a.parse_args()
    memory = InMemorySpanExporter()
    front = provider("front", args.front, memory)
    back = provider("back", args.back, memory)
    ft, bt = front.get_tracer("front"), back.get_tracer("back")
    for t in range(args.traces):
        with ft.start_as_current_span(f"{args.run}-checkout-{t}", kind=SpanKind.SERVER):
            with ft.start_as_current_span(f"{args.run}-call-{t}", kind=SpanKind.CLIENT):
                # The call's context crosses to the other service, as a traceparent header would.
                with bt.start_as_current_span(f"{args.run}-serve-{t}", kind=SpanKind.SERVER):
                    with bt.start_as_current_span(f"{args.run}-db-{t}", kind=SpanKind.CLIENT):
                        pass
    front.shutdown()
    back.shutdown()
    spans = [{"trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
              "name": s.name, "service": s.resource.attributes["service.name"]}
             for s in memory.get_finished_spans()]
    json.dump({"spans": spans, "failures": Counting.failures}, sys.stdout)
    if Counting.failures:
        sys.exit(3)


if __name__ == "__main__":
    main()
