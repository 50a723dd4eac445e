// Checks profiles.jsonl written by the file exporter after pyroscope_app.js
// uploaded to the pyroscope receiver: wall and memory profiles of service
// "nodeapp" with the SDK's tags, sane time ranges, and wall samples carrying
// the span IDs the app labelled its work with.
//
// usage: node check_pyroscope_profiles.js <profiles.jsonl> <span ids file> <start ms> <end ms>
'use strict';
const fs = require('fs');

const [file, idsFile, startMs, endMs] = process.argv.slice(2);
const spanIds = new Set(JSON.parse(fs.readFileSync(idsFile, 'utf8')));
const lo = BigInt(Number(startMs) - 2000) * 1000000n;
const hi = BigInt(Number(endMs) + 2000) * 1000000n;

const problems = [];
const byName = {};
let labelled = 0;
const seenIds = new Set();
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const p = JSON.parse(line);
  const l = p.labels || {};
  if (l.service_name !== 'nodeapp') continue;
  byName[l.__name__] = (byName[l.__name__] || 0) + 1;
  if (l.env !== 'it') problems.push(`profile without env=it: ${JSON.stringify(l)}`);
  if (l.pyroscope_spy !== 'nodespy') problems.push(`pyroscope_spy is ${l.pyroscope_spy}`);
  if (l['process.runtime.name'] !== 'nodejs') problems.push(`SDK tag process.runtime.name missing: ${JSON.stringify(l)}`);
  const s = BigInt(p.timeStartUnixNano), e = BigInt(p.timeEndUnixNano);
  // /ingest times are whole seconds: the start may be up to 1 s before the app started.
  if (s > e || s < lo || e > hi) problems.push(`time range ${s}..${e} outside ${lo}..${hi}`);
  if (!(p.sampleCount > 0)) problems.push(`${l.__name__} profile without samples`);
  for (const smp of p.samples || []) {
    const sid = (smp.labels || {}).span_id;
    if (sid === undefined) continue;
    if (l.__name__ !== 'wall') problems.push(`span_id on a ${l.__name__} sample`);
    if (!spanIds.has(sid)) problems.push(`unexpected span_id ${sid}`);
    seenIds.add(sid);
    labelled++;
  }
}
if (!byName.wall) problems.push('no wall profile arrived');
if (!byName.memory) problems.push('no memory (heap) profile arrived');
if (labelled === 0) problems.push('no wall sample carries a span_id label');
if (seenIds.size < 2) problems.push(`only ${seenIds.size} distinct span IDs seen`);
if (problems.length) {
  console.error(problems.slice(0, 20).join('\n'));
  process.exit(1);
}
console.log(`profiles: ${JSON.stringify(byName)}, samples with span_id: ${labelled}, span IDs: ${[...seenIds].join(',')}`);
