#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine (as root): installs the
# dependencies and the npm test clients, builds with -Werror and runs every
# test with ctest, then builds again with AddressSanitizer +
# UndefinedBehaviorSanitizer and runs the suite once more.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)

.ci/deps --test
(cd tests/integration/js && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })

cmake -S . -B build -DSP_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure -j2)

cmake -S . -B build-asan -DSP_WERROR=ON -DSP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build build-asan -j"$JOBS"
(cd build-asan &&
  ASAN_OPTIONS=detect_leaks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j2)
echo "all tests passed (plain and sanitized)"
