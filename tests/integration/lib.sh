# Shared helpers for integration tests (sourced). Each test gets the build
# directory as $1 and the source tree as $2, runs spanprofd as a real process
# and talks to it with real clients.
set -euo pipefail

BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)
SPANPROFD="$BUILD/spanprofd"
JS="$SRC/tests/integration/js"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spanprof-it.XXXXXX")
DAEMON_PID=""

cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$WORK/daemon.log" ]; then
    echo "--- daemon log (last 40 lines) ---" >&2
    tail -n 40 "$WORK/daemon.log" >&2
  fi
  exit 1
}

# A TCP port nothing listens on right now.
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

# Installs the npm clients once (tests may run in parallel: serialised by a lock).
ensure_npm() {
  (
    flock 9
    if [ ! -d "$JS/node_modules/@opentelemetry/sdk-trace" ] || [ ! -d "$JS/node_modules/@pyroscope/nodejs" ]; then
      echo "installing the npm test clients into $JS/node_modules"
      (cd "$JS" && npm ci --no-audit --no-fund >/dev/null 2>&1) || (cd "$JS" && npm install --no-audit --no-fund >/dev/null)
    fi
  ) 9>"$JS/.install.lock"
}

# start_daemon CONFIG: starts spanprofd in the background, logging to $WORK/daemon.log.
start_daemon() {
  "$SPANPROFD" --config "$1" >"$WORK/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_for "daemon started" 10 grep -q "started with" "$WORK/daemon.log"
}

# stop_daemon [SIGNAL]: signals the daemon and waits for it to exit (rc in DAEMON_RC).
stop_daemon() {
  kill "-${1:-TERM}" "$DAEMON_PID"
  local i=0
  while kill -0 "$DAEMON_PID" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] || fail "daemon did not exit after SIG${1:-TERM}"
    sleep 0.1
  done
  DAEMON_RC=0
  wait "$DAEMON_PID" || DAEMON_RC=$?
  DAEMON_PID=""
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds or the time is up.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for: $what"
    sleep 0.1
  done
}

# count_spans FILE: spans in an OTLP/JSON lines file.
count_spans() {
  [ -f "$1" ] || { echo 0; return; }
  node -e '
    let n = 0;
    for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
      if (!l.trim()) continue;
      for (const rs of JSON.parse(l).resourceSpans || []) for (const ss of rs.scopeSpans || []) n += (ss.spans || []).length;
    }
    console.log(n);' "$1"
}

# spans_ge FILE N: true when FILE holds at least N spans (for wait_for).
spans_ge() { [ "$(count_spans "$1")" -ge "$2" ]; }
