// {{name}}: a Ferry processor plugin.
//
// It sets the attribute `attribute` (default `processed.by`) to `value` (default "{{name}}")
// on every span and log record that lacks it. Change `process` to reshape batches as you
// need: `otlp` walks the OTLP/JSON batch and edits attributes; return the batch to forward it
// changed, KEEP to forward it as it was, or DROP to forward nothing.

import { ConfigError, KEEP, defineProcessor, manifest, otlp } from './ferry-sdk.js';

let attribute = 'processed.by';
let value = '{{name}}';

export const processor = defineProcessor({
  describe: () => manifest('{{name}}', '0.1.0', { signals: ['traces', 'logs'], encoding: 'otlp-json' }),

  init(config) {
    attribute = config.attribute ?? attribute;
    value = config.value ?? value;
    if (typeof attribute !== 'string' || attribute === '') {
      throw new ConfigError('attribute: a non-empty string');
    }
  },

  process(meta, doc) {
    const items = meta.signal === 'traces' ? otlp.spans(doc) : otlp.logRecords(doc);
    let changed = false;
    for (const [, , item] of items) {
      if (otlp.getAttribute(item, attribute) === null) {
        changed = otlp.setAttribute(item, attribute, value) || changed;
      }
    }
    return changed ? doc : KEEP;
  },
});
