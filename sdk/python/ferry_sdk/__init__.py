"""Write Ferry exporter plugins in Python.

A plugin is a module (``app.py``) that defines ``class Exporter(ferry_sdk.Exporter)``;
``componentize-py`` turns it into a WebAssembly component for the world
``ferry:plugin/exporter-plugin@0.3.0``::

    componentize-py -d wit -w ferry:plugin/exporter-plugin@0.3.0 componentize app -o my.wasm

The base class speaks the contract; a subclass implements ``describe``, ``init`` and
``export`` in plain Python:

* ``describe()`` returns ``ferry_sdk.manifest(...)``.
* ``init(config)`` receives the exporter's ``config`` table as a ``dict``; raise
  ``ConfigError`` (or any exception) to refuse it.
* ``export(meta, batch)`` sends one batch; raise ``Retryable``, ``Throttled``, ``Partial`` or
  ``Permanent`` to tell the host how it failed. Any other exception counts as retryable, with
  its traceback in the daemon's log.

The component is instantiated once at build time (componentize-py snapshots it), so the
constructor must not call the host: do setup in ``init``.
"""

import json
import traceback
from typing import Any, Dict, Iterable, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import batches as _batches
from wit_world.imports import ferry_plugin_types as _types
from wit_world.imports import host as _host

__all__ = [
    "Exporter",
    "Batch",
    "Meta",
    "manifest",
    "log",
    "ConfigError",
    "ExportError",
    "Retryable",
    "Throttled",
    "Partial",
    "Permanent",
]

_SIGNALS = {
    "traces": _types.Signal.TRACES,
    "metrics": _types.Signal.METRICS,
    "logs": _types.Signal.LOGS,
}
_ENCODINGS = {
    "otlp-protobuf": _types.Encoding.OTLP_PROTOBUF,
    "otlp-json": _types.Encoding.OTLP_JSON,
}
_LEVELS = {
    "trace": _types.LogLevel.TRACE,
    "debug": _types.LogLevel.DEBUG,
    "info": _types.LogLevel.INFO,
    "warn": _types.LogLevel.WARN,
    "error": _types.LogLevel.ERROR,
}


def manifest(
    name: str,
    version: str,
    signals: Iterable[str] = ("traces", "metrics", "logs"),
    encoding: str = "otlp-json",
) -> _types.Manifest:
    """What ``describe`` returns. ``signals`` are names (``"traces"``, ``"metrics"``,
    ``"logs"``); ``encoding`` is ``"otlp-json"`` (parsed for you by ``Batch.json``) or
    ``"otlp-protobuf"``."""
    try:
        wanted = [_SIGNALS[s] for s in signals]
    except KeyError as e:
        raise ValueError(f"unknown signal {e.args[0]!r}: use traces, metrics or logs") from None
    if encoding not in _ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use otlp-json or otlp-protobuf")
    return _types.Manifest(name=name, version=version, signals=wanted, encoding=_ENCODINGS[encoding])


def log(level: str, message: str) -> None:
    """Writes a line to the daemon's log, tagged with the exporter's name. ``level`` is
    ``trace``, ``debug``, ``info``, ``warn`` or ``error``."""
    _host.log(_LEVELS.get(level, _types.LogLevel.INFO), message)


class ConfigError(Exception):
    """``init`` refuses the config: the daemon reports the message and does not start."""


class ExportError(Exception):
    """Base of the errors ``export`` raises; each becomes one case of the contract's
    ``export-error``."""

    def to_wit(self) -> _types.ExportError:
        raise NotImplementedError


class Retryable(ExportError):
    """A transient failure: the host retries with backoff."""

    def to_wit(self):
        return _types.ExportError_Retryable(str(self))


class Throttled(ExportError):
    """The backend asked to slow down: retry no sooner than ``after_ms``."""

    def __init__(self, after_ms: int):
        super().__init__(f"throttled for {after_ms} ms")
        self.after_ms = int(after_ms)

    def to_wit(self):
        return _types.ExportError_Throttled(self.after_ms)


class Partial(ExportError):
    """``rejected`` items were refused for good; the rest were accepted."""

    def __init__(self, rejected: int, message: str):
        super().__init__(message)
        self.rejected = int(rejected)

    def to_wit(self):
        return _types.ExportError_Partial((self.rejected, str(self)))


class Permanent(ExportError):
    """Never retry this batch: the host drops it and counts it."""

    def to_wit(self):
        return _types.ExportError_Permanent(str(self))


