#!/usr/bin/env bash
# SIGTERM drains processors in pipeline order, whatever order the YAML
# defines them in: a span held by the join (wait 1h) flushes into a batch
# processor (timeout 1h) that still accepts, which flushes into the exporter
# — promptly, and without waiting out service.shutdown_timeout.
source "$(dirname "$0")/lib.sh"

P=$(free_port)
cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$P
processors:
  batch/last:
    timeout: 1h
  batch/middle:
    timeout: 1h
  spanprofile:
    wait: 1h
exporters:
  file:
    path: $WORK/out
service:
  shutdown_timeout: 20s
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [spanprofile, batch/middle, batch/last]
      exporters: [file]
YAML
start_daemon "$WORK/config.yaml"
body='{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"d"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"held","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}'
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data "$body" "http://127.0.0.1:$P/v1/traces")
[ "$code" = 200 ] || fail "span not accepted ($code)"
sleep 0.3
[ "$(count_spans "$WORK/out/traces.jsonl")" = 0 ] || fail "the span was not held"
t0=$(date +%s%N)
stop_daemon TERM
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$DAEMON_RC" = 0 ] || fail "exit code $DAEMON_RC"
[ "$(count_spans "$WORK/out/traces.jsonl")" = 1 ] || fail "the held span was lost at shutdown"
[ "$ms" -lt 5000 ] || fail "drain took ${ms} ms: a stage waited for the deadline"
! grep -q "dropped" "$WORK/daemon.log" || fail "something was dropped: $(grep dropped "$WORK/daemon.log")"
echo "PASS (drained in ${ms} ms)"
