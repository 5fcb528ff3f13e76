"""Sends spans with the real jaeger-client (Python): UDP thrift compact Agent.emitBatch.

Usage: jaeger_send.py --port PORT --run ID
Prints what it created (ids, names, tags, logs) as JSON.
"""

import argparse
import json
import time

from jaeger_client import Config


def hexid(n, width):
    return f"{n:0{width}x}" if n else ""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--run", required=True)
    args = p.parse_args()
    cfg = Config(config={"sampler": {"type": "const", "param": 1},
                         "local_agent": {"reporting_host": "127.0.0.1",
                                         "reporting_port": args.port},
                         "logging": False},
                 service_name="jaeger-py", validate=True)
    tracer = cfg.initialize_tracer()
    spans = []
    with tracer.start_span("checkout", tags={"span.kind": "server"}) as root:
        root.set_tag("e2e.run", args.run)
        root.set_tag("retry.count", 3)
        root.set_tag("cart.total", 12.5)
        root.set_tag("user.premium", True)
        root.log_kv({"event": "cache miss", "cache.key": "cart:1"})
        with tracer.start_span("db.query", child_of=root) as child:
            child.set_tag("span.kind", "client")
            child.set_tag("error", True)
            spans.append({"span_id": hexid(child.span_id, 16), "parent": hexid(child.parent_id, 16),
                          "name": "db.query", "kind": 3, "error": True,
                          "tags": {}, "events": []})
        spans.append({"span_id": hexid(root.span_id, 16), "parent": "", "name": "checkout",
                      "kind": 2, "error": False,
                      "tags": {"e2e.run": args.run, "retry.count": 3, "cart.total": 12.5,
                               "user.premium": True},
                      "events": [{"name": "cache miss", "attributes": {"cache.key": "cart:1"}}]})
        trace_id = root.trace_id
    # The reporter flushes on its own IO loop thread; close() flushes what is queued.
    time.sleep(0.3)
    tracer.close()
    time.sleep(1.0)
    print(json.dumps({"trace_id": f"{trace_id:032x}", "spans": spans}))


if __name__ == "__main__":
    main()
