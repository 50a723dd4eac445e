#!/usr/bin/env bash
# spanprof-loadgen end to end, briefly: loadgen → spanprofd → sink over
# OTLP/HTTP and OTLP/gRPC with a few thousand spans while the sink refuses a
# share of the daemon's requests (503), then loadgen → sink directly with
# refusals the load generator itself must retry. Every span the load
# generator saw accepted must be counted at the sink: zero loss. Also checks
# that the profiles mode's spans and profiles arrive (sink only). Waits for
# counts, never for time.
source "$(dirname "$0")/lib.sh"

LOADGEN="$BUILD/spanprof-loadgen"
[ -x "$LOADGEN" ] || fail "spanprof-loadgen not built in $BUILD"
SINK_HTTP=$(free_port)
SINK_GRPC=$(free_port)
D_HTTP=$(free_port)
D_GRPC=$(free_port)
METRICS=$(free_port)

"$LOADGEN" sink --http "127.0.0.1:$SINK_HTTP" --grpc "127.0.0.1:$SINK_GRPC" --count-samples \
  >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
trap 'kill -KILL $SINK_PID 2>/dev/null || true; cleanup' EXIT
wait_for "sink listening" 10 curl -sf "http://127.0.0.1:$SINK_HTTP/stats" -o /dev/null

cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:$D_HTTP }
      grpc: { endpoint: 127.0.0.1:$D_GRPC }
processors:
  batch: { timeout: 50ms, send_batch_size: 512 }
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:$SINK_HTTP
    retry_on_failure: { initial_interval: 20ms, max_interval: 100ms }
service:
  telemetry:
    metrics: { address: 127.0.0.1:$METRICS }
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlphttp]
YAML
start_daemon "$WORK/config.yaml"

stat() { # KEY → the sink's counter
  curl -s "http://127.0.0.1:$SINK_HTTP/stats" | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[process.argv[1]]))' "$1"
}
field() { # FILE EXPR → value from the loadgen's JSON result
  node -e 'const o=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(eval(process.argv[2]))' "$1" "$2"
}
spans_at_sink_ge() { [ "$(stat spans)" -ge "$1" ]; }

# 1. Through spanprofd; the sink refuses every third request of the exporter.
curl -sf -X POST "http://127.0.0.1:$SINK_HTTP/faults?status=503&every=3" >/dev/null || fail "faults"
"$LOADGEN" traces --endpoint "127.0.0.1:$D_HTTP" --count 4096 --batch 256 --connections 2 \
  --json --quiet >"$WORK/http.json" || fail "loadgen (http) exited $?: $(cat "$WORK/http.json")"
"$LOADGEN" traces --protocol grpc --endpoint "127.0.0.1:$D_GRPC" --count 2048 --batch 256 \
  --connections 2 --json --quiet >"$WORK/grpc.json" || fail "loadgen (grpc) exited $?"
accepted=$(($(field "$WORK/http.json" o.spans.accepted) + $(field "$WORK/grpc.json" o.spans.accepted)))
[ "$accepted" = 6144 ] || fail "spanprofd accepted $accepted of 6144 spans"
wait_for "all $accepted spans at the sink" 10 spans_at_sink_ge "$accepted"
[ "$(stat faults)" -gt 0 ] || fail "the sink injected no fault: the retry path was not exercised"
stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "spanprofd exited $DAEMON_RC"
got=$(stat spans)
[ "$got" = "$accepted" ] || fail "sink counted $got spans, loadgen saw $accepted accepted (loss or duplicates)"
[ "$(stat bad)" = 0 ] || fail "the sink could not parse some requests"

# 2. Directly to the sink, refusing every other request: the load generator retries.
curl -sf -X POST "http://127.0.0.1:$SINK_HTTP/reset" >/dev/null
curl -sf -X POST "http://127.0.0.1:$SINK_HTTP/faults?status=503&every=2" >/dev/null
"$LOADGEN" traces --endpoint "127.0.0.1:$SINK_HTTP" --count 2048 --batch 128 --connections 2 \
  --retry-initial 5ms --json --quiet >"$WORK/direct.json" || fail "loadgen (direct) exited $?"
[ "$(field "$WORK/direct.json" o.spans.refused)" -gt 0 ] || fail "no refusal seen by the loadgen"
[ "$(field "$WORK/direct.json" o.spans.accepted)" = 2048 ] || fail "not every span accepted"
[ "$(stat spans)" = 2048 ] || fail "sink counted $(stat spans) spans, want 2048"

# 3. Profiles with span labels (and their spans), every API the sink speaks.
curl -sf -X POST "http://127.0.0.1:$SINK_HTTP/faults" >/dev/null
curl -sf -X POST "http://127.0.0.1:$SINK_HTTP/reset" >/dev/null
for api in ingest push otlp; do
  "$LOADGEN" profiles --api "$api" --endpoint "127.0.0.1:$SINK_HTTP" --traces-endpoint \
    "127.0.0.1:$SINK_HTTP" --count 20 --samples 200 --connections 2 --json --quiet \
    >"$WORK/prof-$api.json" || fail "loadgen profiles --api $api exited $?"
done
"$LOADGEN" profiles --api push --protocol grpc --endpoint "127.0.0.1:$SINK_GRPC" \
  --traces-endpoint "127.0.0.1:$SINK_HTTP" --count 20 --samples 200 --json --quiet \
  >"$WORK/prof-grpc.json" || fail "loadgen profiles --api push --protocol grpc exited $?"
# OTLP profiles carry one sample type each: a pprof with two becomes two profiles.
[ "$(stat profiles)" = 100 ] || fail "sink counted $(stat profiles) profiles, want 20+20+40+20"
[ "$(stat samples)" = 20000 ] || fail "sink counted $(stat samples) samples, want 100 x 200"
[ "$(stat bad)" = 0 ] || fail "the sink could not read some profiles (corrupt gzip?)"
[ "$(stat samples_span_id)" -gt 0 ] || fail "no sample carries a span_id label"
[ "$(stat spans)" = $((80 * 32)) ] || fail "sink counted $(stat spans) spans for the profiles"
echo "PASS"
