#!/usr/bin/env bash
# The pyroscope receiver against the real @pyroscope/nodejs SDK: a Node app
# runs the SDK's wall and heap profilers for a few seconds, labelling its
# work with wrapWithLabels({span_id}), and uploads to spanprofd's /ingest.
# The file exporter must show wall and memory profiles of the service with
# the SDK's tags, sane time ranges, and wall samples
# carrying the span IDs. Then curl: a short table of bad inputs with their
# status, the daemon still serving afterwards.
source "$(dirname "$0")/lib.sh"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm not available"
  exit 0
fi
if ! ensure_npm || [ ! -d "$JS/node_modules/@pyroscope/nodejs" ]; then
  if ! (cd "$JS" && timeout 20 npm view @pyroscope/nodejs@0.6.4 version >/dev/null 2>&1); then
    echo "SKIP: @pyroscope/nodejs is not installed and the npm registry is unreachable"
    exit 0
  fi
  fail "npm could not install the test clients"
fi

PORT=$(free_port)
cat >"$WORK/config.yaml" <<YAML
receivers:
  pyroscope:
    endpoint: 127.0.0.1:$PORT
    max_request_body_size: 4MiB
exporters:
  file:
    path: $WORK/out
    samples: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    profiles:
      receivers: [pyroscope]
      exporters: [file]
YAML
start_daemon "$WORK/config.yaml"

START_MS=$(($(date +%s%N) / 1000000))
node "$JS/pyroscope_app.js" "http://127.0.0.1:$PORT" 4 "$WORK/span_ids.json" || fail "the Node app failed"
END_MS=$(($(date +%s%N) / 1000000))
wait_for "profiles.jsonl" 10 test -s "$WORK/out/profiles.jsonl"
node "$JS/check_pyroscope_profiles.js" "$WORK/out/profiles.jsonl" "$WORK/span_ids.json" "$START_MS" "$END_MS" ||
  fail "the SDK's profiles did not arrive as expected"

# curl: answers for bad input; the daemon keeps serving.
URL="http://127.0.0.1:$PORT"
PPROF=$(ls "$WORK"/out/pprof/*.pprof | head -n 1)
status() { # url data-file [extra curl args...]
  local u=$1 f=$2
  shift 2
  curl -s -o "$WORK/body" -w '%{http_code}' --data-binary "@$f" "$@" "$u"
}
expect() { # want got what
  [ "$1" = "$2" ] || fail "$3: expected HTTP $1, got $2 ($(head -c 300 "$WORK/body"))"
  echo "ok  $1  $3"
}
printf 'hello' >"$WORK/text.bin"
printf 'x;y;z many\n' >"$WORK/badfolded.txt"
head -c 5000000 /dev/zero >"$WORK/big.bin"
expect 200 "$(status "$URL/ingest?name=curlapp&format=pprof&from=1700000000&until=1700000010" "$PPROF")" "valid pprof"
expect 400 "$(status "$URL/ingest?name=bad%20name&format=pprof" "$PPROF")" "bad name"
expect 400 "$(status "$URL/ingest?name=app%7Benv%3Dx&format=pprof" "$PPROF")" "unterminated labels"
expect 400 "$(status "$URL/ingest?name=app&format=pprof&from=soon" "$PPROF")" "bad timestamp"
expect 400 "$(status "$URL/ingest?name=app&format=jfr" "$PPROF")" "unsupported format"
expect 400 "$(status "$URL/ingest?name=app&format=pprof" "$WORK/text.bin")" "not pprof"
expect 400 "$(status "$URL/ingest?name=app.cpu" "$WORK/badfolded.txt")" "bad folded"
expect 413 "$(status "$URL/ingest?name=app&format=pprof" "$WORK/big.bin")" "oversized body"
expect 400 "$(status "$URL/push.v1.PusherService/Push" "$WORK/text.bin" -H 'Content-Type: application/json')" "Push: bad JSON"
grep -q '"code":"invalid_argument"' "$WORK/body" || fail "Push error is not a Connect error: $(cat "$WORK/body")"
expect 400 "$(status "$URL/push.v1.PusherService/Push" <(printf '{}') -H 'Content-Type: application/json')" "Push: no series"
expect 405 "$(curl -s -o "$WORK/body" -w '%{http_code}' "$URL/ingest")" "GET /ingest"
expect 200 "$(status "$URL/ingest?name=curlapp&format=pprof" "$PPROF")" "still serving after bad input"
kill -0 "$DAEMON_PID" || fail "daemon died"

stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "daemon exited with $DAEMON_RC after SIGTERM"
echo "PASS"
