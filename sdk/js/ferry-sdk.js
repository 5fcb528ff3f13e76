// Write Ferry exporter plugins in JavaScript.
//
// A plugin is an ES module that exports `exporter`, built into a WebAssembly component for the
// world ferry:plugin/exporter-plugin@0.3.0 by componentize-js:
//
//   componentize-js app.js --wit wit --world-name exporter-plugin -d fetch-event -o my.wasm
//
//   import { defineExporter, manifest, otlp, checkResponse } from './ferry-sdk.js';
//   export const exporter = defineExporter({
//     describe: () => manifest('my-plugin', '0.1.0', { signals: ['traces'] }),
//     init(config) { ... },                      // config: the exporter's `config` table
//     async export(meta, batch) { ... },         // throw Retryable / Throttled / Partial / Permanent
//   });
//
// HTTP is `fetch` (the host checks every request against the exporter's allowed_hosts);
// `export` may be async: componentize-js runs the event loop until its promise settles.
//
// A processor exports `processor` instead, built for the world processor-plugin:
//
//   export const processor = defineProcessor({
//     describe: () => manifest('my-processor', '0.1.0', { signals: ['traces'] }),
//     init(config) { ... },
//     process(meta, doc) { ... return doc; },    // or KEEP, or DROP; throw to fail the batch
//   });

import { log as hostLog } from 'ferry:plugin/host@0.3.0';

/** `init` refuses the config: the daemon reports the message and does not start. */
export class ConfigError extends Error {}

/** Base of the errors `export` throws; each is one case of the contract's `export-error`. */
export class ExportError extends Error {}

/** A transient failure: the host retries with backoff. */
export class Retryable extends ExportError {
  toWit() {
    return { tag: 'retryable', val: this.message };
  }
}

/** The backend asked to slow down: retry no sooner than `afterMs`. */
export class Throttled extends ExportError {
  constructor(afterMs) {
    super(`throttled for ${afterMs} ms`);
    this.afterMs = afterMs;
  }
  toWit() {
    return { tag: 'throttled', val: BigInt(Math.max(0, Math.round(this.afterMs))) };
  }
}

/** `rejected` items were refused for good; the rest were accepted. */
export class Partial extends ExportError {
  constructor(rejected, message) {
    super(message);
    this.rejected = rejected;
  }
  toWit() {
    return { tag: 'partial', val: [this.rejected >>> 0, this.message] };
  }
}

/** Never retry this batch: the host drops it and counts it. */
export class Permanent extends ExportError {
  toWit() {
    return { tag: 'permanent', val: this.message };
  }
}

const SIGNALS = ['traces', 'metrics', 'logs'];
const ENCODINGS = ['otlp-protobuf', 'otlp-json'];
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** What `describe` returns. */
export function manifest(name, version, { signals = SIGNALS, encoding = 'otlp-json' } = {}) {
  for (const s of signals) {
    if (!SIGNALS.includes(s)) throw new Error(`unknown signal ${s}: use traces, metrics or logs`);
  }
  if (!ENCODINGS.includes(encoding)) {
    throw new Error(`unknown encoding ${encoding}: use otlp-json or otlp-protobuf`);
  }
  return { name, version, signals: [...signals], encoding };
}

/** Writes a line to the daemon's log, tagged with the exporter's name. */
export function log(level, message) {
  hostLog(LEVELS.includes(level) ? level : 'info', String(message));
}

/** A batch, held by the host for the length of the `export` call. */
export class Batch {
  constructor(handle) {
    this.handle = handle;
  }
  /** Its size in bytes. */
  get length() {
    return Number(this.handle.len());
  }
  /** A copy of the whole batch. */
  bytes() {
    return this.handle.read(0n, this.handle.len());
  }
  /** The batch as text (OTLP/JSON is UTF-8). */
  text() {
    return new TextDecoder().decode(this.bytes());
  }
  /** The batch parsed from OTLP/JSON (the manifest must ask for `otlp-json`). */
  json() {
    return JSON.parse(this.text());
  }
}

