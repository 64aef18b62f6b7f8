#!/usr/bin/env bash
# Whole training steps (forward, backward, clipping, AdamW) in tokens/s:
# dapt pretrain vs PyTorch (transformers LlamaForCausalLM + torch.optim.AdamW)
# on the same config, token shards, batch and thread count; and checkpoint
# save/load time against the raw write speed (write + fsync) of the same bytes.
# Usage: scripts/bench/train.sh [steps]   (default 12; the first 2 steps are warm-up; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-12}"
bench_pip torch==2.13.0 transformers safetensors numpy
bench_dapt
bench_tmp train

bench_header

# Corpus and shards: a synthetic patent-like corpus (the bundled sample is too
# small for a vocabulary of 4096 and 2048-token steps, and some of its records
# carry pages rather than text).
corpus="$tmp/corpus.jsonl"
bench_corpus "$corpus" 3000 1
bench_tokens "$dapt" "$corpus" 4096 "$tmp"

model=(--set model.vocab_size=4096 --set model.hidden_size=256 --set model.intermediate_size=688
       --set model.num_hidden_layers=4 --set model.num_attention_heads=4 --set model.num_key_value_heads=4)
batch=(--set data.sequence_length=256 --set data.micro_batch_size=8 --set data.global_batch_size=8)
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
echo "config: vocab 4096, hidden 256, 4 layers, 4 heads, intermediate 688, seq 256, batch 8 (2048 tokens/step), fp32, $steps steps, median of steps 3..$steps"

for threads in 1 2; do
  run="$tmp/run$threads"
  OPENBLAS_NUM_THREADS=$threads "$dapt" pretrain --input "$tmp/tokens" --output "$run" --steps "$steps" \
    "${model[@]}" "${batch[@]}" --set eval.sequences=0 --set log_every_steps=1000 2> "$tmp/dapt$threads.log"
  d=$(python3 -c "
import json,statistics,sys
m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(statistics.median(x['tokens_per_second'] for x in m if x.get('tokens_per_second') and x['step']>2))" "$run/metrics.jsonl")
  p=$(python3 scripts/bench/train_peer.py steps "$tmp/tokens" "$threads" "$steps")
  printf "train step, %d thread(s): dapt %.0f tokens/s, pytorch %.0f tokens/s, ratio %.2f\n" "$threads" "$d" "$p" "$(python3 -c "print($d/$p)")"
done

# Checkpoint save (from the run's log line) and load (--resume), vs raw write of the same bytes.
ckpt=$(ls -d "$tmp/run1"/checkpoint-* | tail -1)
bytes=$(python3 -c "import json,sys; print(sum(f['bytes'] for f in json.load(open(sys.argv[1]))['files']))" "$ckpt/manifest.json")
save=$(grep -o 'MB in [0-9.]* s' "$tmp/dapt1.log" | tail -1 | awk '{print $3}')
OPENBLAS_NUM_THREADS=1 "$dapt" pretrain --input "$tmp/tokens" --output "$tmp/run1" --steps "$steps" --resume "$ckpt" \
  "${model[@]}" "${batch[@]}" --set eval.sequences=0 2> "$tmp/resume.log"
load=$(grep -o 'verified in [0-9.]* s' "$tmp/resume.log" | awk '{print $3}')
read -r raw torchsave torchload <<< "$(python3 scripts/bench/train_peer.py checkpoint "$tmp" "$bytes" "$ckpt")"
printf "checkpoint %.1f MB: dapt save %.3f s, raw write+fsync %.3f s, ratio %.2f; dapt load+verify %.3f s; pytorch (safetensors model + torch.save optimizer) save %.3f s, load %.3f s\n" \
  "$(python3 -c "print($bytes/1e6)")" "$save" "$raw" "$(python3 -c "print($save/$raw)")" "$load" "$torchsave" "$torchload"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
