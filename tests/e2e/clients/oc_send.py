"""Sends telemetry with the real OpenCensus Python library and its agent exporter
(opencensus-ext-ocagent) to an OpenCensus agent over gRPC.

Usage: oc_send.py traces --endpoint HOST:PORT --run ID
       oc_send.py metrics --endpoint HOST:PORT --run ID
       oc_send.py violations --endpoint HOST:PORT --run ID
Prints what it created (or, for violations, the status of each bad stream) as JSON.
"""

import argparse
import datetime
import json
import time


def send_traces(endpoint, run):
    from opencensus.common.transports.sync import SyncTransport
    from opencensus.ext.ocagent.trace_exporter import TraceExporter
    from opencensus.trace import link, samplers, span as span_module, status, time_event
    from opencensus.trace import tracer as tracer_module

    exporter = TraceExporter(service_name="oc-py", endpoint=endpoint, transport=SyncTransport)
    tracer = tracer_module.Tracer(exporter=exporter, sampler=samplers.AlwaysOnSampler())
    spans = []
    with tracer.span(name="checkout") as root:
        root.span_kind = span_module.SpanKind.SERVER
        root.add_attribute("e2e.run", run)
        root.add_attribute("retry.count", 3)
        root.add_attribute("cart.total", 12.5)
        root.add_attribute("user.premium", True)
        root.add_annotation("cache miss", **{"cache.key": "cart:1"})
        root.add_message_event(time_event.MessageEvent(
            datetime.datetime.utcnow(), 7, type=time_event.Type.SENT,
            uncompressed_size_bytes=100, compressed_size_bytes=40))
        with tracer.span(name="db.query") as child:
            child.span_kind = span_module.SpanKind.CLIENT
            child.set_status(status.Status(14, "db unavailable"))
            child.add_link(link.Link("ab" * 16, "cd" * 8, type=link.Type.PARENT_LINKED_SPAN))
            spans.append({"span_id": child.span_id, "parent": root.span_id, "name": "db.query",
                          "kind": 3, "status": [2, "db unavailable"],
                          "attributes": {}, "events": [],
                          "links": [["ab" * 16, "cd" * 8]]})
        spans.append({"span_id": root.span_id, "parent": "", "name": "checkout", "kind": 2,
                      "status": None,
                      "attributes": {"e2e.run": run, "retry.count": 3, "cart.total": 12.5,
                                     "user.premium": True},
                      "events": [{"name": "cache miss", "attributes": {"cache.key": "cart:1"}},
                                 {"name": "message",
                                  "attributes": {"message.type": "SENT",
                                                 "messaging.message_id": 7,
                                                 "messaging.message_payload_size_bytes": 100}}],
                      "links": []})
        trace_id = tracer.span_context.trace_id
    return {"trace_id": trace_id, "spans": spans}


def send_metrics(endpoint, run):
    from opencensus.ext.ocagent import stats_exporter
    from opencensus.stats import aggregation, measure, stats, view
    from opencensus.tags import tag_key, tag_map, tag_value

    method = tag_key.TagKey("method")
    latency = measure.MeasureFloat("e2e_latency", "request latency", "ms")
    requests = measure.MeasureInt("e2e_requests", "requests", "1")
    views = [
        view.View("e2e_latency_" + run, "latency distribution", [method], latency,
                  aggregation.DistributionAggregation([10.0, 100.0])),
        view.View("e2e_requests_" + run, "request count", [method], requests,
                  aggregation.CountAggregation()),
        view.View("e2e_last_" + run, "last latency", [method], latency,
                  aggregation.LastValueAggregation()),
    ]
    for v in views:
        stats.stats.view_manager.register_view(v)
    exporter = stats_exporter.new_stats_exporter(
        service_name="oc-py-metrics", endpoint=endpoint, interval=0.5)
    tags = tag_map.TagMap()
    tags.insert(method, tag_value.TagValue("GET"))
    for value in [5.0, 50.0, 500.0]:
        mm = stats.stats.stats_recorder.new_measurement_map()
        mm.measure_float_put(latency, value)
        mm.measure_int_put(requests, 1)
        mm.record(tags)
    # Several export rounds go over one stream: only the first message carries the node.
    time.sleep(2.5)
    return {"latency": [5.0, 50.0, 500.0], "bounds": [10.0, 100.0], "run": run}


def send_violations(endpoint, run):
    """Streams an agent must refuse, with the generated stubs: the status of each."""
    import grpc
    from opencensus.proto.agent.common.v1 import common_pb2
    from opencensus.proto.agent.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    from opencensus.proto.trace.v1 import trace_pb2

    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(endpoint))
    span = trace_pb2.Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
                          name=trace_pb2.TruncatableString(value=run))
    short_id = trace_pb2.Span(trace_id=b"\x01" * 8, span_id=bytes(range(1, 9)))
    node = common_pb2.Node(service_info=common_pb2.ServiceInfo(name="oc-violations"))
    cases = {
        "no_node_first": [trace_service_pb2.ExportTraceServiceRequest(spans=[span])],
        "short_trace_id": [trace_service_pb2.ExportTraceServiceRequest(node=node,
                                                                       spans=[short_id, span])],
        # Over the receiver's 64 KiB message limit.
        "too_large": [trace_service_pb2.ExportTraceServiceRequest(
            node=node, spans=[trace_pb2.Span(
                trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
                name=trace_pb2.TruncatableString(value="x" * (100 << 10)))])],
    }
    out = {}
    for name, messages in cases.items():
        try:
            for _ in stub.Export(iter(messages), timeout=10):
                pass
            out[name] = ["OK", ""]
        except grpc.RpcError as e:
            out[name] = [e.code().name, e.details()]
    try:
        for _ in stub.Config(iter([trace_service_pb2.CurrentLibraryConfig(node=node)]), timeout=10):
            pass
        out["config"] = ["OK", ""]
    except grpc.RpcError as e:
        out["config"] = [e.code().name, e.details()]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("signal", choices=["traces", "metrics", "violations"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--run", required=True)
    args = p.parse_args()
    send = {"traces": send_traces, "metrics": send_metrics,
            "violations": send_violations}[args.signal]
    print(json.dumps(send(args.endpoint, args.run)), flush=True)


if __name__ == "__main__":
    main()
