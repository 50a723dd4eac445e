// Writes hostile protobuf payloads for test_hostile_input.sh (gzipped where
// that is the point): small on the wire, huge or deep once decoded.
//   node hostile.js <dir>
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const dir = process.argv[2];

function varint(n) {
  const out = [];
  while (n > 0x7f) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128); }
  out.push(n);
  return Buffer.from(out);
}
const field = (num, payload) => Buffer.concat([varint((num << 3) | 2), varint(payload.length), payload]);

// 1. ExportTraceServiceRequest with 9M empty spans: 18 MB inflated, ~200 bytes each decoded.
const spans = Buffer.alloc(9e6 * 2);
for (let i = 0; i < spans.length; i += 2) { spans[i] = 0x12; spans[i + 1] = 0; }
const traces = field(1, field(2, spans)); // resource_spans { scope_spans { spans... } }
fs.writeFileSync(`${dir}/empty_spans.pb.gz`, zlib.gzipSync(traces, { level: 9 }));

// 2. ExportProfilesServiceRequest whose resource attribute nests AnyValue arrays 200k deep.
// Built outside-in from length prefixes (concatenating level by level would be quadratic).
const prefixes = [];
let innerLen = 0;
for (let i = 0; i < 200000; i++) { // AnyValue{array_value: ArrayValue{values: AnyValue}}
  const values = Buffer.concat([varint((1 << 3) | 2), varint(innerLen)]);
  const arrLen = values.length + innerLen;
  const arr = Buffer.concat([varint((5 << 3) | 2), varint(arrLen)]);
  prefixes.push(Buffer.concat([arr, values]));
  innerLen = arr.length + arrLen;
}
const v = Buffer.concat(prefixes.reverse());
const kv = Buffer.concat([field(1, Buffer.from('k')), field(2, v)]);
const profiles = field(1, field(1, field(1, kv))); // resource_profiles { resource { attributes } }
fs.writeFileSync(`${dir}/deep_profiles.pb`, profiles);

// 3. A pprof of 8M empty samples (~16 MB inflated, gzip ~16 KB).
const samples = Buffer.alloc(8e6 * 2);
for (let i = 0; i < samples.length; i += 2) { samples[i] = 0x12; samples[i + 1] = 0; }
fs.writeFileSync(`${dir}/empty_samples.pprof.gz`, zlib.gzipSync(samples, { level: 9 }));
// 4. OTLP/JSON with 6M empty spans: 18 MB of "{}," that would parse into gigabytes.
const json = `{"resourceSpans":[{"scopeSpans":[{"spans":[${'{},'.repeat(6e6 - 1)}{}]}]}]}`;
fs.writeFileSync(`${dir}/empty_spans.json.gz`, zlib.gzipSync(Buffer.from(json), { level: 9 }));
console.log('written');
