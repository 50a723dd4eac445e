#!/usr/bin/env bash
# The span-profile join end to end with real SDKs: a Node.js service traced
# with the OpenTelemetry SDK (OTLP/HTTP protobuf → otlp receiver) and
# profiled with @pyroscope/nodejs (wall profiler, wrapWithLabels span_id →
# pyroscope receiver) does CPU work inside spans. One spanprofile instance
# sits in both pipelines. At the file exporter, at least 99% of labelled
# samples must carry the right span_name and trace_id, none a wrong one, and
# every sampled local root span must carry pyroscope.profile.id.
source "$(dirname "$0")/lib.sh"
ensure_npm

HTTP=$(free_port)
PYRO=$(free_port)
cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$HTTP
  pyroscope:
    endpoint: 127.0.0.1:$PYRO
processors:
  spanprofile:
    wait: 3s
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
      processors: [spanprofile]
      exporters: [file]
    profiles:
      receivers: [pyroscope]
      processors: [spanprofile]
      exporters: [file]
YAML
start_daemon "$WORK/config.yaml"

node "$JS/join_service.js" "http://127.0.0.1:$HTTP/v1/traces" "http://127.0.0.1:$PYRO" 6 "$WORK/truth.json" ||
  fail "the instrumented service failed"
# SIGTERM flushes what the join still holds.
stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "exit code $DAEMON_RC"
[ -s "$WORK/out/profiles.jsonl" ] || fail "no profiles arrived"
[ -s "$WORK/out/traces.jsonl" ] || fail "no traces arrived"
node "$JS/check_join.js" "$WORK/out/profiles.jsonl" "$WORK/out/traces.jsonl" "$WORK/truth.json" ||
  fail "the join did not meet the bar"
echo "PASS"
