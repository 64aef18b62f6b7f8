#!/usr/bin/env bash
# The run coordinator's costs on a small model, at 1, 2 and 4 data-parallel
# ranks (more ranks than cores run oversubscribed, one BLAS thread each):
#   - the per-step decision (max-all-reduce of the signal flag, rank 0's
#     decision, its broadcast) against the step time, from the run's own
#     "coordinator:" line;
#   - checkpoint save and load (verify + read) time against the raw write
#     speed (write + fsync, dd) and read speed of the same number of bytes
#     on the same file system;
#   - the time from a loss spike to training again (restore, skip, checkpoint
#     rewrite), with a hair-trigger spike threshold that makes ordinary noise
#     a spike (rollbacks.jsonl "seconds").
# Usage: scripts/bench/coordinator.sh [steps] [ranks]  (default 40 and "1 2 4"). DAPT_BIN selects the binary.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-40}"; ranks="${2:-1 2 4}"
bench_dapt
export DAPT_BIN="$dapt" OPENBLAS_NUM_THREADS=1
bench_tmp coordinator
echo "date: $(date -u +%Y-%m-%dT%H:%MZ), load: $(cut -d' ' -f1-3 /proc/loadavg), binary: $dapt"
awk 'BEGIN { srand(3); split("claim device signal layer method first second wherein circuit apparatus", w, " ");
  for (d = 0; d < 2000; d++) { line = ""; for (i = 0; i < 60; i++) line = line (i ? " " : "") w[1 + int(rand() * 10)]; printf "{\"text\": \"%s\"}\n", line } }' > "$tmp/corpus.jsonl"
bench_tokens "$dapt" "$tmp/corpus.jsonl" 512 "$tmp"
model=(--set model.hidden_size=256 --set model.intermediate_size=688 --set model.num_hidden_layers=4 --set model.num_attention_heads=4
       --set data.sequence_length=64 --set data.micro_batch_size=4 --set data.global_batch_size=8 --set eval.sequences=0 --set log_every_steps=1000)
echo "config: hidden 256, 4 layers, vocabulary 512, 8 × 64 tokens per step, fp32, $steps steps, checkpoint every 10"
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
printf "%-6s %-14s %-16s %-12s %-14s %-12s %-12s %-14s\n" ranks decision_us decision_share ckpt_MB save_s raw_write_s load_s raw_read_s
for np in $ranks; do
  run="$tmp/run$np"
  launch=(cluster/launch.sh -np "$np" dapt)
  "${launch[@]}" pretrain --input "$tmp/tokens" --output "$run" --steps "$steps" "${model[@]}" --set checkpoint.every_steps=10 2> "$tmp/run$np.log"
  decision=$(grep -o "[0-9.]* µs per step" "$tmp/run$np.log" | head -1 | cut -d' ' -f1)
  share=$(grep -o "[0-9.]*% of the step time" "$tmp/run$np.log" | head -1 | cut -d' ' -f1)
  mb=$(grep -o "([0-9.]* MB in" "$tmp/run$np.log" | head -1 | tr -d '(' | cut -d' ' -f1)
  save=$(grep -o "MB in [0-9.]* s" "$tmp/run$np.log" | cut -d' ' -f3 | median)
  "${launch[@]}" pretrain --input "$tmp/tokens" --output "$run" --resume "$run" --steps $((steps + 1)) "${model[@]}" 2> "$tmp/resume$np.log"
  load=$(grep -o "loaded and verified in [0-9.]* s" "$tmp/resume$np.log" | cut -d' ' -f5)
  bytes=$(du -cb "$run"/checkpoint-$(printf %08d $((steps + 1)))/* | tail -1 | cut -f1)
  raw_write=$( { /usr/bin/time -f "%e" dd if=/dev/urandom of="$tmp/raw.bin" bs=1M count=$(( (bytes + 1048575) / 1048576 )) conv=fsync status=none; } 2>&1 )
  sync; raw_read=$( { /usr/bin/time -f "%e" dd if="$tmp/raw.bin" of=/dev/null bs=1M status=none; } 2>&1 ); rm -f "$tmp/raw.bin"
  label="$np"; [ "$np" -gt "$(nproc)" ] && label="$np*"
  printf "%-6s %-14s %-16s %-12s %-14s %-12s %-12s %-14s\n" "$label" "$decision" "$share" "$mb" "$save" "$raw_write" "$load" "$raw_read"
done
echo "(* more ranks than the $(nproc) cores: oversubscribed)"
# Spike to training again: a threshold so low that noise is a spike; the run stops after its rollbacks.
# The detector judges nothing before `warmup` accepted steps, so a run of that many steps has no spike.
warmup=3
for np in 1 2; do
  label="spike to training again ($np rank(s), checkpoint rewrite included), seconds per rollback:"
  if [ "$steps" -le "$warmup" ]; then
    echo "$label not measured: $steps steps <= the detector's warm-up of $warmup steps"; continue
  fi
  spiky="$tmp/spiky$np"
  cluster/launch.sh -np "$np" dapt pretrain --input "$tmp/tokens" --output "$spiky" --steps "$steps" "${model[@]}" --set checkpoint.every_steps=2 \
    --set spikes.window=4 --set spikes.warmup="$warmup" --set spikes.k=0.01 --set spikes.consecutive=1 --set spikes.min_deviation=0 \
    --set spikes.margin_steps=1 --set spikes.max_rollbacks=4 2> "$tmp/spiky$np.log" || true
  seconds=$(grep -o '"seconds":[0-9.e-]*' "$spiky/rollbacks.jsonl" 2>/dev/null | cut -d: -f2 | tr '\n' ' ' || true)
  if [ -n "$seconds" ]; then
    echo "$label $seconds"
  else
    echo "$label not measured: no rollback in $steps steps (last lines of the run's log follow)"; tail -n 3 "$tmp/spiky$np.log"
  fi
done
