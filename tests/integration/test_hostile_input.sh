#!/usr/bin/env bash
# Requests built to hurt: a few kilobytes of gzip that decode to gigabytes
# (9M empty spans in protobuf, 6M in JSON; a pprof of 8M empty samples) and a profiles request nested
# 200k levels deep. Each must be refused with a clear status — 413 for the
# decode budget, 400 for the nesting — quickly and without the daemon's
# memory growing, and the daemon must keep serving.
source "$(dirname "$0")/lib.sh"

HTTP=$(free_port)
PYRO=$(free_port)
cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$HTTP
        max_request_body_size: 20MiB
  pyroscope:
    endpoint: 127.0.0.1:$PYRO
exporters:
  debug:
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
    profiles:
      receivers: [otlp, pyroscope]
      exporters: [debug]
YAML
start_daemon "$WORK/config.yaml"
node "$JS/hostile.js" "$WORK" >/dev/null || fail "cannot build the payloads"

post() { # url content-type file [curl args] → status
  local url=$1 ct=$2 f=$3
  shift 3
  curl -s -o "$WORK/body" -w '%{http_code}' --max-time 20 -H "Content-Type: $ct" --data-binary "@$f" "$@" "$url"
}
expect() {
  [ "$1" = "$2" ] || fail "$3: expected HTTP $1, got $2 ($(head -c 300 "$WORK/body"))"
  echo "ok  $1  $3"
}
rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$DAEMON_PID/status"; }

expect 413 "$(post "http://127.0.0.1:$HTTP/v1/traces" application/x-protobuf "$WORK/empty_spans.pb.gz" -H 'Content-Encoding: gzip')" "9M empty spans (17 KB gzip)"
expect 413 "$(post "http://127.0.0.1:$HTTP/v1/traces" application/json "$WORK/empty_spans.json.gz" -H 'Content-Encoding: gzip')" "OTLP/JSON with 6M empty spans"
expect 400 "$(post "http://127.0.0.1:$HTTP/v1development/profiles" application/x-protobuf "$WORK/deep_profiles.pb")" "profiles nested 200k deep"
grep -q "nesting deeper" "$WORK/body" || fail "the nesting error does not say why"
expect 413 "$(post "http://127.0.0.1:$PYRO/ingest?name=app.cpu&format=pprof" application/octet-stream "$WORK/empty_samples.pprof.gz")" "pprof of 8M empty samples"
kill -0 "$DAEMON_PID" || fail "the daemon died"
peak=$(rss_kb)
# Unbounded, these requests took 1–2 GB; JSON is parsed to know (8x its size for the
# tree and for the message), protobuf is refused by the wire scan before any decoding.
[ "$peak" -lt 400000 ] || fail "peak RSS ${peak} kB: decoding was not bounded"
good='{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"ok"}]}]}]}'
printf '%s' "$good" >"$WORK/good.json"
expect 200 "$(post "http://127.0.0.1:$HTTP/v1/traces" application/json "$WORK/good.json")" "still serving"
stop_daemon TERM
echo "PASS (peak RSS ${peak} kB)"
