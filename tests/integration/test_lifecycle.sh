#!/usr/bin/env bash
# Process lifecycle: SIGHUP with a broken config keeps the old pipeline
# serving; SIGHUP with a valid one swaps it (new port serves, old one is
# closed); SIGTERM drains data held in a processor to the exporter before
# exiting 0; the metrics endpoint counts what was accepted; a start failure
# (port taken) exits non-zero with a clear message.
source "$(dirname "$0")/lib.sh"

P1=$(free_port)
P2=$(free_port)
M=$(free_port)
write_config() { # port batch-timeout
  cat >"$WORK/config.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$1
processors:
  batch:
    timeout: $2
exporters:
  file:
    path: $WORK/out
service:
  telemetry:
    metrics:
      address: 127.0.0.1:$M
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
YAML
}

span() { # port span-id-suffix → HTTP status
  local body
  body=$(printf '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"lc"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"00000000000000%s","name":"s%s","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}' "$2" "$2")
  curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data "$body" "http://127.0.0.1:$1/v1/traces" || true
}

write_config "$P1" 100ms
start_daemon "$WORK/config.yaml"
[ "$(span "$P1" 01)" = 200 ] || fail "first span not accepted"
wait_for "span 1 written" 10 spans_ge "$WORK/out/traces.jsonl" 1

# A broken config: every error is logged, the old pipeline keeps serving.
cp "$WORK/config.yaml" "$WORK/good.yaml"
printf 'receivers:\n  otlp:\n    protocols: [http\nservice:\n' >"$WORK/config.yaml"
kill -HUP "$DAEMON_PID"
wait_for "reload rejected" 10 grep -q "keeping the running one" "$WORK/daemon.log"
grep -q "config.yaml:4:" "$WORK/daemon.log" || fail "the reload error does not name file:line"
[ "$(span "$P1" 02)" = 200 ] || fail "old pipeline stopped serving after a broken reload"

# A valid config on another port with a long batch timeout: the swap happens.
write_config "$P2" 1h
kill -HUP "$DAEMON_PID"
wait_for "reloaded" 15 grep -q "configuration reloaded" "$WORK/daemon.log"
[ "$(span "$P2" 03)" = 200 ] || fail "new pipeline does not serve"
code=$(span "$P1" 04)
[ "$code" = 000 ] || fail "old port still answers after the reload (HTTP $code)"
wait_for "spans 1-2 written" 10 spans_ge "$WORK/out/traces.jsonl" 2

# Metrics count what the receiver accepted across the reload.
curl -s "http://127.0.0.1:$M/metrics" >"$WORK/metrics.txt" || fail "metrics endpoint down"
grep -q 'spanprof_receiver_accepted_spans_total{receiver="otlp",transport="http"} 3' "$WORK/metrics.txt" ||
  fail "accepted span counter wrong: $(grep accepted_spans "$WORK/metrics.txt")"

[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$M/health")" = 200 ] || fail "/health"

# Span 3 sits in the batch processor (timeout 1h); SIGTERM must drain it.
[ "$(count_spans "$WORK/out/traces.jsonl")" = 2 ] || fail "batch flushed early"
stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "exit code $DAEMON_RC after SIGTERM"
[ "$(count_spans "$WORK/out/traces.jsonl")" = 3 ] || fail "SIGTERM did not drain the held span"

# A start failure (port in use) exits non-zero and says why.
node -e 'require("net").createServer().listen(Number(process.argv[1]),"127.0.0.1");setTimeout(()=>{},5000)' "$P1" &
BLOCKER=$!
sleep 0.5
write_config "$P1" 100ms
rc=0
timeout 10 "$SPANPROFD" --config "$WORK/config.yaml" >"$WORK/fail.log" 2>&1 || rc=$?
kill "$BLOCKER" 2>/dev/null || true
[ "$rc" = 1 ] || fail "start with a taken port exited $rc, want 1"
grep -q "cannot start" "$WORK/fail.log" || fail "no clear start failure message: $(cat "$WORK/fail.log")"

# SIGTERM within the drain time: a client trickling a body into the otlp HTTP
# receiver and a scrape whose target never answers do not hold the daemon
# past service.shutdown_timeout (2s; receivers get half of it). Without the
# bound the 30 s body timeout kept the process alive.
P3=$(free_port)
STUCK=$(free_port)
M2=$(free_port)
cat >"$WORK/drain.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$P3
  pprof_scrape:
    interval: 100ms
    targets:
      - url: http://127.0.0.1:$STUCK
        labels:
          service_name: stuck
exporters:
  file:
    path: $WORK/out-drain
service:
  shutdown_timeout: 2s
  telemetry:
    metrics:
      address: 127.0.0.1:$M2
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
    profiles:
      receivers: [pprof_scrape]
      exporters: [file]
YAML
# A pprof endpoint that takes requests and never answers.
node -e '
  const fs = require("fs");
  const note = (t) => { try { fs.writeFileSync(process.argv[2], t); } catch (e) {} };
  require("http").createServer(() => note("scraped"))
    .listen(Number(process.argv[1]), "127.0.0.1");
  setTimeout(() => process.exit(0), 40000);' "$STUCK" "$WORK/scraped" &
STUCK_PID=$!
start_daemon "$WORK/drain.yaml"
# The trickler: headers announcing 1 MB, then one body byte every 100 ms.
node -e '
  const fs = require("fs");
  const note = (t) => { try { fs.writeFileSync(process.argv[2], t); } catch (e) {} };
  const s = require("net").connect(Number(process.argv[1]), "127.0.0.1", () => {
    s.write("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n" +
            "Content-Length: 1000000\r\n\r\n");
    note("sending");
    setInterval(() => s.write("x"), 100);
  });
  s.on("error", () => {});
  s.on("close", () => { note("closed"); process.exit(0); });
  setTimeout(() => process.exit(2), 40000);' "$P3" "$WORK/trickle" &
TRICKLE_PID=$!
wait_for "the trickling client to send" 10 grep -q sending "$WORK/trickle"
wait_for "a scrape to hang" 10 test -f "$WORK/scraped"
sleep 0.3 # a few trickled bytes
t0=$(date +%s%N)
stop_daemon TERM
took_ms=$((($(date +%s%N) - t0) / 1000000))
kill "$STUCK_PID" 2>/dev/null || true
wait "$TRICKLE_PID" 2>/dev/null || true
echo "SIGTERM with a trickling client and a hung scrape: exited in ${took_ms} ms"
[ "$DAEMON_RC" = 0 ] || fail "exit code $DAEMON_RC after SIGTERM with a trickling client"
[ "$took_ms" -lt 3000 ] || fail "SIGTERM took ${took_ms} ms with shutdown_timeout 2s"
grep -q closed "$WORK/trickle" || fail "the trickling client's connection was not closed"
echo "PASS"
