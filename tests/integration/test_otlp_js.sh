#!/usr/bin/env bash
# The otlp receiver against the real OpenTelemetry JS exporters (gRPC,
# HTTP/protobuf, HTTP/JSON): every span must reach the file exporter with its
# IDs, name, kind, times, attributes, events, links and status intact. Then
# curl: gzip, and a table of bad inputs with the status each must get, the
# daemon still serving afterwards.
source "$(dirname "$0")/lib.sh"
ensure_npm

GRPC=$(free_port)
HTTP=$(free_port)
cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$GRPC
      http:
        endpoint: 127.0.0.1:$HTTP
        max_request_body_size: 1MiB
exporters:
  file:
    path: $WORK/out
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
YAML
start_daemon "$WORK/config.yaml"

N=200
node "$JS/send_traces.js" grpc "http://127.0.0.1:$GRPC" $N "$WORK/grpc.json" || fail "gRPC exporter failed"
node "$JS/send_traces.js" proto "http://127.0.0.1:$HTTP/v1/traces" $N "$WORK/proto.json" || fail "proto exporter failed"
node "$JS/send_traces.js" json "http://127.0.0.1:$HTTP/v1/traces" $N "$WORK/json.json" || fail "JSON exporter failed"
wait_for "$((3 * N)) spans in traces.jsonl" 20 spans_ge "$WORK/out/traces.jsonl" $((3 * N))
node "$JS/compare_traces.js" "$WORK/out/traces.jsonl" "$WORK/grpc.json" "$WORK/proto.json" "$WORK/json.json" ||
  fail "spans did not arrive intact"

# curl: status for each kind of request. Bodies come from the first JSON line we wrote.
URL="http://127.0.0.1:$HTTP/v1/traces"
head -n 1 "$WORK/out/traces.jsonl" >"$WORK/one.json"
gzip -c "$WORK/one.json" >"$WORK/one.json.gz"
printf '\x0a\x05\x12\x03\x0a' >"$WORK/truncated.pb"     # resource_spans whose length runs past the end
printf '\x0d\x00\x00\x00\x00' >"$WORK/wiretype.pb"      # field 1 (a message) sent as fixed32
head -c 2000000 /dev/zero >"$WORK/big.bin"
head -c 50000000 /dev/zero | gzip -c >"$WORK/bomb.gz"   # 50 MB of zeros in ~50 KB
printf '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc6","spanId":"eee19b7ec3c1b174"}]}]}]}' >"$WORK/shortid.json"

status() { # method content-type data-file [extra curl args...]
  local m=$1 ct=$2 f=$3
  shift 3
  curl -s -o "$WORK/body" -w '%{http_code}' -X "$m" -H "Content-Type: $ct" --data-binary "@$f" "$@" "$URL"
}
expect() { # want got what
  [ "$1" = "$2" ] || fail "$3: expected HTTP $1, got $2 ($(head -c 300 "$WORK/body"))"
  echo "ok  $1  $3"
}
expect 200 "$(status POST application/json "$WORK/one.json")" "valid JSON"
expect 200 "$(status POST application/json "$WORK/one.json.gz" -H 'Content-Encoding: gzip')" "gzip JSON"
expect 400 "$(status POST application/x-protobuf "$WORK/truncated.pb")" "truncated protobuf"
expect 400 "$(status POST application/x-protobuf "$WORK/wiretype.pb")" "wrong wire type"
expect 400 "$(status POST application/json "$WORK/truncated.pb")" "invalid JSON"
expect 400 "$(status POST application/json "$WORK/shortid.json")" "wrong-length trace ID"
grep -q "traceId" "$WORK/body" || fail "the 400 for a short ID does not say which field"
expect 413 "$(status POST application/x-protobuf "$WORK/big.bin")" "oversized body"
expect 413 "$(status POST application/x-protobuf "$WORK/bomb.gz" -H 'Content-Encoding: gzip')" "gzip bomb"
expect 415 "$(status POST text/plain "$WORK/one.json")" "wrong content type"
expect 405 "$(curl -s -o "$WORK/body" -w '%{http_code}' "$URL")" "GET"
expect 404 "$(curl -s -o "$WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data '{}' "http://127.0.0.1:$HTTP/v1/logs")" "unknown path"
expect 200 "$(status POST application/json "$WORK/one.json")" "still serving after bad input"
kill -0 "$DAEMON_PID" || fail "daemon died"

stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "daemon exited with $DAEMON_RC after SIGTERM"
echo "PASS"
