"""Sends spans to Ferry's Zipkin receiver with the real py_zipkin client.

Usage: zipkin_send.py --url http://127.0.0.1:PORT --encoding v1-json|v2-json|v2-proto --run ID

Prints, as JSON, what it created (ids from py_zipkin's own span contexts, names, kinds,
services, tags, annotations) and the raw payloads it posted (base64).
"""

import argparse
import base64
import json
import sys
import urllib.request

from py_zipkin import Encoding, Kind
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_span

ENCODINGS = {
    "v1-json": (Encoding.V1_JSON, "/api/v1/spans", "application/json"),
    "v2-json": (Encoding.V2_JSON, "/api/v2/spans", "application/json"),
    "v2-proto": (Encoding.V2_PROTO3, "/api/v2/spans", "application/x-protobuf"),
}


class Http(BaseTransportHandler):
    def __init__(self, url, content_type):
        self.url, self.content_type, self.payloads, self.errors = url, content_type, [], []

    def get_max_payload_bytes(self):
        return None

    def send(self, payload):
        # JSON encodings arrive as str; py_zipkin swallows errors raised here, so they are
        # recorded and checked by main().
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            req = urllib.request.Request(self.url, data=payload, method="POST",
                                         headers={"Content-Type": self.content_type})
            with urllib.request.urlopen(req) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"Zipkin receiver answered {resp.status}")
            self.payloads.append(base64.b64encode(payload).decode())
        except Exception as e:  # noqa: BLE001 - reported below
            self.errors.append(repr(e))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--encoding", required=True, choices=sorted(ENCODINGS))
    p.add_argument("--run", required=True)
    args = p.parse_args()
    encoding, path, ctype = ENCODINGS[args.encoding]
    transport = Http(args.url + path, ctype)
    service = f"zipkin-{args.encoding}"
    spans = []

    with zipkin_span(service_name=service, span_name="checkout", transport_handler=transport,
                     sample_rate=100.0, encoding=encoding, kind=Kind.SERVER) as root:
        root.update_binary_annotations({"http.route": "/checkout", "e2e.run": args.run})
        root.add_annotation("cache miss")
        with zipkin_span(service_name=service, span_name="db.query", kind=Kind.CLIENT) as child:
            child.update_binary_annotations({"db.system": "postgresql"})
            child.add_sa_binary_annotation(port=5432, service_name="postgres", host="127.0.0.1")
            c = child.zipkin_attrs
            spans.append({"trace_id": c.trace_id, "span_id": c.span_id,
                          "parent_span_id": c.parent_span_id, "name": "db.query", "kind": 3,
                          "tags": {"db.system": "postgresql"}, "events": [],
                          "peer_service": "postgres", "peer_port": 5432})
        r = root.zipkin_attrs
        spans.append({"trace_id": r.trace_id, "span_id": r.span_id, "parent_span_id": None,
                      "name": "checkout", "kind": 2,
                      "tags": {"http.route": "/checkout", "e2e.run": args.run},
                      "events": ["cache miss"]})

    if transport.errors or not transport.payloads:
        sys.exit(f"sending failed: {transport.errors or 'nothing was sent'}")
    print(json.dumps({"service": service, "spans": spans, "payloads": transport.payloads}))


if __name__ == "__main__":
    main()
