"""python-webhook: posts a compact JSON summary of each span to a webhook URL.

Config (the exporter's `config` table):
    endpoint     the webhook URL (required)
    headers      extra request headers, e.g. {"x-team" = "payments"}
    errors_only  send only spans whose status is error (default false)
    max_spans    spans per request (default 500)
"""

import json

import ferry_sdk
from ferry_sdk import ConfigError, http, otlp


class Exporter(ferry_sdk.Exporter):
    def describe(self):
        return ferry_sdk.manifest("python-webhook", "0.1.0", signals=["traces"], encoding="otlp-json")

    def init(self, config):
        url = config.get("endpoint")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("endpoint: the webhook URL (http:// or https://) is required")
        headers = config.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError("headers: a table of strings")
        max_spans = config.get("max_spans", 500)
        if not isinstance(max_spans, int) or max_spans < 1:
            raise ConfigError("max_spans: a whole number of at least 1")
        self.url = url
        self.headers = {"content-type": "application/json", **headers}
        self.errors_only = bool(config.get("errors_only", False))
        self.max_spans = max_spans
        ferry_sdk.log("info", f"posting span summaries to {url}")

    def export(self, meta, batch):
        summaries = []
        for resource, _scope, span in otlp.spans(batch.json()):
            status = otlp.STATUS_CODES.get(span.get("status", {}).get("code", 0), "unset")
            if self.errors_only and status != "error":
                continue
            summaries.append({
                "service": otlp.attributes(resource.get("attributes", [])).get("service.name", "unknown"),
                "trace_id": span.get("traceId", ""),
                "span_id": span.get("spanId", ""),
                "parent_id": span.get("parentSpanId") or None,
                "name": span.get("name", ""),
                "kind": otlp.SPAN_KINDS.get(span.get("kind", 0), "unspecified"),
                "duration_ms": round(otlp.duration_ms(span), 3),
                "status": status,
                "attributes": otlp.attributes(span.get("attributes", [])),
            })
        # Several requests for a large batch; a retry after a failure part-way sends the
        # earlier ones again (the host's delivery is at-least-once).
        for start in range(0, len(summaries), self.max_spans):
            body = json.dumps({"spans": summaries[start:start + self.max_spans]}, default=str)
            http.post(self.url, body.encode(), self.headers).check()
