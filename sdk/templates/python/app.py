"""{{name}}: a Ferry exporter plugin.

It forwards every batch as OTLP/HTTP JSON to `<endpoint>/v1/<signal>`. Change `export` to
send what your backend wants; `ferry_sdk.otlp` walks a parsed batch (`batch.json()`).
"""

import ferry_sdk
from ferry_sdk import ConfigError, http


class Exporter(ferry_sdk.Exporter):
    def describe(self):
        return ferry_sdk.manifest(
            "{{name}}", "0.1.0", signals=["traces", "metrics", "logs"], encoding="otlp-json"
        )

    def init(self, config):
        endpoint = config.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
            raise ConfigError("endpoint: the backend's base URL (http:// or https://) is required")
        self.endpoint = endpoint.rstrip("/")

    def export(self, meta, batch):
        # Passing the batch itself lets the host write it into the request: it never passes
        # through the plugin's memory.
        url = f"{self.endpoint}/v1/{meta.signal}"
        http.post(url, batch, {"content-type": "application/json"}).check()
