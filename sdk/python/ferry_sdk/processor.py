"""Write Ferry processor plugins in Python.

A processor is a module (``app.py``) that defines ``class Processor(ferry_sdk.processor.Processor)``;
``componentize-py`` turns it into a component for ``ferry:plugin/processor-plugin@0.3.0``::

    componentize-py -d wit -w ferry:plugin/processor-plugin@0.3.0 componentize app -o my.wasm

The subclass implements in plain Python:

* ``describe()`` returns ``ferry_sdk.manifest(...)`` (keep the default ``otlp-json`` encoding:
  batches then arrive as a parsed dict, and no protobuf library is needed).
* ``init(config)`` receives the processor's ``config`` table as a ``dict``; raise
  ``ferry_sdk.ConfigError`` (or any exception) to refuse it.
* ``process(meta, doc)`` gets the batch as an OTLP/JSON ``dict`` and returns ``KEEP`` (or
  ``None``: forward it unchanged), ``DROP`` (forward nothing), or the dict to forward instead
  (usually ``doc`` edited in place). ``ferry_sdk.otlp`` walks it (``spans``, ``log_records``,
  ``data_points``) and edits attributes (``get_attribute``, ``set_attribute``). Raising fails
  the batch: the host applies the processor's ``on_error``.

Answer the same way for the same batch: a batch may be processed again after a retry or a
restart.
"""

import json
import traceback
from typing import Any, Dict

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import batches as _batches
from wit_world.imports import ferry_plugin_types as _types

import ferry_sdk

__all__ = ["Processor", "Meta", "KEEP", "DROP"]

#: ``process`` returns this to forward the batch unchanged.
KEEP = object()
#: ``process`` returns this to forward nothing.
DROP = object()


class Meta:
    """Describes one ``process`` call."""

    __slots__ = ("signal", "items")

    def __init__(self, meta: _types.ProcessMeta):
        #: ``"traces"``, ``"metrics"`` or ``"logs"``.
        self.signal = meta.signal.name.lower()
        #: Spans, data points or log records in the batch.
        self.items = meta.items


def _batch_bytes(handle: _batches.Batch) -> bytes:
    return handle.read(0, handle.len())


class Processor(exports.Processor):
    """Base class of a Python processor: subclass it as ``Processor`` in your app module.

    componentize-py makes a new ``Processor()`` for every call from the host; every
    construction returns the one instance, so state set in ``init`` stays.
    """

    _the_instance = None

    def __new__(cls, *args, **kwargs):
        if cls.__dict__.get("_the_instance") is None:
            cls._the_instance = super().__new__(cls)
        return cls._the_instance

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._the_instance = None
        if "init" in cls.__dict__:
            cls._user_init = cls.__dict__["init"]
            cls.init = Processor._wit_init
        if "process" in cls.__dict__:
            cls._user_process = cls.__dict__["process"]
            cls.process = Processor._wit_process

    def describe(self) -> _types.Manifest:
        raise NotImplementedError("a Processor must define describe()")

    def _user_init(self, config: Dict[str, Any]) -> None:
        pass

    def _user_process(self, meta: Meta, doc: Dict[str, Any]) -> Any:
        return KEEP

    def _wit_init(self, config: str) -> None:
        try:
            value = json.loads(config) if config else {}
            if not isinstance(value, dict):
                raise ferry_sdk.ConfigError("config must be a table")
            self._user_init(value)
        except ferry_sdk.ConfigError as e:
            raise Err(str(e))
        except Exception as e:
            raise Err(f"{type(e).__name__}: {e}")

    def _wit_process(self, meta: _types.ProcessMeta, batch: _batches.Batch) -> _types.Outcome:
        try:
            doc = json.loads(_batch_bytes(batch))
            result = self._user_process(Meta(meta), doc)
        except Exception as e:
            ferry_sdk.log("error", "process raised " + "".join(traceback.format_exception(e)).strip())
            raise Err(f"{type(e).__name__}: {e}")
        if result is None or result is KEEP:
            return _types.Outcome_Keep()
        if result is DROP:
            return _types.Outcome_Drop()
        if isinstance(result, dict):
            return _types.Outcome_Replace(json.dumps(result, separators=(",", ":")).encode())
        raise Err(f"process returned {type(result).__name__}: return KEEP, DROP or a dict")

    init = _wit_init
    process = _wit_process
