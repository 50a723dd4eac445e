#!/usr/bin/env bash
# grpc core and libcurl are loaded only when the configuration uses them
# (pipeline/transport/grpc_dl.c, curl_dl.c): spanprofd is not linked against
# either. Three daemons, each checked through /proc/PID/maps:
#   a) OTLP/HTTP receiver -> file exporter: neither library is mapped, even
#      after spans went through;
#   b) an OTLP/gRPC receiver: libgrpc is mapped and a gRPC export works,
#      libcurl is not;
#   c) an otlphttp exporter: libcurl is mapped, libgrpc is not;
#   d) when the library is missing (hidden in a private mount namespace;
#      skipped where that is not allowed), a config that needs it fails to
#      start with exit status 1 and a log line naming the library.
# Resident memory is printed for each, not asserted (machines differ).
source "$(dirname "$0")/lib.sh"

LOADGEN="$BUILD/spanprof-loadgen"
[ -x "$LOADGEN" ] || fail "spanprof-loadgen not built in $BUILD"
readelf -d "$SPANPROFD" | grep -q 'NEEDED.*\(libgrpc\|libgpr\|libcurl\)' &&
  fail "spanprofd is linked against grpc or curl: $(readelf -d "$SPANPROFD" | grep NEEDED)"

mapped() { grep -q "/$1[.-]" "/proc/$DAEMON_PID/maps"; }
report() { # LABEL: prints the daemon's memory figures
  local rss anon pss
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON_PID/status")
  anon=$(awk '/^RssAnon/ { print $2 }' "/proc/$DAEMON_PID/status")
  pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$DAEMON_PID/smaps_rollup" 2>/dev/null || echo "?")
  echo "$1: VmRSS $rss KiB, RssAnon $anon KiB, Pss $pss KiB"
}
telemetry() {
  cat <<YAML
service:
  telemetry:
    metrics: { address: 127.0.0.1:$(free_port) }
YAML
}

# a) HTTP in, file out.
D_HTTP=$(free_port)
cat >"$WORK/a.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:$D_HTTP }
exporters:
  file: { path: $WORK/a }
$(telemetry)
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
YAML
start_daemon "$WORK/a.yaml"
report "a) http -> file, idle"
mapped libgrpc && fail "a) libgrpc is mapped without any gRPC component"
mapped libcurl && fail "a) libcurl is mapped without any HTTP client"
"$LOADGEN" traces --endpoint "127.0.0.1:$D_HTTP" --count 64 --batch 32 --json --quiet \
  >"$WORK/a.json" || fail "loadgen (http) exited $?: $(cat "$WORK/a.json")"
wait_for "64 spans in the file (a)" 10 spans_ge "$WORK/a/traces.jsonl" 64
mapped libgrpc && fail "a) libgrpc got mapped by OTLP/HTTP traffic"
mapped libcurl && fail "a) libcurl got mapped by OTLP/HTTP traffic"
report "a) http -> file, after 64 spans"
stop_daemon
[ "$DAEMON_RC" = 0 ] || fail "a) daemon exited $DAEMON_RC"

# b) gRPC in, file out.
D_GRPC=$(free_port)
cat >"$WORK/b.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:$D_GRPC }
exporters:
  file: { path: $WORK/b }
$(telemetry)
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
YAML
start_daemon "$WORK/b.yaml"
report "b) grpc -> file, idle"
mapped libgrpc || fail "b) libgrpc is not mapped with an OTLP/gRPC receiver"
mapped libcurl && fail "b) libcurl is mapped without any HTTP client"
"$LOADGEN" traces --protocol grpc --endpoint "127.0.0.1:$D_GRPC" --count 64 --batch 32 --json \
  --quiet >"$WORK/b.json" || fail "loadgen (grpc) exited $?: $(cat "$WORK/b.json")"
wait_for "64 spans in the file (b)" 10 spans_ge "$WORK/b/traces.jsonl" 64
stop_daemon
[ "$DAEMON_RC" = 0 ] || fail "b) daemon exited $DAEMON_RC"

# c) HTTP in, otlphttp out (nothing listens there: idle, nothing is sent).
D_HTTP=$(free_port)
cat >"$WORK/c.yaml" <<YAML
receivers:
  otlp:
    protocols:
      http: { endpoint: 127.0.0.1:$D_HTTP }
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:$(free_port)
    compression: none
$(telemetry)
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
YAML
start_daemon "$WORK/c.yaml"
report "c) http -> otlphttp, idle"
mapped libcurl || fail "c) libcurl is not mapped with an otlphttp exporter"
mapped libgrpc && fail "c) libgrpc is mapped without any gRPC component"
stop_daemon
[ "$DAEMON_RC" = 0 ] || fail "c) daemon exited $DAEMON_RC"
# d) Missing libraries: the daemon runs in a mount namespace where the file
# behind the SONAME (as baked into spanprofd) is an empty file, so dlopen()
# fails.
hide_and_run() { # SONAME CONFIG: runs the daemon with SONAME unloadable; rc in HIDE_RC
  local real
  real=$(readlink -f "$(ldconfig -p | awk -v n="$1" '$1 == n { print $NF; exit }')")
  HIDE_RC=0
  unshare -m sh -c 'mount --bind /dev/null "$1" && exec timeout 20 "$2" --config "$3"' \
    sh "$real" "$SPANPROFD" "$2" >"$WORK/daemon.log" 2>&1 || HIDE_RC=$?
}
if [ "$(id -u)" = 0 ] && unshare -m sh -c 'mount --bind /dev/null "$1"' sh "$WORK/a.yaml" 2>/dev/null; then
  hide_and_run "$(grep -ao 'libgrpc\.so\.[0-9]*' "$SPANPROFD" | head -n 1)" "$WORK/b.yaml"
  [ "$HIDE_RC" = 1 ] || fail "d) without libgrpc the gRPC config exited $HIDE_RC, want 1"
  grep -q 'gRPC needs .*dlopen libgrpc' "$WORK/daemon.log" || fail "d) no log line about libgrpc"
  hide_and_run "$(grep -ao 'libcurl\.so\.[0-9]*' "$SPANPROFD" | head -n 1)" "$WORK/c.yaml"
  [ "$HIDE_RC" = 1 ] || fail "d) without libcurl the otlphttp config exited $HIDE_RC, want 1"
  grep -q 'HTTP clients need .*dlopen libcurl' "$WORK/daemon.log" || fail "d) no log line about libcurl"
  echo "d) missing libgrpc / libcurl: start fails with the reason logged"
else
  echo "d) skipped: no permission for a private mount namespace"
fi
echo "PASS"
