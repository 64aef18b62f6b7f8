#!/usr/bin/env bash
# Runs dapt under Open MPI.
#   cluster/launch.sh -np 4 dapt cluster check           # local ranks on this host
#   cluster/launch.sh --hostfile cluster/hostfile -np 8 dapt dedup ...
# `dapt` is resolved to the release build. Local runs oversubscribe (more
# ranks than cores is fine for testing) and share memory; each rank gets
# OPENBLAS_NUM_THREADS (default: cores / local ranks, at least 1).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
np=""; hostfile=""; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n) np="$2"; shift 2 ;;
    --hostfile|-hostfile) hostfile="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ -n "$np" ] || { echo "usage: $0 -np N [--hostfile FILE] dapt <stage> [options]" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: $0 -np N [--hostfile FILE] dapt <stage> [options]" >&2; exit 2; }
if [ "$1" = "dapt" ]; then
  bin="$(cd "$root" && swift build -c release --show-bin-path)/dapt"
  [ -x "$bin" ] || { echo "launch: $bin not built; run scripts/setup.sh" >&2; exit 2; }
  shift; set -- "$bin" "$@"
fi
mpi=(mpirun -np "$np" --mca btl self,vader,tcp)
if [ -n "$hostfile" ]; then
  mpi+=(--hostfile "$hostfile")
  threads="${OPENBLAS_NUM_THREADS:-1}"
else
  cores="$(nproc)"
  threads="${OPENBLAS_NUM_THREADS:-$(( cores / np > 0 ? cores / np : 1 ))}"
  mpi+=(--oversubscribe)
fi
[ "$(id -u)" -ne 0 ] || mpi+=(--allow-run-as-root)
exec "${mpi[@]}" -x OPENBLAS_NUM_THREADS="$threads" "$@"
