#!/usr/bin/env bash
# ZeRO-1 memory per rank: dapt pretrain on D = 1, 2 and 4 data-parallel ranks,
# with parallel.zero 0 and 1, fp32 and bf16. For each run: the optimizer
# state each rank holds (AdamW moments, and bf16's fp32 master weights; the
# run's own count), the peak resident set of rank 0 (which also gathers the
# whole state to save the checkpoint) and the largest of the other ranks
# (measured by /usr/bin/time, one file per rank), tokens/s, and the final loss (equal with and
# without ZeRO).
# Usage: scripts/bench/zero.sh [steps]   (default 4; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-4}"
bench_dapt
bench_mpirun
bench_tmp zero

bench_header

corpus="$tmp/corpus.jsonl"
bench_corpus "$corpus" 1500 1
bench_tokens "$dapt" "$corpus" 4096 "$tmp"

settings=(--set model.vocab_size=4096 --set model.hidden_size=256 --set model.intermediate_size=688
          --set model.num_hidden_layers=4 --set model.num_attention_heads=4 --set model.num_key_value_heads=4
          --set data.sequence_length=256 --set data.micro_batch_size=4 --set data.global_batch_size=16
          --set eval.sequences=0 --set log_every_steps=1000 --set checkpoint.every_steps=0)
echo "config: vocab 4096, hidden 256, 4 layers, seq 256, global batch 16, $steps steps, 1 BLAS thread per rank"
printf "%-9s %2s %5s %18s %16s %18s %10s %10s\n" precision D zero "optimizer B/rank" "rank 0 RSS MB" "others' RSS MB" "tokens/s" "loss"
for precision in fp32 bf16; do
  for d in 1 2 4; do
    for zero in 0 1; do
      run="$tmp/run-$precision-$d-$zero"
      launch=("${mpi[@]}" -np "$d")
      [ "$d" -gt 1 ] || launch=(env OPENBLAS_NUM_THREADS=1)
      bench_rank_rss "$run.rss"
      "${launch[@]}" "${rank_rss[@]}" "$dapt" pretrain --input "$tmp/tokens" --output "$run" --steps "$steps" \
        --precision "$precision" "${settings[@]}" --set parallel.zero=$zero 2> "$tmp/log" || { cat "$tmp/log"; exit 1; }
      state=$(grep -o '[0-9]* bytes of optimizer state per rank' "$tmp/log" | head -1 | cut -d' ' -f1)
      rss0=$(bench_peak_mb %.1f "$run.rss.0")
      rss1=$(bench_peak_mb %.1f "$run".rss.[1-9]*)
      read -r tps loss <<< "$(python3 -c "
import json,sys
m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t=[x['tokens_per_second'] for x in m if x.get('tokens_per_second') and x['step']>1]
print(sum(t)/len(t), m[-1]['loss'])" "$run/metrics.jsonl")"
      printf "%-9s %2d %5d %18d %16s %18s %10.0f %10.6f\n" "$precision" "$d" "$zero" "$state" "$rss0" "$rss1" "$tps" "$loss"
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
