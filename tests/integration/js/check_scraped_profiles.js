// Checks profiles.jsonl after the pprof_scrape receiver scraped pprof_app.go:
// CPU profiles whose samples carry the span_id labels the program set with
// pprof.Do, and memory / goroutines / mutex profiles of the same service.
// Exit 0 when everything is there (the shell test polls this), 1 otherwise.
//
// usage: node check_scraped_profiles.js <profiles.jsonl> [--verbose]
'use strict';
const fs = require('fs');

const [file, verbose] = process.argv.slice(2);
const want = new Set(['00000000000000d1', '00000000000000e2', '00000000000000f3']);
const byName = {};
const seen = new Set();
const problems = [];
let text = '';
try {
  text = fs.readFileSync(file, 'utf8');
} catch (e) {
  problems.push(`cannot read ${file}`);
}
for (const line of text.split('\n')) {
  if (!line.trim()) continue;
  const p = JSON.parse(line);
  const l = p.labels || {};
  if (l.service_name !== 'goapp') problems.push(`unexpected service_name ${l.service_name}`);
  if (!l.instance || !l.instance.startsWith('127.0.0.1:')) problems.push(`instance label ${l.instance}`);
  byName[l.__name__] = (byName[l.__name__] || 0) + 1;
  if (BigInt(p.timeStartUnixNano) > BigInt(p.timeEndUnixNano)) problems.push('start after end');
  if (l.__name__ !== 'process_cpu') continue;
  for (const s of p.samples || []) {
    const id = (s.labels || {}).span_id;
    if (id === undefined) continue;
    if (!want.has(id)) problems.push(`unexpected span_id ${id}`);
    if ((s.labels || {}).span_name !== 'work') problems.push('span_name label lost');
    seen.add(id);
  }
}
for (const n of ['process_cpu', 'memory', 'goroutines', 'mutex']) {
  if (!byName[n]) problems.push(`no ${n} profile yet`);
}
if (seen.size === 0) problems.push('no CPU sample carries a span_id label yet');
if (problems.length) {
  if (verbose) console.error(problems.slice(0, 20).join('\n'));
  process.exit(1);
}
console.log(`profiles: ${JSON.stringify(byName)}, span IDs on CPU samples: ${[...seen].join(',')}`);
