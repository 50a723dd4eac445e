// Checks the span-profile join end to end against what join_service.js did:
// - among exported samples that carry a span_id, at least 99% carry the
//   right span_name and trace_id (the join filled them in);
// - every local root span that has samples carries pyroscope.profile.id =
//   its span ID.
//
//   node check_join.js <profiles.jsonl> <traces.jsonl> <truth.json>
'use strict';
const fs = require('fs');
const [profilesFile, tracesFile, truthFile] = process.argv.slice(2);
const truth = JSON.parse(fs.readFileSync(truthFile, 'utf8'));
const byId = new Map(truth.spans.map((s) => [s.spanId, s]));

let labelled = 0, right = 0, wrong = 0, unknown = 0;
const sampled = new Set();
for (const line of fs.readFileSync(profilesFile, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const p = JSON.parse(line);
  if (p.labels.service_name !== truth.service) continue;
  for (const s of p.samples || []) {
    const id = s.labels && s.labels.span_id;
    if (!id) continue;
    labelled++;
    const span = byId.get(id);
    if (!span) { unknown++; continue; }
    sampled.add(id);
    if (s.labels.span_name === span.name && s.labels.trace_id === span.traceId) right++;
    else wrong++;
  }
}

const roots = new Map();
for (const line of fs.readFileSync(tracesFile, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  for (const rs of JSON.parse(line).resourceSpans || [])
    for (const ss of rs.scopeSpans || [])
      for (const sp of ss.spans || []) {
        if (sp.parentSpanId) continue;
        const attr = (sp.attributes || []).find((a) => a.key === 'pyroscope.profile.id');
        roots.set(sp.spanId, attr ? attr.value.stringValue : undefined);
      }
}
let rootsSampled = 0, rootsTagged = 0;
const missing = [];
for (const id of sampled) {
  if (!roots.has(id)) continue;
  rootsSampled++;
  if (roots.get(id) === id) rootsTagged++;
  else missing.push(id);
}

const share = labelled ? right / labelled : 0;
console.log(`samples with span_id: ${labelled}; joined right: ${right}; wrong: ${wrong}; unknown span: ${unknown} (${(share * 100).toFixed(1)}%)`);
console.log(`local roots with samples: ${rootsSampled}; with pyroscope.profile.id: ${rootsTagged}`);
let ok = true;
if (labelled < 20) { console.error('too few labelled samples to judge'); ok = false; }
if (wrong > 0) { console.error(`${wrong} sample(s) joined to the wrong span`); ok = false; }
if (share < 0.99) { console.error('fewer than 99% of labelled samples carry the right span_name and trace_id'); ok = false; }
if (rootsSampled === 0 || rootsTagged !== rootsSampled) {
  console.error(`local roots without pyroscope.profile.id: ${missing.slice(0, 5).join(', ')}`);
  ok = false;
}
process.exit(ok ? 0 : 1);
