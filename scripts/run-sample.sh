#!/usr/bin/env bash
# The main job on the bundled sample, end to end, on local ranks:
#   prepare → dedup → filter (perplexity, under a reference model trained on a
#   held-out slice) → tokenizer train/encode → pretrain (tiny model, tensor
#   parallel, length curriculum) → finetune (LoRA, merged) → eval (ppl, multiple
#   choice, JSON validity unconstrained vs constrained)
# Outputs go to out/sample/; out/sample/report.html shows them all on one page
# and the run ends with a one-screen summary of the same figures. Run scripts/setup.sh first (or use the README's one-liner).
# NP=4 scripts/run-sample.sh runs the distributed stages on 4 ranks (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
np="${NP:-2}"
out=out/sample
dapt="$(swift build -c release --show-bin-path)/dapt"
[ -x "$dapt" ] || { echo "run-sample: $dapt is not built; run scripts/setup.sh" >&2; exit 2; }
launch=(cluster/launch.sh -np "$np")
rm -rf "$out"; mkdir -p "$out"

echo "== 1. prepare: patents → fragments ($np ranks)"
"${launch[@]}" dapt prepare --config configs/prepare.yaml --output "$out/prepare" --merge

echo "== 2. dedup: exact and MinHash-LSH near duplicates ($np ranks)"
"${launch[@]}" dapt dedup --input "$out/prepare/manifest.json" --config configs/dedup.yaml --output "$out/dedup"

echo "== 3. filter: perplexity per length bucket under a reference model ($np ranks)"
# The reference must not have seen the text it judges: every fourth record is
# held out to train a small reference model (its own tokenizer, 100
# steps) and is not used further; the other records are filtered. A real run
# uses an existing model instead (--model: a Hugging Face Llama directory).
mkdir -p "$out/reference"
awk 'NR % 4 == 0' "$out/dedup/kept.jsonl" > "$out/reference/slice.jsonl"
awk 'NR % 4 != 0' "$out/dedup/kept.jsonl" > "$out/reference/corpus.jsonl"
"$dapt" tokenizer train --config configs/tokenizer.yaml --input "$out/reference/slice.jsonl" --vocab-size 1024 \
  --output "$out/reference/tokenizer.json"
"$dapt" tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/reference/tokenizer.json" \
  --input "$out/reference/slice.jsonl" --output "$out/reference/tokens"
OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$(nproc)}" "$dapt" pretrain --config configs/pretrain-tiny.yaml \
  --input "$out/reference/tokens" --output "$out/reference/model" --steps 100 --set eval.sequences=0 > "$out/reference/pretrain.log"
"${launch[@]}" dapt filter --config configs/filter.yaml --input "$out/reference/corpus.jsonl" \
  --model "$out/reference/model" --output "$out/filter"

echo "== 4. tokenizer: train a byte-level BPE, encode packed shards ($np ranks)"
"$dapt" tokenizer train --config configs/tokenizer.yaml --input "$out/filter/kept.jsonl" --vocab-size 2048 --output "$out/tokenizer.json"
"${launch[@]}" dapt tokenizer encode --config configs/tokenizer.yaml --tokenizer "$out/tokenizer.json" \
  --input "$out/filter/kept.jsonl" --output "$out/tokens"

echo "== 5. pretrain: a tiny Llama on the sample ($np ranks: tensor 2 × data $((np / 2)), curriculum 64 → 128)"
# Hold out a tenth of the documents for the held-out perplexity printed every
# 50 steps. The layout splits the model over 2 tensor ranks (data parallel over
# the rest); a short context-length curriculum trains at 64 tokens, then 128.
"${launch[@]}" dapt pretrain --config configs/pretrain-tiny.yaml \
  --input "$out/tokens" --output "$out/pretrain" --set data.held_out_fraction=0.1 --set parallel.tensor=2 \
  --set 'curriculum=[{until_step: 50, sequence_length: 64}, {until_step: 150, sequence_length: 128}]'

echo "== 6. finetune: LoRA on the bundled intent-recognition sample, answers in JSON (data parallel, $np ranks)"
"${launch[@]}" dapt finetune --config configs/finetune.yaml --model "$out/pretrain" \
  --input data/instructions/train+json.jsonl --output "$out/finetune" --set schedule.total_steps=120 --set eval.every_steps=40 \
  --set optimizer.lr=3e-3 --set 'lora.target_modules=[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]'
"$dapt" finetune merge --model "$out/pretrain" --adapter "$out/finetune" --output "$out/finetuned-model"

echo "== 7. eval: perplexity, multiple choice, JSON validity unconstrained and constrained"
"$dapt" eval ppl --checkpoint "$out/pretrain" --input "$out/filter/kept.jsonl" --sequence-length 128 --output "$out/eval"
"$dapt" eval mc --model "$out/pretrain" --input data/eval/mc/mmlu --output "$out/eval"
"$dapt" eval json --model "$out/pretrain" --adapter "$out/finetune" --input data/eval/json/prompts.jsonl \
  --json-schema data/eval/json/schema.json --output "$out/eval-json"
echo "== summary: each stage's counts and key figures, read back from its outputs"
"$dapt" report --run "$out" --output "$out/report.html"
