"""Walking OTLP/JSON batches (``Batch.json()``), as the OTLP JSON mapping writes them:
camelCase keys, ids in hex, 64-bit integers as strings.

    for resource, scope, span in otlp.spans(batch.json()):
        service = otlp.attributes(resource.get("attributes", [])).get("service.name")
"""

import base64
from typing import Any, Dict, Iterator, List, Tuple

__all__ = [
    "value",
    "attributes",
    "spans",
    "data_points",
    "log_records",
    "any_value",
    "get_attribute",
    "set_attribute",
    "nanos",
    "duration_ms",
    "STATUS_CODES",
    "SPAN_KINDS",
]

#: ``status.code`` values.
STATUS_CODES = {0: "unset", 1: "ok", 2: "error"}
#: ``kind`` values.
SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def value(any_value: Dict[str, Any]) -> Any:
    """An ``AnyValue`` as a Python value: str, int, float, bool, bytes, list or dict."""
    if not any_value:
        return None
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "boolValue" in any_value:
        return bool(any_value["boolValue"])
    if "bytesValue" in any_value:
        return base64.b64decode(any_value["bytesValue"])
    if "arrayValue" in any_value:
        return [value(v) for v in any_value["arrayValue"].get("values", [])]
    if "kvlistValue" in any_value:
        return attributes(any_value["kvlistValue"].get("values", []))
    return None


def attributes(key_values: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A list of ``KeyValue`` as a dict."""
    return {kv["key"]: value(kv.get("value", {})) for kv in key_values or []}


def nanos(v: Any) -> int:
    """A ``fixed64`` timestamp (a string or a number in JSON) as an int."""
    return int(v or 0)


def duration_ms(span: Dict[str, Any]) -> float:
    """A span's duration in milliseconds."""
    return (nanos(span.get("endTimeUnixNano")) - nanos(span.get("startTimeUnixNano"))) / 1e6


def spans(doc: Dict[str, Any]) -> Iterator[Tuple[Dict, Dict, Dict]]:
    """``(resource, scope, span)`` for every span of an ``ExportTraceServiceRequest``."""
    for rs in doc.get("resourceSpans", []):
        resource = rs.get("resource", {})
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope", {})
            for span in ss.get("spans", []):
                yield resource, scope, span


def data_points(doc: Dict[str, Any]) -> Iterator[Tuple[Dict, Dict, Dict, Dict]]:
    """``(resource, scope, metric, point)`` for every data point of an
    ``ExportMetricsServiceRequest`` (gauge, sum, histogram, exponential histogram, summary)."""
    for rm in doc.get("resourceMetrics", []):
        resource = rm.get("resource", {})
        for sm in rm.get("scopeMetrics", []):
            scope = sm.get("scope", {})
            for metric in sm.get("metrics", []):
                for kind in ("gauge", "sum", "histogram", "exponentialHistogram", "summary"):
                    if kind in metric:
                        for point in metric[kind].get("dataPoints", []):
                            yield resource, scope, metric, point


def log_records(doc: Dict[str, Any]) -> Iterator[Tuple[Dict, Dict, Dict]]:
    """``(resource, scope, record)`` for every record of an ``ExportLogsServiceRequest``."""
    for rl in doc.get("resourceLogs", []):
        resource = rl.get("resource", {})
        for sl in rl.get("scopeLogs", []):
            scope = sl.get("scope", {})
            for record in sl.get("logRecords", []):
                yield resource, scope, record


def any_value(v: Any) -> Dict[str, Any]:
    """A Python value as an OTLP/JSON ``AnyValue`` (str, bool, int, float, bytes, list, dict)."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [any_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": any_value(x)} for k, x in v.items()]}}
    return {"stringValue": str(v)}


def get_attribute(item: Dict[str, Any], key: str) -> Any:
    """The value of attribute ``key`` of a span, log record, data point or resource (a dict
    with an ``attributes`` list), or ``None``."""
    for kv in item.get("attributes", []) or []:
        if kv.get("key") == key:
            return value(kv.get("value", {}))
    return None


def set_attribute(item: Dict[str, Any], key: str, v: Any) -> bool:
    """Sets attribute ``key`` of ``item`` to ``v`` (``None`` removes it); returns whether
    anything changed."""
    attrs = item.setdefault("attributes", [])
    for i, kv in enumerate(attrs):
        if kv.get("key") == key:
            if v is None:
                del attrs[i]
                return True
            new = any_value(v)
            if kv.get("value") == new:
                return False
            kv["value"] = new
            return True
    if v is None:
        return False
    attrs.append({"key": key, "value": any_value(v)})
    return True

