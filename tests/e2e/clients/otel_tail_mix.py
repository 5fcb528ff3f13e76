"""A mix of traces for tail sampling, with the real OpenTelemetry Python SDK: service `front`
calls service `back` in every trace; some traces fail (an error status on `back`'s span), some
are slow (the root lasts 800 ms, by explicit timestamps), the rest are fast. `front`'s spans
are exported first and `back`'s --gap seconds later, so every trace arrives in two requests
seconds apart, and the one span that decides an error trace comes last (with --error-on back,
the default) or first (--error-on front). With --fresh M, M more traces of `back` alone (same
kinds in turn) start in the second request.

Usage: otel_tail_mix.py --endpoint http://127.0.0.1:P --traces N --gap SECONDS --run RUN_ID
       [--error-on front|back] [--fresh M] [--back-endpoint http://127.0.0.1:Q]

`back` sends to --back-endpoint when given (another agent), else to --endpoint.

Prints, as JSON, every span created: trace id, span id, the trace's kind (error, slow, fast)
and service. Exits non-zero if an export failed.
"""

import argparse
import json
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

# The OTLP exporter that counts failed exports, shared with the two-services client beside this.
from otel_two_services import Counting


def provider(service, endpoint, memory):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    # Batched and flushed by hand: one request per service, at a time of the script's choosing.
    p.add_span_processor(BatchSpanProcessor(Counting(endpoint=endpoint, insecure=True),
                                            schedule_delay_millis=3_600_000))
    p.add_span_processor(SimpleSpanProcessor(memory))
    return p


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--endpoint", required=True)
    a.add_argument("--traces", type=int, default=30)
    a.add_argument("--gap", type=float, default=2.0)
    a.add_argument("--run", required=True)
    a.add_argument("--error-on", choices=["front", "back"], default="back")
    a.add_argument("--fresh", type=int, default=0)
    a.add_argument("--back-endpoint")
    args = a.parse_args()
    memory = InMemorySpanExporter()
    front = provider("front", args.endpoint, memory)
    back = provider("back", args.back_endpoint or args.endpoint, memory)
    ft, bt = front.get_tracer("front"), back.get_tracer("back")
    kinds = {}
    base = time.time_ns()
    for t in range(args.traces):
        kind = ("error", "slow", "fast", "fast")[t % 4]
        start = base + t * 1_000_000_000
        length = 800_000_000 if kind == "slow" else 20_000_000
        root = ft.start_span(f"{args.run}-checkout-{t}", kind=SpanKind.SERVER, start_time=start)
        ctx = set_span_in_context(root)
        serve = bt.start_span(f"{args.run}-serve-{t}", context=ctx, kind=SpanKind.SERVER,
                              start_time=start + 1_000_000)
        if kind == "error":
            (root if args.error_on == "front" else serve).set_status(Status(StatusCode.ERROR,
                                                                             "boom"))
        serve.end(end_time=start + 10_000_000)
        root.end(end_time=start + length)
        kinds[f"{root.get_span_context().trace_id:032x}"] = kind
    front.force_flush()
    time.sleep(args.gap)
    for t in range(args.fresh):
        kind = ("error", "slow", "fast", "fast")[t % 4]
        start = time.time_ns()
        length = 800_000_000 if kind == "slow" else 20_000_000
        root = bt.start_span(f"{args.run}-fresh-{t}", kind=SpanKind.SERVER, start_time=start)
        child = bt.start_span(f"{args.run}-query-{t}", context=set_span_in_context(root),
                              start_time=start + 1_000_000)
        if kind == "error":
            child.set_status(Status(StatusCode.ERROR, "boom"))
        child.end(end_time=start + 5_000_000)
        root.end(end_time=start + length)
        kinds[f"{root.get_span_context().trace_id:032x}"] = kind
    back.force_flush()
    front.shutdown()
    back.shutdown()
    spans = [{"trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
              "kind": kinds[f"{s.context.trace_id:032x}"],
              "service": s.resource.attributes["service.name"]}
             for s in memory.get_finished_spans()]
    json.dump({"spans": spans, "failures": Counting.failures}, sys.stdout)
    if Counting.failures:
        sys.exit(3)


if __name__ == "__main__":
    main()
