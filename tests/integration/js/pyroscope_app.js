// A small Node.js service profiled by the real @pyroscope/nodejs SDK (wall
// and heap profilers), uploading to spanprofd's pyroscope receiver.
// Work runs inside wrapWithLabels({span_id}) so wall samples carry span IDs,
// as the SDK's span-profiles integration labels them.
//
// usage: node pyroscope_app.js <server address> <seconds> <span ids file>
'use strict';
const fs = require('fs');
const Pyroscope = require('@pyroscope/nodejs');

const [server, seconds, idsFile] = process.argv.slice(2);
const spanIds = ['00000000000000a1', '00000000000000b2', '00000000000000c3'];
fs.writeFileSync(idsFile, JSON.stringify(spanIds));

Pyroscope.init({
  serverAddress: server,
  appName: 'nodeapp',
  tags: { env: 'it' },
  tenantID: 'tenant-it',
  flushIntervalMs: 1000,
  wall: { samplingDurationMs: 1000, samplingIntervalMicros: 1000 },
  heap: { samplingIntervalBytes: 4096 },
});
Pyroscope.start();

function burn(ms) {
  const end = Date.now() + ms;
  let x = 0;
  const keep = [];
  while (Date.now() < end) {
    x += Math.sqrt(x + 1);
    if ((x | 0) % 7 === 0) keep.push(new Array(64).fill(x));
  }
  return keep.length + x;
}

const deadline = Date.now() + Number(seconds) * 1000;
let i = 0;
function step() {
  if (Date.now() >= deadline) {
    Pyroscope.stop().then(() => process.exit(0), (e) => {
      console.error(e);
      process.exit(1);
    });
    return;
  }
  const id = spanIds[i++ % spanIds.length];
  Pyroscope.wrapWithLabels({ span_id: id }, () => burn(40));
  setTimeout(step, 5);
}
step();