class Meta:
    """Describes one ``export`` call."""

    __slots__ = ("signal", "items", "attempt")

    def __init__(self, meta: _types.BatchMeta):
        #: ``"traces"``, ``"metrics"`` or ``"logs"``.
        self.signal = meta.signal.name.lower()
        #: Spans, data points or log records in the batch.
        self.items = meta.items
        #: 0 on the first try, then 1, 2, ... on retries of the same batch.
        self.attempt = meta.attempt


class Batch:
    """One batch, held by the host for the length of the ``export`` call."""

    __slots__ = ("_handle",)

    def __init__(self, handle: _batches.Batch):
        self._handle = handle

    def __len__(self) -> int:
        return self._handle.len()

    def bytes(self) -> bytes:
        """A copy of the whole batch."""
        return self._handle.read(0, self._handle.len())

    def json(self) -> Dict[str, Any]:
        """The batch parsed from OTLP/JSON (the manifest must ask for ``otlp-json``). See
        ``ferry_sdk.otlp`` for walking it."""
        return json.loads(self.bytes())

    def write_to(self, stream) -> None:
        """Has the host write the batch into an outgoing body stream without copying it
        into the plugin (``ferry_sdk.http`` does this when given a ``Batch``)."""
        self._handle.write_to(stream)


def _config_dict(text: str) -> Dict[str, Any]:
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise ConfigError("config must be a table")
    return value


# A component implements one world: built for ``processor-plugin`` there is no exporter
# interface to implement (``ferry_sdk.processor`` has the processor's base class).
_ExporterBase = getattr(exports, "Exporter", object)


class Exporter(_ExporterBase):
    """Base class of a Python plugin: subclass it as ``Exporter`` in your app module.

    componentize-py makes a new ``Exporter()`` for every call from the host; the plugin's
    state lives from ``init`` to ``shutdown``, so every construction returns the one instance
    (and a subclass's ``__init__`` runs once, at build time).
    """

    _the_instance = None

    def __new__(cls, *args, **kwargs):
        if cls.__dict__.get("_the_instance") is None:
            cls._the_instance = super().__new__(cls)
        return cls._the_instance

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._the_instance = None
        if "__init__" in cls.__dict__:
            user_init = cls.__dict__["__init__"]

            def init_once(self, *args, **kwargs):
                if not self.__dict__.get("_ferry_constructed"):
                    self._ferry_constructed = True
                    user_init(self, *args, **kwargs)

            cls.__init__ = init_once
        # The subclass writes plain Python; the contract wants WIT values and `Err`s. Wrap
        # what it defines once, here, so every plugin maps errors the same way.
        if "init" in cls.__dict__:
            cls._user_init = cls.__dict__["init"]
            cls.init = Exporter._wit_init
        if "export" in cls.__dict__:
            cls._user_export = cls.__dict__["export"]
            cls.export = Exporter._wit_export
        if "shutdown" in cls.__dict__:
            cls._user_shutdown = cls.__dict__["shutdown"]
            cls.shutdown = Exporter._wit_shutdown

    def describe(self) -> _types.Manifest:
        raise NotImplementedError("an Exporter must define describe()")

    def _user_init(self, config: Dict[str, Any]) -> None:
        pass

    def _user_export(self, meta: Meta, batch: Batch) -> None:
        raise Permanent("this plugin does not implement export()")

    def _user_shutdown(self) -> None:
        pass

    def _wit_init(self, config: str) -> None:
        try:
            self._user_init(_config_dict(config))
        except ConfigError as e:
            raise Err(str(e))
        except Exception as e:
            raise Err(f"{type(e).__name__}: {e}")

    def _wit_export(self, meta: _types.BatchMeta, batch: _batches.Batch) -> None:
        try:
            self._user_export(Meta(meta), Batch(batch))
        except ExportError as e:
            raise Err(e.to_wit())
        except Exception as e:
            # A bug, most likely: keep the data (the host retries, bounded by its retry
            # policy) and put the traceback where the operator looks.
            log("error", "export raised " + "".join(traceback.format_exception(e)).strip())
            raise Err(_types.ExportError_Retryable(f"{type(e).__name__}: {e}"))

    def _wit_shutdown(self) -> None:
        try:
            self._user_shutdown()
        except Exception as e:
            log("warn", f"shutdown raised {type(e).__name__}: {e}")

    init = _wit_init
    export = _wit_export
    shutdown = _wit_shutdown
