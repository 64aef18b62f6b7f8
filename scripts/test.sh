#!/usr/bin/env bash
# The whole test suite: unit tests and the multi-rank tests, which start real
# `mpirun` processes on the built `dapt` binary (see Tests/MultiRankTests).
set -euo pipefail
cd "$(dirname "$0")/.."
# Two ranks per core at most in tests; each rank gets one BLAS thread.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
swift build --build-tests
swift test --skip-build "$@"
