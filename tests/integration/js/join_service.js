// A small Node.js service instrumented the way real ones are: the
// OpenTelemetry SDK exports its spans over OTLP/HTTP (protobuf), and
// @pyroscope/nodejs (wall profiler with CPU time) uploads profiles to
// /ingest. Work runs inside wrapWithLabels({span_id: <local root span ID>}),
// the Pyroscope SDKs' span-profiles convention. What it did is written to a
// JSON file so the test can check the join against ground truth.
//
//   node join_service.js <traces-url> <pyroscope-url> <seconds> <out.json>
'use strict';
const api = require('@opentelemetry/api');
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks');
const { TracerProvider, BatchSpanProcessor, SimpleSpanProcessor, InMemorySpanExporter } = require('@opentelemetry/sdk-trace');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const PyroscopeModule = require('@pyroscope/nodejs');
const Pyroscope = PyroscopeModule.default || PyroscopeModule;
const fs = require('fs');

const [tracesUrl, pyroscopeUrl, secondsArg, outFile] = process.argv.slice(2);
const SERVICE = 'join-e2e';
const seconds = Number(secondsArg || 6);

api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
const memory = new InMemorySpanExporter();
const provider = new TracerProvider({
  resource: resourceFromAttributes({ 'service.name': SERVICE, 'service.instance.id': `pid-${process.pid}` }),
  spanProcessors: [
    new SimpleSpanProcessor({ exporter: memory }),
    new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: tracesUrl }), scheduledDelayMillis: 200 }),
  ],
});
api.trace.setGlobalTracerProvider(provider);
const tracer = api.trace.getTracer('join-e2e');

Pyroscope.init({
  serverAddress: pyroscopeUrl,
  appName: SERVICE,
  flushIntervalMs: 1000,
  wall: { samplingDurationMs: 1000, samplingIntervalMicros: 5000, collectCpuTime: true },
});
Pyroscope.startWallProfiling();

function burn(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x += Math.sqrt(x + 1);
  return x;
}

async function main() {
  const deadline = Date.now() + seconds * 1000;
  let n = 0;
  while (Date.now() < deadline) {
    const route = ['/checkout', '/cart', '/search'][n % 3];
    tracer.startActiveSpan(`GET ${route}`, { kind: api.SpanKind.SERVER }, (root) => {
      const rootId = root.spanContext().spanId;
      Pyroscope.wrapWithLabels({ span_id: rootId }, () => {
        burn(30);
        tracer.startActiveSpan('db.query', (child) => {
          burn(20);
          child.end();
        });
      });
      root.end();
    });
    n++;
    // Yield to the event loop so exports and profile uploads can run.
    await new Promise((r) => setTimeout(r, 5));
  }
  await Pyroscope.stopWallProfiling();
  await provider.forceFlush();
  const spans = memory.getFinishedSpans().map((s) => ({
    traceId: s.spanContext().traceId,
    spanId: s.spanContext().spanId,
    parentSpanId: s.parentSpanContext ? s.parentSpanContext.spanId : '',
    name: s.name,
  }));
  await provider.shutdown();
  fs.writeFileSync(outFile, JSON.stringify({ service: SERVICE, spans }));
  console.log(`${n} requests, ${spans.length} spans`);
}

main().catch((e) => { console.error(e); process.exit(1); });
