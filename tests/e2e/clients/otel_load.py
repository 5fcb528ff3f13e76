"""Sends many spans to Ferry over OTLP/gRPC with the real OpenTelemetry Python SDK.

Usage: otel_load.py --endpoint http://127.0.0.1:PORT --spans N

The batch processor's queue holds every span, so nothing is dropped inside the SDK; what the
exporter could not deliver (after its own retries) is counted. Prints JSON: the span ids
created and how many exports failed.
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult


class Checked:
    """Wraps an exporter and counts failed exports."""

    def __init__(self, inner):
        self.inner, self.failures = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def export(self, spans):
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--spans", type=int, required=True)
    args = p.parse_args()

    exporter = Checked(OTLPSpanExporter(endpoint=args.endpoint, insecure=True, timeout=60))
    tp = TracerProvider(resource=Resource.create({"service.name": "ferry-load"}))
    tp.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=args.spans, max_export_batch_size=200, schedule_delay_millis=50))
    tracer = tp.get_tracer("ferry.load")
    ids = []
    for i in range(args.spans):
        with tracer.start_as_current_span(f"load-{i}", attributes={"load.i": i, "pad": "x" * 64}) as s:
            ids.append(f"{s.get_span_context().span_id:016x}")
    tp.shutdown()
    json.dump({"span_ids": ids, "failed_exports": exporter.failures}, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
