"""{{name}}: a Ferry processor plugin.

It sets the attribute `attribute` (default `processed.by`) to `value` (default "{{name}}") on
every span and log record that lacks it. Change `process` to reshape batches as you need:
`ferry_sdk.otlp` walks the OTLP/JSON batch and edits attributes; return the batch to forward
it changed, KEEP to forward it as it was, or DROP to forward nothing.
"""

import ferry_sdk
from ferry_sdk import ConfigError, otlp
from ferry_sdk.processor import KEEP


class Processor(ferry_sdk.processor.Processor):
    def describe(self):
        return ferry_sdk.manifest("{{name}}", "0.1.0", signals=["traces", "logs"], encoding="otlp-json")

    def init(self, config):
        self.attribute = config.get("attribute", "processed.by")
        self.value = config.get("value", "{{name}}")
        if not isinstance(self.attribute, str) or not self.attribute:
            raise ConfigError("attribute: a non-empty string")

    def process(self, meta, doc):
        items = otlp.spans(doc) if meta.signal == "traces" else otlp.log_records(doc)
        changed = False
        for _resource, _scope, item in items:
            if otlp.get_attribute(item, self.attribute) is None:
                changed |= otlp.set_attribute(item, self.attribute, self.value)
        return doc if changed else KEEP
