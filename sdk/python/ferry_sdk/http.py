"""HTTP for plugins, over wasi:http (the only way out of the sandbox; the host checks every
request against the exporter's ``allowed_hosts``).

    from ferry_sdk import http
    response = http.post(url, body, {"content-type": "application/json"})
    response.check()          # raises the ExportError the status calls for

``body`` may be ``bytes`` or a ``ferry_sdk.Batch``: a batch is written into the request by the
host, without passing through the plugin's memory.
"""

from typing import Dict, List, Optional, Tuple, Union

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as _http

from . import Batch, Permanent, Retryable, Throttled

__all__ = ["Response", "HttpError", "request", "post"]

Body = Union[bytes, bytearray, Batch]


class HttpError(Retryable):
    """No response: connection, timeout or protocol failure. Retryable, except a request the
    host's egress policy refused (``denied``) or a bad URL, which raise ``Permanent``."""


class Response:
    """A whole response."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes,
                 trailers: List[Tuple[str, str]]):
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (case-insensitive)."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def text(self, limit: int = 512) -> str:
        """The start of the body, as text, for error messages."""
        return self.body[:limit].decode("utf-8", "replace")

    def retry_after_ms(self) -> Optional[int]:
        """``Retry-After`` in milliseconds (the seconds form only)."""
        value = self.header("retry-after")
        if value is None or not value.strip().isdigit():
            return None
        return int(value.strip()) * 1000

    def check(self) -> None:
        """The usual reading of an answer for an exporter: 2xx is success; 429 and 503 with a
        ``Retry-After`` are ``Throttled``; 408, 429 and 5xx are ``Retryable``; anything else
        (400, 401, 403, 404, ...) is ``Permanent``."""
        if 200 <= self.status < 300:
            return
        after = self.retry_after_ms()
        if self.status in (429, 503) and after is not None:
            raise Throttled(after)
        what = f"HTTP {self.status}: {self.text()}"
        if self.status in (408, 429) or 500 <= self.status < 600:
            raise Retryable(what)
        raise Permanent(what)


_METHODS = {
    "GET": _http.Method_Get(),
    "POST": _http.Method_Post(),
    "PUT": _http.Method_Put(),
    "DELETE": _http.Method_Delete(),
    "HEAD": _http.Method_Head(),
    "PATCH": _http.Method_Patch(),
    "OPTIONS": _http.Method_Options(),
}


def _split(url: str):
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise Permanent(f"invalid URL {url!r}: expected http(s)://host[:port]/path")
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    if path.startswith("?"):
        path = "/" + path
    if not authority:
        raise Permanent(f"invalid URL {url!r}: no host")
    return (_http.Scheme_Https() if scheme.lower() == "https" else _http.Scheme_Http()), authority, path


def _failure(url: str, code) -> Exception:
    if isinstance(code, _http.ErrorCode_HttpRequestDenied):
        return Permanent(f"{url} is not in this exporter's allowed_hosts")
    return HttpError(f"{url}: {type(code).__name__.removeprefix('ErrorCode_')}")


def _write_all(stream: streams.OutputStream, data: bytes) -> None:
    # Write as much as the stream takes at once: blocking-write-and-flush is capped at 4 KiB
    # per call, and a call per 4 KiB makes a large upload several times slower.
    view = memoryview(data)
    while view:
        permit = stream.check_write()
        if permit == 0:
            with stream.subscribe() as ready:
                ready.block()
            continue
        n = min(len(view), permit)
        stream.write(bytes(view[:n]))
        view = view[n:]


def _wait(url: str, pending: _http.FutureIncomingResponse) -> _http.IncomingResponse:
    while True:
        result = pending.get()
        if result is not None:
            break
        with pending.subscribe() as ready:
            ready.block()
    if isinstance(result, Err):
        raise HttpError(f"{url}: response already taken")
    inner = result.value
    if isinstance(inner, Err):
        raise _failure(url, inner.value)
    return inner.value


def request(method: str, url: str, body: Body = b"",
            headers: Optional[Dict[str, str]] = None) -> Response:
    """Sends a request and waits for the whole response. Raises ``HttpError`` (retryable)
    when no response arrives, ``Permanent`` for a bad URL or a refused destination."""
    scheme, authority, path = _split(url)
    fields = _http.Fields.from_list(
        [(k, v.encode()) for k, v in (headers or {}).items()]
    )
    outgoing = _http.OutgoingRequest(fields)
    outgoing.set_method(_METHODS.get(method.upper(), _http.Method_Other(method.upper())))
    outgoing.set_scheme(scheme)
    outgoing.set_authority(authority)
    outgoing.set_path_with_query(path)
    out_body = outgoing.body()
    try:
        pending = outgoing_handler.handle(outgoing, None)
    except Err as e:
        raise _failure(url, e.value)
    try:
        with out_body.write() as stream:
            if isinstance(body, Batch):
                body.write_to(stream)
            else:
                _write_all(stream, bytes(body))
            stream.blocking_flush()
        _http.OutgoingBody.finish(out_body, None)
    except Err:
        # A host that refuses the request closes the body stream; the response future
        # holds the actual reason, which matters more than ours.
        _wait(url, pending)
        raise HttpError(f"{url}: the request body could not be written")

    # The response stays alive (unclosed) until its body has been read and finished.
    response = _wait(url, pending)
    status = response.status()
    with response.headers() as h:
        head = [(k, v.decode("utf-8", "replace")) for k, v in h.entries()]
    incoming = response.consume()
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise HttpError(f"{url}: reading the response failed")
    trailers: List[Tuple[str, str]] = []
    with _http.IncomingBody.finish(incoming) as future:
        while (result := future.get()) is None:
            with future.subscribe() as ready:
                ready.block()
        if isinstance(result, Ok) and isinstance(result.value, Ok) and result.value.value is not None:
            with result.value.value as t:
                trailers = [(k, v.decode("utf-8", "replace")) for k, v in t.entries()]
    return Response(status, head, b"".join(chunks), trailers)


def post(url: str, body: Body, headers: Optional[Dict[str, str]] = None) -> Response:
    """``request("POST", ...)``."""
    return request("POST", url, body, headers)