// componentize-js turns a thrown value with a `payload` into the `err` of a WIT result;
// anything else thrown traps the instance.
function fail(payload) {
  return Object.assign(new Error(typeof payload === 'string' ? payload : 'export failed'), {
    payload,
  });
}

// Runs a plugin's `init` on its JSON config; a refusal becomes the `err` of `init`.
function initWith(init, config) {
  let parsed;
  try {
    parsed = config ? JSON.parse(config) : {};
  } catch (e) {
    throw fail(`config is not JSON: ${e.message}`);
  }
  try {
    init(parsed);
  } catch (e) {
    throw fail(e instanceof ConfigError ? e.message : describeError(e));
  }
}

function describeError(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * The `exporter` export from plain functions: `init` gets the config as an object, `export`
 * gets `{signal, items, attempt}` and a `Batch`; the errors above become the contract's.
 */
export function defineExporter({ describe, init = () => {}, export: send, shutdown = () => {} }) {
  return {
    describe,
    init(config) {
      initWith(init, config);
    },
    async export(meta, batch) {
      try {
        await send(
          { signal: meta.signal, items: meta.items, attempt: meta.attempt },
          new Batch(batch),
        );
      } catch (e) {
        if (e instanceof ExportError) throw fail(e.toWit());
        // A bug, most likely: keep the data (the host retries, bounded by its retry policy)
        // and put the stack where the operator looks.
        log('error', `export threw ${describeError(e)}${e && e.stack ? `\n${e.stack}` : ''}`);
        throw fail({ tag: 'retryable', val: describeError(e) });
      }
    },
    shutdown() {
      try {
        shutdown();
      } catch (e) {
        log('warn', `shutdown threw ${describeError(e)}`);
      }
    },
  };
}

/** `process` returns this to forward the batch unchanged. */
export const KEEP = Symbol('keep');
/** `process` returns this to forward nothing. */
export const DROP = Symbol('drop');

/**
 * The `processor` export from plain functions: `init` gets the config as an object, `process`
 * gets `{signal, items}` and the batch parsed from OTLP/JSON, and returns KEEP (or nothing),
 * DROP, or the document to forward instead. A throw fails the batch (the host applies the
 * processor's `on_error`).
 */
export function defineProcessor({ describe, init = () => {}, process }) {
  return {
    describe,
    init(config) {
      initWith(init, config);
    },
    process(meta, batch) {
      let result;
      try {
        const doc = new Batch(batch).json();
        result = process({ signal: meta.signal, items: meta.items }, doc);
      } catch (e) {
        log('error', `process threw ${describeError(e)}${e && e.stack ? `\n${e.stack}` : ''}`);
        throw fail(describeError(e));
      }
      if (result === undefined || result === null || result === KEEP) return { tag: 'keep' };
      if (result === DROP) return { tag: 'drop' };
      return { tag: 'replace', val: new TextEncoder().encode(JSON.stringify(result)) };
    },
  };
}

/**
 * The usual reading of an HTTP answer for an exporter: 2xx is success; 429 and 503 with a
 * `Retry-After` are Throttled; 408, 429 and 5xx are Retryable; anything else is Permanent.
 */
export function checkResponse(status, headers, bodyText = '') {
  if (status >= 200 && status < 300) return;
  const retryAfter = headers && headers.get ? headers.get('retry-after') : null;
  if ((status === 429 || status === 503) && retryAfter && /^\d+$/.test(retryAfter.trim())) {
    throw new Throttled(Number(retryAfter.trim()) * 1000);
  }
  const what = `HTTP ${status}: ${String(bodyText).slice(0, 512)}`;
  if (status === 408 || status === 429 || (status >= 500 && status < 600)) {
    throw new Retryable(what);
  }
  throw new Permanent(what);
}

/**
 * `fetch` as an exporter wants it: sends the request, reads the whole answer, and throws the
 * ExportError its status calls for. A request that gets no answer (refused connection,
 * timeout, a destination outside allowed_hosts) throws Retryable.
 */
export async function post(url, body, headers = {}) {
  let response;
  let text;
  try {
    response = await fetch(url, { method: 'POST', body, headers });
    text = await response.text();
  } catch (e) {
    throw new Retryable(`${url}: ${describeError(e)}`);
  }
  checkResponse(response.status, response.headers, text);
  return { status: response.status, headers: response.headers, text };
}

/** Walking OTLP/JSON batches: camelCase keys, ids in hex, 64-bit integers as strings. */
export const otlp = {
  STATUS_CODES: { 0: 'unset', 1: 'ok', 2: 'error' },
  SPAN_KINDS: { 0: 'unspecified', 1: 'internal', 2: 'server', 3: 'client', 4: 'producer', 5: 'consumer' },

  /** An AnyValue as a JS value (64-bit integers as Number when exact, else BigInt). */
  value(v) {
    if (!v) return null;
    if ('stringValue' in v) return v.stringValue;
    if ('intValue' in v) {
      const n = BigInt(v.intValue);
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    if ('doubleValue' in v) return Number(v.doubleValue);
    if ('boolValue' in v) return Boolean(v.boolValue);
    if ('bytesValue' in v) return v.bytesValue;
    if ('arrayValue' in v) return (v.arrayValue.values || []).map((x) => otlp.value(x));
    if ('kvlistValue' in v) return otlp.attributes(v.kvlistValue.values || []);
    return null;
  },

  /** A JS value as an OTLP/JSON AnyValue. */
  anyValue(v) {
    if (typeof v === 'boolean') return { boolValue: v };
    if (typeof v === 'bigint') return { intValue: v.toString() };
    if (typeof v === 'number') return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
    if (Array.isArray(v)) return { arrayValue: { values: v.map((x) => otlp.anyValue(x)) } };
    return { stringValue: String(v) };
  },

  /** The value of attribute `key` of an item (span, log record, data point), or null. */
  getAttribute(item, key) {
    const kv = (item.attributes || []).find((a) => a.key === key);
    return kv ? otlp.value(kv.value) : null;
  },

  /** Sets attribute `key` of an item to `v` (null removes it); returns whether it changed. */
  setAttribute(item, key, v) {
    const attrs = (item.attributes = item.attributes || []);
    const i = attrs.findIndex((a) => a.key === key);
    if (v === null || v === undefined) {
      if (i < 0) return false;
      attrs.splice(i, 1);
      return true;
    }
    const value = otlp.anyValue(v);
    if (i >= 0) {
      if (JSON.stringify(attrs[i].value) === JSON.stringify(value)) return false;
      attrs[i].value = value;
      return true;
    }
    attrs.push({ key, value });
    return true;
  },

  /** A list of KeyValue as an object. */
  attributes(kvs) {
    const out = {};
    for (const kv of kvs || []) out[kv.key] = otlp.value(kv.value);
    return out;
  },

  /** A fixed64 timestamp (string or number) in nanoseconds, as a BigInt. */
  nanos(v) {
    return BigInt(v || 0);
  },

  /** A span's duration in milliseconds. */
  durationMs(span) {
    return Number(otlp.nanos(span.endTimeUnixNano) - otlp.nanos(span.startTimeUnixNano)) / 1e6;
  },

  /** [resource, scope, span] for every span of an ExportTraceServiceRequest. */
  *spans(doc) {
    for (const rs of doc.resourceSpans || []) {
      for (const ss of rs.scopeSpans || []) {
        for (const span of ss.spans || []) yield [rs.resource || {}, ss.scope || {}, span];
      }
    }
  },

  /** [resource, scope, metric, point] for every data point of an ExportMetricsServiceRequest. */
  *dataPoints(doc) {
    for (const rm of doc.resourceMetrics || []) {
      for (const sm of rm.scopeMetrics || []) {
        for (const metric of sm.metrics || []) {
          for (const kind of ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary']) {
            for (const p of (metric[kind] && metric[kind].dataPoints) || []) {
              yield [rm.resource || {}, sm.scope || {}, metric, p];
            }
          }
        }
      }
    }
  },

  /** [resource, scope, record] for every record of an ExportLogsServiceRequest. */
  *logRecords(doc) {
    for (const rl of doc.resourceLogs || []) {
      for (const sl of rl.scopeLogs || []) {
        for (const r of sl.logRecords || []) yield [rl.resource || {}, sl.scope || {}, r];
      }
    }
  },
};
