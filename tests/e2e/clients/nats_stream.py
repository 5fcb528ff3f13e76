"""Reads a JetStream stream with the real NATS client (nats-py), without consuming it.

Usage: nats_stream.py --servers nats://127.0.0.1:P1,nats://127.0.0.1:P2 --stream NAME

Prints, as JSON on stdout, the stream's config and state and every message in it: subject,
`Nats-Msg-Id`, and what the OTLP payload holds (spans, log records, metric names), decoded with
opentelemetry-proto, so a test can check what the agents published field by field.
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.js.errors import NotFoundError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def text(enum_or_str):
    return str(getattr(enum_or_str, "value", enum_or_str))


def service(resource):
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


def decode(subject, data):
    signal = subject.split(".")[1]
    if signal == "traces":
        req = ExportTraceServiceRequest.FromString(data)
        return {"spans": [{"trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(), "name": s.name,
                           "service": service(rs.resource), "scope": ss.scope.name}
                          for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]}
    if signal == "logs":
        req = ExportLogsServiceRequest.FromString(data)
        return {"logs": [{"body": r.body.string_value, "trace_id": r.trace_id.hex(),
                          "service": service(rl.resource)}
                         for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]}
    req = ExportMetricsServiceRequest.FromString(data)
    return {"metrics": [{"name": m.name, "service": service(rm.resource)}
                        for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--servers", required=True)
    p.add_argument("--stream", required=True)
    args = p.parse_args()
    nc = await nats.connect(servers=args.servers.split(","), connect_timeout=5, max_reconnect_attempts=3)
    js = nc.jetstream()
    try:
        info = await js.stream_info(args.stream)
    except NotFoundError:
        # Not created yet: nothing in it.
        json.dump({"missing": True, "messages": []}, sys.stdout)
        await nc.close()
        return
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        # No stream leader at the moment (a node just died or came back): ask again later.
        json.dump({"unavailable": repr(e), "messages": []}, sys.stdout)
        await nc.close()
        return
    out = {
        "config": {"subjects": info.config.subjects, "replicas": info.config.num_replicas,
                   "retention": text(info.config.retention), "discard": text(info.config.discard)},
        "state": {"messages": info.state.messages, "bytes": info.state.bytes},
        "replicas_current": sum(1 for r in (info.cluster.replicas or []) if r.current) + 1 if info.cluster else 1,
        "messages": [],
    }
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            m = await js.get_msg(args.stream, seq)
        except NotFoundError:
            continue
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            json.dump({"unavailable": repr(e), "messages": []}, sys.stdout)
            await nc.close()
            return
        entry = {"seq": seq, "subject": m.subject, "id": (m.headers or {}).get("Nats-Msg-Id", "")}
        entry.update(decode(m.subject, m.data))
        out["messages"].append(entry)
    await nc.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
