#!/usr/bin/env bash
# Runs dapt under Open MPI.
#   cluster/launch.sh -np 4 dapt cluster check           # local ranks on this host
#   cluster/launch.sh --hostfile cluster/hostfile -np 8 dapt dedup ...
#   cluster/launch.sh --restarts 3 -np 4 dapt pretrain --output runs/p ...
#   cluster/launch.sh --srun --restarts 3 -np 16 dapt pretrain ...  # in a Slurm job
# `dapt` is resolved to the release build. Local runs oversubscribe (more
# ranks than cores is fine for testing) and share memory; each rank gets
# OPENBLAS_NUM_THREADS (default: cores / local ranks, at least 1).
# --restarts N relaunches a failed job up to N times (as torchrun's
# --max-restarts); a pretrain job continues from the newest intact checkpoint
# of its --output directory. A SIGTERM or SIGINT to this script is passed to
# the ranks, which stop at a step boundary with a checkpoint; it is not
# restarted, and exits 0 when the run says it stopped resumably. For
# pretrain, or any stage under --restarts, a Ctrl-C reaches this script
# alone (mpirun runs in a process group of its own) and goes on to the
# ranks as SIGINT; other stages are started by exec mpirun. Ctrl-C on a bare mpirun is not
# passed on: Open MPI sends the ranks SIGTERM and SIGKILLs them a second
# later, which can be before the checkpoint is written.
# --srun starts the ranks with Slurm's srun instead of mpirun, inside a Slurm
# allocation (as in cluster/slurm.sbatch.example): Slurm's preemption sends
# SIGTERM to every job step but the batch script's, which under srun are the
# ranks themselves (they stop as above). Under mpirun they include Open MPI's
# daemons on the other nodes (a job step of their own), and a daemon that
# gets SIGTERM shuts down with its ranks, so mpirun aborts the whole job.
# srun's MPI plugin is SRUN_MPI (default pmix; `srun --mpi=list`).
# Set DAPT_BIN to run another dapt binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
np=""; hostfile=""; restarts=0; srun=0; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -np|-n) np="$2"; shift 2 ;;
    --hostfile|-hostfile) hostfile="$2"; shift 2 ;;
    --restarts) restarts="$2"; shift 2 ;;
    --srun) srun=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
usage="usage: $0 -np N [--hostfile FILE | --srun] [--restarts N] dapt <stage> [options]"
[ -n "$np" ] || { echo "$usage" >&2; exit 2; }
[ $# -gt 0 ] || { echo "$usage" >&2; exit 2; }
[[ "$restarts" =~ ^[0-9]+$ ]] || { echo "launch: --restarts must be a whole number, got '$restarts'" >&2; exit 2; }
if [ "$1" = "dapt" ]; then
  bin="${DAPT_BIN:-$(cd "$root" && swift build -c release --show-bin-path)/dapt}"
  [ -x "$bin" ] || { echo "launch: $bin not built; run scripts/setup.sh" >&2; exit 2; }
  shift; set -- "$bin" "$@"
fi
if [ "$srun" -eq 1 ]; then
  [ -z "$hostfile" ] || { echo "launch: --srun takes its hosts from the Slurm allocation, not --hostfile" >&2; exit 2; }
  [ -n "${SLURM_JOB_ID:-}" ] || { echo "launch: --srun runs inside a Slurm allocation (sbatch or salloc)" >&2; exit 2; }
  threads="${OPENBLAS_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
  # srun passes the environment on; a failed rank ends the step (as mpirun does).
  export OPENBLAS_NUM_THREADS="$threads"
  mpi=(srun --ntasks "$np" --mpi="${SRUN_MPI:-pmix}" --kill-on-bad-exit=1)
else
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
  mpi+=(-x OPENBLAS_NUM_THREADS="$threads")
fi
command=("$@"); run=""; is_pretrain=0
for ((i = 1; i < ${#command[@]}; i++)); do
  [ "${command[i]}" = "pretrain" ] && is_pretrain=1
  case "${command[i]}" in
    --output|-o) run="${command[i+1]:-}" ;;
    --output=*) run="${command[i]#--output=}" ;;
  esac
done
# Without restarts, any stage but pretrain (which stops at a step boundary on a signal) is mpirun itself.
[ "$restarts" -gt 0 ] || [ "$is_pretrain" -eq 1 ] || exec "${mpi[@]}" "$@"

# With restarts: a pretrain job must name its run directory.
if [ "$restarts" -gt 0 ] && [ "$is_pretrain" -eq 1 ] && [ -z "$run" ]; then
  echo "launch: --restarts needs the pretrain job's --output (the run directory a restart continues)" >&2; exit 2
fi

# The command for a relaunch: --resume the run directory (its newest intact
# checkpoint), or, with no checkpoint yet, start over in it (--overwrite).
relaunch() {
  local out=() skip=0 a
  for a in "${command[@]}"; do
    if [ "$skip" -eq 1 ]; then skip=0; continue; fi
    case "$a" in
      --resume) skip=1 ;;
      --resume=*|--overwrite) ;;
      *) out+=("$a") ;;
    esac
  done
  if compgen -G "$run/checkpoint-*" > /dev/null; then out+=(--resume "$run"); else out+=(--overwrite); fi
  command=("${out[@]}")
}

signalled=""; child=""
# Under mpirun the signal goes to the local ranks (mpirun's children)
# themselves: mpirun treats a SIGTERM of its own as an abort and SIGKILLs the
# ranks one second later (odls_base_sigkill_timeout), often before they finish
# the step and write the checkpoint. Ranks on other hosts need no signal: the
# ranks agree on a stop at the next step boundary, so one rank's request stops
# all. Without local ranks, mpirun is signalled. srun passes a signal on to
# every rank itself.
forward() {
  signalled="$1"
  [ -n "$child" ] || return 0
  local ranks=""
  [ "$srun" -eq 1 ] || ranks="$(pgrep -P "$child" 2>/dev/null || true)"
  if [ -n "$ranks" ]; then kill -s "$1" $ranks 2>/dev/null || true; else kill -s "$1" "$child" 2>/dev/null || true; fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT
# mpirun runs in a process group of its own (job control), so that a Ctrl-C
# at the terminal reaches this script alone and is passed to the ranks as
# SIGINT: mpirun, signalled itself, would abort the job instead (SIGTERM to
# the ranks, SIGKILL a second later, exit 1) and the checkpoint could be lost.
set -m
attempt=0
while :; do
  "${mpi[@]}" "${command[@]}" &
  child=$!
  status=0
  # wait returns early when a trapped signal arrives: wait again for the job itself.
  while :; do
    wait "$child" && status=0 || status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=""
  if [ -n "$signalled" ]; then
    # The run's own record says whether it stopped cleanly.
    if [ -n "$run" ] && tail -n 3 "$run/metrics.jsonl" 2>/dev/null | grep -q '"event":"stop"'; then
      echo "launch: stopped by SIG$signalled; resumable from $run" >&2; exit 0
    fi
    exit "$status"
  fi
  [ "$status" -ne 0 ] || exit 0
  attempt=$((attempt + 1))
  if [ "$attempt" -gt "$restarts" ]; then
    [ "$restarts" -eq 0 ] || echo "launch: the job failed (status $status) and all $restarts restarts are used" >&2
    exit "$status"
  fi
  [ "$is_pretrain" -eq 0 ] || relaunch
  echo "launch: the job failed (status $status); restart $attempt of $restarts: ${command[*]}" >&2
done
