"""python-hasher: replaces personal identifiers with their SHA-256, on spans and log records.

Config (the processor's `config` table):
    keys    attribute keys to hash (default ["user.email", "enduser.id"])
    salt    a string mixed into every hash, so hashes cannot be looked up in a table of
            known addresses (default "")

Values are hashed as text (`sha256(salt + value)`, lower-case hex); a batch with none of the
keys is forwarded untouched.
"""

import hashlib

import ferry_sdk
from ferry_sdk import ConfigError, otlp
from ferry_sdk.processor import KEEP


class Processor(ferry_sdk.processor.Processor):
    def describe(self):
        return ferry_sdk.manifest("python-hasher", "0.1.0", signals=["traces", "logs"], encoding="otlp-json")

    def init(self, config):
        keys = config.get("keys", ["user.email", "enduser.id"])
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise ConfigError("keys: a non-empty list of attribute keys")
        salt = config.get("salt", "")
        if not isinstance(salt, str):
            raise ConfigError("salt: a string")
        self.keys = keys
        self.salt = salt

    def process(self, meta, doc):
        items = otlp.spans(doc) if meta.signal == "traces" else otlp.log_records(doc)
        changed = False
        for _resource, _scope, item in items:
            for key in self.keys:
                v = otlp.get_attribute(item, key)
                if v is not None:
                    digest = hashlib.sha256((self.salt + str(v)).encode()).hexdigest()
                    changed |= otlp.set_attribute(item, key, digest)
        return doc if changed else KEEP
