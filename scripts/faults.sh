#!/usr/bin/env bash
# Fault trials for pretraining: each trial starts a tiny run through
# cluster/launch.sh --restarts, SIGKILLs a random rank at a random step, lets
# launch.sh restart the job from its newest intact checkpoint, and compares
# the final model.safetensors with an uninterrupted run of the same layout,
# byte for byte. Prints a table; exits 1 if any trial differs.
#   scripts/faults.sh                      # 10 trials over d2 t2 d4 t2d2
#   scripts/faults.sh --trials 1 --ranks 2 --steps 16  # the quick form
# Options: --trials N, --layouts "d2 t2 d4 t2d2" (dN: N data-parallel ranks;
# tT: T tensor ranks; tTdD: T × D ranks), --ranks "2 4" (the same as
# --layouts "d2 d4"), --steps S, --seed K, --keep DIR (keep the work directory).
# DAPT_BIN selects the binary (default: the release build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
trials=10; layouts="d2 t2 d4 t2d2"; steps=12; seed=1; keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --layouts) layouts="$2"; shift 2 ;;
    --ranks) layouts="$(for n in $2; do printf "d%s " "$n"; done)"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    *) echo "usage: $0 [--trials N] [--layouts \"d2 t2 d4 t2d2\"] [--ranks \"2 4\"] [--steps S] [--seed K] [--keep DIR]" >&2; exit 2 ;;
  esac
done
[ "$steps" -ge 3 ] || { echo "faults: --steps must be at least 3" >&2; exit 2; }
bin="${DAPT_BIN:-$(cd "$root" && swift build -c release --show-bin-path)/dapt}"
[ -x "$bin" ] || { echo "faults: $bin not built; run scripts/setup.sh" >&2; exit 2; }
export DAPT_BIN="$bin" OPENBLAS_NUM_THREADS=1
work="${keep:-$(mktemp -d -t dapt-faults.XXXXXX)}"
mkdir -p "$work"; rm -rf "$work"/reference-* "$work"/trial-*
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
RANDOM="$seed"

# A small corpus of word sequences, its tokenizer and shards.
awk -v seed="$seed" 'BEGIN { srand(seed); split("claim device signal layer method first second wherein circuit", w, " ");
  for (d = 0; d < 300; d++) { line = ""; for (i = 0; i < 20; i++) line = line (i ? " " : "") w[1 + int(rand() * 9)]; printf "{\"text\": \"%s\"}\n", line } }' > "$work/corpus.jsonl"
"$bin" tokenizer train --input "$work/corpus.jsonl" --vocab-size 300 --output "$work/tokenizer.json" > "$work/tokenizer.log" 2>&1
"$bin" tokenizer encode --tokenizer "$work/tokenizer.json" --input "$work/corpus.jsonl" --output "$work/tokens" >> "$work/tokenizer.log" 2>&1
tiny=(--set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=2 --set model.num_attention_heads=4
      --set data.sequence_length=32 --set data.micro_batch_size=2 --set data.global_batch_size=4 --set optimizer.lr=5e-3
      --set eval.sequences=4 --set data.held_out_fraction=0.05 --set checkpoint.every_steps=1 --set checkpoint.keep_last=2)
launch="$root/cluster/launch.sh"
final="checkpoint-$(printf %08d "$steps")/model.safetensors"
# A layout's rank count and its tensor setting: d4 → 4 1, t2 → 2 2, t2d2 → 4 2.
ranks_of() { local t=1 d=1 l="$1"; [[ "$l" =~ ^t([0-9]+) ]] && t="${BASH_REMATCH[1]}"; [[ "$l" =~ d([0-9]+)$ ]] && d="${BASH_REMATCH[1]}"; echo $((t * d)); }
tensor_of() { if [[ "$1" =~ ^t([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 1; fi; }
for l in $layouts; do
  [[ "$l" =~ ^(d[0-9]+|t[0-9]+(d[0-9]+)?)$ ]] || { echo "faults: layout $l is not dN, tT or tTdD" >&2; exit 2; }
  "$launch" -np "$(ranks_of "$l")" dapt pretrain --input "$work/tokens" --output "$work/reference-$l" --steps "$steps" "${tiny[@]}" \
    --set parallel.tensor="$(tensor_of "$l")" 2> "$work/reference-$l.log" \
    || { echo "faults: the uninterrupted $l run failed; see $work/reference-$l.log" >&2; exit 1; }
done

# The pid of world rank $2 among the descendants of pid $1 (the ranks are mpirun's children).
rank_pid() {
  local pid
  for pid in $(pgrep -P "$1" 2>/dev/null); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$pid"; return; fi
    rank_pid "$pid" "$2"
  done
}

printf "%-6s %-6s %-12s %-10s %-9s %-9s %s\n" trial layout killed_rank at_step restarts seconds final_model
failures=0; trial=0
layout_list=($layouts)
# The newest step in a run's metrics.jsonl (0 before the first step line).
last_step() { grep -o '"step":[0-9]*' "$1/metrics.jsonl" 2>/dev/null | tail -n 1 | cut -d: -f2 || true; }

while [ "$trial" -lt "$trials" ]; do
  trial=$((trial + 1))
  layout="${layout_list[$(( (trial - 1) % ${#layout_list[@]} ))]}"
  r="$(ranks_of "$layout")"
  # A tiny run can finish between two polls of a loaded machine; such an
  # attempt tested nothing, so it is run again (at most 3 attempts), with the
  # kill step drawn from the first half of the run to leave a margin.
  attempt=0; killed="no"
  while [ "$killed" = "no" ] && [ "$attempt" -lt 3 ]; do
    attempt=$((attempt + 1))
    victim=$((RANDOM % r)); at=$((1 + RANDOM % ((steps - 1) / 2)))
    run="$work/trial-$trial"; rm -rf "$run"
    started=$(date +%s.%N)
    "$launch" --restarts 2 -np "$r" dapt pretrain --input "$work/tokens" --output "$run" --steps "$steps" "${tiny[@]}" \
      --set parallel.tensor="$(tensor_of "$layout")" 2> "$run.log" &
    launcher=$!
    deadline=$((SECONDS + 120))
    while kill -0 "$launcher" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      step="$(last_step "$run")"
      if [ -n "$step" ] && [ "$step" -ge "$at" ]; then
        at="$step"
        pid="$(rank_pid "$launcher" "$victim" | head -n 1)"
        if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null && killed="yes"; fi
        break
      fi
      sleep 0.02
    done
    if [ "$killed" = "no" ]; then wait "$launcher" || true; fi
  done
  status=0; wait "$launcher" || status=$?
  seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  restarts=$(grep -c "^launch: the job failed" "$run.log" || true)
  if [ "$status" -eq 0 ] && cmp -s "$work/reference-$layout/$final" "$run/$final"; then verdict="identical"; else verdict="DIFFERS (status $status, see $run.log)"; failures=$((failures + 1)); fi
  if [ "$killed" != "yes" ]; then verdict="NOT KILLED (the run ended first in $attempt attempts)"; failures=$((failures + 1)); fi
  printf "%-6s %-6s %-12s %-10s %-9s %-9.1f %s\n" "$trial" "$layout" "$victim" "$at" "$restarts" "$seconds" "$verdict"
done
[ "$failures" -eq 0 ] || { echo "faults: $failures of $trials trials differ from the uninterrupted run" >&2; exit 1; }
echo "faults: $trials of $trials trials restarted and ended bit-identical to the uninterrupted run"
