#!/usr/bin/env bash
# Gradient reduction overlapped with backward: dapt pretrain on 2 data ranks
# with parallel.bucket_mb 0 (one all-reduce of the whole gradient buffer after
# backward) and with buckets of 1 and 4 MiB started during backward; then the
# same under ZeRO-1 (parallel.zero 1: one reduce-scatter after backward, or
# one non-blocking reduce-scatter per bucket during it). The
# config makes the gradients large against the compute (hidden 512, 8 layers,
# ~29M parameters = 117 MB of gradients; 2 sequences of 64 tokens per rank).
# Prints the median step time (steps 2..N) and the final loss of each run
# (equal: the buckets change when sums start, not what is summed). Pipeline
# stages with 2 data ranks need 4 ranks, more than this 2-core machine runs
# at one BLAS thread each, so the pipeline schedule's overlap is not timed here.
# Usage: scripts/bench/overlap.sh [steps]   (default 8; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-8}"
bench_dapt
bench_mpirun -np 2
bench_tmp overlap

bench_header

corpus="$tmp/corpus.jsonl"
bench_corpus "$corpus" 1500 1
bench_tokens "$dapt" "$corpus" 4096 "$tmp"

settings=(--set model.vocab_size=4096 --set model.hidden_size=512 --set model.intermediate_size=1376
          --set model.num_hidden_layers=8 --set model.num_attention_heads=8 --set model.num_key_value_heads=8
          --set data.sequence_length=64 --set data.micro_batch_size=2 --set data.global_batch_size=4
          --set eval.sequences=0 --set log_every_steps=1000 --set checkpoint.every_steps=0)
echo "config: vocab 4096, hidden 512, 8 layers, seq 64, global batch 4 on 2 data ranks, $steps steps, 1 BLAS thread per rank"
printf "%-5s %-10s %16s %12s\n" zero bucket_mb "median step ms" "final loss"
for zero in 0 1; do
  for bucket in 0 1 4; do
    run="$tmp/run-$zero-$bucket"
    "${mpi[@]}" "$dapt" pretrain --input "$tmp/tokens" --output "$run" --steps "$steps" "${settings[@]}" \
      --set parallel.zero=$zero --set parallel.bucket_mb=$bucket 2> "$tmp/log" || { cat "$tmp/log"; exit 1; }
    python3 - "$run/metrics.jsonl" "$zero" "$bucket" <<'PY'
import json, statistics, sys
m = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t = [x["tokens"] / x["tokens_per_second"] * 1e3 for x in m if x.get("tokens_per_second") and x["step"] > 1]
print(f"{sys.argv[2]:<5} {sys.argv[3]:<10} {statistics.median(t):16.1f} {m[-1]['loss']:12.6f}")
PY
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
