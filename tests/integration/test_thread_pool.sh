#!/usr/bin/env bash
# spanprofd sizes libuv's thread pool to the CPUs it may use minus the loop
# thread's (at least one), unless UV_THREADPOOL_SIZE is set. The pool
# starts with the first job (here: validating a Pyroscope upload), so the
# daemon's thread count is read after profiles went through: the loop thread
# plus the pool (nothing else in this configuration starts threads).
source "$(dirname "$0")/lib.sh"

LOADGEN="$BUILD/spanprof-loadgen"
[ -x "$LOADGEN" ] || fail "spanprof-loadgen not built in $BUILD"

D_PYRO=$(free_port)
cat >"$WORK/pool.yaml" <<YAML
receivers:
  pyroscope: { endpoint: 127.0.0.1:$D_PYRO }
exporters:
  file: { path: $WORK/out }
service:
  telemetry:
    metrics: { address: 127.0.0.1:$(free_port) }
  pipelines:
    profiles:
      receivers: [pyroscope]
      exporters: [file]
YAML

threads() { awk '/^Threads:/ { print $2 }' "/proc/$DAEMON_PID/status"; }
send_profiles() { # LABEL
  "$LOADGEN" profiles --api ingest --endpoint "127.0.0.1:$D_PYRO" --no-traces --count 8 \
    --connections 4 --json --quiet >"$WORK/$1.json" || fail "$1: loadgen exited $?: $(cat "$WORK/$1.json")"
}

# Default: one per available CPU minus one (at least 1): nproc counts the
# affinity's CPUs; a cgroup CPU quota (v2 cpu.max), rounded up, caps them.
CPUS=$(nproc)
if [ -r /sys/fs/cgroup/cpu.max ] && read -r quota period </sys/fs/cgroup/cpu.max && [ "$quota" != max ] && [ "${period:-0}" -gt 0 ]; then
  q=$(((quota + period - 1) / period))
  [ "$q" -ge 1 ] && [ "$q" -lt "$CPUS" ] && CPUS=$q
fi
WANT=$((CPUS > 1 ? CPUS - 1 : 1))
unset UV_THREADPOOL_SIZE
start_daemon "$WORK/pool.yaml"
[ "$(threads)" = 1 ] || fail "default: $(threads) threads before any pool work, want 1"
send_profiles default
got=$(threads)
[ "$got" = $((1 + WANT)) ] || fail "default: $got threads on $CPUS CPUs, want 1 + $WANT"
stop_daemon
[ "$DAEMON_RC" = 0 ] || fail "default: daemon exited $DAEMON_RC"

# The user's UV_THREADPOOL_SIZE wins.
export UV_THREADPOOL_SIZE=3
start_daemon "$WORK/pool.yaml"
send_profiles env
got=$(threads)
[ "$got" = 4 ] || fail "UV_THREADPOOL_SIZE=3: $got threads, want 4"
stop_daemon
[ "$DAEMON_RC" = 0 ] || fail "env: daemon exited $DAEMON_RC"
echo "ok: $CPUS CPUs -> $WANT pool threads by default; UV_THREADPOOL_SIZE honoured"
