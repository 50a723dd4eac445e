// Checks, span by span, that what the SDK sent arrived intact in the file
// exporter's traces.jsonl (OTLP/JSON lines).
//
//   node compare_traces.js <traces.jsonl> <expected.json>...
// Exits 0 when every expected span is present with identical fields.
'use strict';
const fs = require('fs');

const [jsonl, ...expectedFiles] = process.argv.slice(2);

// OTLP/JSON AnyValue → a plain JS value comparable with the SDK's attributes.
function value(v) {
  if (v === undefined || v === null) return undefined;
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('arrayValue' in v) return (v.arrayValue.values || []).map(value);
  if ('kvlistValue' in v) return Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, value(kv.value)]));
  return undefined;
}
const attrs = (list) => Object.fromEntries((list || []).map((kv) => [kv.key, value(kv.value)]));

const got = new Map();
for (const line of fs.readFileSync(jsonl, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const req = JSON.parse(line);
  for (const rs of req.resourceSpans || []) {
    const res = attrs(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        got.set(s.spanId, { span: s, res, scope: ss.scope || {} });
      }
    }
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let checked = 0;
const problems = [];
for (const f of expectedFiles) {
  for (const e of JSON.parse(fs.readFileSync(f, 'utf8'))) {
    checked++;
    const g = got.get(e.spanId);
    if (!g) { problems.push(`${e.spanId} (${e.name}): missing`); continue; }
    const s = g.span;
    const want = {
      traceId: e.traceId, parentSpanId: e.parentSpanId, name: e.name, kind: e.kind,
      start: e.startTimeUnixNano, end: e.endTimeUnixNano, attributes: e.attributes,
      events: e.events, links: e.links, status: e.status, service: e.service, scope: 'spanprof-test',
    };
    const have = {
      traceId: s.traceId, parentSpanId: s.parentSpanId || '', name: s.name, kind: s.kind,
      start: s.startTimeUnixNano, end: s.endTimeUnixNano, attributes: attrs(s.attributes),
      events: (s.events || []).map((ev) => ({ name: ev.name, timeUnixNano: ev.timeUnixNano, attributes: attrs(ev.attributes) })),
      links: (s.links || []).map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: attrs(l.attributes) })),
      status: { code: (s.status && s.status.code) || 0, message: (s.status && s.status.message) || '' },
      service: g.res['service.name'], scope: g.scope.name,
    };
    for (const k of Object.keys(want)) {
      if (!same(want[k], have[k])) problems.push(`${e.spanId} (${e.name}) ${k}: want ${JSON.stringify(want[k])}, got ${JSON.stringify(have[k])}`);
    }
  }
}
if (checked === 0) problems.push('no expected spans to check');
if (problems.length) {
  console.error(`${problems.length} problem(s) in ${checked} span(s):`);
  for (const p of problems.slice(0, 30)) console.error('  ' + p);
  process.exit(1);
}
console.log(`all ${checked} spans arrived intact`);
