#!/usr/bin/env bash
# The pprof_scrape receiver against a real Go program (tests/integration/go/
# pprof_app.go, standard library only, built with Debian's golang-go): its
# CPU profile samples must arrive with the span_id labels it sets through
# pprof.Do, next to memory, goroutine and mutex profiles (the cumulative
# ones as deltas, so they appear from the second scrape on).
source "$(dirname "$0")/lib.sh"

if ! command -v go >/dev/null; then
  echo "SKIP: the Go toolchain (golang-go) is not installed"
  exit 0
fi
command -v node >/dev/null || fail "node is needed to check the results"

export GOCACHE="$BUILD/go/cache" GOPATH="$BUILD/go/path" GOFLAGS=-mod=mod
export GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=0
mkdir -p "$GOCACHE" "$GOPATH"
go build -o "$WORK/pprof_app" "$SRC/tests/integration/go/pprof_app.go" || fail "go build failed"

"$WORK/pprof_app" "$WORK/app.port" >"$WORK/app.log" 2>&1 &
APP_PID=$!
trap 'kill $APP_PID 2>/dev/null || true; cleanup' EXIT
wait_for "the Go app's port" 10 test -s "$WORK/app.port"
APP_PORT=$(cat "$WORK/app.port")

cat >"$WORK/config.yaml" <<YAML
receivers:
  pprof_scrape:
    interval: 2s
    timeout: 5s
    targets:
      - url: http://127.0.0.1:$APP_PORT
        labels:
          service_name: goapp
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
      receivers: [pprof_scrape]
      exporters: [file]
YAML
start_daemon "$WORK/config.yaml"

# poll SECONDS CMD...: true as soon as CMD succeeds, false when time is up.
poll() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

if ! poll 30 node "$JS/check_scraped_profiles.js" "$WORK/out/profiles.jsonl"; then
  node "$JS/check_scraped_profiles.js" "$WORK/out/profiles.jsonl" --verbose || true
  fail "the scraped profiles did not arrive as expected"
fi
node "$JS/check_scraped_profiles.js" "$WORK/out/profiles.jsonl"
kill -0 "$DAEMON_PID" || fail "daemon died"

stop_daemon TERM
[ "$DAEMON_RC" = 0 ] || fail "daemon exited with $DAEMON_RC after SIGTERM"
echo "PASS"
