// {{name}}: a Ferry exporter plugin.
//
// It forwards every batch as OTLP/HTTP JSON to `<endpoint>/v1/<signal>`. Change `export` to
// send what your backend wants; `otlp` walks a parsed batch (`batch.json()`).

import { ConfigError, defineExporter, manifest, post } from './ferry-sdk.js';

let endpoint = '';

export const exporter = defineExporter({
  describe: () =>
    manifest('{{name}}', '0.1.0', { signals: ['traces', 'metrics', 'logs'], encoding: 'otlp-json' }),

  init(config) {
    if (typeof config.endpoint !== 'string' || !/^https?:\/\//.test(config.endpoint)) {
      throw new ConfigError('endpoint: the backend\'s base URL (http:// or https://) is required');
    }
    endpoint = config.endpoint.replace(/\/+$/, '');
  },

  async export(meta, batch) {
    await post(`${endpoint}/v1/${meta.signal}`, batch.bytes(), { 'content-type': 'application/json' });
  },
});
