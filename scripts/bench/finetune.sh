#!/usr/bin/env bash
# LoRA fine-tuning steps in tokens/s: dapt finetune vs PEFT + transformers
# (LlamaForCausalLM, torch.optim.AdamW) on the same base model, LoRA targets,
# rank, batch, sequence length and thread count; and peak memory (max RSS)
# of dapt LoRA against dapt full fine-tuning (pretrain --from) of the same model.
# Usage: scripts/bench/finetune.sh [steps]   (default 12; the first 2 steps are warm-up; DAPT_BIN=path to use another build)
source "$(dirname "$0")/lib.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-12}"
bench_pip torch==2.13.0 transformers peft safetensors numpy
bench_dapt
bench_tmp finetune

bench_header

# The base: a Llama with a dapt tokenizer (chat markers included), one pretrain step from random weights.
corpus="$tmp/corpus.jsonl"
bench_corpus "$corpus" 3000 1
"$dapt" tokenizer train --input "$corpus" --vocab-size 4096 --output "$tmp/tokenizer.json" >/dev/null 2>&1
"$dapt" tokenizer encode --tokenizer "$tmp/tokenizer.json" --input "$corpus" --output "$tmp/tokens" >/dev/null 2>&1
OPENBLAS_NUM_THREADS=2 "$dapt" pretrain --input "$tmp/tokens" --output "$tmp/base-run" --steps 1 \
  --set model.vocab_size=4096 --set model.hidden_size=256 --set model.intermediate_size=688 \
  --set model.num_hidden_layers=4 --set model.num_attention_heads=4 --set model.num_key_value_heads=4 \
  --set eval.sequences=0 >/dev/null 2>&1
base=$(ls -d "$tmp/base-run"/checkpoint-* | tail -1)
data=data/instructions/train.jsonl
lora=(--set lora.r=8 --set lora.lora_alpha=16 --set lora.lora_dropout=0.05 --set "lora.target_modules=[q_proj, k_proj, v_proj, o_proj]")
batch=(--set data.sequence_length=256 --set data.micro_batch_size=8 --set data.global_batch_size=8)
echo "config: base vocab 4096, hidden 256, 4 layers, 4 heads, intermediate 688; LoRA r 8, alpha 16, dropout 0.05 on q/k/v/o_proj;"
echo "        seq 256, batch 8 (2048 tokens/step), fp32, $steps steps, median of steps 3..$steps; data $data"
median_rate='import json,statistics,sys
m=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(statistics.median(x["tokens_per_second"] for x in m if x.get("tokens_per_second") and x["step"]>2))'
maxrss() { /usr/bin/time -f "%M" -o "$tmp/rss" "$@"; cat "$tmp/rss"; }

for threads in 1 2; do
  run="$tmp/lora$threads"
  rss=$(OPENBLAS_NUM_THREADS=$threads maxrss "$dapt" finetune --model "$base" --input "$data" --output "$run" --steps "$steps" \
    "${lora[@]}" "${batch[@]}" --set eval.sequences=0 --set log_every_steps=1000 2> "$tmp/dapt$threads.log")
  d=$(python3 -c "$median_rate" "$run/metrics.jsonl")
  read -r p prss <<< "$(python3 scripts/bench/finetune_peer.py "$base" "$data" "$threads" "$steps" 2>/dev/null)"
  printf "LoRA step, %d thread(s): dapt %.0f tokens/s, peft+transformers %.0f tokens/s, ratio %.2f; max RSS dapt %.0f MB, peft %.0f MB\n" \
    "$threads" "$d" "$p" "$(python3 -c "print($d/$p)")" "$(python3 -c "print($rss/1024)")" "$(python3 -c "print($prss/1024)")"
done

# Memory: the same model fully fine-tuned (every weight trained, AdamW moments for all) by dapt pretrain --from.
full=$(OPENBLAS_NUM_THREADS=1 maxrss "$dapt" pretrain --input "$tmp/tokens" --output "$tmp/full" --from "$base" --steps 3 \
  "${batch[@]}" --set eval.sequences=0 --set log_every_steps=1000 2>/dev/null)
lora1=$(OPENBLAS_NUM_THREADS=1 maxrss "$dapt" finetune --model "$base" --input "$data" --output "$tmp/lora-mem" --steps 3 \
  "${lora[@]}" "${batch[@]}" --set eval.sequences=0 --set log_every_steps=1000 2>/dev/null)
printf "memory, 3 steps at 1 thread: dapt LoRA max RSS %.0f MB, dapt full fine-tuning %.0f MB, ratio %.2f\n" \
  "$(python3 -c "print($lora1/1024)")" "$(python3 -c "print($full/1024)")" "$(python3 -c "print($lora1/$full)")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
