// js-hec: sends spans and log records to a Splunk-style HTTP Event Collector, one JSON event
// per item, newline-separated, POSTed to `<endpoint>/services/collector/event`.
//
// Config (the exporter's `config` table):
//   endpoint    the collector's base URL (required)
//   index       the index events go to (optional)
//   batch_size  events per request (default 1000)
// The token belongs in the exporter's `secret_headers`, e.g.
//   secret_headers = { authorization = { env = "HEC_TOKEN", prefix = "Splunk " } }
// the host adds it to each request, so it never enters the plugin.

import { ConfigError, defineExporter, log, manifest, otlp, post } from '../../sdk/js/ferry-sdk.js';

const settings = { endpoint: '', index: undefined, batchSize: 1000 };

function seconds(nanos) {
  return Number(otlp.nanos(nanos) / 1000n) / 1e6;
}

function spanEvents(doc) {
  const out = [];
  for (const [resource, , span] of otlp.spans(doc)) {
    const service = otlp.attributes(resource.attributes)['service.name'] || 'unknown';
    out.push({
      time: seconds(span.startTimeUnixNano),
      source: service,
      sourcetype: 'otel:span',
      index: settings.index,
      event: {
        name: span.name,
        trace_id: span.traceId,
        span_id: span.spanId,
        parent_id: span.parentSpanId || null,
        kind: otlp.SPAN_KINDS[span.kind || 0],
        duration_ms: otlp.durationMs(span),
        status: otlp.STATUS_CODES[(span.status && span.status.code) || 0],
        attributes: otlp.attributes(span.attributes),
      },
    });
  }
  return out;
}

function logEvents(doc) {
  const out = [];
  for (const [resource, , record] of otlp.logRecords(doc)) {
    const service = otlp.attributes(resource.attributes)['service.name'] || 'unknown';
    out.push({
      time: seconds(record.timeUnixNano || record.observedTimeUnixNano),
      source: service,
      sourcetype: 'otel:log',
      index: settings.index,
      event: {
        severity: record.severityText || String(record.severityNumber || ''),
        body: otlp.value(record.body),
        trace_id: record.traceId || null,
        attributes: otlp.attributes(record.attributes),
      },
    });
  }
  return out;
}

export const exporter = defineExporter({
  describe: () => manifest('js-hec', '0.1.0', { signals: ['traces', 'logs'], encoding: 'otlp-json' }),

  init(config) {
    if (typeof config.endpoint !== 'string' || !/^https?:\/\//.test(config.endpoint)) {
      throw new ConfigError('endpoint: the collector URL (http:// or https://) is required');
    }
    if (config.index !== undefined && typeof config.index !== 'string') {
      throw new ConfigError('index: a string');
    }
    const batchSize = config.batch_size === undefined ? 1000 : config.batch_size;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new ConfigError('batch_size: a whole number of at least 1');
    }
    settings.endpoint = config.endpoint.replace(/\/+$/, '');
    settings.index = config.index;
    settings.batchSize = batchSize;
    log('info', `sending events to ${settings.endpoint}`);
  },

  async export(meta, batch) {
    const doc = batch.json();
    const events = meta.signal === 'traces' ? spanEvents(doc) : logEvents(doc);
    const url = `${settings.endpoint}/services/collector/event`;
    // Several requests for a large batch; a retry after a failure part-way sends the earlier
    // ones again (the host's delivery is at-least-once).
    for (let i = 0; i < events.length; i += settings.batchSize) {
      const body = events
        .slice(i, i + settings.batchSize)
        .map((e) => JSON.stringify(e))
        .join('\n');
      await post(url, body, { 'content-type': 'application/json' });
    }
  },
});
