// Sends spans with the real jaeger-client for Node: over UDP (thrift binary, to the agent port)
// or HTTP (thrift binary POST /api/traces, chunked). Prints what it created as JSON.
//
// Usage: node jaeger_send.js udp PORT RUN | node jaeger_send.js http URL RUN
'use strict';
const { initTracer } = require('jaeger-client');

const [mode, target, run] = process.argv.slice(2);
const reporter = mode === 'udp'
  ? { agentHost: '127.0.0.1', agentPort: Number(target), flushIntervalMs: 50 }
  : { collectorEndpoint: target, flushIntervalMs: 50 };
const errors = [];
const logger = { info() {}, error(e) { errors.push(String(e)); } };
const tracer = initTracer(
  { serviceName: `jaeger-node-${mode}`, sampler: { type: 'const', param: 1 }, reporter },
  { logger },
);

const root = tracer.startSpan('checkout', {
  tags: { 'span.kind': 'server', 'e2e.run': run, 'cart.total': 12.5, 'user.premium': true },
});
root.log({ event: 'cache miss', 'cache.key': 'cart:1' });
const child = tracer.startSpan('db.query', { childOf: root, tags: { 'span.kind': 'client', error: true } });
child.finish();
root.finish();

const hex16 = (s) => (s ? s.padStart(16, '0') : '');
const spans = [
  { span_id: hex16(child.context().spanIdStr), parent: hex16(child.context().parentIdStr),
    name: 'db.query', kind: 3, error: true, tags: {}, events: [] },
  { span_id: hex16(root.context().spanIdStr), parent: '', name: 'checkout', kind: 2, error: false,
    // Node's client sends every number as a DOUBLE.
    tags: { 'e2e.run': run, 'cart.total': 12.5, 'user.premium': true },
    events: [{ name: 'cache miss', attributes: { 'cache.key': 'cart:1' } }] },
];
tracer.close(() => {
  if (errors.length) {
    console.error(errors.join('\n'));
    process.exit(2);
  }
  console.log(JSON.stringify({ trace_id: root.context().traceIdStr.padStart(32, '0'), spans }));
});
