#!/usr/bin/env bash
# Every example configuration in configs/ passes `spanprofd validate`, and a
# broken one makes validate exit 1 with every error listed.
source "$(dirname "$0")/lib.sh"
n=0
for f in "$SRC"/configs/*.yaml; do
  "$SPANPROFD" validate --config "$f" >"$WORK/out" 2>&1 || fail "$f: $(cat "$WORK/out")"
  n=$((n + 1))
done
[ $n -gt 0 ] || fail "no configs found"
rc=0
"$SPANPROFD" validate --config "$SRC/tests/data/config/invalid/components.yaml" >"$WORK/out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "validate of an invalid file exited $rc"
[ "$(grep -c 'components.yaml:' "$WORK/out")" -ge 5 ] || fail "validate did not list every error"
"$SPANPROFD" --version | grep -q '^spanprofd ' || fail "--version"
"$SPANPROFD" --help | grep -q 'validate' || fail "--help"
"$SPANPROFD" components | grep -q '^receiver *otlp' || fail "components"
echo "PASS ($n configs)"
