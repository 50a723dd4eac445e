#!/usr/bin/env bash
# The benchmark suite runs (tests/bench/run.sh --smoke: every scenario for a
# second, nothing written): each scenario produces a row, and no scenario
# lost data — the numbers themselves mean nothing at this length.
source "$(dirname "$0")/lib.sh"

[ -x "$BUILD/spanprof-loadgen" ] || fail "spanprof-loadgen not built in $BUILD"
out="$WORK/results.md"
bfail() { echo "--- run.sh stderr (last 30 lines) ---" >&2; tail -30 "$WORK/bench.err" >&2; fail "$@"; }
BENCH_REBUILD=0 BENCH_PORT_BASE=$((20000 + RANDOM % 12000)) TMPDIR="$WORK" \
  bash "$SRC/tests/bench/run.sh" --build "$BUILD" --smoke --no-write >"$out" 2>"$WORK/bench.err" ||
  bfail "run.sh exited non-zero"
for row in "ceiling: loadgen → sink, OTLP/HTTP" "ceiling: loadgen → sink, OTLP/gRPC" \
  "1. OTLP/HTTP → otlphttp" "2. OTLP/gRPC → otlp" "3. as 1 + batch + spanprofile" \
  "4. profiles /ingest"; do
  line=$(grep -F "| $row" "$out") || bfail "no row for \"$row\": $(cat "$out")"
  loss=$(echo "$line" | awk -F'|' '{ gsub(/ /, "", $(NF-1)); print $(NF-1) }')
  [ "$loss" = 0 ] || bfail "\"$row\" lost $loss items: $line"
done
grep -q "loss at the sink 0\." "$out" || bfail "scenario 5 lost data: $(grep -A3 '5. Memory' "$out")"
echo "PASS"
