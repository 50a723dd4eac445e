// Sends spans to spanprofd with a real OpenTelemetry JS exporter and writes
// what was sent (as the SDK saw it) to a JSON file for comparison.
//
//   node send_traces.js <grpc|proto|json> <endpoint> <spans> <expected.json> [service]
//
// grpc: endpoint is http://host:port; proto/json: the full /v1/traces URL.
'use strict';
const api = require('@opentelemetry/api');
const { TracerProvider, SimpleSpanProcessor, BatchSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const fs = require('fs');

const [protocol, endpoint, countArg, outFile, serviceArg] = process.argv.slice(2);
const count = Number(countArg || 100);
const service = serviceArg || `js-${protocol}`;

let Exporter;
if (protocol === 'grpc') Exporter = require('@opentelemetry/exporter-trace-otlp-grpc').OTLPTraceExporter;
else if (protocol === 'proto') Exporter = require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter;
else if (protocol === 'json') Exporter = require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter;
else throw new Error(`unknown protocol ${protocol}`);

const exporter = new Exporter({ url: endpoint, timeoutMillis: 10000 });
const memory = new InMemorySpanExporter();
const provider = new TracerProvider({
  resource: resourceFromAttributes({
    'service.name': service,
    'service.instance.id': `instance-${process.pid}`,
    'host.name': 'test-host',
    'process.pid': process.pid,
  }),
  spanProcessors: [
    new SimpleSpanProcessor({ exporter: memory }),
    new BatchSpanProcessor({ exporter, maxExportBatchSize: 64, scheduledDelayMillis: 100 }),
  ],
});
const tracer = provider.getTracer('spanprof-test', '1.2.3');

// Nanoseconds since the epoch from an OTel HrTime, as a decimal string.
const ns = (t) => (BigInt(t[0]) * 1000000000n + BigInt(t[1])).toString();
const hex = (s) => s.toLowerCase();

function attrs(a) {
  const out = {};
  for (const [k, v] of Object.entries(a || {})) out[k] = v;
  return out;
}

async function main() {
  let made = 0;
  while (made < count) {
    const root = tracer.startSpan(`GET /items/${made}`, {
      kind: api.SpanKind.SERVER,
      attributes: { 'http.method': 'GET', 'http.status_code': 200, 'http.route': '/items/:id', 'sample.ratio': 0.5, 'retry': false, 'tags': ['a', 'b'] },
    });
    made++;
    const ctx = api.trace.setSpan(api.context.active(), root);
    for (let c = 0; c < 3 && made < count; c++, made++) {
      const link = { context: root.spanContext(), attributes: { 'link.kind': 'parent-copy' } };
      const child = tracer.startSpan(c === 2 ? 'db.query' : `client ${c}`,
        { kind: c === 2 ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL, attributes: { 'db.system': 'postgresql', 'child.index': c }, links: [link] }, ctx);
      child.addEvent('cache-miss', { 'cache.key': `k${c}` });
      if (c === 1) child.setStatus({ code: api.SpanStatusCode.ERROR, message: 'boom' });
      child.end();
    }
    root.setStatus({ code: api.SpanStatusCode.OK });
    root.end();
  }
  await provider.forceFlush();
  const finished = memory.getFinishedSpans();
  await provider.shutdown();
  if (finished.length !== count) throw new Error(`made ${finished.length} spans, wanted ${count}`);
  const spans = finished.map((s) => ({
    traceId: hex(s.spanContext().traceId),
    spanId: hex(s.spanContext().spanId),
    parentSpanId: s.parentSpanContext ? hex(s.parentSpanContext.spanId) : '',
    name: s.name,
    kind: s.kind + 1, // OTLP's enum starts at 1 for INTERNAL
    startTimeUnixNano: ns(s.startTime),
    endTimeUnixNano: ns(s.endTime),
    attributes: attrs(s.attributes),
    events: s.events.map((e) => ({ name: e.name, timeUnixNano: ns(e.time), attributes: attrs(e.attributes) })),
    links: s.links.map((l) => ({ traceId: hex(l.context.traceId), spanId: hex(l.context.spanId), attributes: attrs(l.attributes) })),
    status: { code: s.status.code, message: s.status.message || '' },
    service,
  }));
  fs.writeFileSync(outFile, JSON.stringify(spans));
  console.log(`sent ${spans.length} spans over ${protocol}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
